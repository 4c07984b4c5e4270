"""The compiled loops of stage 3 (:mod:`elusive.augment.stage`): output rows as arrays of code points, and CSV bytes.

A chunk of texts is one array of code points. :func:`drop_rows` makes every output row in one pass:
per text its original (if kept) and ``multiply`` copies, each copy dropping the candidate tokens whose
uniform draw falls below their drop probability, then tidying the whitespace as
:func:`elusive.augment.stage.remove_spans` does. :func:`csv_lines` writes the rows as Python's csv module
would, straight to UTF-8. :func:`elusive.augment.stage.remove_spans` and pandas' ``to_csv`` are the readable
references; the tests hold these functions to them byte for byte.

Hand-written loops, compiled with numba, because no library offers "delete these character spans from
these strings, many copies at once", and the numpy version of the same steps (a dozen passes over the
~15 M output characters of 10k biographies × 11 rows) ran at half the speed the in-process target needs (≥ 30×
the released method, bench/README.md). Compiling them takes 3–6 s, so the compiled code is cached
(``cache=True``) in the user's private cache folder (:mod:`elusive.core.cache` says where, and why reading numba's
pickled cache files from it is acceptable);
later processes load it in a fraction of that. numba caches each (function, argument types) on its first
call; every such first call runs under an exclusive file lock (:func:`_first_call`), so processes that
compile at the same time (a multirun on an empty cache) never interleave their writes of one function's
cache index and data files (numba numbers the data files in the order a process meets the signatures, so
two processes meeting them in different orders could otherwise pair an index entry with the other's code).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

from elusive.core import cache
from elusive.core.files import file_lock

CACHE = cache.configure_numba()  # before numba is imported: it reads NUMBA_CACHE_DIR once

import numba  # noqa: E402
import numpy as np  # noqa: E402

_SPACE_TABLE = np.array([chr(c).isspace() for c in range(0x3001)] + [False], dtype=np.bool_)  # U+3000: last space
_TAB, _NEWLINE, _SPACE, _QUOTE = (ord(c) for c in "\t\n \"")


def codes_of(text: str) -> np.ndarray:
    """Code points of ``text`` as uint32 (lone surrogates pass through, as they would in a str)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def text_of(codes: np.ndarray) -> str:
    return codes.astype(np.uint32, copy=False).tobytes().decode("utf-32-le", "surrogatepass")


def narrow(codes: np.ndarray) -> np.ndarray:
    """``codes`` in the smallest unsigned type that holds them (most texts need one byte a character): the
    rows are ~10 times the texts' size, so this is the memory the compiled loops read and write."""
    top = int(codes.max()) if len(codes) else 0
    return codes.astype(np.uint8 if top < 0x100 else np.uint16 if top < 0x10000 else np.uint32, copy=False)


def exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


_FIRST_CALLS_DONE: set[tuple] = set()


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Hold an exclusive lock on numba's cache folder (none where there is no cache or no ``fcntl``)."""
    folder = numba.config.CACHE_DIR
    if not CACHE or not folder:
        yield
        return
    if os.name != "posix":  # numba's own atomic renames only
        yield
        return
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with file_lock(os.path.join(folder, ".elusive.lock")):
        yield


def _first_call(kernel, *args):
    """``kernel(*args)``; the first call per (kernel, argument types) in this process, which is where numba
    loads the compiled code from its cache or compiles and saves it, runs under :func:`_cache_lock`."""
    key = (kernel, *(
        (a.dtype.str, a.ndim, a.flags.c_contiguous) if isinstance(a, np.ndarray) else type(a) for a in args))
    if key in _FIRST_CALLS_DONE:
        return kernel(*args)
    with _cache_lock():
        result = kernel(*args)
    _FIRST_CALLS_DONE.add(key)
    return result


@dataclass
class Rows:
    """Output rows as one flat array of code points: row r is ``codes[starts[r]:starts[r + 1]]``."""

    codes: np.ndarray
    starts: np.ndarray
    source_row: np.ndarray
    copy: np.ndarray
    dropped: int = 0  # candidate tokens dropped over all copies of these rows' texts
    draws: int = 0  # candidate tokens over all copies (each copy draws once per candidate)

    def strings(self) -> list[str]:
        text = text_of(self.codes)
        return [text[a:b] for a, b in itertools.pairwise(self.starts.tolist())]


def ranks_by_group(keys: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """:func:`ranks_from_scores` within each group: group g is ``keys[group_start[g]:group_start[g + 1]]``."""
    # -key as unsigned integers in the same order (-0.0 made 0.0, every NaN the same NaN, which sorts last
    # as in argsort), so that a stable integer sort per group gives the ties of argsort(-keys, "stable")
    keys = np.asarray(keys)
    if keys.dtype != np.float32:
        keys = keys.astype(np.float64)
    uint, sign = (np.uint32, np.uint32(1 << 31)) if keys.dtype == np.float32 else (np.uint64, np.uint64(1 << 63))
    negated = -keys + keys.dtype.type(0)
    bits = np.where(np.isnan(negated), keys.dtype.type(np.nan), negated).view(uint)
    bits = np.where(bits & sign, ~bits, bits | sign)
    return _first_call(_ranks_within, bits, np.asarray(group_start, dtype=np.int64))


@numba.njit(nogil=True, cache=CACHE)
def _ranks_within(bits, group_start):
    ranks = np.empty(len(bits), dtype=np.int64)
    for g in range(len(group_start) - 1):
        a, b = group_start[g], group_start[g + 1]
        order = np.argsort(bits[a:b], kind="mergesort")  # stable
        for r in range(b - a):
            ranks[a + order[r]] = r
    return ranks


@numba.njit(nogil=True, cache=CACHE)
def _candidates(word, text_start, offsets, char_spans, ranked):
    n_texts = len(text_start) - 1
    words_before = np.zeros(len(word) + 1, dtype=np.int64)
    for i in range(len(word)):
        words_before[i + 1] = words_before[i] + word[i]
    index = np.empty(len(ranked), dtype=np.int64)
    cand_start = np.zeros(n_texts + 1, dtype=np.int64)
    n = 0
    for t in range(n_texts):
        for k in range(offsets[t], offsets[t + 1]):
            if ranked[k] and words_before[text_start[t] + char_spans[k, 1]] > words_before[text_start[t] + char_spans[k, 0]]:
                index[n] = k
                n += 1
        cand_start[t + 1] = n
    return index[:n], cand_start


def candidates(word: np.ndarray, text_start: np.ndarray, offsets: np.ndarray, char_spans: np.ndarray,
               ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that may be dropped: ranked, and covering a word character (``word``, per character of
    the texts, text t's at ``text_start[t]``). Returns their indices (token order) and, per text, where
    its candidates start in them (``[texts + 1]``)."""
    return _first_call(_candidates, np.ascontiguousarray(word, dtype=np.bool_), text_start.astype(np.int64),
                       offsets.astype(np.int64), np.ascontiguousarray(char_spans, dtype=np.int64),
                       np.ascontiguousarray(ranked, dtype=np.bool_))


# --------------------------------------------------------------------------------------------------
# Dropping and tidying
# --------------------------------------------------------------------------------------------------


@numba.njit(nogil=True)
def _copy(out, w, codes, a, b) -> int:
    """``out[w:] = codes[a:b]``; return the new end (a loop: numba's slice assignment costs more per call)."""
    n = b - a
    for i in range(n):  # (indexed from w and a, not a running w: the loop vectorises)
        out[w + i] = codes[a + i]
    return w + n


@numba.njit(nogil=True)
def _put_tidied(out, w, row_start, pending, codes, a, b):
    """Append ``codes[a:b]`` to the row that starts at ``out[row_start]``, tidying as :func:`remove_spans` does
    (but for the strip at the row's ends, :func:`_strip`); return the new end and ``pending``.

    ``remove_spans`` replaces each run of spaces/tabs by one space, then removes a space next to a newline.
    In one pass: a run of spaces/tabs only sets ``pending``; the next other character is preceded by one
    space unless it or the last written character is a newline, or nothing is written yet (a leading run
    is stripped anyway). A run still pending at the row's end is never written (the strip).
    """
    for i in range(a, b):
        c = codes[i]
        if c > _SPACE:  # most characters: one test (whitespace beyond ASCII is not tidied, only stripped)
            if pending:
                if w > row_start and out[w - 1] != _NEWLINE:
                    out[w] = _SPACE
                    w += 1
                pending = False
            out[w] = c
            w += 1
        elif c == _SPACE or c == _TAB:
            pending = True
        else:
            if pending and w > row_start and c != _NEWLINE and out[w - 1] != _NEWLINE:
                out[w] = _SPACE
                w += 1
            pending = False
            out[w] = c
            w += 1
    return w, pending


@numba.njit(nogil=True)
def _strip(out, row_start, w, space_table) -> int:
    """Remove whitespace (``str.isspace``) at both ends of the row ``out[row_start:w]``; return its new end."""
    a, b = row_start, w
    while a < b and space_table[min(out[a], len(space_table) - 1)]:
        a += 1
    while b > a and space_table[min(out[b - 1], len(space_table) - 1)]:
        b -= 1
    for i in range(a, b):
        out[row_start + i - a] = out[i]
    return row_start + b - a


@numba.njit(nogil=True, cache=CACHE)
def _drop_rows(codes, text_start, spans, cand_start, p, uniforms, draw_start, multiply, keep_original, space_table):
    n_texts = len(text_start) - 1
    per_text = multiply + keep_original
    out = np.empty(len(codes) * per_text, dtype=codes.dtype)  # a row is never longer than its text
    starts = np.zeros(n_texts * per_text + 1, dtype=np.int64)
    w = 0
    row = 0
    for t in range(n_texts):
        first, end = text_start[t], text_start[t + 1]
        if keep_original:
            w = _copy(out, w, codes, first, end)
            row += 1
            starts[row] = w
        c0, n_cand = cand_start[t], cand_start[t + 1] - cand_start[t]
        for k in range(multiply):
            draws = draw_start[t * multiply + k]
            row_start = w
            j0 = 0  # the first dropped candidate
            while j0 < n_cand and uniforms[draws + j0] >= p[c0 + j0]:
                j0 += 1
            if j0 == n_cand:  # a copy that drops nothing is the text unchanged
                w = _copy(out, w, codes, first, end)
            else:
                kept_from, pending = first, False  # the text's characters from kept_from on are kept, so far
                for j in range(j0, n_cand):
                    if uniforms[draws + j] < p[c0 + j]:  # drop this token's characters (spans may overlap)
                        s, e = first + spans[c0 + j, 0], first + spans[c0 + j, 1]
                        if s > kept_from:
                            w, pending = _put_tidied(out, w, row_start, pending, codes, kept_from, s)
                        kept_from = max(kept_from, e)
                w, pending = _put_tidied(out, w, row_start, pending, codes, kept_from, end)
                w = _strip(out, row_start, w, space_table)
            row += 1
            starts[row] = w
    return out[:w], starts


def drop_rows(codes: np.ndarray, text_start: np.ndarray, spans: np.ndarray, cand_start: np.ndarray, p: np.ndarray,
              uniforms: np.ndarray, draw_start: np.ndarray, multiply: int, keep_original: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a chunk of texts: per text its original (if ``keep_original``), then ``multiply`` copies.

    Args:
        codes: [characters] code points of the texts, concatenated; text t is ``codes[text_start[t]:text_start[t + 1]]``.
        text_start: [texts + 1] int64.
        spans: [candidates, 2] int64 character span (within its text) of every token that may be dropped,
            text by text, in token order (starts non-decreasing; spans may overlap).
        cand_start: [texts + 1] int64: text t's candidates are ``cand_start[t]:cand_start[t + 1]``.
        p: [candidates] float64 drop probability of each candidate.
        uniforms: float64 draws; copy k of text t drops its j-th candidate iff
            ``uniforms[draw_start[t * multiply + k] + j] < p[cand_start[t] + j]``.
        draw_start: [texts × multiply] int64.

    Returns:
        (codes, starts) of the rows: row r is ``codes[starts[r]:starts[r + 1]]``; copies that drop something
        are tidied as :func:`elusive.augment.stage.remove_spans` tidies them. ``codes`` has the narrowest unsigned
        type that holds the texts' code points (:func:`narrow`).
    """
    codes = np.ascontiguousarray(narrow(codes))
    return _first_call(_drop_rows, codes, text_start.astype(np.int64),
                       np.ascontiguousarray(spans, dtype=np.int64).reshape(-1, 2), cand_start.astype(np.int64),
                       np.ascontiguousarray(p, dtype=np.float64), np.ascontiguousarray(uniforms, dtype=np.float64),
                       draw_start.astype(np.int64), int(multiply), int(keep_original), _SPACE_TABLE)


# --------------------------------------------------------------------------------------------------
# Writing the rows as CSV, byte for byte what pandas' to_csv (Python's csv module) writes
# --------------------------------------------------------------------------------------------------


def _csv_quoting() -> tuple[np.ndarray, bool]:
    """Which ASCII characters make Python's csv writer quote a field (with ``lineterminator="\\n"``), and
    whether it quotes an empty field: asked of the csv module itself, which pandas writes with, so the rows
    written here stay byte-identical to ``DataFrame.to_csv`` whatever the Python version."""
    def written(field: str) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([field, 0])
        return buffer.getvalue()

    triggers = np.array([written(f"a{chr(c)}b").startswith('"') for c in range(128)], dtype=np.bool_)
    return triggers, written("").startswith('"')


_CSV_TRIGGERS, _CSV_QUOTE_EMPTY = _csv_quoting()
CSV_HEADER = "text,source_row,copy\n"


@numba.njit(nogil=True)
def _put_decimal(out, w, value) -> int:
    digits = 1
    while value >= 10 ** digits:
        digits += 1
    for i in range(digits):
        out[w + digits - 1 - i] = 48 + value % 10
        value //= 10
    return w + digits


@numba.njit(nogil=True, cache=CACHE)
def _csv_rows(codes, starts, source_row, copy, triggers, quote_empty):
    n = len(starts) - 1
    out = np.empty(4 * len(codes) + 48 * n, dtype=np.uint8)  # UTF-8 ≤ 4 bytes a character; a doubled quote 2
    w = 0
    for r in range(n):
        a, b = starts[r], starts[r + 1]
        quoted = quote_empty and a == b
        for i in range(a, b):
            if codes[i] < 128 and triggers[codes[i]]:
                quoted = True
                break
        if quoted:
            out[w] = _QUOTE
            w += 1
        for i in range(a, b):
            c = codes[i]
            if c < 0x80:
                out[w] = c
                w += 1
                if c == _QUOTE:  # only in a quoted field (the quote is a trigger): written twice
                    out[w] = c
                    w += 1
            elif c < 0x800:
                out[w] = 0xC0 | (c >> 6)
                out[w + 1] = 0x80 | (c & 0x3F)
                w += 2
            elif c < 0x10000:
                out[w] = 0xE0 | (c >> 12)
                out[w + 1] = 0x80 | ((c >> 6) & 0x3F)
                out[w + 2] = 0x80 | (c & 0x3F)
                w += 3
            else:
                out[w] = 0xF0 | (c >> 18)
                out[w + 1] = 0x80 | ((c >> 12) & 0x3F)
                out[w + 2] = 0x80 | ((c >> 6) & 0x3F)
                out[w + 3] = 0x80 | (c & 0x3F)
                w += 4
        if quoted:
            out[w] = _QUOTE
            w += 1
        out[w] = 44  # ","
        w = _put_decimal(out, w + 1, source_row[r])
        out[w] = 44
        w = _put_decimal(out, w + 1, copy[r])
        out[w] = _NEWLINE
        w += 1
    return out[:w]


def csv_lines(rows: Rows) -> np.ndarray:
    """``rows`` as UTF-8 CSV lines ``text,source_row,copy`` (no header), quoted as the csv module would: the
    bytes as a uint8 array (a file's ``write`` and ``hashlib`` take it as it is, without a copy)."""
    codes = np.ascontiguousarray(rows.codes)
    return _first_call(_csv_rows, codes, rows.starts.astype(np.int64), np.asarray(rows.source_row, dtype=np.int64),
                       np.asarray(rows.copy, dtype=np.int64), _CSV_TRIGGERS, _CSV_QUOTE_EMPTY)
