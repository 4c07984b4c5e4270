"""Focus mode (attention rows before each field) and the top-k analysis with its positional control."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from helpers.run import run_script
from helpers.stages import contrast_attention, save_attention
from transformers import AutoModelForCausalLM

from elusive.attention.dump import AttentionDump
from elusive.reporting.analysis import field_shares, focus_entries
from elusive.text.data import load_tagged


def test_focus_rows_are_the_attention_of_the_word_before_each_field(small_model, bios, tmp_path):
    dump = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "f", focus=True, device="cpu"))
    model = AutoModelForCausalLM.from_pretrained(small_model, attn_implementation="eager").eval()
    tagged = load_tagged(bios)
    fields = json.loads(dump.metadata["fields"])
    ex = dump.extra
    assert len(ex["focus_text"]) == 5 * len(tagged)  # every field but the name, in every biography
    for f in range(0, len(ex["focus_text"]), 7):
        t, q = int(ex["focus_text"][f]), int(ex["focus_query"][f])
        text, spans = tagged[t]
        span = next(s for s in spans if s.field == fields[ex["focus_field"][f]])
        sl = dump.text_slice(t)
        start, end = dump.char_spans[sl][q]
        assert end <= span.start and text[end : span.start].strip() == ""  # the word right before the field
        ids = torch.from_numpy(dump.input_ids[sl][None].copy())
        with torch.no_grad():
            atts = model(ids, output_attentions=True).attentions
        ref = torch.stack([a[0].mean(0) for a in atts]).mean(0)[q, : q + 1].numpy()
        row = ex["focus_rows"][ex["focus_offsets"][f] : ex["focus_offsets"][f + 1]]
        np.testing.assert_allclose(row, ref, rtol=1e-5, atol=1e-7)
        # token_field labels the field's own tokens
        labels = ex["token_field"][sl]
        covered = [i for i in range(len(labels)) if labels[i] == fields.index(span.field)]
        assert covered and text[dump.char_spans[sl][covered[0]][0] : dump.char_spans[sl][covered[-1]][1]].strip() == span.value


def _dump(rows, token_field, query):
    """One text per row: keys 0..q-1 are ranked; fields by index into ["name", "city", "company"]."""
    n = len(token_field)
    return AttentionDump(
        scores=np.zeros(n * len(rows), np.float32),
        offsets=np.arange(len(rows) + 1) * n,
        input_ids=np.zeros(n * len(rows), np.int64),
        char_spans=np.zeros((n * len(rows), 2), np.int64),
        ranked=np.ones(n * len(rows), bool),
        metadata={"fields": '["name", "city", "company"]'},
        extra={
            "token_field": np.tile(token_field, len(rows)),
            "focus_rows": np.concatenate(rows).astype(np.float32),
            "focus_offsets": np.arange(len(rows) + 1) * (query + 1),
            "focus_text": np.arange(len(rows)),
            "focus_query": np.full(len(rows), query),
            "focus_field": np.full(len(rows), 2),
        },
    )


def test_top_k_shares_and_position_matched_baseline_by_hand():
    # tokens: 0 name, 1 name, 2 other, 3 city, 4 other (the query, before the company)
    token_field = np.array([0, 0, -1, 1, -1])
    rows = [np.array([0.5, 0.1, 0.3, 0.1, 0.0]), np.array([0.1, 0.2, 0.6, 0.1, 0.0])]
    entries = focus_entries(_dump(rows, token_field, query=4), k=2)
    assert [e.labels for e in entries] == [["name", "other"], ["other", "name"]]
    assert [e.distances.tolist() for e in entries] == [[4, 2], [2, 3]]
    s = field_shares(entries, k=2)["company"]
    assert s["labels"] == ["city", "name", "other"] and s["n"] == 2
    np.testing.assert_allclose(s["share"], [[0, 0.5, 0.5], [0, 0.5, 0.5]])
    # same positions in both texts, so P(label | distance) is 0/1: the baseline is the label at that distance
    np.testing.assert_allclose(s["baseline"], [[0, 0.5, 0.5], [0, 0.5, 0.5]])
    np.testing.assert_allclose(s["in_top"], [0, 1, 1])


def test_analyze_attention_writes_its_three_outputs(small_model, large_model, bios, tmp_path):
    small = save_attention(str(small_model), bios, tmp_path / "s", focus=True, device="cpu")
    large = save_attention(str(large_model), bios, tmp_path / "l", focus=True, device="cpu")
    diff = contrast_attention(large, small, tmp_path / "d")
    d, a, b = (AttentionDump.load(p) for p in (diff, large, small))
    np.testing.assert_allclose(d.extra["focus_rows"], a.extra["focus_rows"] - b.extra["focus_rows"])
    proc = run_script("analyze_attention.py", f"attn_dump={diff}", f"output={tmp_path / 'top'}", "k=5", hydra_dir=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "top.csv")
    ranked = table[table["rank"] != "top"]
    assert set(ranked["before_field"]) == {"date", "city", "university", "major", "company"}
    sums = ranked.groupby(["before_field", "rank"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)  # each rank's labels share 100 %
    assert (tmp_path / "top.png").stat().st_size > 1000 and "position-matched" in (tmp_path / "top.md").read_text()
    proc = run_script("analyze_attention.py", f"attn_dump={small.with_suffix('')}x", f"output={tmp_path / 'x'}", hydra_dir=tmp_path / "h2")
    assert proc.returncode == 2 and "attn_dump=" in proc.stderr


def test_punctuation_and_special_tokens_are_left_out_unless_asked_for(word_model, tmp_path):
    """Footnote 2 of the paper: the figures leave out periods, commas and spaces; the control uses the same keys."""
    from elusive.core.models import load_tokenizer
    from elusive.reporting.analysis import focus_entries, rankable

    data = tmp_path / "bio.csv"
    pd.DataFrame({"text": ["<name>Tim Cook</name> , . was born in <city>Oslo</city> ."]}).to_csv(data, index=False)
    dump = AttentionDump.load(save_attention(str(word_model), data, tmp_path / "f", focus=True, device="cpu"))
    tok = load_tokenizer(str(word_model))
    words = [tok.decode([int(i)]) for i in dump.input_ids]
    keep = rankable(dump, tok)
    assert [w for w, k in zip(words, keep) if k] == ["Tim", "Cook", "was", "born", "in", "Oslo"]
    assert rankable(dump, tok, include_punctuation=True).all()
    (entry,) = focus_entries(dump, k=10, allowed=keep)  # the query is "in", before Oslo
    assert sorted(words[j] for j in entry.top) == ["Cook", "Tim", "born", "was"]
    assert set(entry.label_at_distance.values()) == {"name", "other"}
    (everything,) = focus_entries(dump, k=10, allowed=rankable(dump, tok, include_punctuation=True))
    assert {words[j] for j in everything.top} >= {",", "."}
