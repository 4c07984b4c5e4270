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

import contextvars
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AttentionInterface, PreTrainedModel, PreTrainedTokenizerBase
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from elusive import distributed
from elusive.artifacts import AttentionDump, dump_path, sha256_file, tokenizer_sha256, tokens_sha256, vocab_sha256
from elusive.config import SaveAttentionConfig, check
from elusive.data import load_tagged
from elusive.distributed import SINGLE, Share
from elusive.errors import InputError
from elusive.models import describe, load_model, load_tokenizer, model_device
from elusive.outputs import Output, check_outputs
from elusive.provenance import record_path
from elusive.tags import Span
from elusive.tokens import Encoded, encode_many

log = logging.getLogger(__name__)

AGGREGATES = ("received", "sum", "released")


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


# --------------------------------------------------------------------------------------------------
# Blocked attention: the same weights as eager attention, without the masked half of the n × n matrix
# --------------------------------------------------------------------------------------------------
#
# Eager attention builds each layer's B × H × n × n weights, adds the mask and takes the softmax: memory-bound
# work of which the causal half is thrown away. BLOCKED walks the queries in blocks of QUERY_BLOCK rows and
# calls the model family's own ``eager_attention_forward`` (so its scaling, soft-capping, sinks, ... are
# applied exactly as in eager mode) on each block with only the keys that block may see, reduces the block's
# weights to the per-token sums at once, and never returns the weights. Keys past a block's last allowed key
# have mask value finfo.min, whose softmax weight is exactly 0, so the weights are eager's up to the order
# of floating-point sums. Registered through transformers' AttentionInterface (hand-written because no
# attention implementation in transformers returns per-key sums without the full weights).

BLOCKED = "elusive_blocked"
QUERY_BLOCK = 128


@dataclass
class _Reduction:
    """Where :func:`blocked_attention` adds the chosen layers' per-token sums (and focus rows) of one batch."""

    modules: set[int]  # id() of the chosen layers' attention modules
    sums: torch.Tensor  # [B, n] float32
    query_mask: torch.Tensor  # [B, n] 1 for real tokens
    aggregate: str
    focus: list[tuple[int, int]]
    rows: torch.Tensor | None  # [F, n] float32
    key_limits: dict = field(default_factory=dict)  # per mask tensor: keys each query block needs


_ACTIVE: contextvars.ContextVar[_Reduction | None] = contextvars.ContextVar("elusive_reduction", default=None)


def _family_eager(module: torch.nn.Module):
    """The ``eager_attention_forward`` of the module's modeling file, or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def _key_limits(mask: torch.Tensor, n_keys: int, state: _Reduction) -> list[int]:
    """For each query block, one past the last key any of its queries may see (all keys for a mask that is
    not eager's additive one)."""
    blocks = range(0, mask.shape[-2], QUERY_BLOCK)
    if mask.dtype == torch.bool or mask.shape[-1] != n_keys:
        return [n_keys] * len(blocks)
    key = (mask.data_ptr(), tuple(mask.shape), tuple(mask.stride()))
    if key not in state.key_limits:  # one pass over the mask per forward, shared by the layers using it
        allowed = (mask != torch.finfo(mask.dtype).min).any(dim=1).any(dim=0)  # [q, k]
        last = torch.where(allowed, torch.arange(1, n_keys + 1, device=mask.device), 0).amax(dim=-1)  # [q]
        state.key_limits[key] = [max(1, int(last[b : b + QUERY_BLOCK].max())) for b in blocks]
    return state.key_limits[key]


def blocked_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention for :func:`score_batch`: eager attention query block by query block (see above).

    Returns the attention output and no weights; for the chosen layers, adds the weights' reduction
    (:func:`reduce_attention`) and focus rows to the active :class:`_Reduction`.
    """
    eager = _family_eager(module)
    state = _ACTIVE.get()
    n_queries, n_keys = query.shape[2], key.shape[2]
    if state is None or attention_mask is None or n_queries != n_keys:
        raise RuntimeError(f"{BLOCKED} attention only serves elusive.attention.score_batch (one forward, no cache)")
    chosen = id(module) in state.modules
    outputs = []
    for block, end in enumerate(_key_limits(attention_mask, n_keys, state)):
        lo, hi = block * QUERY_BLOCK, min(n_queries, (block + 1) * QUERY_BLOCK)
        out, weights = eager(module, query[:, :, lo:hi], key[:, :, :end], value[:, :, :end],
                             attention_mask[:, :, lo:hi, :end], **kwargs)
        outputs.append(out)
        if chosen:
            heads = weights.shape[1]
            mean = weights.sum(dim=1, dtype=torch.float32) / heads  # [B, rows, keys]
            mean = mean * state.query_mask[:, lo:hi, None].to(device=mean.device, dtype=torch.float32)
            if state.aggregate == "released":
                state.sums[:, lo:hi].add_(mean.sum(dim=2).to(state.sums.device))
            else:
                state.sums[:, :end].add_(mean.sum(dim=1).to(state.sums.device))
            for f, (b, q) in enumerate(state.focus):
                if lo <= q < hi:
                    picked = weights[b, :, q - lo, :].sum(dim=0, dtype=torch.float32) / heads
                    state.rows[f, :end].add_(picked.to(state.rows.device))
    return torch.cat(outputs, dim=1), None


def _blocked_available(model: PreTrainedModel, modules: list[torch.nn.Module]) -> bool:
    """True if BLOCKED can replace eager attention for ``model``: a model family with the functional
    AttentionInterface dispatch, its own ``eager_attention_forward``, loaded in eager mode."""
    return (
        getattr(model.config, "_attn_implementation", None) == "eager"
        and all(_family_eager(m) is not None for m in modules)
        and getattr(model, "_can_set_attn_implementation", lambda: False)()
    )


AttentionInterface.register(BLOCKED, blocked_attention)
AttentionMaskInterface.register(BLOCKED, eager_mask)  # the same additive mask as eager attention


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

    if blocked and _blocked_available(model, modules):
        state = _Reduction({id(modules[i]) for i in layers}, sums, attention_mask, aggregate, list(focus or []), rows)
        token = _ACTIVE.set(state)
        model.set_attn_implementation(BLOCKED)
        try:
            model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            model.set_attn_implementation("eager")
            _ACTIVE.reset(token)
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


@torch.no_grad()
def score_released(
    model: PreTrainedModel,
    encoded: list[Encoded],
    layers: list[int],
    focus: list[list[int]] | None = None,
    part: Share = SINGLE,
) -> tuple[list[np.ndarray | None], list[list[np.ndarray]]]:
    """``aggregate=released``: the released code's scores, computed with its arithmetic, one text at a time.

    Per text (no padding, no prefix of its own): the model's attention weights of every chosen layer
    (``output_attentions``, in the model's dtype — bf16 in the released code) are stacked and averaged over
    layers and heads in that dtype; the lower triangle's rows are summed and divided by ``1..n`` in that dtype,
    and the result is cast to float32. Memory is the released code's (every layer's n × n weights at once):
    this is a compatibility mode, for replaying the released ranking exactly, not for long texts.

    Returns:
        As :func:`score_texts` (focus rows: row q of the layer/head average, keys 0..q, cast to float32).
    """
    device = model_device(model)
    focus = focus or [[] for _ in encoded]
    results: list[np.ndarray | None] = [None] * len(encoded)
    rows: list[list[np.ndarray]] = [[] for _ in encoded]
    for i in tqdm(part.pick(list(range(len(encoded)))), desc="attention (released)", unit="text"):
        ids = torch.from_numpy(encoded[i].input_ids)[None, :].to(device)
        attentions = model.base_model(input_ids=ids, output_attentions=True, use_cache=False).attentions
        # [L, 1, H, n, n] in the model's dtype; with device=multi the layers' weights sit on different GPUs
        stacked = torch.stack([attentions[layer].to(device) for layer in layers])
        average = torch.tril(stacked.mean(dim=(0, 1, 2)))  # [n, n]
        scores = average.sum(dim=-1) / torch.arange(1, average.shape[-1] + 1, device=average.device).to(average)
        results[i] = scores.float().cpu().numpy()
        rows[i] = [average[q, : q + 1].float().cpu().numpy() for q in focus[i]]
    return results, rows


def token_fields(enc: Encoded, spans: list[Span], fields: list[str]) -> np.ndarray:
    """Index into ``fields`` of the tagged field each token overlaps, -1 for other tokens."""
    out = np.full(len(enc.input_ids), -1, dtype=np.int64)
    for span in spans:
        if span.field not in fields:
            continue
        starts, ends = enc.char_spans[:, 0], enc.char_spans[:, 1]
        overlap = enc.ranked & (starts < span.end) & (ends > span.start)
        out[overlap & (out < 0)] = fields.index(span.field)
    return out


def focus_queries(enc: Encoded, spans: list[Span], fields: list[str]) -> list[tuple[int, int]]:
    """For each tagged field (not the name), the token just before it: (query token index, field index).

    The query is the last token of the text that ends at or before the field's first character — the word
    before the field, e.g. " at" in "... worked at the British Museum".
    """
    out = []
    ends = np.where(enc.ranked, enc.char_spans[:, 1], -1)
    for span in spans:
        if span.field == "name" or span.field not in fields:
            continue
        before = np.flatnonzero(enc.ranked & (ends <= span.start))
        if len(before):
            out.append((int(before[-1]), fields.index(span.field)))
    return out


def save_attention(cfg: SaveAttentionConfig) -> Path | None:
    """Run stage 1: write ``{cfg.save_name}.safetensors`` with per-token attention scores for ``cfg.dataset``.

    Launched on several processes (accelerate launch, torchrun), ``device=auto`` is this process's GPU and each
    process scores its share of the batches; the main process merges them and writes the dump.

    Args:
        cfg: The settings (:class:`elusive.config.SaveAttentionConfig` says what each one means).

    Returns:
        The path written (None on the processes other than the main one of a multi-process run).

    Raises:
        InputError: A setting, the dataset or the model is unusable (before anything is written).
    """
    check(cfg)
    model, dataset, save_name, aggregate = cfg.model, Path(cfg.dataset), Path(cfg.save_name), cfg.aggregate
    text_prefix, focus, max_texts = cfg.text_prefix, cfg.focus, cfg.max_texts
    check_outputs("save_attention", [Output("save_name", cfg.save_name, dump_path(save_name))],
                  {"dataset": cfg.dataset, "model": cfg.model})
    tagged = load_tagged(dataset, "dataset")
    if max_texts is not None:
        tagged = tagged[:max_texts]
    texts = [plain for plain, _ in tagged]
    fields = list(dict.fromkeys(span.field for _, spans in tagged for span in spans))
    if focus and not [f for f in fields if f != "name"]:
        raise InputError(f"focus=true: dataset={dataset} has no tagged fields (<company>...</company>); use a tagged CSV")
    part = distributed.share()
    device = distributed.process_device(cfg.device)
    tokenizer = load_tokenizer(model)
    dtype = "bfloat16" if aggregate == "released" and cfg.dtype == "auto" else cfg.dtype  # the released code's
    lm = load_model(model, device=device, dtype=dtype, quant=cfg.quant, attn_implementation="eager")
    chosen = select_layers(cfg.layers, lm.config.get_text_config().num_hidden_layers)
    encoded = encode_many(tokenizer, texts, text_prefix)
    check_lengths(encoded, cfg.max_length, lm, dataset)
    queries = [focus_queries(e, spans, fields) if focus else [] for e, (_, spans) in zip(encoded, tagged)]
    wanted = [[q for q, _ in qs] for qs in queries]
    if aggregate == "released":
        log.warning("aggregate=released: the released code's score, 1/(i+1) in exact arithmetic; its bf16 rounding "
                    "decides the contrast (a compatibility mode for replaying the released ranking)")
        scores, rows = score_released(lm, encoded, chosen, wanted, part)
    else:
        scores, rows = score_texts(lm, encoded, chosen, aggregate, cfg.batch_size, tokenizer.pad_token_id, wanted, part)
    if part.world_size > 1:
        merged = merge_shards(dump_path(save_name), part, scores, rows)
        if merged is None:  # not the main process: it writes nothing
            return None
        scores, rows = merged
    metadata = dump_metadata(model, tokenizer, dataset, aggregate, chosen, lm.dtype, text_prefix, len(texts))
    metadata["fields"] = json.dumps(fields)
    metadata["layers_requested"] = json.dumps(cfg.layers)
    metadata["quant"] = json.dumps(cfg.quant)
    extra = {"token_field": np.concatenate([token_fields(e, spans, fields) for e, (_, spans) in zip(encoded, tagged)])}
    if focus:
        flat = [r for per_text in rows for r in per_text]
        extra.update(
            focus_rows=np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32),
            focus_offsets=np.cumsum([0] + [len(r) for r in flat]),
            focus_text=np.asarray([t for t, qs in enumerate(queries) for _ in qs], dtype=np.int64),
            focus_query=np.asarray([q for qs in queries for q, _ in qs], dtype=np.int64),
            focus_field=np.asarray([f for qs in queries for _, f in qs], dtype=np.int64),
        )
    dump = AttentionDump(
        scores=np.concatenate(scores),
        offsets=np.cumsum([0] + [len(e.input_ids) for e in encoded]),
        input_ids=np.concatenate([e.input_ids for e in encoded]),
        char_spans=np.concatenate([e.char_spans for e in encoded]),
        ranked=np.concatenate([e.ranked for e in encoded]),
        metadata=metadata,
        extra=extra,
    )
    tokens_hash = tokens_sha256(tokenizer, text_prefix, metadata["dataset_sha256"], dump.offsets, dump.input_ids,
                                dump.char_spans, dump.ranked)
    if tokens_hash is not None:  # lets stage 3 reuse these tokens instead of tokenising again
        metadata["tokens_sha256"] = tokens_hash
    path = dump.save(save_name)
    log.info("wrote %s: %d texts, %d tokens", path, dump.n_texts, len(dump.scores))
    return path


def check_lengths(encoded: list[Encoded], max_length: int | None, model: PreTrainedModel, dataset: Path) -> None:
    """Refuse a text longer than ``max_length`` tokens (null: the model's ``max_position_embeddings``), before
    any forward pass: a longer text would be scored past the positions the model was trained on (and a very
    long one would need gigabytes). Nothing is truncated, since stage 3 needs a score for every token.

    Raises:
        InputError: Naming the first such text, its length and the limit.
    """
    limit = max_length or getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if limit is None:
        return
    for row, enc in enumerate(encoded):
        if len(enc.input_ids) > limit:
            key = "max_length" if max_length else "model"
            raise InputError(
                f"dataset={dataset}: text {row} has {len(enc.input_ids)} tokens, more than {key}'s limit of {limit}; "
                "split the long texts into shorter ones (or raise max_length up to the model's limit)"
            )


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
    metadata = {
        "kind": "attention",
        "model": describe(model),
        "tokenizer": tokenizer.name_or_path,
        "vocab_sha256": vocab_sha256(tokenizer),
        "dataset": record_path(dataset),
        "dataset_sha256": sha256_file(dataset),
        "n_texts": str(n_texts),
        "aggregate": aggregate,
        "layers": json.dumps(layers),
        "dtype": str(dtype).replace("torch.", ""),
        "text_prefix": json.dumps(text_prefix),
    }
    tokenizer_hash = tokenizer_sha256(tokenizer)
    if tokenizer_hash is not None:  # lets stage 3 match a recorded tokenizer without loading transformers
        metadata["tokenizer_sha256"] = tokenizer_hash
    return metadata


def merge_shards(
    output: Path, part: Share, scores: list[np.ndarray | None], rows: list[list[np.ndarray]]
) -> tuple[list[np.ndarray], list[list[np.ndarray]]] | None:
    """Bring every process's scores and focus rows together on the main process, in dataset order.

    Each process sends the texts it scored: their indices, their scores concatenated, and their focus rows
    concatenated (a text's rows keep their order). Returns None on the other processes.
    """
    mine = [i for i, s in enumerate(scores) if s is not None]
    flat = [r for i in mine for r in rows[i]]
    shards = distributed.gather_arrays(
        output,
        part,
        {
            "text": np.asarray(mine, dtype=np.int64),
            "length": np.asarray([len(scores[i]) for i in mine], dtype=np.int64),
            "scores": np.concatenate([scores[i] for i in mine] or [np.zeros(0, np.float32)]),
            "n_rows": np.asarray([len(rows[i]) for i in mine], dtype=np.int64),
            "rows": np.concatenate(flat or [np.zeros(0, np.float32)]),
            "row_length": np.asarray([len(r) for r in flat], dtype=np.int64),
        },
    )
    if shards is None:
        return None
    merged: list[np.ndarray | None] = [None] * len(scores)
    merged_rows: list[list[np.ndarray]] = [[] for _ in scores]
    for shard in shards:
        texts, row_lengths = shard["text"].tolist(), shard["row_length"].tolist()
        per_text = np.split(shard["scores"], np.cumsum(shard["length"])[:-1]) if texts else []
        flat_rows = np.split(shard["rows"], np.cumsum(row_lengths)[:-1]) if row_lengths else []
        starts = np.cumsum([0, *shard["n_rows"].tolist()])
        for k, i in enumerate(texts):
            merged[i] = per_text[k]
            merged_rows[i] = flat_rows[starts[k] : starts[k + 1]]
    missing = [i for i, s in enumerate(merged) if s is None]
    if missing:  # cannot happen unless processes formed different batches
        raise RuntimeError(f"text {missing[0]} was scored by no process")
    return merged, merged_rows  # type: ignore[return-value]
