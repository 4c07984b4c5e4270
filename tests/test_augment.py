"""Stage 3: the drop schedule by hand, the augmentation's properties, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from elusive.artifacts import AttentionDump
from elusive.attention import save_attention
from elusive.augment import (
    augment_text,
    data_augmentation,
    drop_probabilities,
    ranks_from_scores,
    remove_spans,
)
from elusive.contrast import contrast_attention
from elusive.data import load_texts
from elusive.errors import InputError
from elusive.models import load_tokenizer
from elusive.tokens import encode, is_droppable


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


def test_alpha_zero_changes_nothing_and_random_alpha_one_drops_every_word(small_model, bios, tmp_path):
    texts = load_texts(bios)
    frame = _copies(data_augmentation("random", 0.0, 0.05, 2, str(small_model), bios, tmp_path / "a0"))
    assert (frame["text"] == [texts[i] for i in frame["source_row"]]).all()
    frame = _copies(data_augmentation("random", 1.0, 0.05, 1, str(small_model), bios, tmp_path / "a1"))
    for text in frame[frame["copy"] == 1]["text"]:
        assert not any(ch.isalnum() for ch in text)  # only punctuation survives
        assert text.count(".") >= 5  # ... and all of it does


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
