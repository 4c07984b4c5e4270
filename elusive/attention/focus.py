"""Which tagged field each token lies in, and the token just before each field (the query of Figures 2-3)."""

from __future__ import annotations

import numpy as np

from elusive.text.tags import Span
from elusive.text.tokens import Encoded


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
