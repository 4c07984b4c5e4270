"""Blocked attention: eager attention's weights, query block by query block, reduced to per-token sums at once.

Registered with transformers' ``AttentionInterface`` under :data:`BLOCKED` when this module is imported; only
:func:`elusive.attention.scores.score_batch` switches a model to it, for one forward pass.
"""

from __future__ import annotations

import contextvars
import sys
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

BLOCKED = "elusive_blocked"


QUERY_BLOCK = 128


@dataclass
class Reduction:
    """Where :func:`blocked_attention` adds the chosen layers' per-token sums (and focus rows) of one batch."""

    modules: set[int]  # id() of the chosen layers' attention modules
    sums: torch.Tensor  # [B, n] float32
    query_mask: torch.Tensor  # [B, n] 1 for real tokens
    aggregate: str
    focus: list[tuple[int, int]]
    rows: torch.Tensor | None  # [F, n] float32
    key_limits: dict = field(default_factory=dict)  # per mask tensor: keys each query block needs


ACTIVE: contextvars.ContextVar[Reduction | None] = contextvars.ContextVar("elusive_reduction", default=None)


def family_eager(module: torch.nn.Module):
    """The ``eager_attention_forward`` of the module's modeling file, or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def _key_limits(mask: torch.Tensor, n_keys: int, state: Reduction) -> list[int]:
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
    (:func:`reduce_attention`) and focus rows to the active :class:`Reduction`.
    """
    eager = family_eager(module)
    state = ACTIVE.get()
    n_queries, n_keys = query.shape[2], key.shape[2]
    if state is None or attention_mask is None or n_queries != n_keys:
        raise RuntimeError(f"{BLOCKED} attention only serves elusive.attention.scores.score_batch (one forward, no cache)")
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


def blocked_available(model: PreTrainedModel, modules: list[torch.nn.Module]) -> bool:
    """True if BLOCKED can replace eager attention for ``model``: a model family with the functional
    AttentionInterface dispatch, its own ``eager_attention_forward``, loaded in eager mode."""
    return (
        getattr(model.config, "_attn_implementation", None) == "eager"
        and all(family_eager(m) is not None for m in modules)
        and getattr(model, "_can_set_attn_implementation", lambda: False)()
    )


AttentionInterface.register(BLOCKED, blocked_attention)


AttentionMaskInterface.register(BLOCKED, eager_mask)  # the same additive mask as eager attention
