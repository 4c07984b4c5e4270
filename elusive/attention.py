"""Stage 1: the attention each token *receives*, averaged over heads, chosen layers and later queries.

For a text of n tokens and an attention matrix A (rows = queries i, columns = keys j, causal, each row sums
to 1), averaged over heads and layers, the score of token j is

    received(j) = mean over i >= j of A[i, j] = sum_{i>=j} A[i, j] / (n - j)

``aggregate=released`` reproduces the paper's released code instead: it sums each attention *row*, which is
always 1, and divides by the row's length, so the score is 1 / (i + 1) whatever the model and text.

Each layer's B×H×n×n weights are reduced to B×n inside a forward hook as soon as they are produced, so
memory stays at one layer's attention; the LM head is never run. Texts are batched by similar length with
right padding: padded keys are masked, padded query rows are excluded, so scores do not depend on batching.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from elusive.artifacts import AttentionDump, sha256_file, vocab_sha256
from elusive.data import load_texts
from elusive.errors import InputError
from elusive.models import describe, load_model, load_tokenizer, model_device
from elusive.tokens import Encoded, encode_many

log = logging.getLogger(__name__)

AGGREGATES = ("received", "released")


def attention_modules(model: PreTrainedModel) -> list[torch.nn.Module]:
    """Return the self-attention module of every layer, in depth order.

    Found by class name (``...Attention``, e.g. ``LlamaAttention``, ``Gemma3Attention``) so any
    decoder-only architecture in transformers works without a per-family table.
    """
    modules = [m for m in model.modules() if type(m).__name__.endswith("Attention")]
    n_layers = model.config.get_text_config().num_hidden_layers
    if len(modules) != n_layers:
        raise InputError(
            f"model={model.name_or_path}: found {len(modules)} attention modules for {n_layers} layers; "
            "this architecture is not supported for attention extraction"
        )
    return modules


def select_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Normalise ``layers`` (None = all; negative indices count from the end) to sorted unique indices."""
    if layers is None:
        return list(range(n_layers))
    chosen = set()
    for layer in layers:
        if not -n_layers <= int(layer) < n_layers:
            raise InputError(f"layers={list(layers)}: layer {layer} does not exist (the model has {n_layers}); fix layers")
        chosen.add(int(layer) % n_layers)
    if not chosen:
        raise InputError("layers=[]: choose at least one layer, or layers=null for all")
    return sorted(chosen)


def reduce_attention(weights: torch.Tensor, query_mask: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Reduce one layer's attention weights to a per-token sum, averaged over heads.

    Args:
        weights: [B, H, n, n] attention probabilities (rows = queries).
        query_mask: [B, n] 1 for real tokens, 0 for padding.
        aggregate: ``received`` sums each column over the real query rows; ``released`` sums each row.

    Returns:
        [B, n] float32 sums (not yet divided by the number of rows/keys).
    """
    heads = weights.shape[1]
    mean = weights.sum(dim=1, dtype=torch.float32) / heads  # [B, n, n]
    mean = mean * query_mask[:, :, None].to(torch.float32)
    return mean.sum(dim=1) if aggregate == "received" else mean.sum(dim=2)


def finish_scores(sums: torch.Tensor, lengths: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Turn per-token sums into means: divide by the number of query rows i >= j (or keys j <= i)."""
    positions = torch.arange(sums.shape[1], device=sums.device)[None, :]
    if aggregate == "received":
        counts = (lengths[:, None] - positions).clamp(min=1)
    else:
        counts = positions + 1
    return sums / counts


@torch.no_grad()
def score_batch(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: list[int],
    aggregate: str = "received",
) -> torch.Tensor:
    """Per-token scores for one right-padded batch.

    Args:
        model: A causal LM loaded with ``attn_implementation="eager"``.
        input_ids: [B, n] token ids.
        attention_mask: [B, n] 1 for real tokens, 0 for right padding.
        layers: Layer indices to average over.
        aggregate: ``received`` (default) or ``released``.

    Returns:
        [B, n] float32 scores (values at padding positions are meaningless).
    """
    modules = attention_modules(model)
    sums = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)

    def hook(_module, _inputs, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise InputError("attention weights are not returned; load the model with attn_implementation=eager")
        sums.add_(reduce_attention(weights, attention_mask, aggregate))
        return (output[0], None) + tuple(output[2:])  # drop the weights now: nothing downstream needs them

    handles = [modules[i].register_forward_hook(hook) for i in layers]
    try:
        # The base model (no LM head): attention is all we need.
        model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    lengths = attention_mask.sum(dim=1)
    return finish_scores(sums / len(layers), lengths, aggregate)


def score_texts(
    model: PreTrainedModel,
    encoded: list[Encoded],
    layers: list[int],
    aggregate: str = "received",
    batch_size: int = 8,
    pad_token_id: int = 0,
) -> list[np.ndarray]:
    """Score every encoded text; batches group texts of similar length to waste little on padding.

    Returns:
        One float32 array of per-token scores per text, in input order.
    """
    device = model_device(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    results: list[np.ndarray | None] = [None] * len(encoded)
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="attention", unit="batch"):
        width = max(len(encoded[i].input_ids) for i in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.from_numpy(encoded[i].input_ids)
            mask[row, :n] = 1
        scores = score_batch(model, ids.to(device), mask.to(device), layers, aggregate).cpu().numpy()
        for row, i in enumerate(batch):
            results[i] = scores[row, : len(encoded[i].input_ids)].astype(np.float32)
    return results  # type: ignore[return-value]


def save_attention(
    model: str,
    dataset: Path,
    save_name: Path,
    aggregate: str = "received",
    layers: Sequence[int] | None = None,
    text_prefix: str = "",
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    max_texts: int | None = None,
) -> Path:
    """Run stage 1: write ``{save_name}.safetensors`` with per-token attention scores for ``dataset``.

    Args:
        model: Hub id, local directory or ``.gguf`` file.
        dataset: CSV with a ``text`` column (tags are stripped before tokenising).
        save_name: Output path without suffix.
        aggregate: ``received`` (the paper's score) or ``released`` (the released code's 1/(i+1)).
        layers: Layers to average over; None for all.
        text_prefix: String prepended before tokenising (the paper used "Text: "); never ranked.
        batch_size: Texts per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        max_texts: Only the first N texts (None = all), for quick trials.

    Returns:
        The path written.
    """
    if aggregate not in AGGREGATES:
        raise InputError(f"aggregate={aggregate}: unknown; use received (the paper's score) or released")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    texts = load_texts(dataset, "dataset")
    if max_texts is not None:
        texts = texts[:max_texts]
    tokenizer = load_tokenizer(model)
    lm = load_model(model, device=device, dtype=dtype, attn_implementation="eager")
    chosen = select_layers(layers, lm.config.get_text_config().num_hidden_layers)
    if aggregate == "released":
        log.warning("aggregate=released: every score is 1/(i+1) of the token position, whatever the model and text")
    encoded = encode_many(tokenizer, texts, text_prefix)
    scores = score_texts(lm, encoded, chosen, aggregate, batch_size, tokenizer.pad_token_id)
    dump = AttentionDump(
        scores=np.concatenate(scores),
        offsets=np.cumsum([0] + [len(e.input_ids) for e in encoded]),
        input_ids=np.concatenate([e.input_ids for e in encoded]),
        char_spans=np.concatenate([e.char_spans for e in encoded]),
        ranked=np.concatenate([e.ranked for e in encoded]),
        metadata=dump_metadata(model, tokenizer, dataset, aggregate, chosen, lm.dtype, text_prefix, len(texts)),
    )
    path = dump.save(save_name)
    log.info("wrote %s: %d texts, %d tokens", path, dump.n_texts, len(dump.scores))
    return path


def dump_metadata(
    model: str,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Path,
    aggregate: str,
    layers: list[int],
    dtype: torch.dtype,
    text_prefix: str,
    n_texts: int,
) -> dict[str, str]:
    """The header metadata of an attention dump (see :mod:`elusive.artifacts`)."""
    return {
        "kind": "attention",
        "model": describe(model),
        "tokenizer": tokenizer.name_or_path,
        "vocab_sha256": vocab_sha256(tokenizer),
        "dataset": str(Path(dataset).absolute()),
        "dataset_sha256": sha256_file(dataset),
        "n_texts": str(n_texts),
        "aggregate": aggregate,
        "layers": json.dumps(layers),
        "dtype": str(dtype).replace("torch.", ""),
        "text_prefix": json.dumps(text_prefix),
    }
