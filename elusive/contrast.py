"""Stage 2: the attention difference ``large − small`` between two dumps of the same texts and tokens."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from elusive.artifacts import AttentionDump, dump_path
from elusive.errors import InputError

log = logging.getLogger(__name__)


def check_compatible(large: AttentionDump, small: AttentionDump, large_name: str, small_name: str) -> None:
    """Refuse two dumps that do not describe the same texts with the same tokens.

    Raises:
        InputError: Different datasets, tokenizers, text prefixes or token ids; the message names both files.
    """
    both = f"attn_dump_large={large_name} and attn_dump_small={small_name}"
    for key, what in (("dataset_sha256", "datasets"), ("vocab_sha256", "tokenizers"), ("text_prefix", "text_prefix")):
        if large.metadata.get(key) != small.metadata.get(key):
            raise InputError(
                f"{both} come from different {what} ({large.metadata.get(key)!r} vs {small.metadata.get(key)!r}); "
                "run save_attention.py on the same dataset with models sharing one tokenizer"
            )
    if not (np.array_equal(large.offsets, small.offsets) and np.array_equal(large.input_ids, small.input_ids)):
        raise InputError(f"{both} hold different token ids; extract both with the same tokenizer and text_prefix")


def contrast_attention(attn_dump_large: Path, attn_dump_small: Path, attn_diff: Path) -> Path:
    """Run stage 2: write ``{attn_diff}.safetensors`` with ``large − small`` per text and token.

    Args:
        attn_dump_large: Dump of the larger model.
        attn_dump_small: Dump of the smaller model of the same family.
        attn_diff: Output path without suffix.

    Returns:
        The path written.
    """
    large = AttentionDump.load(attn_dump_large, "attn_dump_large")
    small = AttentionDump.load(attn_dump_small, "attn_dump_small")
    check_compatible(large, small, str(attn_dump_large), str(attn_dump_small))
    metadata = {
        **{k: v for k, v in large.metadata.items() if k not in ("format",)},
        "kind": "attention_diff",
        "large": str(dump_path(attn_dump_large).absolute()),
        "small": str(dump_path(attn_dump_small).absolute()),
        "model": json.dumps({"large": large.metadata.get("model"), "small": small.metadata.get("model")}),
        "aggregate": json.dumps({"large": large.metadata.get("aggregate"), "small": small.metadata.get("aggregate")}),
        "layers": json.dumps({"large": large.metadata.get("layers"), "small": small.metadata.get("layers")}),
        "dtype": json.dumps({"large": large.metadata.get("dtype"), "small": small.metadata.get("dtype")}),
    }
    extra = {}
    if "token_field" in large.extra and "token_field" in small.extra:
        extra["token_field"] = large.extra["token_field"]
    focus_keys = ("focus_offsets", "focus_text", "focus_query", "focus_field")
    if all(k in large.extra and k in small.extra for k in ("focus_rows", *focus_keys)):
        if all(np.array_equal(large.extra[k], small.extra[k]) for k in focus_keys):
            extra.update({k: large.extra[k] for k in focus_keys})
            extra["focus_rows"] = (large.extra["focus_rows"] - small.extra["focus_rows"]).astype(np.float32)
    diff = AttentionDump(
        scores=(large.scores - small.scores).astype(np.float32),
        offsets=large.offsets,
        input_ids=large.input_ids,
        char_spans=large.char_spans,
        ranked=large.ranked & small.ranked,
        metadata=metadata,
        extra=extra,
    )
    path = diff.save(attn_diff)
    log.info("wrote %s: %d texts, %d tokens (mean |diff| %.3g)", path, diff.n_texts, len(diff.scores), float(np.abs(diff.scores).mean()))
    return path
