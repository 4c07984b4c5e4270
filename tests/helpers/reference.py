"""Readable, per-token reference implementations the tests hold the package's fast code to.

Kept out of the package: nothing but the tests needs them.
"""

from __future__ import annotations

import re

import numpy as np

from elusive.augment.stage import SHUFFLE_STREAM, DropSettings, drop_probabilities, ranks_from_scores
from elusive.text.tokens import Encoded, is_droppable

_SPACES = re.compile(r"[ \t]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")


def remove_spans(text: str, spans: np.ndarray) -> str:
    """Delete the characters of ``spans`` ([k, 2], in increasing start order; overlaps remove their union), then
    tidy: runs of spaces/tabs become one space, spaces around a newline and whitespace at both ends go."""
    if len(spans) == 0:
        return text
    pieces = []
    pos = 0
    for start, end in np.asarray(spans).tolist():
        pieces.append(text[pos:start])
        pos = max(pos, end)
    pieces.append(text[pos:])
    return _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", "".join(pieces))).strip()


def droppable_tokens(text: str, enc: Encoded) -> np.ndarray:
    """Indices of the tokens of ``text`` that may be dropped, decided token by token."""
    idx = np.flatnonzero(enc.ranked)
    return np.asarray([i for i in idx if is_droppable(text[enc.char_spans[i, 0] : enc.char_spans[i, 1]])],
                      dtype=np.int64)


def reference_ranks(text: str, enc: Encoded, scores, settings: DropSettings, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of one text and their ranks, as the documentation of ``elusive.augment.stage.drop_plan`` says."""
    cand = droppable_tokens(text, enc)
    kind = settings.augment_type
    if kind == "random":
        return cand, np.zeros(len(cand), dtype=np.int64)
    if kind == "position":
        return cand, np.arange(len(cand))[::-1].copy()
    if kind == "shuffled":
        return cand, ranks_from_scores(np.random.default_rng([settings.seed, SHUFFLE_STREAM, index]).random(len(cand)))
    if settings.released:
        keys = np.asarray(scores, dtype=np.float32)
        # position: a stable ascending sort (equal scores keep their order), reversed; numpy: its default kind
        order = np.argsort(keys, kind="stable" if settings.ties == "position" else None)[::-1]
        rank_of = np.empty(len(scores), dtype=np.int64)
        rank_of[order] = np.arange(len(scores))
        return cand, rank_of[cand]
    return cand, ranks_from_scores(np.asarray(scores)[cand])


def reference_copies(text: str, enc: Encoded, scores, settings: DropSettings, multiply: int, rng, index: int = 0):
    """``multiply`` copies of one text, token by token and copy by copy, on the documented random stream."""
    cand, ranks = reference_ranks(text, enc, scores, settings, index)
    p = np.full(len(cand), settings.alpha) if settings.augment_type == "random" else \
        drop_probabilities(ranks, settings.alpha, settings.beta)
    drops = rng.random((multiply, len(cand))) < p[None, :]
    spans = enc.char_spans[cand]
    return [remove_spans(text, spans[row]) for row in drops]
