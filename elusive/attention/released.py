"""``aggregate=released``: the released code's attention score, replayed with its own arithmetic.

A compatibility mode: every layer's n × n weights at once, in the model's dtype (bf16 in the released code), rows
of the lower triangle summed and divided by i + 1. In exact arithmetic that is 1 / (i + 1) for any model, so the
released contrast is decided by bf16 rounding and by the tie order of the ranking (docs/differences.md).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from elusive.core.distributed import SINGLE, Share
from elusive.core.models import model_device
from elusive.text.tokens import Encoded


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
