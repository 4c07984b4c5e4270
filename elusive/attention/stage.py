"""Stage 1 (``save_attention.py``): score every text of a dataset and write the attention dump.

Loads the model in eager attention, checks every text fits the model's positions, scores the texts in batches
(:mod:`elusive.attention.scores`, or :mod:`elusive.attention.released`), merges the shares of several processes,
and writes the dump whose format :mod:`elusive.attention.dump` defines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from elusive.attention.dump import AttentionDump, dump_path
from elusive.attention.focus import focus_queries, token_fields
from elusive.attention.released import score_released
from elusive.attention.scores import score_texts, select_layers
from elusive.core import distributed
from elusive.core.config import SaveAttentionConfig, check
from elusive.core.distributed import Share
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.models import describe, load_model, load_tokenizer
from elusive.core.outputs import Output, check_outputs
from elusive.core.provenance import record_path
from elusive.text.data import load_tagged
from elusive.text.fingerprints import tokenizer_sha256, tokens_sha256, vocab_sha256
from elusive.text.tokens import Encoded, encode_many

log = logging.getLogger(__name__)


def save_attention(cfg: SaveAttentionConfig) -> Path | None:
    """Run stage 1: write ``{cfg.save_name}.safetensors`` with per-token attention scores for ``cfg.dataset``.

    Launched on several processes (accelerate launch, torchrun), ``device=auto`` is this process's GPU and each
    process scores its share of the batches; the main process merges them and writes the dump.

    Args:
        cfg: The settings (:class:`elusive.core.config.SaveAttentionConfig` says what each one means).

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
    """The header metadata of an attention dump (see :mod:`elusive.attention.dump`)."""
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
