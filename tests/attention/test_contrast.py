"""Stage 2: the difference is large − small, token by token, and mismatched dumps are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers.stages import contrast_attention, data_augmentation, save_attention

from elusive.attention.dump import AttentionDump
from elusive.core.errors import InputError
from elusive.text.align import project, word_spans
from elusive.text.data import load_texts


def test_difference_is_large_minus_small(small_model, large_model, bios, tmp_path):
    small = save_attention(str(small_model), bios, tmp_path / "small", device="cpu")
    large = save_attention(str(large_model), bios, tmp_path / "large", device="cpu")
    path = contrast_attention(large, small, tmp_path / "diff")
    diff, s, l = AttentionDump.load(path), AttentionDump.load(small), AttentionDump.load(large)
    np.testing.assert_array_equal(diff.scores, l.scores - s.scores)
    np.testing.assert_array_equal(diff.input_ids, s.input_ids)
    np.testing.assert_array_equal(diff.offsets, s.offsets)
    assert diff.metadata["kind"] == "attention_diff"
    assert diff.metadata["large"].endswith("large.safetensors") and diff.metadata["small"].endswith("small.safetensors")
    assert diff.metadata["dataset_sha256"] == s.metadata["dataset_sha256"]
    again = contrast_attention(large, small, tmp_path / "again")
    assert again.read_bytes() == path.read_bytes()  # same inputs, same bytes


def test_different_datasets_or_tokenizers_are_refused(small_model, large_model, word_model, bios, tmp_path):
    other = tmp_path / "other.csv"
    pd.read_csv(bios).head(4).to_csv(other, index=False)
    small = save_attention(str(small_model), bios, tmp_path / "small", device="cpu")
    large_other = save_attention(str(large_model), other, tmp_path / "large_other", device="cpu")
    with pytest.raises(InputError, match="attn_dump_large=.*large_other.*attn_dump_small=.*small.*different datasets"):
        contrast_attention(large_other, small, tmp_path / "diff")
    prefixed = save_attention(str(large_model), bios, tmp_path / "prefixed", device="cpu", text_prefix="Text: ")
    with pytest.raises(InputError, match="text_prefix"):
        contrast_attention(prefixed, small, tmp_path / "diff")
    with pytest.raises(InputError, match="attn_dump_small=.*no attention dump"):
        contrast_attention(small, tmp_path / "missing", tmp_path / "diff")
    assert not (tmp_path / "diff.safetensors").exists()


def test_word_projection_by_hand():
    # text "Ann Lee." -> words "Ann" [0,3], "Lee" [4,7], "." [7,8]
    words = word_spans("Ann Lee.")
    assert words.tolist() == [[0, 3], [4, 7], [7, 8]]
    tokens = np.array([[-1, -1], [0, 2], [2, 3], [3, 7], [7, 8]])  # BOS, "An", "n", " Lee", "."
    scores = np.array([9.0, 0.2, 0.4, 0.5, 0.1], dtype=np.float32)
    valid = np.array([False, True, True, True, True])
    np.testing.assert_allclose(project(scores, tokens, words, valid), [0.3, 0.5, 0.1], rtol=1e-6)
    # and back onto another tokenizer's tokens: "Ann Lee" as one token gets the mean of its two words
    np.testing.assert_allclose(project(np.array([0.3, 0.5, 0.1]), words, np.array([[0, 7], [7, 8]])), [0.4, 0.1], rtol=1e-6)


def test_different_tokenizers_are_contrasted_word_by_word(small_model, gemma_model, word_model, bios, tmp_path):
    large = save_attention(str(gemma_model), bios, tmp_path / "gemma", device="cpu")
    small = save_attention(str(small_model), bios, tmp_path / "bpe", device="cpu")
    with pytest.raises(InputError, match="different tokenizers.*cross_tokenizer=true"):
        contrast_attention(large, small, tmp_path / "diff")
    assert not (tmp_path / "diff.safetensors").exists()
    path = contrast_attention(large, small, tmp_path / "diff", cross_tokenizer=True)
    diff, g, b = AttentionDump.load(path), AttentionDump.load(large), AttentionDump.load(small)
    assert diff.metadata["unit"] == "word" and diff.metadata["kind"] == "attention_diff"
    texts = load_texts(bios)
    for i, text in enumerate(texts):
        words = word_spans(text)
        sl = diff.text_slice(i)
        np.testing.assert_array_equal(diff.char_spans[sl], words)
        expected = project(g.scores[g.text_slice(i)], g.char_spans[g.text_slice(i)], words, g.ranked[g.text_slice(i)]) - project(
            b.scores[b.text_slice(i)], b.char_spans[b.text_slice(i)], words, b.ranked[b.text_slice(i)])
        np.testing.assert_allclose(diff.scores[sl], expected, rtol=1e-6)
    # the word-level contrast drives augmentation with any tokenizer, here a third one
    out = data_augmentation("attention_diff", 0.7, 0.05, 2, str(word_model), bios, tmp_path / "aug", path)
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == 3 * len(texts) and (frame[frame["copy"] == 0]["text"] == texts).all()


def test_figure_4_of_a_word_level_contrast_uses_the_projected_scores(small_model, gemma_model, word_model, bios,
                                                                    tmp_path):
    """Figure 4 calls stage 3's drop plan on stage 3's inputs, so a cross-tokenizer (word-level) contrast works:
    with the word-level tokenizer each token is a word, so its rank is the rank of its word's difference."""
    from helpers.stages import keep_probability

    from elusive.core.models import load_tokenizer
    from elusive.text.tokens import encode

    large = save_attention(str(gemma_model), bios, tmp_path / "gemma", device="cpu")
    small = save_attention(str(small_model), bios, tmp_path / "bpe", device="cpu")
    diff = contrast_attention(large, small, tmp_path / "diff", cross_tokenizer=True)
    keep_probability("attention_diff", 0.7, 0.05, str(word_model), bios, tmp_path / "fig4", rows=[2],
                     attn_weights=diff)
    table = pd.read_csv(tmp_path / "fig4.csv", keep_default_na=False)
    dump = AttentionDump.load(diff)
    text = load_texts(bios)[2]
    sl = dump.text_slice(2)
    word_score = {s: v for (s, _), v in zip(dump.char_spans[sl].tolist(), dump.scores[sl].tolist())}  # by start
    spans = encode(load_tokenizer(str(word_model)), text).char_spans
    ranked = table[table["rank"] != ""]
    assert len(ranked) > 10
    by_rank = ranked.assign(rank=ranked["rank"].astype(int)).sort_values("rank")
    scores = [word_score[int(spans[i, 0])] for i in by_rank["token_index"]]
    assert scores == sorted(scores, reverse=True)  # rank 0 = the largest word difference
    assert by_rank["keep_probability"].iloc[0] == 1.0


def test_which_model_is_larger_is_told_by_parameters_then_layers_or_warned(small_model, large_model, bios, tmp_path,
                                                                          caplog):
    """Parameters from the models' safetensors headers; when the models are gone, layers from dumps that averaged
    them all; when neither is known (models gone, layers chosen), a warning names both dumps."""
    import json
    import logging

    from elusive.attention.contrast import check_order, layer_count, parameter_count

    small = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "small", device="cpu"))
    large = AttentionDump.load(save_attention(str(large_model), bios, tmp_path / "large", device="cpu"))
    # hand-counted: embeddings + layers (4 attention projections, 3 MLP matrices, 2 norms) + final norm + LM head
    vocab = json.loads((small_model / "config.json").read_text())["vocab_size"]
    for model, hidden, layers in ((small_model, 32, 2), (large_model, 48, 3)):
        config = json.loads((model / "config.json").read_text())
        inter, kv = config["intermediate_size"], config["num_key_value_heads"] * hidden // config["num_attention_heads"]
        per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
        tied = config.get("tie_word_embeddings", False)
        assert parameter_count(str(model)) == vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden
    assert (layer_count(small), layer_count(large)) == (2, 3)
    check_order(large, small, "l", "s")  # the right way round: nothing to say
    gone = {"model": str(tmp_path / "moved")}
    with pytest.raises(InputError, match=r"the \"large\" model has fewer layers than the small one \(2 vs 3\)"):
        check_order(AttentionDump(**{**vars(small), "metadata": {**small.metadata, **gone}}),
                    AttentionDump(**{**vars(large), "metadata": {**large.metadata, **gone}}), "s", "l")
    chosen = {**gone, "layers_requested": "[-1]", "layers": "[1]"}
    with caplog.at_level(logging.WARNING):
        check_order(AttentionDump(**{**vars(large), "metadata": {**large.metadata, **chosen}}),
                    AttentionDump(**{**vars(small), "metadata": {**small.metadata, **chosen}}), "l", "s")
    assert caplog.messages == ["attn_dump_large=l and attn_dump_small=s: cannot tell which model is larger (the "
                               "models are not on this machine and the dumps did not average every layer); make "
                               "sure attn_dump_large is the larger model's"]
