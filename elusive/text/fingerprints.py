"""Fingerprints that bind tokens to the tokenizer that made them: vocabulary, whole tokenizer, and token arrays.

Stage 1 writes them into a dump; stage 3 compares them with the tokenizer it would use (or with a recorded one,
:mod:`elusive.text.tokenizer_records`) before it trusts the dump's tokens. Each is memoised per tokenizer object.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable

import numpy as np


def _memoised(memo: weakref.WeakKeyDictionary, tokenizer, key: tuple, compute: Callable[[], str]) -> str:
    """``compute()`` remembered per tokenizer object while ``key`` (what would change the result) stays the
    same; computed every time for objects that cannot be weakly referenced."""
    try:
        cached = memo.get(tokenizer)
    except TypeError:  # not weak-referenceable: no memo
        return compute()
    if cached is not None and cached[0] == key:
        return cached[1]
    value = compute()
    memo[tokenizer] = (key, value)
    return value


_VOCAB_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vocab_sha256(tokenizer) -> str:
    """Hash a tokenizer's vocabulary (token → id) and special tokens, so two dumps can be compared.

    Hashing a 150k-token vocabulary takes ~0.2 s, so the hash is remembered per tokenizer object and
    recomputed whenever its size or special tokens change (adding tokens changes both).

    Args:
        tokenizer: A Hugging Face tokenizer.

    Returns:
        Hex SHA-256 of the sorted vocabulary as JSON (for a :class:`elusive.text.tokenizer_records.TokenizerRecord`,
        the value recorded from the tokenizer it stands for).
    """
    recorded = getattr(tokenizer, "recorded_vocab_sha256", None)
    if recorded is not None:
        return recorded

    def compute() -> str:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        payload = json.dumps({"vocab": vocab, "special": sorted(tokenizer.all_special_tokens)}, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    return _memoised(_VOCAB_HASHES, tokenizer, (len(tokenizer), tuple(tokenizer.all_special_tokens)), compute)


_TOKENIZER_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_sha256(tokenizer) -> str | None:
    """Hash of everything that decides how a fast tokenizer splits a text, or None without a Rust backend.

    That is the backend's own serialisation (normaliser, pre-tokeniser, model with its vocabulary and
    merges, post-processor with the special tokens it adds, added tokens, truncation and padding) plus the
    wrapper's ``split_special_tokens``: two tokenizers with the same hash give the same ids and offsets for
    every text. Memoised per tokenizer object like :func:`vocab_sha256` (~0.1 s for a 150k vocabulary). For a
    :class:`elusive.text.tokenizer_records.TokenizerRecord`, the value recorded from the tokenizer it stands for.
    """
    recorded = getattr(tokenizer, "recorded_tokenizer_sha256", None)
    if recorded is not None:
        return recorded
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    key = (len(tokenizer), tuple(tokenizer.all_special_tokens), split, str(backend.truncation), str(backend.padding))
    return _memoised(
        _TOKENIZER_HASHES,
        tokenizer,
        key,
        lambda: hashlib.sha256(f"split_special_tokens={split}\n{backend.to_str()}".encode("utf-8")).hexdigest(),
    )


def tokens_sha256(tokenizer, text_prefix: str, dataset_sha256: str, offsets: np.ndarray, input_ids: np.ndarray,
                  char_spans: np.ndarray, ranked: np.ndarray) -> str | None:
    """The ``tokens_sha256`` of a dump: its token arrays hashed together with what made them.

    Recomputed from a loaded dump and the tokenizer at hand, it equals the stored value only if the
    arrays are unchanged and were made by a tokenizer with the same :func:`tokenizer_sha256`, with the
    same ``text_prefix``, on the dataset of ``dataset_sha256``: then tokenising the dataset again would give
    exactly these arrays. None when the tokenizer cannot be hashed.
    """
    tokenizer_hash = tokenizer_sha256(tokenizer)
    if tokenizer_hash is None:
        return None
    digest = hashlib.sha256(json.dumps([tokenizer_hash, text_prefix, dataset_sha256]).encode("utf-8"))
    for array, dtype in ((offsets, np.int64), (input_ids, np.int64), (char_spans, np.int64), (ranked, np.uint8)):
        digest.update(np.ascontiguousarray(array, dtype=dtype).data)
    return digest.hexdigest()
