"""Stage 1: the attention each token *receives*, averaged over heads, chosen layers and later queries.

For a text of n tokens and an attention matrix A (rows = queries i, columns = keys j, causal, each row sums
to 1), averaged over heads and layers (the paper: all layers and heads), the score of token j is

    received(j) = mean over i >= j of A[i, j] = sum_{i>=j} A[i, j] / (n - j)      (aggregate=received)
    sum(j)      = sum_{i>=j} A[i, j]                                              (aggregate=sum)

The paper says "the attention a token receives" without the normalisation: ``received`` (the default) is this
project's reading, ``sum`` the other one. ``aggregate=released`` replays the authors' released code instead,
arithmetic and all (:func:`score_released`): the model in bf16, every layer's attention stacked and averaged
over layers and heads in bf16, the lower triangle's *rows* summed and divided by i + 1. A softmax row sums to
1, so in exact arithmetic that score is 1 / (i + 1) for every model and text; in bf16 the difference of two
models is exactly 0 almost everywhere, and the released ranking (stage 3) is decided by numpy's tie order.

Attention is computed query block by query block against only the keys each block may see, and each
block's weights are reduced to the per-token sums at once (:data:`BLOCKED`), so no layer's B×H×n×n weights
are ever built; for a model family without transformers' functional attention dispatch, eager attention's
weights are reduced in a forward hook instead. The LM head is never run. Texts are batched by similar length with
right padding: padded keys are masked, padded query rows are excluded, so scores do not depend on batching (on
the CPU in float32; on GPUs other batch shapes pick other kernels, so they agree approximately).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from elusive.attention.kernel import ACTIVE, BLOCKED, Reduction, blocked_available
from elusive.core.distributed import SINGLE, Share
from elusive.core.errors import InputError
from elusive.core.models import model_device
from elusive.text.tokens import Encoded


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
        aggregate: ``received`` and ``sum`` sum each column over the real query rows; ``released`` each row.

    Returns:
        [B, n] float32 sums (not yet divided by the number of rows/keys).
    """
    heads = weights.shape[1]
    mean = weights.sum(dim=1, dtype=torch.float32) / heads  # [B, n, n]
    mean = mean * query_mask[:, :, None].to(torch.float32)
    return mean.sum(dim=2) if aggregate == "released" else mean.sum(dim=1)


def finish_scores(sums: torch.Tensor, lengths: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Turn per-token sums into scores: ``received`` divides by the number of query rows i >= j, ``released``
    by the number of keys j <= i, ``sum`` by nothing."""
    positions = torch.arange(sums.shape[1], device=sums.device)[None, :]
    if aggregate == "received":
        return sums / (lengths[:, None] - positions).clamp(min=1)
    if aggregate == "released":
        return sums / (positions + 1)
    return sums


@torch.no_grad()
def score_batch(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: list[int],
    aggregate: str = "received",
    focus: list[tuple[int, int]] | None = None,
    blocked: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token scores for one right-padded batch, and optionally whole attention rows of chosen queries.

    Args:
        model: A causal LM loaded with ``attn_implementation="eager"``.
        input_ids: [B, n] token ids.
        attention_mask: [B, n] 1 for real tokens, 0 for right padding.
        layers: Layer indices to average over.
        aggregate: ``received`` (default) or ``released``.
        focus: (batch row, query position) pairs whose attention rows to return.
        blocked: Compute attention with :data:`BLOCKED` (no n × n weights) when the model family allows it;
            False, or a family without the functional attention dispatch: eager attention and a forward hook.

    Returns:
        [B, n] float32 scores (values at padding positions are meaningless) and, with ``focus``, an [F, n]
        float32 tensor: row f is the attention of query ``focus[f]`` over all keys, averaged over heads and
        the chosen layers (zero beyond the query).
    """
    modules = attention_modules(model)
    sums = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    rows = None
    if focus:
        rows = torch.zeros((len(focus), input_ids.shape[1]), dtype=torch.float32, device=input_ids.device)
        batch_idx = torch.tensor([b for b, _ in focus], device=input_ids.device)
        query_idx = torch.tensor([q for _, q in focus], device=input_ids.device)

    def hook(_module, _inputs, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise InputError("attention weights are not returned; load the model with attn_implementation=eager")
        # .to(): with device=multi the layers sit on different GPUs
        sums.add_(reduce_attention(weights, attention_mask.to(weights.device), aggregate).to(sums.device))
        if rows is not None:
            picked = weights[batch_idx.to(weights.device), :, query_idx.to(weights.device), :]
            rows.add_((picked.sum(dim=1, dtype=torch.float32) / weights.shape[1]).to(rows.device))
        return (output[0], None) + tuple(output[2:])  # drop the weights now: nothing downstream needs them

    if blocked and blocked_available(model, modules):
        state = Reduction({id(modules[i]) for i in layers}, sums, attention_mask, aggregate, list(focus or []), rows)
        token = ACTIVE.set(state)
        model.set_attn_implementation(BLOCKED)
        try:
            model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            model.set_attn_implementation("eager")
            ACTIVE.reset(token)
    else:
        handles = [modules[i].register_forward_hook(hook) for i in layers]
        try:
            # The base model (no LM head): attention is all we need.
            model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
    lengths = attention_mask.sum(dim=1)
    scores = finish_scores(sums / len(layers), lengths, aggregate)
    return scores, (rows / len(layers) if rows is not None else None)


def score_texts(
    model: PreTrainedModel,
    encoded: list[Encoded],
    layers: list[int],
    aggregate: str = "received",
    batch_size: int = 8,
    pad_token_id: int = 0,
    focus: list[list[int]] | None = None,
    part: Share = SINGLE,
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Score every encoded text; batches group texts of similar length to waste little on padding.

    Args:
        focus: Per text, the query token indices whose attention rows to keep (None = none).
        part: With several processes, score only this process's batches (``part.pick``): every process
            forms the same batches, so a text's scores do not depend on the number of processes.

    Returns:
        One float32 array of per-token scores per text, in input order, and per text the attention rows of
        its focus queries (row for query q has q + 1 entries: keys 0..q). Texts of other processes' batches
        get None and no rows.
    """
    device = model_device(model)
    focus = focus or [[] for _ in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    results: list[np.ndarray | None] = [None] * len(encoded)
    focus_rows: list[list[np.ndarray]] = [[] for _ in encoded]
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    for batch in tqdm(part.pick(batches), desc="attention", unit="batch"):
        width = max(len(encoded[i].input_ids) for i in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i].input_ids)
            ids[row, :n] = torch.from_numpy(encoded[i].input_ids)
            mask[row, :n] = 1
        pairs = [(row, q) for row, i in enumerate(batch) for q in focus[i]]
        scores, rows = score_batch(model, ids.to(device), mask.to(device), layers, aggregate, pairs)
        scores = scores.cpu().numpy()
        for row, i in enumerate(batch):
            results[i] = scores[row, : len(encoded[i].input_ids)].astype(np.float32)
        if rows is not None:
            rows = rows.cpu().numpy()
            for f, (row, q) in enumerate(pairs):
                focus_rows[batch[row]].append(rows[f, : q + 1].astype(np.float32))
    return results, focus_rows  # type: ignore[return-value]
