"""Stage 1: the received-attention score, by hand, against a brute-force reference, and as a file."""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
import pytest
import torch
from helpers.stages import save_attention
from transformers import AutoModelForCausalLM

from elusive.attention import kernel as attention_kernel
from elusive.attention import scores as attention_scores
from elusive.attention.dump import AttentionDump
from elusive.attention.released import score_released
from elusive.attention.scores import finish_scores, reduce_attention, score_batch, select_layers
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.text.data import load_texts
from elusive.text.tokens import encode_many

A = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])


def test_received_score_on_a_3x3_attention_matrix_by_hand():
    sums = reduce_attention(A[None, None], torch.ones(1, 3), "received")
    scores = finish_scores(sums, torch.tensor([3]), "received")
    # column sums 1.7, 0.8, 0.5 over 3, 2, 1 query rows i >= j
    assert torch.allclose(scores[0], torch.tensor([1.7 / 3, 0.4, 0.5]))


def test_released_score_is_one_over_position_plus_one():
    sums = reduce_attention(A[None, None], torch.ones(1, 3), "released")
    scores = finish_scores(sums, torch.tensor([3]), "released")
    assert torch.allclose(scores[0], torch.tensor([1.0, 1 / 2, 1 / 3]))


def test_heads_are_averaged_and_padded_query_rows_ignored():
    other = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    weights = torch.stack([A, other])[None]  # [1, 2 heads, 3, 3]
    sums = reduce_attention(weights, torch.ones(1, 3), "received")
    assert torch.allclose(sums[0], (A.sum(0) + other.sum(0)) / 2)
    # second sequence: 2 real tokens + 1 pad whose (garbage) query row must not count
    garbage = torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [0.3, 0.3, 0.4]])
    sums = reduce_attention(garbage[None, None], torch.tensor([[1, 1, 0]]), "received")
    scores = finish_scores(sums, torch.tensor([2]), "received")
    assert torch.allclose(scores[0, :2], torch.tensor([1.4 / 2, 0.6]))


def _reference_scores(model_dir, text, layers=None):
    """Brute force: the full attention tensors from transformers' own output_attentions path."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = load_tokenizer(str(model_dir))
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        atts = model(ids, output_attentions=True).attentions
    chosen = range(len(atts)) if layers is None else layers
    mean = torch.stack([atts[i][0].mean(0) for i in chosen]).mean(0)  # [n, n]
    n = mean.shape[0]
    return np.array([mean[j:, j].mean().item() for j in range(n)])


@pytest.mark.parametrize("block", [128, 16])
@pytest.mark.parametrize("fixture", ["small_model", "gemma_model"])
def test_hooked_scores_match_brute_force_attention(request, fixture, bios, block, monkeypatch):
    """Against transformers' own output_attentions, with one query block and with several (the Gemma fixture's
    sliding window is 16 tokens)."""
    monkeypatch.setattr(attention_kernel, 'QUERY_BLOCK', block)
    model_dir = request.getfixturevalue(fixture)
    text = load_texts(bios)[0]
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = torch.tensor([load_tokenizer(str(model_dir))(text)["input_ids"]])
    for layers in (None, [-1]):
        chosen = select_layers(layers, model.config.num_hidden_layers)
        ours = score_batch(model, ids, torch.ones_like(ids), chosen)[0][0].numpy()
        ref = _reference_scores(model_dir, text, None if layers is None else chosen)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("fixture", "softcap"), [("small_model", None), ("gemma_model", None), ("gemma_model", 0.5)])
def test_blocked_attention_gives_the_eager_scores_and_rows_on_a_padded_batch(request, fixture, softcap, bios,
                                                                            monkeypatch):
    """Texts of different lengths in one right-padded batch, both aggregates, focus rows, blocks of 8 queries,
    and (for soft-capping) a Gemma attention whose logits are capped: the same numbers as eager + hook."""
    model_dir = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    encoded = encode_many(load_tokenizer(str(model_dir)), load_texts(bios)[:3])
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.zeros((3, width), dtype=torch.long)
    mask = torch.zeros((3, width), dtype=torch.long)
    for row, enc in enumerate(encoded):
        ids[row, : len(enc.input_ids)] = torch.from_numpy(enc.input_ids)
        mask[row, : len(enc.input_ids)] = 1
    focus = [(0, 5), (2, len(encoded[2].input_ids) - 1), (1, 20)]
    if softcap is not None:  # Gemma 2 caps attention logits inside the family's eager function: so do we here
        uncapped = score_batch(model, ids, mask, [0, 1], blocked=False)[0]
        family = sys.modules[type(attention_scores.attention_modules(model)[0]).__module__]
        monkeypatch.setattr(family, "eager_attention_forward",
                            functools.partial(family.eager_attention_forward, softcap=softcap))
        assert not torch.allclose(uncapped, score_batch(model, ids, mask, [0, 1], blocked=False)[0], atol=1e-4)
    calls = []
    family = attention_kernel.family_eager(attention_scores.attention_modules(model)[0])

    def counted(module, query, key, *args, **kwargs):
        calls.append((query.shape[2], key.shape[2]))
        return family(module, query, key, *args, **kwargs)

    monkeypatch.setattr(attention_kernel, 'QUERY_BLOCK', 8)
    monkeypatch.setattr(attention_kernel, 'family_eager', lambda module: counted)
    for aggregate in ("received", "released"):
        chosen = select_layers(None, model.config.num_hidden_layers)
        blocked, blocked_rows = score_batch(model, ids, mask, chosen, aggregate, focus)
        eager, eager_rows = score_batch(model, ids, mask, chosen, aggregate, focus, blocked=False)
        real = mask.bool()
        np.testing.assert_allclose(blocked[real].numpy(), eager[real].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(blocked_rows.numpy(), eager_rows.numpy(), rtol=1e-5, atol=1e-7)
    assert model.config._attn_implementation == "eager"  # switched back after each batch
    assert len(calls) == 2 * model.config.num_hidden_layers * -(-width // 8)  # every layer, block by block
    assert min(k for _, k in calls) <= 8 < width == max(k for _, k in calls)  # early blocks see fewer keys


@pytest.mark.parametrize("fixture", ["small_model", "gemma_model"])
def test_batched_released_scores_and_rows_equal_the_released_replay(request, fixture, bios, monkeypatch):
    """The batched scorer's aggregate=released (bench/bench_extraction.py --aggregate released times it) against
    score_released, the one-text-at-a-time replay stage 1 runs for released, both in float32: right-padded batches
    of 1 and 3 texts, blocks of 8 queries and the eager hook, all layers and the last one, focus rows."""
    model_dir = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = load_tokenizer(str(model_dir))
    encoded = encode_many(tok, load_texts(bios)[:5])
    focus = [[2, len(e.input_ids) // 2, len(e.input_ids) - 1] for e in encoded]
    monkeypatch.setattr(attention_kernel, "QUERY_BLOCK", 8)
    n_layers = model.config.num_hidden_layers
    for layers in (select_layers(None, n_layers), select_layers([-1], n_layers)):
        want, want_rows = score_released(model, encoded, layers, focus)
        for blocked in (True, False):
            monkeypatch.setattr(attention_scores, "blocked_available", lambda model, modules, on=blocked: on)
            for batch_size in (1, 3):
                got, got_rows = attention_scores.score_texts(model, encoded, layers, "released", batch_size, tok.pad_token_id,
                                                      focus)
                for t in range(len(encoded)):
                    assert len(got[t]) == len(encoded[t].input_ids)
                    np.testing.assert_allclose(got[t], want[t], rtol=1e-5, atol=1e-7)
                    assert len(got_rows[t]) == len(want_rows[t]) == 3
                    for g, w in zip(got_rows[t], want_rows[t]):
                        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_received_scores_carry_all_attention_mass(small_model, bios, tmp_path):
    """Every query row sums to 1, so sum_j score_j * (n - j) = n for each text."""
    dump = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "a", device="cpu"))
    for i in range(dump.n_texts):
        s = dump.scores[dump.text_slice(i)].astype(np.float64)
        n = len(s)
        assert np.isclose((s * (n - np.arange(n))).sum(), n, rtol=1e-5)


def test_scores_do_not_depend_on_batch_size(small_model, bios, tmp_path):
    one = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "b1", batch_size=1, device="cpu"))
    many = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "b5", batch_size=5, device="cpu"))
    np.testing.assert_array_equal(one.input_ids, many.input_ids)
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-5, atol=1e-7)


def test_same_inputs_give_byte_identical_dumps(small_model, bios, tmp_path):
    a = save_attention(str(small_model), bios, tmp_path / "x", device="cpu")
    b = save_attention(str(small_model), bios, tmp_path / "y", device="cpu")
    assert a.read_bytes() == b.read_bytes()


def test_two_models_give_different_scores(small_model, large_model, bios, tmp_path):
    small = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "s", device="cpu"))
    large = AttentionDump.load(save_attention(str(large_model), bios, tmp_path / "l", device="cpu"))
    np.testing.assert_array_equal(small.input_ids, large.input_ids)
    assert np.abs(small.scores - large.scores).max() > 1e-2
    # and neither is the content-free 1/(i+1) profile
    released = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "r", aggregate="released", device="cpu"))
    assert not np.allclose(small.scores, released.scores, atol=1e-3)


def test_released_aggregate_on_a_real_forward_is_position_only(small_model, large_model, bios, tmp_path):
    """In float32 the released score is 1/(i+1) up to rounding, whatever the model (tests/attention/test_released.py: bf16)."""
    for i, model in enumerate((small_model, large_model)):
        dump = AttentionDump.load(save_attention(str(model), bios, tmp_path / f"r{i}", aggregate="released",
                                                 dtype="float32", device="cpu"))
        for t in range(dump.n_texts):
            s = dump.scores[dump.text_slice(t)]
            np.testing.assert_allclose(s, 1.0 / (np.arange(len(s)) + 1), rtol=1e-5)


def test_dump_layout_and_metadata(small_model, bios, tmp_path):
    path = save_attention(str(small_model), bios, tmp_path / "m", device="cpu", layers=[0, -1], text_prefix="Text: ")
    assert path.name == "m.safetensors"
    dump = AttentionDump.load(path)
    texts = load_texts(bios)
    assert dump.n_texts == len(texts) and dump.offsets[0] == 0 and dump.offsets[-1] == len(dump.scores)
    assert dump.scores.dtype == np.float32 and dump.input_ids.dtype == np.int64
    meta = dump.metadata
    assert meta["kind"] == "attention" and meta["aggregate"] == "received"
    assert json.loads(meta["layers"]) == [0, 1] and json.loads(meta["text_prefix"]) == "Text: "
    assert len(meta["dataset_sha256"]) == 64 and len(meta["vocab_sha256"]) == 64 and meta["dtype"] == "float32"


@pytest.mark.parametrize("fixture", ["small_model", "gemma_model", "word_model"])
def test_token_spans_map_back_to_the_text(request, fixture, bios):
    """Prefix and special tokens are never ranked; the ranked tokens' spans cover the text's words."""
    tok = load_tokenizer(str(request.getfixturevalue(fixture)))
    texts = load_texts(bios)
    for text, enc in zip(texts, encode_many(tok, texts, "Text: ")):
        spans = enc.char_spans[enc.ranked]
        assert (spans[:, 0] >= 0).all() and (spans[:, 1] <= len(text)).all()
        assert (np.diff(spans[:, 0]) >= 0).all()
        covered = np.zeros(len(text), dtype=bool)
        for s, e in spans:
            covered[s:e] = True
        assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
        assert (enc.char_spans[~enc.ranked] == -1).all()
        first = int(np.flatnonzero(enc.ranked)[0])
        assert enc.ranked[first:].all()  # after the prefix every token is the text's own
        # the tokens before the text are the prefix's, all of them and no more: "Text:" tokenised alone (with the
        # special tokens the tokenizer adds in front); the space before the text goes with its first word
        assert first > 0 and enc.input_ids[:first].tolist() == tok("Text:")["input_ids"]
        assert enc.char_spans[first, 0] == 0


def test_bad_inputs_are_refused_before_writing(small_model, bios, tmp_path):
    with pytest.raises(InputError, match="aggregate=mean: unknown"):
        save_attention(str(small_model), bios, tmp_path / "o", aggregate="mean")
    with pytest.raises(InputError, match="layers="):
        save_attention(str(small_model), bios, tmp_path / "o", layers=[7], device="cpu")
    with pytest.raises(InputError, match="dataset="):
        save_attention(str(small_model), tmp_path / "missing.csv", tmp_path / "o")
    with pytest.raises(InputError, match="model="):
        save_attention(str(tmp_path / "no-such-model"), bios, tmp_path / "o")
    assert not list(tmp_path.glob("o*"))
