"""Stage 3: the drop schedule by hand, the augmentation's properties, and its refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.reference import reference_copies, reference_ranks, remove_spans
from helpers.stages import contrast_attention, data_augmentation, save_attention

from elusive.attention.dump import AttentionDump
from elusive.augment import engine as augment_engine
from elusive.augment import inputs as ranking_inputs
from elusive.augment import stage as augment
from elusive.augment.stage import DropSettings, drop_probabilities, ranks_from_scores
from elusive.core.config import AUGMENT_TYPES
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.models import load_tokenizer
from elusive.text.data import load_texts
from elusive.text.fingerprints import tokenizer_sha256, tokens_sha256, vocab_sha256
from elusive.text.tokens import EncodedBatch, encode, encode_many, is_droppable, word_chars


def test_drop_probability_by_hand():
    p = drop_probabilities(np.array([0, 1, 20, 1000]), alpha=0.7, beta=0.05)
    assert p[0] == 0.0
    assert math.isclose(p[1], 0.7 * (1 - math.exp(-0.05)))
    assert math.isclose(p[2], 0.7 * (1 - math.exp(-1.0)))  # 0.4425
    assert math.isclose(p[3], 0.7, rel_tol=1e-9)
    assert (np.diff(p) >= 0).all()


def test_rank_zero_is_the_largest_score_and_ties_keep_position_order():
    assert ranks_from_scores(np.array([0.1, 0.5, 0.3])).tolist() == [2, 0, 1]
    assert ranks_from_scores(np.array([0.2, 0.2, 0.9])).tolist() == [1, 2, 0]


def test_removing_spans_keeps_single_spaces():
    text = "Ann Lee was born in Oslo."
    assert remove_spans(text, np.array([[4, 7]])) == "Ann was born in Oslo."
    assert remove_spans(text, np.array([[0, 3], [3, 7]])) == "was born in Oslo."
    assert remove_spans(text, np.array([[20, 24]])) == "Ann Lee was born in ."
    assert remove_spans(text, np.zeros((0, 2), dtype=int)) == text


def test_punctuation_and_whitespace_tokens_are_not_droppable():
    assert not is_droppable(".") and not is_droppable(" ,") and not is_droppable("  ")
    assert is_droppable(" Oslo") and is_droppable("1990") and is_droppable("'s")


@pytest.fixture(scope="module")
def dumps(small_model, large_model, bios, tmp_path_factory):
    out = tmp_path_factory.mktemp("dumps")
    small = save_attention(str(small_model), bios, out / "small", device="cpu")
    large = save_attention(str(large_model), bios, out / "large", device="cpu")
    diff = contrast_attention(large, small, out / "diff")
    return {"small": small, "large": large, "diff": diff}


def _copies(path):
    return pd.read_csv(path, keep_default_na=False)


def augment_text(text, enc, scores, augment_type, alpha, beta, multiply, rng, seed=0, released=False, index=0):
    """The copies stage 3 makes of one text (its compiled path, one text as a chunk)."""
    settings = DropSettings(augment_type, alpha, beta, seed, released)
    rows = augment._augment_chunk([text], EncodedBatch.of([enc]), scores, settings, multiply, False, rng, index)
    return rows.strings()


def test_output_layout_and_originals(small_model, bios, dumps, tmp_path):
    path = data_augmentation("attention_diff", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "aug", dumps["diff"])
    assert path.name == "aug.csv"
    frame = _copies(path)
    texts = load_texts(bios)
    assert list(frame.columns) == ["text", "source_row", "copy"]
    assert len(frame) == len(texts) * 4
    originals = frame[frame["copy"] == 0]
    assert originals["text"].tolist() == texts  # tags removed, otherwise untouched
    assert sorted(frame["copy"].unique().tolist()) == [0, 1, 2, 3]
    assert not frame["text"].str.contains("<|>", regex=True).any()
    assert not frame["text"].str.contains("  ").any()
    no_orig = _copies(data_augmentation("random", 0.5, 0.0, 2, str(small_model), bios, tmp_path / "n", keep_original=False))
    assert len(no_orig) == 2 * len(texts) and (no_orig["copy"] > 0).all()


def test_alpha_zero_changes_nothing_and_random_alpha_one_is_refused(small_model, bios, tmp_path, caplog):
    texts = load_texts(bios)
    with caplog.at_level("WARNING", logger="elusive.augment.stage"):
        frame = _copies(data_augmentation("random", 0.0, 0.05, 2, str(small_model), bios, tmp_path / "a0",
                                          attn_weights=tmp_path / "unused"))
    assert (frame["text"] == [texts[i] for i in frame["source_row"]]).all()
    assert any("not used by augment_type=random" in r.getMessage() for r in caplog.records)  # said, not silent
    with pytest.raises(InputError, match=r"^alpha=1.0: augment_type=random drops every droppable token"):
        data_augmentation("random", 1.0, 0.05, 1, str(small_model), bios, tmp_path / "a1")  # only punctuation left
    assert not list(tmp_path.glob("a1*"))


def test_copies_that_dropped_every_token_are_counted_and_left_out_of_training(small_model, tmp_path, caplog):
    """Short texts without punctuation under a high alpha: some copies are empty. Stage 3 writes them (its draws
    stay as documented) and counts them; train.py's reader leaves them out and keeps the originals' places."""
    from elusive.text.data import training_texts

    data = tmp_path / "short.csv"
    pd.DataFrame({"text": ["Ann Lee lived in Oslo", "Bo Li worked at Acme"]}).to_csv(data, index=False)
    with caplog.at_level("WARNING"):
        out = data_augmentation("random", 0.9, 0.05, 20, str(small_model), data, tmp_path / "aug")
    frame = pd.read_csv(out, keep_default_na=False)
    empty = int((frame["text"] == "").sum())
    assert empty > 0 and (frame[frame["text"] == ""]["copy"] > 0).all()
    assert json.loads(out.with_suffix(".json").read_text())["empty_copies"] == empty
    texts, originals = training_texts(out)
    assert len(texts) == len(frame) - empty and all(t for t in texts)
    assert [texts[i] for i in originals] == ["Ann Lee lived in Oslo", "Bo Li worked at Acme"]
    assert any(f"{empty} of its 40 copies dropped every token" in m for m in caplog.messages)


def test_top_ranked_token_is_never_dropped_and_drop_rates_follow_p(small_model, bios, tmp_path):
    """Drive augment_text with known scores: rank r is dropped at rate p(r) over many copies."""
    tok = load_tokenizer(str(small_model))
    text = load_texts(bios)[0]
    enc = encode(tok, text)
    scores = np.linspace(1.0, 0.0, len(enc.input_ids)).astype(np.float32)  # earlier token = higher score
    copies = augment_text(text, enc, scores, "attention", 0.8, 0.1, 4000, np.random.default_rng(0))
    first_word = text[: enc.char_spans[np.flatnonzero(enc.ranked)[0], 1]]  # the rank-0 token
    assert all(c.startswith(first_word) for c in copies)  # rank 0 has p = 0
    # token lengths shrink on average as p(r) grows: expected kept characters by hand
    cand = [i for i in np.flatnonzero(enc.ranked) if is_droppable(text[enc.char_spans[i, 0] : enc.char_spans[i, 1]])]
    p = drop_probabilities(np.arange(len(cand)), 0.8, 0.1)
    lengths = np.array([enc.char_spans[i, 1] - enc.char_spans[i, 0] for i in cand])
    expected_dropped = float((p * lengths).sum())
    observed_dropped = np.mean([len(text) - len(c) for c in copies])
    assert abs(observed_dropped - expected_dropped) / expected_dropped < 0.1  # whitespace tidying shifts a little


def test_shuffled_uses_the_schedule_but_not_the_ranking(small_model, bios, tmp_path):
    tok = load_tokenizer(str(small_model))
    text = load_texts(bios)[0]
    enc = encode(tok, text)
    scores = np.linspace(1.0, 0.0, len(enc.input_ids)).astype(np.float32)
    ranked = augment_text(text, enc, scores, "attention", 0.8, 0.1, 2000, np.random.default_rng(1))
    shuffled = augment_text(text, enc, scores, "shuffled", 0.8, 0.1, 2000, np.random.default_rng(1))
    first_word = text[: enc.char_spans[np.flatnonzero(enc.ranked)[0], 1]]  # the rank-0 token
    assert all(c.startswith(first_word) for c in ranked)
    assert not all(c.startswith(first_word) for c in shuffled)
    # same schedule, so about as many characters dropped on average
    assert abs(np.mean([len(c) for c in ranked]) - np.mean([len(c) for c in shuffled])) < 0.15 * len(text)


def test_same_seed_same_bytes_other_seed_other_bytes(small_model, bios, dumps, tmp_path):
    args = ("attention_diff", 0.7, 0.05, 3, str(small_model), bios)
    a = data_augmentation(*args, tmp_path / "a", dumps["diff"], seed=7).read_bytes()
    b = data_augmentation(*args, tmp_path / "b", dumps["diff"], seed=7).read_bytes()
    c = data_augmentation(*args, tmp_path / "c", dumps["diff"], seed=8).read_bytes()
    assert a == b and a != c


def test_ranking_by_different_dumps_gives_different_copies(small_model, bios, dumps, tmp_path):
    by_small = data_augmentation("attention", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "s", dumps["small"])
    by_diff = data_augmentation("attention_diff", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "d", dumps["diff"])
    assert by_small.read_bytes() != by_diff.read_bytes()


def test_text_prefix_is_never_written(small_model, bios, tmp_path):
    dump = save_attention(str(small_model), bios, tmp_path / "p", device="cpu", text_prefix="Text: ")
    frame = _copies(data_augmentation("attention", 0.7, 0.05, 2, str(small_model), bios, tmp_path / "aug", dump))
    assert not frame["text"].str.startswith("Text").any()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"beta": -0.1}, "beta=-0.1"),
        ({"multiply": 0}, "multiply=0"),
        ({"augment_type": "dropout"}, "augment_type=dropout"),
        ({"attn_weights": None}, "attn_weights=null"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_written(small_model, bios, dumps, tmp_path, kwargs, key):
    args = dict(augment_type="attention_diff", alpha=0.7, beta=0.05, multiply=2, model=str(small_model),
                dataset=bios, save_name=tmp_path / "out", attn_weights=dumps["diff"])
    args.update(kwargs)
    with pytest.raises(InputError, match=key.replace("(", r"\(")):
        data_augmentation(**args)
    assert not list(tmp_path.iterdir())


def test_mismatched_dumps_are_refused(small_model, word_model, bios, dumps, tmp_path):
    with pytest.raises(InputError, match="augment_type=attention_diff"):  # a one-model dump is not a contrast
        data_augmentation("attention_diff", 0.7, 0.05, 2, str(small_model), bios, tmp_path / "o", dumps["small"])
    with pytest.raises(InputError, match="tokenizer"):
        data_augmentation("attention", 0.7, 0.05, 2, str(word_model), bios, tmp_path / "o", dumps["small"])
    other = tmp_path / "other.csv"
    pd.read_csv(bios).head(5).to_csv(other, index=False)
    with pytest.raises(InputError, match="different dataset"):
        data_augmentation("attention", 0.7, 0.05, 2, str(small_model), other, tmp_path / "o", dumps["small"])
    assert not (tmp_path / "o.csv").exists()
    assert AttentionDump.load(dumps["diff"]).metadata["kind"] == "attention_diff"


# --------------------------------------------------------------------------------------------------
# The chunked, compiled implementation against the per-token, per-copy reference
# --------------------------------------------------------------------------------------------------

TRICKY = [
    "Ann Lee was born in Oslo. She worked at the British Museum.",
    "  Leading and trailing spaces  ",
    "Tabs\tand  double  spaces,\tand a tab \t run.",
    "Line one.\nLine two \n line three\n\nafter a blank line \n",
    'Windows\r\nline, with "quotes" and, commas "',
    "Zoë Müller — café, naïve; 東京 and 々。、 end",
    "Emoji 😀 in 🎉🎉 text 👩‍👩‍👧 end",
    "\t\n Only whitespace around \n\t",
    "!!! ... ???",
    "word",
    "No-break\u00a0space, em\u2003space and ideographic\u3000space",
]
TOKENIZER_KINDS = ["small_model", "gemma_model", "word_model"]  # byte-level BPE, Unigram with BOS, word-level


def _reference_copies(text, enc, scores, augment_type, alpha, beta, multiply, rng, seed=0, released=False, index=0):
    """The per-token, per-copy reference (tests/helpers/reference.py), on the documented random stream."""
    return reference_copies(text, enc, scores, DropSettings(augment_type, alpha, beta, seed, released), multiply, rng,
                            index)


def _tied_scores(n, seed):
    """Scores with many ties (and a -0.0), so that position order decides ranks too."""
    scores = np.round(np.random.default_rng(seed).normal(size=n), 1).astype(np.float32)
    scores[:: 7] = -0.0
    return scores


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_copies_match_the_reference_on_random_drop_patterns(kind, request):
    """Byte-identical rows for many drop patterns: newlines, tabs, double spaces, non-ASCII, emoji (byte-level
    BPE splits one character over several tokens with the same span), text prefixes, ties in the scores."""
    tok = load_tokenizer(str(request.getfixturevalue(kind)))
    checked = 0
    for prefix in ("", "Text: "):
        for t, text in enumerate(TRICKY):
            enc = encode(tok, text, prefix)
            scores = _tied_scores(len(enc.input_ids), t)
            for augment_type in [*AUGMENT_TYPES, "released"]:
                kind, released = ("attention_diff", True) if augment_type == "released" else (augment_type, False)
                for seed, (alpha, beta) in enumerate([(0.5, 0.0), (0.9, 0.3), (1.0, 5.0), (0.2, 0.05)]):
                    args = (text, enc, scores, kind, alpha, beta, 40)
                    fast = augment_text(*args, np.random.default_rng(seed), seed=seed, released=released, index=t)
                    slow = _reference_copies(*args, np.random.default_rng(seed), seed=seed, released=released, index=t)
                    assert fast == slow, (text, augment_type, alpha)
                    checked += len(set(fast))
    assert checked > 1000  # many distinct rows, not the same few


def test_drop_rows_matches_remove_spans_on_overlapping_spans():
    """Arbitrary sorted, overlapping, touching and empty span sets, straight through the compiled loop:
    each test row is a text whose candidates are the spans to drop (p = 1), one copy, after its original."""
    rng = np.random.default_rng(0)
    texts = TRICKY + ["Ann Lee was born in Oslo.\nShe studied law.", "a b\u00a0c\nd", "ab c"] + ["a  \t b\n \n c", " \n", "", "\t\u3000 a \u00a0\n"]
    rows, spans_of_row, expected = [], [], []
    for _ in range(1000):
        text = texts[rng.integers(len(texts))]
        starts = np.sort(rng.integers(0, len(text) + 1, rng.integers(0, 6)))
        spans = np.stack([starts, np.minimum(starts + rng.integers(0, 5, len(starts)), len(text))], axis=1)
        rows.append(text)
        spans_of_row.append(spans)
        expected.append(remove_spans(text, spans))
    n_spans = np.array([len(s) for s in spans_of_row])
    codes, starts = augment_engine.drop_rows(
        augment_engine.codes_of("".join(rows)), np.concatenate([[0], np.cumsum([len(t) for t in rows])]),
        np.concatenate(spans_of_row).reshape(-1, 2), np.concatenate([[0], np.cumsum(n_spans)]),
        np.ones(n_spans.sum()), np.zeros(n_spans.sum()), np.concatenate([[0], np.cumsum(n_spans)[:-1]]),
        multiply=1, keep_original=True)
    got = augment_engine.Rows(codes, starts, np.zeros(len(rows)), np.zeros(len(rows))).strings()
    assert got[0::2] == rows  # the originals, untouched
    assert got[1::2] == expected
    assert sum(a != b for a, b in zip(rows, expected)) > 500  # most rows did change


def test_drop_rows_draws_by_copy_and_keeps_a_copy_without_drops_untidied():
    """Copy k of text t compares uniforms[draw_start[t * multiply + k] + j] with p of candidate j; a copy
    that drops nothing keeps the text's own whitespace."""
    texts = ["a  b c", "  x y  "]
    spans = np.array([[0, 1], [3, 4], [5, 6], [2, 3], [4, 5]])  # a, b, c | x, y
    uniforms = np.array([0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    codes, starts = augment_engine.drop_rows(
        augment_engine.codes_of("".join(texts)), np.array([0, 6, 13]), spans, np.array([0, 3, 5]),
        np.full(5, 0.5), uniforms, np.array([0, 3, 6, 8]), multiply=2, keep_original=False)
    rows = augment_engine.Rows(codes, starts, np.zeros(4), np.zeros(4)).strings()
    assert rows == ["a c", "a  b c", "  x y  ", ""]


def _hand_dump(tok, texts, data, path, kind="attention"):
    """A token-level dump of ``texts`` with tied scores, valid for ``data`` and ``tok``."""
    encs = [encode(tok, t) for t in texts]
    n = [len(e.input_ids) for e in encs]
    return AttentionDump(
        scores=np.concatenate([_tied_scores(k, i) for i, k in enumerate(n)]),
        offsets=np.concatenate([[0], np.cumsum(n)]),
        input_ids=np.concatenate([e.input_ids for e in encs]),
        char_spans=np.concatenate([e.char_spans for e in encs]),
        ranked=np.concatenate([e.ranked for e in encs]),
        metadata={"kind": kind, "tokenizer": "hand", "vocab_sha256": vocab_sha256(tok), "dataset": str(data),
                  "dataset_sha256": sha256_file(data), "text_prefix": json.dumps(""),
                  "tokens_sha256": tokens_sha256(tok, "", sha256_file(data), np.concatenate([[0], np.cumsum(n)]),
                                                 np.concatenate([e.input_ids for e in encs]),
                                                 np.concatenate([e.char_spans for e in encs]),
                                                 np.concatenate([e.ranked for e in encs]))},
    ).save(path)


@pytest.mark.parametrize("augment_type", AUGMENT_TYPES)
def test_data_augmentation_writes_the_reference_rows_as_pandas_would(small_model, augment_type, tmp_path, monkeypatch):
    """The CSV is byte for byte pandas' to_csv of the reference rows (one generator through the texts in
    order), whatever the chunk size."""
    tok = load_tokenizer(str(small_model))
    data = tmp_path / "tricky.csv"
    pd.DataFrame({"text": TRICKY * 3}).to_csv(data, index=False)
    texts = load_texts(data)
    assert texts == TRICKY * 3
    dump = _hand_dump(tok, texts, data, tmp_path / "dump", augment_type) if augment_type.startswith("attention") else None
    scores = AttentionDump.load(dump).scores if dump else None
    rng = np.random.default_rng(11)
    counter = np.random.default_rng(11)  # the same stream, replayed to count the drops and the p of each draw
    rows = []
    dropped = draws = 0
    p_all = []
    for i, text in enumerate(texts):
        enc = encode(tok, text)
        own = None if scores is None else scores[AttentionDump.load(dump).text_slice(i)]
        rows.append((text, i, 0))
        copies = _reference_copies(text, enc, own, augment_type, 0.8, 0.2, 5, rng, seed=11, index=i)
        rows.extend((c, i, k) for k, c in enumerate(copies, start=1))
        _, ranks = reference_ranks(text, enc, own, DropSettings(augment_type, 0.8, 0.2, 11), i)
        p = np.full(len(ranks), 0.8) if augment_type == "random" else drop_probabilities(ranks, 0.8, 0.2)
        dropped += int((counter.random((5, len(ranks))) < p[None, :]).sum())
        draws += 5 * len(ranks)
        p_all.append(p)
    expected = tmp_path / "expected.csv"
    pd.DataFrame(rows, columns=["text", "source_row", "copy"]).to_csv(expected, index=False, lineterminator="\n")
    args = (augment_type, 0.8, 0.2, 5, str(small_model), data)
    whole = data_augmentation(*args, tmp_path / "whole", dump, seed=11)
    monkeypatch.setattr(augment, "_CHUNK_CHARS", 150)  # many chunks, some of a single text
    chunked = data_augmentation(*args, tmp_path / "chunked", dump, seed=11)
    assert whole.read_bytes() == expected.read_bytes() == chunked.read_bytes()
    settings = json.loads((tmp_path / "whole.json").read_text())
    assert settings["csv_sha256"] == sha256_file(whole)
    assert settings["drop_rate"] == dropped / draws  # counted as the reference drops, chunks or not
    assert json.loads((tmp_path / "chunked.json").read_text())["drop_rate"] == dropped / draws
    assert settings["expected_drop_rate"] == math.fsum(np.concatenate(p_all).tolist()) / (draws // 5)
    assert settings["survival"] is None  # no tagged fields to look for


def test_csv_rows_are_written_as_pandas_writes_them():
    texts = ["", "plain", "a,b", '"quoted"', 'say "hi", twice ""', "new\nline", "cr\rreturn", "tab\there",
             "Zoë 😀 東京", ",", '"', "\n", " lead and trail "]
    rows = augment_engine.Rows(augment_engine.codes_of("".join(texts)), np.concatenate([[0], np.cumsum([len(t) for t in texts])]),
                         np.arange(len(texts)) * 37, np.arange(len(texts)) % 4)
    frame = pd.DataFrame({"text": texts, "source_row": rows.source_row, "copy": rows.copy})
    expected = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    assert augment_engine.CSV_HEADER.encode() + augment_engine.csv_lines(rows).tobytes() == expected


def test_character_classes_match_is_droppable_and_isspace():
    codes = np.concatenate([np.arange(0x3100), np.arange(0x3100, 0x110000, 7)]).astype(np.uint32)
    chars = [chr(c) for c in codes.tolist()]
    assert word_chars(codes).tolist() == [is_droppable(ch) for ch in chars]
    table = augment_engine._SPACE_TABLE
    assert table[np.minimum(codes, len(table) - 1)].tolist() == [ch.isspace() for ch in chars]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranks_within_texts_match_ranks_from_scores(dtype):
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 30, 200)
    group = np.repeat(np.arange(len(sizes)), sizes)
    keys = np.round(rng.normal(size=len(group)), 1)
    keys[rng.random(len(keys)) < 0.05] = np.nan
    keys[rng.random(len(keys)) < 0.05] = -0.0
    keys[rng.random(len(keys)) < 0.02] = np.inf
    keys[rng.random(len(keys)) < 0.02] = -np.inf
    keys = keys.astype(dtype)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    ranks = augment_engine.ranks_by_group(keys, starts)
    for g in range(len(sizes)):
        assert ranks[starts[g] : starts[g + 1]].tolist() == ranks_from_scores(keys[starts[g] : starts[g + 1]]).tolist()


class _WrapperWithoutBackend:
    """A tokenizer that only offers the Hugging Face call (no Rust ``_tokenizer``): the fallback path."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, *args, **kwargs):
        return self.tok(*args, **kwargs)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_encoding_matches_the_tokenizer_call(kind, request):
    """The direct Rust call gives the ids, offsets and special-token flags of ``tokenizer(...)``."""
    tok = load_tokenizer(str(request.getfixturevalue(kind)))
    for prefix in ("", "Text: "):
        enc = tok([prefix + t for t in TRICKY], add_special_tokens=True, return_offsets_mapping=True,
                  return_special_tokens_mask=True)
        expected = []
        for ids, offsets, special in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
            offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            ranked = ~np.asarray(special, dtype=bool) & (offsets[:, 1] > len(prefix))
            spans = np.where(ranked[:, None], np.maximum(offsets, len(prefix)) - len(prefix), -1)
            expected.append((ids, spans.tolist(), ranked.tolist()))
        for source in (tok, _WrapperWithoutBackend(tok)):
            got = [(e.input_ids.tolist(), e.char_spans.tolist(), e.ranked.tolist()) for e in encode_many(source, TRICKY, prefix)]
            assert got == expected
    tok._tokenizer.enable_truncation(max_length=4)  # a backend the wrapper would reconfigure: use the wrapper
    assert [len(e.input_ids) for e in encode_many(tok, TRICKY)] == [len(ids) for ids in tok(TRICKY)["input_ids"]]


def test_a_dump_tokenised_differently_is_refused_naming_the_text(small_model, tmp_path):
    tok = load_tokenizer(str(small_model))
    data = tmp_path / "tricky.csv"
    pd.DataFrame({"text": TRICKY}).to_csv(data, index=False)
    path = _hand_dump(tok, TRICKY, data, tmp_path / "dump")
    dump = AttentionDump.load(path)
    dump.input_ids[dump.offsets[2] + 1] += 1
    dump.save(tmp_path / "bad")  # keeps the tokens_sha256 of the unedited arrays, which no longer matches
    with pytest.raises(InputError, match="text 2 was tokenised differently"):
        data_augmentation("attention", 0.7, 0.05, 2, str(small_model), data, tmp_path / "o", tmp_path / "bad")
    assert not (tmp_path / "o.csv").exists()


def _no_tokenising(*args, **kwargs):
    raise AssertionError("tokenised the dataset although the dump's tokens could be reused")


def test_the_dump_tokens_are_reused_when_tokens_sha256_matches_and_give_the_same_csv(small_model, bios, dumps,
                                                                                   tmp_path, monkeypatch):
    tok = load_tokenizer(str(small_model))
    dump = AttentionDump.load(dumps["small"])
    reused = ranking_inputs.dump_tokens(dump, tok)
    fresh = encode_many(tok, load_texts(bios))
    assert reused is not None and len(reused) == len(fresh)
    for i, enc in enumerate(fresh):
        assert reused[i].input_ids.tolist() == enc.input_ids.tolist()
        assert reused[i].char_spans.tolist() == enc.char_spans.tolist()
        assert reused[i].ranked.tolist() == enc.ranked.tolist()
    del dump.metadata["tokens_sha256"]  # an older dump: stage 3 tokenises the dataset again
    dump.save(tmp_path / "no_hash")
    slow = data_augmentation("attention", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "slow", tmp_path / "no_hash")
    monkeypatch.setattr(ranking_inputs, "encode_batch", _no_tokenising)
    fast = data_augmentation("attention", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "fast", dumps["small"])
    assert fast.read_bytes() == slow.read_bytes()
    with pytest.raises(AssertionError, match="tokenised the dataset"):
        data_augmentation("attention", 0.7, 0.05, 3, str(small_model), bios, tmp_path / "o", tmp_path / "no_hash")


def test_tokens_sha256_changes_with_the_tokenizer_the_prefix_the_dataset_and_every_array(small_model, gemma_model,
                                                                                         word_model):
    toks = {kind: load_tokenizer(str(path)) for kind, path in
            [("bpe", small_model), ("unigram", gemma_model), ("word", word_model)]}
    assert len({tokenizer_sha256(tok) for tok in toks.values()}) == 3
    tok = toks["bpe"]
    enc = EncodedBatch.of(encode_many(tok, TRICKY[:4]))
    arrays = (enc.offsets, enc.input_ids, enc.char_spans, enc.ranked)
    base = tokens_sha256(tok, "", "d", *arrays)
    assert base == tokens_sha256(load_tokenizer(str(small_model)), "", "d", *arrays)  # same definition, same hash
    changed = {tokens_sha256(toks["word"], "", "d", *arrays), tokens_sha256(tok, "Text: ", "d", *arrays),
               tokens_sha256(tok, "", "e", *arrays)}
    for k in range(4):
        edited = [a.copy() for a in arrays]
        edited[k].reshape(-1)[1] ^= 1  # one value of one array
        changed.add(tokens_sha256(tok, "", "d", *edited))
    assert base not in changed and len(changed) == 7


def test_survival_is_the_share_of_copies_that_keep_each_tagged_value(small_model, bios, tmp_path):
    out = data_augmentation("random", 0.3, 0.0, 4, small_model, bios, tmp_path / "aug", seed=5)
    record = json.loads((tmp_path / "aug.json").read_text())
    rows = pd.read_csv(out, dtype={"text": str}, keep_default_na=False)
    from elusive.text.data import load_tagged

    tagged = load_tagged(bios)
    copies = rows[rows["copy"] > 0]
    expected = {}
    for field in ("name", "date", "city", "university", "major", "company"):
        kept = [dict((s.field, s.value) for s in tagged[r.source_row][1])[field] in r.text for r in copies.itertuples()]
        expected[field] = sum(kept) / len(kept)
    assert record["survival"] == expected
    assert 0 < expected["name"] < 1 and record["expected_drop_rate"] == 0.3
    assert abs(record["drop_rate"] - 0.3) < 0.05  # ~1,900 draws around 0.3
    none = data_augmentation("random", 0.0, 0.0, 2, small_model, bios, tmp_path / "none", seed=5)
    kept_all = json.loads((tmp_path / "none.json").read_text())
    assert kept_all["drop_rate"] == 0.0 and set(kept_all["survival"].values()) == {1.0}
    assert none.is_file()
