"""Reading the datasets the stages consume: CSV files with a ``text`` column (tagged biographies), or
Wikipedia paragraphs with questions (``.json``/``.jsonl``, see :mod:`elusive.text.wiki`).

The paper's released CSVs have the same ``text`` column and tags; extra columns are ignored. For a
``.json``/``.jsonl`` file the texts are its distinct paragraphs (contexts), untagged.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import pandas as pd

from elusive.core.errors import InputError
from elusive.text.tags import Span, parse_tagged, strip_tags, tag_problem
from elusive.text.wiki import is_wiki, load_contexts

log = logging.getLogger(__name__)


def read_csv(path: str | os.PathLike[str], key: str, columns: tuple[str, ...] = ("text",)) -> pd.DataFrame:
    """Read a CSV and check that it exists, parses, has ``columns`` and at least one row.

    Every row must have exactly as many fields as the header: a text with unquoted commas would otherwise be
    split, and pandas would quietly take its leading fields as an index (``index_col=False`` stops that too).

    Args:
        path: The CSV file.
        key: The config key that named it (for error messages).
        columns: Columns that must be present.

    Raises:
        InputError: Missing file, unreadable CSV, missing column, or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}={path}: no such file; fix the path")
    try:
        check_field_counts(path, key)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, csv.Error) as err:
        if isinstance(err, pd.errors.EmptyDataError):
            need = ", ".join(columns)
            raise InputError(f"{key}={path}: the file is empty; it needs a header row with {need} and rows") from err
        if isinstance(err, UnicodeDecodeError):
            raise InputError(f"{key}={path}: not UTF-8 text ({_bad_byte(path)}); save the file as UTF-8") from err
        raise InputError(f"{key}={path}: not a readable CSV ({err}); fix the file") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{key}={path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, frame.columns))}); "
            f"the file needs a header row with {', '.join(columns)}"
        )
    if frame.empty:
        raise InputError(f"{key}={path}: the file has no rows; give a dataset with at least one text")
    return frame


def _bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8: ``byte 0xf6 on line 2``."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        return f"byte 0x{raw[err.start]:02x} on line {line}: {err.reason}"
    return "a byte that is not UTF-8"


def check_field_counts(path: Path, key: str) -> None:
    """Refuse a CSV row (blank lines aside) whose number of fields differs from the header's.

    Raises:
        InputError: Naming the first such row (0-based, as elsewhere) and its line, and saying to quote the text.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        row = -1
        for fields in reader:
            if not fields:  # a blank line: pandas skips it too
                continue
            row += 1
            if len(fields) != len(header):
                raise InputError(
                    f"{key}={path}: row {row} (line {reader.line_num}) has {len(fields)} fields, the header has "
                    f"{len(header)}; quote a text that contains commas (\"...\", as pandas and Excel write it)"
                )


def load_texts(path: str | os.PathLike[str], key: str = "dataset") -> list[str]:
    """Return the tag-free texts of a dataset, in file order.

    Args:
        path: A CSV with a ``text`` column (inline field tags are removed), or a Wikipedia ``.json``/``.jsonl``
            file (its distinct paragraphs, in file order, taken as they are).
        key: Config key that named the file.

    Raises:
        InputError: See :func:`read_csv` and :func:`elusive.text.wiki.load_wiki`; also an empty text.
    """
    if is_wiki(path):
        return load_contexts(path, key)
    raw = read_csv(path, key)["text"].tolist()
    check_tags(raw, path, key)
    texts = [strip_tags(t) for t in raw]
    check_not_empty(texts, path, key)
    return texts


def original_rows(path: str | os.PathLike[str], key: str = "dataset") -> list[int] | None:
    """The rows of ``path`` that are original texts: in stage 3's output (a ``copy`` column) the rows of copy 0,
    else None (every text is an original: a tagged CSV, a Wikipedia file).

    Raises:
        InputError: See :func:`read_csv`; also a ``copy`` column that is not whole numbers.
    """
    if is_wiki(path):
        return None
    frame = read_csv(path, key)
    if "copy" not in frame.columns:
        return None
    copies = frame["copy"].tolist()
    if not all(c.isdigit() for c in copies):
        raise InputError(f"{key}={path}: the copy column must hold whole numbers (0 = the original text); fix the file")
    return [i for i, c in enumerate(copies) if int(c) == 0]


def training_texts(path: str | os.PathLike[str], key: str = "dataset") -> tuple[list[str], list[int] | None]:
    """The texts train.py learns from (tag-free, in file order) and the indices of the originals among them.

    Stage 3 writes a copy that dropped every token (a short text under a high alpha) as an empty row: it teaches
    nothing, so it is left out here, with a warning that counts them. Any other empty row — an original
    (``copy`` 0), or a row of a CSV without a ``copy`` column — is refused as in :func:`load_texts`.

    Returns:
        The texts, and (stage 3's output) the indices in them of the originals, else None (every text is one).

    Raises:
        InputError: See :func:`load_texts` and :func:`original_rows`.
    """
    if is_wiki(path):
        return load_contexts(path, key), None
    raw = read_csv(path, key)["text"].tolist()
    check_tags(raw, path, key)
    texts = [strip_tags(t) for t in raw]
    originals = original_rows(path, key)
    if originals is None:
        check_not_empty(texts, path, key)
        return texts, None
    is_original = set(originals)
    check_not_empty([t if i in is_original else "x" for i, t in enumerate(texts)], path, key)
    keep = [i for i, t in enumerate(texts) if t.strip() or i in is_original]
    if len(keep) < len(texts):
        log.warning("%s=%s: %d of its %d copies dropped every token (empty rows); trained on without them", key, path,
                    len(texts) - len(keep), len(texts) - len(originals))
    position = {old: new for new, old in enumerate(keep)}
    return [texts[i] for i in keep], [position[i] for i in originals]


def check_tags(texts: list[str], path: str | os.PathLike[str], key: str) -> None:
    """Refuse a dataset row with an unknown, unclosed or unbalanced field tag (see :func:`elusive.text.tags.tag_problem`)."""
    for row, text in enumerate(texts):
        if "<" in text and (problem := tag_problem(text)):
            raise InputError(f"{key}={path}: row {row}: {problem}; fix the tags in that row")


def check_not_empty(texts: list[str], path: str | os.PathLike[str], key: str) -> None:
    """Refuse a dataset row whose text (tags removed) is empty or only whitespace."""
    for row, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"{key}={path}: row {row} has an empty text; remove it or fill it in")


def load_tagged(path: str | os.PathLike[str], key: str = "dataset") -> list[tuple[str, list[Span]]]:
    """Return each text without tags together with its tagged spans (see :func:`elusive.text.tags.parse_tagged`).

    A Wikipedia ``.json``/``.jsonl`` file has no tags: its paragraphs come with empty span lists.
    """
    if is_wiki(path):
        return [(context, []) for context in load_contexts(path, key)]
    raw = read_csv(path, key)["text"].tolist()
    check_tags(raw, path, key)
    tagged = [parse_tagged(t) for t in raw]
    check_not_empty([plain for plain, _ in tagged], path, key)
    return tagged
