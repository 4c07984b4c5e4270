"""Figure 1 (accuracy against distance from the name) and Figure 4 (keep probability per token)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from helpers.reference import droppable_tokens
from helpers.run import run_script
from helpers.stages import accuracy_distance, data_augmentation, keep_probability

from elusive.attention.dump import AttentionDump
from elusive.core.config import PlotKeepProbabilityConfig
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.models import load_tokenizer
from elusive.reporting.figure_distance import distances_from_name, question_distances
from elusive.reporting.figure_keep import keep_texts
from elusive.text.biographies import make_biographies
from elusive.text.data import load_tagged
from elusive.text.fingerprints import vocab_sha256
from elusive.text.tags import parse_tagged
from elusive.text.tokens import encode

# word-level tokenizer: one token per word or punctuation mark, so distances are counted by hand
#   Ann(0) Lee(1) was(2) born(3) in(4) Oslo(5) .(6) She(7) worked(8) at(9) the(10) British(11) Museum(12) .(13)
#   Bob(0) Smith(1) worked(2) at(3) Google(4) .(5) He(6) was(7) born(8) in(9) the(10) city(11) of(12) Lyon(13) .(14)
BIOS = [
    "<name>Ann Lee</name> was born in <city>Oslo</city>. She worked at <company>the British Museum</company>.",
    "<name>Bob Smith</name> worked at <company>Google</company>. He was born in the city of <city>Lyon</city>.",
]
DISTANCES = {("Ann Lee", "city"): 4, ("Ann Lee", "company"): 9, ("Bob Smith", "company"): 3, ("Bob Smith", "city"): 12}


def _bios(path, texts=BIOS):
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return path


GOLDS = {("Ann Lee", "city"): "Oslo", ("Ann Lee", "company"): "the British Museum", ("Bob Smith", "company"): "Google",
         ("Bob Smith", "city"): "Lyon"}


def _predictions(path, rows, golds=GOLDS):
    lines = [
        json.dumps({"person": p, "field": f, "prompt": "?", "gold": golds.get((p, f), "g"), "prediction": "x",
                    "exact_match": em, "f1": f1})
        for p, f, em, f1 in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


PREDS = [("Ann Lee", "city", 1.0, 1.0), ("Ann Lee", "company", 0.0, 0.5), ("Bob Smith", "company", 1.0, 1.0), ("Bob Smith", "city", 0.0, 0.0)]


def test_distances_from_the_name_counted_by_hand(word_model):
    tok = load_tokenizer(str(word_model))
    for text, person in zip(BIOS, ["Ann Lee", "Bob Smith"]):
        plain, spans = parse_tagged(text)
        got = distances_from_name(plain, spans, encode(tok, plain))
        assert got == {f: d for (p, f), d in DISTANCES.items() if p == person}


def test_exact_match_per_field_and_distance_bin(word_model, tmp_path):
    data = _bios(tmp_path / "bios.csv")
    preds = _predictions(tmp_path / "p.jsonl", PREDS)
    markdown = accuracy_distance(preds, data, str(word_model), tmp_path / "fig1", bin_size=5)
    table = pd.read_csv(tmp_path / "fig1.csv")
    assert list(table.columns) == ["field", "bin_start", "bin_end", "n", "exact_match", "f1", "mean_distance"]
    got = {(r.field, r.bin_start): (r.n, r.exact_match, r.f1, r.mean_distance) for r in table.itertuples()}
    # distances 4 (city, EM 1), 9 (company, EM 0, F1 .5), 3 (company, EM 1), 12 (city, EM 0); bins of 5
    assert got == {
        ("city", 0): (1, 1.0, 1.0, 4.0),
        ("city", 10): (1, 0.0, 0.0, 12.0),
        ("company", 0): (1, 1.0, 1.0, 3.0),
        ("company", 5): (1, 0.0, 0.5, 9.0),
        ("all", 0): (2, 1.0, 1.0, 3.5),
        ("all", 5): (1, 0.0, 0.5, 9.0),
        ("all", 10): (1, 0.0, 0.0, 12.0),
    }
    assert "| city | 2 | 8.0 | 50.0 | 50.0 |" in markdown and "| 0–4 | 2 | city 1, company 1 | 100.0 | 100.0 |" in markdown
    assert (tmp_path / "fig1.md").read_text() == markdown
    png = (tmp_path / "fig1.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    # pooling: a list of files (or an evaluation folder) counts every prediction of every run
    run_dir = tmp_path / "eval"
    run_dir.mkdir()
    _predictions(run_dir / "predictions.jsonl", PREDS[:1])
    accuracy_distance([preds, run_dir], data, str(word_model), tmp_path / "pooled", bin_size=5)
    pooled = pd.read_csv(tmp_path / "pooled.csv").set_index(["field", "bin_start"])
    assert pooled.loc[("city", 0), "n"] == 2 and pooled.loc[("all", 0), "n"] == 3
    accuracy_distance(preds, data, str(word_model), tmp_path / "again", bin_size=5)
    assert (tmp_path / "again.png").read_bytes() == png


def test_permuted_field_order_spreads_each_field_over_distances(small_model, tmp_path):
    data = make_biographies(8, 0, "permuted", tmp_path / "perm.csv", "paper")
    tagged = load_tagged(data)
    names = [next(s.value for s in spans if s.field == "name") for _, spans in tagged]
    rows = [(n, f, float(i % 2), 0.5) for i, n in enumerate(names) for f in ("date", "city", "university", "major", "company")]
    records = [dict(zip(("person", "field", "exact_match", "f1"), r)) for r in rows]
    q = question_distances(records, data, load_tokenizer(str(small_model)))
    assert len(q) == 40 and (q["distance"] > 0).all()
    # every field sits at several distances, and within one biography the distance follows the field order
    assert all(q[q["field"] == f]["distance"].nunique() >= 3 for f in ("date", "company"))
    for (_plain, spans), name in zip(tagged, names):
        order = [s.field for s in spans if s.field != "name"]
        d = q[q["person"] == name].set_index("field")["distance"]
        assert list(d[order]) == sorted(d)
    golds = {(n, s.field): s.value for (_plain, spans), n in zip(tagged, names) for s in spans}
    markdown = accuracy_distance(_predictions(tmp_path / "p.jsonl", rows, golds), data, str(small_model), tmp_path / "fig", bin_size=10)
    table = pd.read_csv(tmp_path / "fig.csv")
    assert table[table["field"] == "all"]["n"].sum() == 40 and table[table["field"] != "all"]["n"].sum() == 40
    assert "| company | 8 |" in markdown


@pytest.mark.parametrize(
    "case, key",
    [("missing", "predictions="), ("person", "predictions="), ("field", "eval_data="), ("bin", "bin_size=")],
)
def test_distance_inputs_are_checked(word_model, tmp_path, case, key):
    data = _bios(tmp_path / "bios.csv")
    rows = {"person": [("Nobody", "city", 1.0, 1.0)], "field": [("Ann Lee", "major", 1.0, 1.0)]}.get(case, PREDS)
    preds = tmp_path / "none.jsonl" if case == "missing" else _predictions(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError, match=key):
        accuracy_distance(preds, data, str(word_model), tmp_path / "fig", bin_size=0 if case == "bin" else 10)
    assert not list(tmp_path.glob("fig*"))


# --------------------------------------------------------------------------------------------------
# Figure 4
# --------------------------------------------------------------------------------------------------

TEXTS = ["Ann & Bob met 3 < 4 owls, then left.", "Carl saw Dana at the museum in Oslo."]


@pytest.fixture
def tiny_dump(small_model, tmp_path):
    """Two texts, the small model's tokenizer, and a hand-made attention_diff dump with known scores."""
    tok = load_tokenizer(str(small_model))
    data = _bios(tmp_path / "texts.csv", TEXTS)
    encs = [encode(tok, t) for t in TEXTS]
    n = [len(e.input_ids) for e in encs]
    scores = np.concatenate([np.sin(np.arange(k) * 1.7 + j) for j, k in enumerate(n)]).astype(np.float32)
    dump = AttentionDump(
        scores=scores,
        offsets=np.array([0, n[0], n[0] + n[1]]),
        input_ids=np.concatenate([e.input_ids for e in encs]),
        char_spans=np.concatenate([e.char_spans for e in encs]),
        ranked=np.concatenate([e.ranked for e in encs]),
        metadata={"kind": "attention_diff", "tokenizer": str(small_model), "vocab_sha256": vocab_sha256(tok),
                  "dataset": str(data), "dataset_sha256": sha256_file(data), "text_prefix": json.dumps("")},
    )
    dump.save(tmp_path / "diff")
    return {"tok": tok, "data": data, "encs": encs, "scores": scores, "n": n, "dump": tmp_path / "diff"}


def test_keep_probability_is_one_minus_p_by_hand(small_model, tiny_dump, tmp_path):
    alpha, beta = 0.7, 0.05
    paths = keep_probability("attention_diff", alpha, beta, str(small_model), tiny_dump["data"], tmp_path / "fig4",
                             rows=[0, 1], attn_weights=tiny_dump["dump"])
    assert [p.name for p in paths] == ["fig4.html", "fig4.png", "fig4.csv"]
    table = pd.read_csv(tmp_path / "fig4.csv", keep_default_na=False)
    assert list(table.columns) == ["row", "token_index", "token_text", "score", "rank", "keep_probability"]
    for row, (text, enc) in enumerate(zip(TEXTS, tiny_dump["encs"])):
        sub = table[table["row"] == row].set_index("token_index")
        scores = tiny_dump["scores"][sum(tiny_dump["n"][:row]) :][: tiny_dump["n"][row]]
        pieces = {i: text[enc.char_spans[i, 0] : enc.char_spans[i, 1]] for i in np.flatnonzero(enc.ranked)}
        assert list(sub.index) == list(pieces) and list(sub["token_text"]) == list(pieces.values())
        # droppable by hand: words and numbers, and "<" (a math symbol, not punctuation); "&", "," and "." are punctuation
        words = [i for i, s in pieces.items() if any(ch.isalnum() for ch in s) or s.strip() == "<"]
        order = sorted(words, key=lambda i: (-scores[i], i))  # rank 0 = largest score
        for r, i in enumerate(order):
            assert sub.loc[i, "rank"] == str(r)
            assert sub.loc[i, "keep_probability"] == pytest.approx(1 - alpha * (1 - math.exp(-beta * r)), abs=1e-6)
        assert sub.loc[order[0], "keep_probability"] == 1.0  # the top-ranked token is always kept
        for i, s in pieces.items():
            if s.strip() in ("&", ",", "."):
                assert sub.loc[i, "keep_probability"] == 1.0 and sub.loc[i, "rank"] == ""
    page = (tmp_path / "fig4.html").read_text()
    assert "&amp;" in page and "&lt;" in page and " < 4" not in page and "Ann & Bob" not in page
    assert page.count('class="tok"') >= len(table) and "legend" in page.lower()
    png = (tmp_path / "fig4.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    keep_probability("attention_diff", alpha, beta, str(small_model), tiny_dump["data"], tmp_path / "again",
                     rows=[0, 1], attn_weights=tiny_dump["dump"])
    assert (tmp_path / "again.png").read_bytes() == png
    assert (tmp_path / "again.html").read_text() == page and (tmp_path / "again.csv").read_bytes() == paths[2].read_bytes()


def test_random_keeps_one_minus_alpha_and_shuffled_shows_stage_3s_ranking(small_model, tiny_dump, tmp_path):
    data = tiny_dump["data"]
    def keep(augment_type, alpha, beta, rows, seed=0):
        return keep_texts(PlotKeepProbabilityConfig(augment_type=augment_type, alpha=alpha, beta=beta,
                                                    model=str(small_model), dataset=str(data), rows=rows,
                                                    output="unused", seed=seed))

    (item,) = keep("random", 0.6, 0.05, [1])
    cand = droppable_tokens(TEXTS[1], item.enc)
    assert np.allclose(item.keep[cand], 0.4) and (np.delete(item.keep, cand) == 1).all()
    # alpha=1 with a steep beta drops every ranked token but rank 0: each stage-3 copy keeps exactly the
    # token that keep_texts shows with keep probability 1, so the figure's ranking is stage 3's own
    items = keep("shuffled", 1.0, 50.0, [0, 1], seed=3)
    aug = pd.read_csv(data_augmentation("shuffled", 1.0, 50.0, 2, str(small_model), data, tmp_path / "aug", seed=3,
                                        keep_original=False))
    for item in items:
        top = int(np.flatnonzero(item.rank == 0)[0])
        word = item.text[item.enc.char_spans[top, 0] : item.enc.char_spans[top, 1]].strip()
        for copy in aug[aug["source_row"] == item.row]["text"]:
            assert re.findall(r"\w+|<", copy) == [word]  # punctuation ("&", ",", ".") is never dropped
    other = keep("shuffled", 1.0, 50.0, [0, 1], seed=4)
    assert any(not np.array_equal(a.rank, b.rank) for a, b in zip(items, other))


def test_keep_probability_refuses_bad_rows_from_the_command_line(small_model, tiny_dump, tmp_path):
    out = tmp_path / "fig4"
    proc = run_script("plot_keep_probability.py", "augment_type=attention_diff", f"attn_weights={tiny_dump['dump']}",
                      f"model={small_model}", f"dataset={tiny_dump['data']}", "rows=[0,7]", f"output={out}",
                      hydra_dir=tmp_path / "hydra")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rows=[0,7]: 7 is not a row") and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("fig4*"))


def test_keep_probability_refuses_a_dump_of_the_wrong_kind(small_model, tiny_dump, tmp_path):
    with pytest.raises(InputError, match="attn_weights="):
        keep_probability("attention", 0.7, 0.05, str(small_model), tiny_dump["data"], tmp_path / "k", attn_weights=tiny_dump["dump"], rows=[0])
    with pytest.raises(InputError, match="attn_weights=null"):
        keep_probability("attention_diff", 0.7, 0.05, str(small_model), tiny_dump["data"], tmp_path / "k", rows=[0])
    with pytest.raises(InputError, match="alpha="):
        keep_probability("random", 1.5, 0.05, str(small_model), tiny_dump["data"], tmp_path / "k", rows=[0])
    assert not list(tmp_path.glob("k.*"))


def test_distance_script_pools_runs_and_refuses_unknown_people(word_model, tmp_path):
    data = _bios(tmp_path / "bios.csv")
    a = _predictions(tmp_path / "a.jsonl", PREDS)
    (tmp_path / "eval").mkdir()
    _predictions(tmp_path / "eval" / "predictions.jsonl", PREDS)
    proc = run_script("plot_accuracy_distance.py", f"predictions=[{a},{tmp_path / 'eval'}]", f"eval_data={data}",
                      f"model={word_model}", f"output={tmp_path / 'fig1'}", "bin_size=5", hydra_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| city | 4 | 8.0 | 50.0 | 50.0 |" in proc.stdout
    assert (tmp_path / "fig1.png").stat().st_size > 0 and (tmp_path / "fig1.csv").is_file()
    bad = _predictions(tmp_path / "bad.jsonl", [("Nobody", "city", 1.0, 1.0)])
    proc = run_script("plot_accuracy_distance.py", f"predictions={bad}", f"eval_data={data}", f"model={word_model}",
                      f"output={tmp_path / 'out_bad'}", hydra_dir=tmp_path / "hydra2")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: predictions={bad}: person 'Nobody'"), proc.stderr
    assert "eval_data=" in errors[0] and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("out_bad*"))


def test_distance_takes_a_superset_of_the_data_the_predictions_were_made_on(word_model, tmp_path):
    """eval_meta.json names the file evaluated; another file holding the same people with the same texts (the
    full dataset a run took its first rows from) gives the same distances and is accepted."""
    made_on = _bios(tmp_path / "two.csv")
    (tmp_path / "eval").mkdir()
    _predictions(tmp_path / "eval" / "predictions.jsonl", PREDS)
    (tmp_path / "eval" / "eval_meta.json").write_text(json.dumps({"eval_data": str(made_on),
                                                                  "eval_data_sha256": sha256_file(made_on)}))
    more = _bios(tmp_path / "more.csv", [*BIOS, "<name>Cy Xu</name> lived in <city>Rome</city>."])
    accuracy_distance(tmp_path / "eval", more, str(word_model), tmp_path / "fig", bin_size=5)
    assert pd.read_csv(tmp_path / "fig.csv")["n"].sum() == 2 * len(PREDS)  # per field and "all"
