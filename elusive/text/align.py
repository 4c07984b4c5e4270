"""Aligning per-token scores of different tokenizers through the characters of the same text.

Two models with different tokenizers (e.g. Gemma and Llama) split a text differently, so their scores
cannot be subtracted token by token. Both are projected onto the text's *words* — runs of letters/digits,
or runs of punctuation — using each token's character span: a word's score is the mean score of the
tokens that overlap it. Word scores can then be subtracted, and later projected back onto the tokens of
any tokenizer (a token's score is the mean of the words it overlaps).
"""

from __future__ import annotations

import re

import numpy as np

WORD_RE = re.compile(r"\w+|[^\w\s]+")


def word_spans(text: str) -> np.ndarray:
    """[w, 2] character spans of the words of ``text`` (punctuation runs are words of their own)."""
    spans = [(m.start(), m.end()) for m in WORD_RE.finditer(text)]
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def overlap_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean [len(a), len(b)]: spans ``a[i]`` and ``b[j]`` share at least one character."""
    return (a[:, None, 0] < b[None, :, 1]) & (a[:, None, 1] > b[None, :, 0])


def project(scores: np.ndarray, source: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of the ``scores`` of the ``source`` spans that overlap each ``target`` span (0 where none does).

    Args:
        scores: [s] scores of the source units.
        source: [s, 2] character spans of the source units (``-1`` spans never overlap anything).
        target: [t, 2] character spans to project onto.
        valid: [s] which source units count (e.g. not special/prefix tokens); default all.
    """
    overlap = overlap_matrix(target, source)
    if valid is not None:
        overlap &= valid[None, :]
    counts = overlap.sum(axis=1)
    sums = overlap.astype(np.float64) @ scores.astype(np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
