"""Stage 2: the difference is large − small, token by token, and mismatched dumps are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from elusive.artifacts import AttentionDump
from elusive.attention import save_attention
from elusive.contrast import contrast_attention
from elusive.errors import InputError


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


def test_different_datasets_or_tokenizers_are_refused(small_model, large_model, word_model, bios, tmp_path):
    other = tmp_path / "other.csv"
    pd.read_csv(bios).head(4).to_csv(other, index=False)
    small = save_attention(str(small_model), bios, tmp_path / "small", device="cpu")
    large_other = save_attention(str(large_model), other, tmp_path / "large_other", device="cpu")
    with pytest.raises(InputError, match="attn_dump_large=.*large_other.*attn_dump_small=.*small.*different datasets"):
        contrast_attention(large_other, small, tmp_path / "diff")
    word = save_attention(str(word_model), bios, tmp_path / "word", device="cpu")
    with pytest.raises(InputError, match="different tokenizers"):
        contrast_attention(word, small, tmp_path / "diff")
    prefixed = save_attention(str(large_model), bios, tmp_path / "prefixed", device="cpu", text_prefix="Text: ")
    with pytest.raises(InputError, match="text_prefix"):
        contrast_attention(prefixed, small, tmp_path / "diff")
    with pytest.raises(InputError, match="attn_dump_small=.*no attention dump"):
        contrast_attention(small, tmp_path / "missing", tmp_path / "diff")
    assert not (tmp_path / "diff.safetensors").exists()
