"""The vectorised machinery of stage 3 (:mod:`elusive.augment`): output rows as arrays of code points.

Python work per token (``is_droppable``) and per copy (slicing, two regex passes, strip) dominated stage 3.
Here a chunk of texts is handled with numpy: their characters as one array of code points, each output row
as the list of character intervals of its text that it keeps (:func:`kept_intervals`, gathered with one
index array), the whitespace tidying of :func:`elusive.augment.remove_spans` as decisions on the (few)
whitespace characters of the rows (:func:`tidy`), and the CSV lines written as Python's csv module would
(:func:`csv_bytes`). :func:`elusive.augment.remove_spans` is the readable reference; the tests hold these
functions to it byte for byte. Hand-written because no library offers "delete these character spans from
these strings, many copies at once".
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass

import numpy as np

_SPACE_TABLE = np.array([chr(c).isspace() for c in range(0x3001)] + [False], dtype=bool)  # U+3000: last space
_TAB, _NEWLINE, _SPACE, _QUOTE = (np.uint32(ord(c)) for c in "\t\n \"")


def codes_of(text: str) -> np.ndarray:
    """Code points of ``text`` as uint32 (lone surrogates pass through, as they would in a str)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def text_of(codes: np.ndarray) -> str:
    return codes.astype(np.uint32, copy=False).tobytes().decode("utf-32-le", "surrogatepass")


def utf8(codes: np.ndarray) -> bytes:
    """``text_of(codes).encode("utf-8")``, without the detour through str when all of it is ASCII."""
    if len(codes) == 0 or codes.max() < 0x80:
        return codes.astype(np.uint8).tobytes()
    return text_of(codes).encode("utf-8")


def space_positions(codes: np.ndarray) -> np.ndarray:
    """Indices of the ``str.isspace`` characters of ``codes``.

    Whitespace is <= U+0020 or >= U+0085, so only those few characters are looked up in the table.
    """
    maybe = np.flatnonzero((codes <= 0x20) | (codes >= 0x85))
    return maybe[_SPACE_TABLE[np.minimum(codes[maybe].astype(np.int64), len(_SPACE_TABLE) - 1)]]


def narrow(codes: np.ndarray) -> np.ndarray:
    """``codes`` in the smallest unsigned type that holds them: the row arrays built from them are ~20 times
    the texts' size, and most texts need one byte per character."""
    top = int(codes.max()) if len(codes) else 0
    return codes.astype(np.uint8 if top < 0x100 else np.uint16 if top < 0x10000 else np.uint32, copy=False)


def exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def segment_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n): gathers segments of a flat array."""
    out_starts = exclusive_cumsum(lengths)
    shift = starts - out_starts[:-1]
    small = out_starts[-1] < 2**31 and (len(shift) == 0 or int(np.abs(shift).max()) + out_starts[-1] < 2**31)
    dtype = np.int32 if small else np.int64  # half the memory traffic of int64 for these long index arrays
    return np.arange(out_starts[-1], dtype=dtype) + np.repeat(shift.astype(dtype), lengths)


def row_of(starts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The row holding each position, for rows ``starts[r]:starts[r + 1]``."""
    return np.searchsorted(starts, positions, side="right") - 1


@dataclass
class Rows:
    """Output rows as one flat array of code points: row r is ``codes[starts[r]:starts[r + 1]]``."""

    codes: np.ndarray
    starts: np.ndarray
    source_row: np.ndarray
    copy: np.ndarray

    def strings(self) -> list[str]:
        text = text_of(self.codes)
        return [text[a:b] for a, b in itertools.pairwise(self.starts.tolist())]


def ranks_by_group(keys: np.ndarray, group: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """:func:`ranks_from_scores` within each group: ``group`` is sorted, group g starts at ``group_start[g]``."""
    if keys.dtype == np.float32 and len(group) and group[-1] < 2**31:
        # one stable sort of uint64 (group, then -key as order-preserving bits) is ~5x faster than
        # lexsort; -0.0 is made 0.0 and every NaN the same NaN, so ties are the ties of argsort(-keys)
        negated = -keys + np.float32(0)
        bits = np.where(np.isnan(negated), np.float32(np.nan), negated).view(np.uint32)
        bits = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
        order = np.argsort((group.astype(np.uint64) << np.uint64(32)) | bits, kind="stable")
    else:
        order = np.lexsort((-keys, group))  # stable, so ties keep position order
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[order] = np.arange(len(keys)) - group_start[group[order]]
    return ranks


def kept_intervals(row_length: np.ndarray, drop_row: np.ndarray, drop_spans: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The character intervals each row keeps: the complement of the union of its dropped spans.

    Args:
        row_length: [rows] characters of each row's text.
        drop_row, drop_spans: [k] row and [k, 2] span of every dropped token, ordered by row and, within a
            row, by start (as :func:`remove_spans` takes them). Spans may overlap: byte-level BPE splits
            one character over several tokens, each with that character's span.

    Returns:
        (row, start, end) of the kept intervals, by row then position; every row has at least one
        (possibly empty).
    """
    n_rows = len(row_length)
    # positions on one axis for all rows (row r at offset[r]), so that one running maximum of the span
    # ends merges the overlapping or touching spans of a row into groups
    offset = exclusive_cumsum(row_length)
    starts, ends = offset[drop_row] + drop_spans[:, 0], offset[drop_row] + drop_spans[:, 1]
    reach = np.maximum.accumulate(ends) if len(ends) else ends
    new = np.ones(len(starts), dtype=bool)
    new[1:] = (starts[1:] > reach[:-1]) | (drop_row[1:] != drop_row[:-1])
    first = np.flatnonzero(new)
    group_row, group_start = drop_row[first], starts[first]
    group_end = reach[np.append(first[1:] - 1, len(starts) - 1)] if len(first) else reach[:0]
    # row r keeps [its start, 1st group's start), [1st group's end, 2nd group's start), ..., [last end, its end)
    groups = np.bincount(group_row, minlength=n_rows)
    row_first = np.arange(n_rows) + exclusive_cumsum(groups)[:-1]  # index of the row's first interval
    within = np.arange(len(first)) - exclusive_cumsum(groups)[group_row]
    lo = np.empty(n_rows + len(first), dtype=np.int64)
    hi = np.empty_like(lo)
    lo[row_first] = offset[:-1]
    hi[row_first + groups] = offset[1:]
    lo[row_first[group_row] + within + 1] = group_end
    hi[row_first[group_row] + within] = group_start
    row = np.repeat(np.arange(n_rows), groups + 1)
    return row, lo - offset[row], hi - offset[row]


def tidy_stable(codes: np.ndarray, is_space: np.ndarray, text_start: np.ndarray) -> np.ndarray:
    """Per text (``codes[text_start[i]:text_start[i + 1]]``, whitespace flags ``is_space``): True if it has no tab, no two whitespace
    characters in a row and no whitespace at either end.

    In such a text every gap (maximal whitespace run) is one character that the tidying leaves alone, so
    after a drop only whitespace at the ends of the kept intervals can change (see :func:`tidy`'s
    ``pos``): a junction's gap is made of such end characters only, since any other whitespace character
    next to one would be two in a row in the text.
    """
    n_texts = len(text_start) - 1
    pos = np.flatnonzero(is_space)
    text = row_of(text_start, pos)
    bad = (codes[pos] == _TAB) | (pos == text_start[text]) | (pos == text_start[text + 1] - 1)
    bad[1:] |= (pos[1:] == pos[:-1] + 1) & (text[1:] == text[:-1])
    return np.bincount(text[bad], minlength=n_texts) == 0


def interval_end_spaces(is_space: np.ndarray, source: np.ndarray, length: np.ndarray, out_start: np.ndarray
                        ) -> np.ndarray:
    """Sorted output positions of the whitespace characters that start or end a kept interval.

    Args:
        is_space: Whitespace flags of the source characters.
        source, length, out_start: Per kept interval (in output order): where it starts in the source,
            its length and where it starts in the output.
    """
    if len(is_space) == 0:
        return np.zeros(0, dtype=np.int64)
    top = len(is_space) - 1  # (an empty interval may start just past the last character: it is masked out)
    first = is_space[np.minimum(source, top)] & (length > 0)
    last = is_space[np.clip(source + length - 1, 0, top)] & (length > 1)  # a one-character interval counts once
    ends = np.empty(2 * len(source), dtype=np.int64)  # first and last of each interval, interleaved: sorted
    ends[0::2] = np.where(first, out_start, -1)
    ends[1::2] = np.where(last, out_start + length - 1, -1)
    return ends[ends >= 0]


def tidy(codes: np.ndarray, starts: np.ndarray, tidy_row: np.ndarray, pos: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """The whitespace tidying of :func:`remove_spans` (after the drop) for the rows ``tidy_row``.

    Only whitespace changes, so only the whitespace characters are looked at: in each gap (a maximal run
    of whitespace within a row) a run of spaces/tabs keeps its first character, as a space, unless the run
    touches a newline; a gap at either end of its row goes entirely (the strip).

    Args:
        codes, starts: The rows (row r is ``codes[starts[r]:starts[r + 1]]``).
        tidy_row: [rows] the rows to tidy (the others stay as they are).
        pos: Sorted positions of the whitespace characters of the ``tidy_row`` rows that may change, whole
            gaps only (see :func:`tidy_stable`); None: every whitespace character of those rows.

    Returns:
        The rows as (codes, starts); ``codes`` is modified in place (tabs become spaces).
    """
    n, lengths = len(codes), np.diff(starts)
    if pos is None:
        pos = space_positions(codes)
        if not tidy_row.all():  # rows without a dropped token stay as they are
            untouched = np.zeros(n, dtype=bool)
            keep_rows = np.flatnonzero(~tidy_row)
            untouched[segment_index(starts[keep_rows], lengths[keep_rows])] = True
            pos = pos[~untouched[pos]]
    row_start = np.zeros(n + 1, dtype=bool)
    row_start[starts[:-1]] = True  # an empty row marks the next row's start, which is right
    row_end = np.zeros(n + 1, dtype=bool)
    row_end[starts[1:] - 1] = True  # (index -1 of a leading empty row lands on the spare last slot)
    char = codes[pos]
    blank = (char == _SPACE) | (char == _TAB)
    newline = char == _NEWLINE
    joined = np.zeros(len(pos) + 1, dtype=bool)  # joined[i]: pos[i] is in the same gap as pos[i - 1]
    joined[1:-1] = (pos[1:] == pos[:-1] + 1) & ~row_start[pos[1:]]
    gap_first = np.flatnonzero(~joined[:-1])
    gap_length = np.diff(np.append(gap_first, len(pos)))
    at_edge = row_start[pos[gap_first]] | row_end[pos[gap_first + gap_length - 1]]
    stripped = np.repeat(at_edge, gap_length)
    prev_blank = np.zeros(len(pos), dtype=bool)
    prev_blank[1:] = joined[1:-1] & blank[:-1]
    next_blank = np.zeros(len(pos), dtype=bool)
    next_blank[:-1] = joined[1:-1] & blank[1:]
    prev_newline = np.zeros(len(pos), dtype=bool)
    prev_newline[1:] = joined[1:-1] & newline[:-1]
    next_newline = np.zeros(len(pos), dtype=bool)
    next_newline[:-1] = joined[1:-1] & newline[1:]
    run_first = np.flatnonzero(blank & ~prev_blank)
    run_last = np.flatnonzero(blank & ~next_blank)  # the i-th run ends at run_last[i]: runs never leave a gap
    lead = run_first[~(prev_newline[run_first] | next_newline[run_last] | stripped[run_first])]
    remove = blank | stripped
    remove[lead] = False
    codes[pos[lead[char[lead] == _TAB]]] = _SPACE
    removed = pos[remove]
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    lengths = lengths - np.bincount(row_of(starts, removed), minlength=len(lengths))
    return codes[keep], exclusive_cumsum(lengths)


# Writing the rows as CSV, byte for byte what pandas' to_csv (Python's csv module) writes


def _csv_quoting() -> tuple[np.ndarray, bool]:
    """The characters that make Python's csv writer quote a field (with ``lineterminator="\\n"``), and whether
    it quotes an empty field: asked of the csv module itself, which pandas writes with, so the rows written
    here stay byte-identical to ``DataFrame.to_csv`` whatever the Python version."""
    def written(field: str) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([field, 0])
        return buffer.getvalue()

    triggers = [c for c in range(128) if written(f"a{chr(c)}b").startswith('"')]
    return np.array(triggers, dtype=np.uint32), written("").startswith('"')


_CSV_TRIGGERS, _CSV_QUOTE_EMPTY = _csv_quoting()
CSV_HEADER = "text,source_row,copy\n"


def csv_bytes(rows: Rows) -> bytes:
    """``rows`` as UTF-8 CSV lines ``text,source_row,copy`` (no header), quoted as the csv module would."""
    codes, starts = rows.codes, rows.starts
    n_rows = len(starts) - 1
    trigger = np.zeros(len(codes), dtype=bool)
    for c in _CSV_TRIGGERS:
        trigger |= codes == c
    quoted = np.bincount(row_of(starts, np.flatnonzero(trigger)), minlength=n_rows) > 0
    if _CSV_QUOTE_EMPTY:
        quoted |= starts[1:] == starts[:-1]
    doubled = np.flatnonzero(codes == _QUOTE)
    if len(doubled):  # a quote inside a field is written twice
        codes = np.insert(codes, doubled, _QUOTE)
        starts = starts + np.searchsorted(doubled, starts, side="left")
    between, length = _between_rows(quoted, rows.source_row, rows.copy)
    return utf8(np.insert(codes, np.repeat(starts, length), between))


def _decimal_columns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decimal digits of non-negative integers as a [n, width] array of code points, right-aligned,
    and a mask of the digits that are written (no leading zeros; 0 is written "0")."""
    values = values.astype(np.int64)
    width = len(str(int(values.max()))) if len(values) else 1
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers) % 10
    written = (values[:, None] >= powers) | (powers == 1)
    return digits.astype(np.uint32) + ord("0"), written


def _between_rows(quoted: np.ndarray, source_row: np.ndarray, copy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the csv writer adds around the row texts, as code points and the length of each piece.

    Piece 0 is row 0's opening quote; piece r + 1 is row r's closing quote, its ",source_row,copy\n" and
    row r + 1's opening quote (no quote for an unquoted row). Built as one fixed-width table (columns:
    quote, comma, source_row digits, comma, copy digits, newline, quote) whose unwritten cells are masked
    out: a Python f-string per row cost more than the rest of the CSV writing.
    """
    n = len(quoted)
    source_digits, source_written = _decimal_columns(source_row)
    copy_digits, copy_written = _decimal_columns(copy)

    def after_piece_0(block: np.ndarray) -> np.ndarray:  # piece 0 has no preceding row: an empty first line
        return np.vstack([np.zeros((1, block.shape[1]), dtype=block.dtype), block])

    def column(value) -> np.ndarray:
        return np.broadcast_to(np.asarray(value)[..., None], (n + 1, 1))

    row_part = column(np.arange(n + 1) > 0)
    table = np.hstack([column(np.uint32(ord('"'))), column(np.uint32(ord(","))), after_piece_0(source_digits),
                       column(np.uint32(ord(","))), after_piece_0(copy_digits), column(np.uint32(ord("\n"))),
                       column(np.uint32(ord('"')))])
    mask = np.hstack([column(np.concatenate([[False], quoted])), row_part, after_piece_0(source_written), row_part,
                      after_piece_0(copy_written), row_part, column(np.concatenate([quoted, [False]]))])
    return table[mask], mask.sum(axis=1)
