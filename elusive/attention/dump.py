"""The files the stages exchange, written down in one place.

Attention dump (``{save_name}.safetensors``, written by save_attention and contrast_attention):

* ``scores``    float32 [total_tokens] — per-token score of every text, texts concatenated in dataset order.
* ``offsets``   int64 [n_texts + 1]    — text ``i`` owns rows ``offsets[i]:offsets[i+1]``.
* ``input_ids`` int64 [total_tokens]   — the token ids the scores belong to, same layout.
* ``char_spans`` int64 [total_tokens, 2] — each token's (start, end) characters in the tag-free text
  (``-1, -1`` for tokens of ``text_prefix`` and special tokens).
* ``ranked``    uint8 [total_tokens]   — 1 where the token may be ranked and dropped (not a special token,
  not part of ``text_prefix``), else 0.
* ``token_field`` int64 [total_tokens] — index into the ``fields`` metadata list of the tagged field the
  token overlaps, -1 for other tokens (only when the dataset is tagged).

Focus mode (``focus=true``) adds, per (text, tagged field other than the name), the attention row of the
token just before the field (e.g. " at" before the company): ``focus_rows`` float32 (rows concatenated;
the row of query q holds keys 0..q), ``focus_offsets`` int64 [n_focus + 1], ``focus_text`` (text index),
``focus_query`` (query token index within the text) and ``focus_field`` (index into ``fields``).

Header metadata (safetensors ``__metadata__``, all strings): ``format`` (= ``elusive-attention/1``),
``kind`` (``attention`` or ``attention_diff``), ``model``, ``tokenizer``, ``vocab_sha256``,
``dataset``, ``dataset_sha256``, ``aggregate``, ``layers``, ``dtype``, ``text_prefix`` and, for a
contrast, ``large`` and ``small`` (the two source files) — the values stages 2 and 3 check before use —
and ``data_sha256``, the SHA-256 of the tensor bytes after the header, checked on every load so a truncated
or altered file is refused. Optional ``tokens_sha256`` (:func:`tokens_sha256`): binds the token arrays to the
tokenizer, prefix and dataset that made them, so stage 3 can take them from the dump instead of tokenising
every text again; optional ``tokenizer_sha256`` (:func:`tokenizer_sha256` of that tokenizer, also inside
``tokens_sha256``): lets stage 3 see without loading any tokenizer whether a recorded one
(:mod:`elusive.text.tokenizer_records`) is the dump's.

Augmented dataset (``{save_name}.csv``): columns ``text`` (tags removed), ``source_row`` (row in the input
dataset), ``copy`` (0 = the original, 1..multiply = augmented copies).

Every file is written to a temporary name in the destination folder and renamed into place only when
complete, so a failed run never leaves a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from elusive.core.errors import InputError
from elusive.core.files import atomic_path, sha256_file

DUMP_FORMAT = "elusive-attention/1"


DUMP_SUFFIX = ".safetensors"


CORE_ARRAYS = ("scores", "offsets", "input_ids", "char_spans", "ranked")


def dump_path(name: str | os.PathLike[str]) -> Path:
    """Return the file of an attention dump given its ``save_name`` (with or without ``.safetensors``)."""
    path = Path(name)
    return path if path.name.endswith(DUMP_SUFFIX) else path.with_name(path.name + DUMP_SUFFIX)


def canonical_safetensors(raw: bytes, data_sha256: bool = False) -> bytes:
    """Rewrite a safetensors header with sorted keys, so equal contents give equal bytes.

    Hand-written because safetensors' writer keeps ``__metadata__`` in a hash map whose order changes from
    run to run. Data offsets are relative to the end of the header, so only the header is re-encoded.

    Args:
        raw: A complete safetensors file.
        data_sha256: Also record the SHA-256 of the tensor bytes in the metadata (``data_sha256``).
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if data_sha256:
        header.setdefault("__metadata__", {})["data_sha256"] = hashlib.sha256(raw[8 + n :]).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as the format recommends
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def data_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a safetensors file's bytes after the header (its tensor data)."""
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
    return sha256_file(path, start=8 + header_length)


@dataclass
class AttentionDump:
    """Per-token scores of every text in a dataset, with the token ids and spans they belong to."""

    scores: np.ndarray  # float32 [total_tokens]
    offsets: np.ndarray  # int64 [n_texts + 1]
    input_ids: np.ndarray  # int64 [total_tokens]
    char_spans: np.ndarray  # int64 [total_tokens, 2]
    ranked: np.ndarray  # bool [total_tokens]
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional arrays, e.g. token_field, focus_*

    @property
    def n_texts(self) -> int:
        """Number of texts in the dump."""
        return len(self.offsets) - 1

    def text_slice(self, i: int) -> slice:
        """Rows of text ``i`` in the concatenated arrays."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def non_finite(self) -> str | None:
        """Where the dump holds a NaN or an infinity (``text 3's scores``, ``focus_rows``), or None."""
        bad = ~np.isfinite(self.scores)
        if bad.any():
            row = int(np.searchsorted(self.offsets, int(np.argmax(bad)), side="right")) - 1
            return f"text {row}'s scores"
        for name, array in self.extra.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return name
        return None

    def save(self, name: str | os.PathLike[str]) -> Path:
        """Write the dump atomically to ``{name}.safetensors`` and return the path.

        Raises:
            InputError: A score is NaN or infinite (e.g. the model's attention overflowed in float16).
        """
        path = dump_path(name)
        where = self.non_finite()
        if where is not None:
            raise InputError(f"{path}: {where} are not finite (NaN or infinity), so nothing was written; the model's "
                             "attention overflowed — extract with dtype=float32")
        tensors = {  # numpy arrays: safetensors' numpy writer gives the bytes its torch writer gave, without torch
            "scores": np.ascontiguousarray(self.scores, dtype=np.float32),
            "offsets": np.ascontiguousarray(self.offsets, dtype=np.int64),
            "input_ids": np.ascontiguousarray(self.input_ids, dtype=np.int64),
            "char_spans": np.ascontiguousarray(self.char_spans, dtype=np.int64),
            "ranked": np.ascontiguousarray(self.ranked, dtype=np.uint8),
        }
        for name, array in self.extra.items():
            array = np.ascontiguousarray(array)
            tensors[name] = np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64)
        metadata = {"format": DUMP_FORMAT, **{k: str(v) for k, v in self.metadata.items()}}
        with atomic_path(path) as tmp:
            tmp.write_bytes(canonical_safetensors(save(tensors, metadata=metadata), data_sha256=True))
        return path

    @classmethod
    def load(cls, name: str | os.PathLike[str], key: str = "attn_weights") -> AttentionDump:
        """Read and check a dump written by :meth:`save`.

        Args:
            name: ``save_name`` of the dump, with or without ``.safetensors``.
            key: Config key that named the file, used in error messages.

        Raises:
            InputError: The file is missing, not a dump, or its arrays are inconsistent.
        """
        path = dump_path(name)
        if not path.is_file():
            raise InputError(f"{key}={name}: no attention dump at {path}; run save_attention.py first or fix the path")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = dict(handle.metadata() or {})
                arrays = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as err:  # safetensors raises several types for a damaged file
            raise InputError(
                f"{key}={path}: not a readable safetensors file ({err}); the file is truncated or damaged, recreate it"
            ) from err
        if "data_sha256" in metadata and metadata["data_sha256"] != data_digest(path):
            raise InputError(
                f"{key}={path}: its tensor bytes do not match the SHA-256 in its header (altered or damaged); "
                "recreate it with the stage that wrote it"
            )
        missing = {"scores", "offsets", "input_ids"} - arrays.keys()
        if metadata.get("format") != DUMP_FORMAT or missing:
            raise InputError(
                f"{key}={path}: not an attention dump of format {DUMP_FORMAT} (missing {sorted(missing)}); "
                "recreate it with save_attention.py"
            )
        n = len(arrays["scores"])
        # copy=False: the arrays are already fresh and mostly of these types (a copy is whole-dataset traffic)
        dump = cls(
            scores=arrays["scores"].astype(np.float32, copy=False),
            offsets=arrays["offsets"].astype(np.int64, copy=False),
            input_ids=arrays["input_ids"].astype(np.int64, copy=False),
            char_spans=(arrays["char_spans"].astype(np.int64, copy=False) if "char_spans" in arrays
                        else np.full((n, 2), -1, dtype=np.int64)),
            ranked=arrays["ranked"].astype(bool) if "ranked" in arrays else np.ones(n, dtype=bool),
            metadata=metadata,
            extra={k: v for k, v in arrays.items() if k not in CORE_ARRAYS},
        )
        offsets = dump.offsets
        if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0) or len(dump.input_ids) != n:
            raise InputError(f"{key}={path}: offsets do not match the token arrays; the file is damaged, recreate it")
        where = dump.non_finite()
        if where is not None:
            raise InputError(f"{key}={path}: {where} hold NaN or infinity, which would rank tokens arbitrarily; "
                             "recreate the dump (save_attention.py dtype=float32)")
        return dump
