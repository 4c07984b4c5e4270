"""Faithful to the released code, with the controls that separate attention from position.

* ``aggregate=released`` computes the released code's scores with its arithmetic (bf16, layers and heads
  averaged in bf16, rows of the lower triangle summed, divided by i + 1), and stage 3 ranks a released
  contrast as the released code did (``numpy.argsort(d)[::-1]`` over all tokens): checked against a
  transcription of that arithmetic written here, token for token.
* ``augment_type=position`` (rank 0 = the last droppable token) and ``aggregate=sum`` by hand.
* Contrasts of dumps made differently, or of a dump with itself, are refused.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.reference import droppable_tokens
from helpers.run import ROOT
from helpers.stages import contrast_attention, data_augmentation, save_attention
from transformers import AutoModelForCausalLM

from elusive.attention.dump import AttentionDump
from elusive.augment.stage import DropSettings, drop_plan, released_ranks
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.text.data import load_texts
from elusive.text.tokens import EncodedBatch, encode, encode_many


def transcribed_released_scores(model_dir, texts):
    """The released code's stage 1, transcribed: bf16 model, eager attention, one text at a time."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="eager")
    tok = load_tokenizer(str(model_dir))
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok(text)["input_ids"]])
            attentions = model(ids, output_attentions=True).attentions
            average = torch.tril(torch.stack(attentions).mean(dim=(0, 1, 2)))
            out.append((average.sum(dim=-1) / torch.arange(1, average.size(-1) + 1).to(average)).float().numpy())
    return out


def test_released_scores_and_ranking_equal_the_transcription(small_model, large_model, bios, tmp_path):
    texts = load_texts(bios)
    small = save_attention(small_model, bios, tmp_path / "small", aggregate="released", device="cpu")
    large = save_attention(large_model, bios, tmp_path / "large", aggregate="released", device="cpu")
    diff = AttentionDump.load(contrast_attention(large, small, tmp_path / "diff"))
    assert AttentionDump.load(small).metadata["dtype"] == "bfloat16"  # dtype=auto means bf16 with this aggregate
    assert diff.metadata["aggregate"] == "released"
    want_small = transcribed_released_scores(small_model, texts)
    want_large = transcribed_released_scores(large_model, texts)
    tok = load_tokenizer(str(small_model))
    zeros = total = 0
    for i, text in enumerate(texts):
        d = want_large[i] - want_small[i]
        np.testing.assert_array_equal(diff.scores[diff.text_slice(i)], d)  # bit for bit
        zeros, total = zeros + int((d == 0).sum()), total + len(d)
        # stage 3's ranks of the droppable tokens are their places in argsort(d)[::-1] over all tokens: with
        # released_ties=numpy this machine's numpy.argsort itself, by default a stable sort's (ties: later first)
        enc = encode(tok, text)
        for ties, kind in (("numpy", None), ("position", "stable")):
            order = np.argsort(d, kind=kind)[::-1]
            released_rank = {int(pos): rank for rank, pos in enumerate(order)}
            plan = drop_plan([text], EncodedBatch.of([enc]), d,
                             DropSettings("attention_diff", 0.7, 0.05, released=True, ties=ties))
            assert plan.candidates.tolist() == droppable_tokens(text, enc).tolist()
            assert plan.ranks.tolist() == [released_rank[int(c)] for c in plan.candidates]
    assert zeros / total > 0.9  # as measured on real models (99.4 %): the released contrast is exactly 0 mostly


def test_an_all_zero_released_contrast_ranks_in_reverse_position():
    """Equal scores keep their order in the ascending sort; reversed, the last token gets rank 0 (numpy's default
    sort does the same for arrays this short). Hand-computed: 5 tokens, 3 candidates (tokens 1, 2, 4)."""
    scores = np.zeros(5, dtype=np.float32)
    for ties in ("position", "numpy"):
        ranks = released_ranks(scores, np.array([0, 5]), np.array([1, 2, 4]), np.array([0, 3]), ties)
        assert ranks.tolist() == [3, 2, 0]
    scores[2] = 1e-3  # ascending order 0 1 3 4 2, reversed 2 4 3 1 0: token 2 rank 0, token 4 rank 1, token 1 rank 3
    assert released_ranks(scores, np.array([0, 5]), np.array([1, 2, 4]), np.array([0, 3])).tolist() == [3, 0, 1]


def test_released_ties_by_position_by_hand_over_two_texts():
    """Two texts (tokens 0-3 and 4-8), every token a candidate; -0.0 is the same score as 0.0."""
    scores = np.array([0, 2, -0.0, 0, 0, -1, 0, 3, 0], dtype=np.float32)
    ranks = released_ranks(scores, np.array([0, 4, 9]), np.arange(9), np.array([0, 4, 9]))
    # text 0: 2 first (token 1), then the zeros 3, 2, 0 (later first); text 1: 3 (token 7), zeros 8, 6, 4, then -1
    assert ranks.tolist() == [3, 0, 2, 1, 3, 4, 2, 0, 1]


SIMD_SCRIPT = """
import hashlib, sys
from pathlib import Path
from elusive.core.config import DataAugmentationConfig
from elusive.augment.stage import data_augmentation
from elusive.core.provenance import numpy_simd
model, bios, diff, out = sys.argv[1:5]
sums = []
for ties in ("position", "numpy"):
    cfg = DataAugmentationConfig(model=model, dataset=bios, attn_weights=diff, save_name=f"{out}-{ties}", alpha=0.9,
                                 beta=0.05, multiply=5, released_ties=ties)
    sums.append(hashlib.sha256(data_augmentation(cfg).read_bytes()).hexdigest())
print(numpy_simd(), *sums)
"""


def test_the_released_replay_gives_the_same_bytes_at_every_numpy_simd_level(small_model, large_model, bios, tmp_path):
    """Stage 3 on a released contrast (exactly 0 almost everywhere) in subprocesses with numpy forced down to each
    SIMD level this CPU has (NPY_DISABLE_CPU_FEATURES): the default ties give one CSV at every level; numpy's own
    order (released_ties=numpy) is what differed between levels (docs/differences.md)."""
    import os
    import subprocess
    import sys

    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    small = save_attention(small_model, bios, tmp_path / "small", aggregate="released", device="cpu")
    large = save_attention(large_model, bios, tmp_path / "large", aggregate="released", device="cpu")
    diff = contrast_attention(large, small, tmp_path / "diff")
    usable = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    seen = {}
    for k in range(len(usable) + 1):  # the best level, then one fewer at a time, down to numpy's baseline
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__[len(usable) - k:] if k else ())}
        out = subprocess.run([sys.executable, "-c", SIMD_SCRIPT, str(small_model), str(bios), str(diff),
                              str(tmp_path / f"aug{k}")], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        level, position, numpy_order = out.stdout.split()
        seen[level] = (position, numpy_order)
        record = json.loads((tmp_path / f"aug{k}-position.json").read_text())
        assert record["numpy_simd"] == level and record["released_ties"] == "position"
        assert json.loads((tmp_path / f"aug{k}-numpy.json").read_text())["ranking"].startswith("released (numpy")
    assert len(seen) == len(usable) + 1  # every forced level really was a different one
    assert len({position for position, _ in seen.values()}) == 1  # identical bytes at every level
    if len(seen) > 1 and "baseline" in seen:  # numpy 2.4's baseline sort orders the ties otherwise: the test bites
        assert len({numpy_order for _, numpy_order in seen.values()}) > 1


def test_released_augmentation_records_the_ranking_and_numpy(small_model, large_model, bios, tmp_path):
    small = save_attention(small_model, bios, tmp_path / "small", aggregate="released", device="cpu")
    large = save_attention(large_model, bios, tmp_path / "large", aggregate="released", device="cpu")
    diff = contrast_attention(large, small, tmp_path / "diff")
    out = data_augmentation("attention_diff", 0.9, 0.05, 30, small_model, bios, tmp_path / "aug", diff)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["ranking"].startswith("released") and record["numpy"] == np.__version__
    # the released ranking keeps the end of each biography: its last word survives far more often than its first
    frame = pd.read_csv(out, keep_default_na=False)
    texts = load_texts(bios)
    copies = frame[frame["copy"] > 0]
    first = np.mean([t.split()[0] in c for t, c in zip([texts[r] for r in copies["source_row"]], copies["text"])])
    last = np.mean([t.split()[-1].rstrip(".") in c for t, c in zip([texts[r] for r in copies["source_row"]],
                                                                    copies["text"])])
    assert last > first + 0.2


def test_position_ranks_the_last_droppable_token_first_by_hand(word_model):
    tok = load_tokenizer(str(word_model))
    text = "Ann Lee was born in Oslo ."
    enc = encode(tok, text)  # one token per word; "." is never droppable
    plan = drop_plan([text], EncodedBatch.of([enc]), None, DropSettings("position", 0.8, 0.1))
    words = [text[s:e] for s, e in enc.char_spans[plan.candidates]]
    assert words == ["Ann", "Lee", "was", "born", "in", "Oslo"]
    assert plan.ranks.tolist() == [5, 4, 3, 2, 1, 0]
    assert plan.p[-1] == 0.0 and plan.p[0] == pytest.approx(0.8 * (1 - np.exp(-0.5)))


def test_shuffled_ranking_of_a_text_does_not_depend_on_the_others(small_model, bios):
    tok = load_tokenizer(str(small_model))
    texts = load_texts(bios)
    batch = EncodedBatch.of(encode_many(tok, texts))
    settings = DropSettings("shuffled", 0.7, 0.05, seed=5)
    whole = drop_plan(texts, batch, None, settings)
    for i in (0, 3, len(texts) - 1):
        alone = drop_plan([texts[i]], EncodedBatch.of([batch[i]]), None, settings, first_text=i)
        assert alone.ranks.tolist() == whole.ranks[whole.starts[i] : whole.starts[i + 1]].tolist()
    other = drop_plan(texts, batch, None, DropSettings("shuffled", 0.7, 0.05, seed=6))
    assert other.ranks.tolist() != whole.ranks.tolist()


def test_sum_is_received_times_the_number_of_later_queries(small_model, bios, tmp_path):
    received = AttentionDump.load(save_attention(small_model, bios, tmp_path / "r", device="cpu"))
    summed = AttentionDump.load(save_attention(small_model, bios, tmp_path / "s", aggregate="sum", device="cpu"))
    for i in range(received.n_texts):
        r, s = received.scores[received.text_slice(i)], summed.scores[summed.text_slice(i)]
        n = len(r)
        np.testing.assert_allclose(s, r * (n - np.arange(n)), rtol=1e-5)
        assert s.sum() == pytest.approx(n, rel=1e-5)  # every query row gives 1 in all


def test_contrasts_of_differently_made_dumps_are_refused(small_model, large_model, bios, tmp_path):
    small = save_attention(small_model, bios, tmp_path / "small", device="cpu")
    cases = {
        "aggregate": save_attention(large_model, bios, tmp_path / "sum", aggregate="sum", device="cpu"),
        "layers": save_attention(large_model, bios, tmp_path / "last", layers=[-1], device="cpu"),
        "text_prefix": save_attention(large_model, bios, tmp_path / "prefix", text_prefix="Text: ", device="cpu"),
        "dtype": save_attention(large_model, bios, tmp_path / "bf16", dtype="bfloat16", device="cpu"),
    }
    for key, large in cases.items():
        with pytest.raises(InputError, match=rf"were extracted with different {key} \("):
            contrast_attention(large, small, tmp_path / "diff")
    with pytest.raises(InputError, match="are the same model's scores"):
        contrast_attention(small, small, tmp_path / "diff")
    assert not (tmp_path / "diff.safetensors").exists()


QWEN_SMALL, QWEN_LARGE = (ROOT / "models" / f"qwen2.5-coder-{s}" for s in ("0.5b", "1.5b"))


@pytest.mark.slow
@pytest.mark.skipif(not (QWEN_SMALL / "config.json").is_file() or not (QWEN_LARGE / "config.json").is_file(),
                    reason="make models-qwen first")
def test_the_released_contrast_of_the_qwen_pair_is_zero_almost_everywhere(tmp_path):
    """The measured fact behind docs/differences.md: on Qwen2.5-Coder 1.5B − 0.5B (8 biographies, bf16) the
    released difference is exactly 0 at ≥ 99 % of positions, and stage 3's ranking is the transcription's."""
    data = tmp_path / "bios8.csv"
    pd.read_csv(ROOT / "data" / "biography.csv").head(8).to_csv(data, index=False)
    small = save_attention(QWEN_SMALL, data, tmp_path / "small", aggregate="released", device="cpu", batch_size=1)
    large = save_attention(QWEN_LARGE, data, tmp_path / "large", aggregate="released", device="cpu", batch_size=1)
    diff = AttentionDump.load(contrast_attention(large, small, tmp_path / "diff"))
    assert (diff.scores == 0).mean() >= 0.99
    tok = load_tokenizer(str(QWEN_SMALL))
    for i, text in enumerate(load_texts(data)):
        d = diff.scores[diff.text_slice(i)]
        rank_of = np.empty(len(d), dtype=np.int64)
        rank_of[np.argsort(d, kind="stable")[::-1]] = np.arange(len(d))  # released_ties=position
        enc = encode(tok, text)
        plan = drop_plan([text], EncodedBatch.of([enc]), d, DropSettings("attention_diff", 0.7, 0.05, released=True))
        assert plan.ranks.tolist() == rank_of[plan.candidates].tolist()
        # nearly reverse position: the last droppable token ranks before the first
        assert plan.ranks[-1] < plan.ranks[0]
