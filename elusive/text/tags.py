"""Inline field tags in biography texts: ``<name>Liam Thompson</name> was born on <date>...</date>``.

The biography CSVs (ours and the paper's released ones) mark each fact with an XML-like tag. Stages 1-4
train on the text with the tags removed; evaluation and the analyses use the tagged spans to know where
each field sits. This module is the one place that parses that format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Hand-written rather than an XML parser: the texts are not XML (bare "&", no root element), and the tags
# never nest, so one non-greedy regex is exact.
TAG_RE = re.compile(r"<(?P<field>[A-Za-z_][A-Za-z0-9_]*)>(?P<value>.*?)</(?P=field)>", re.DOTALL)
ANY_TAG_RE = re.compile(r"</?[A-Za-z_][A-Za-z0-9_]*>")

FIELDS = ("name", "date", "city", "university", "major", "company")
"""The biography fields, in the order the default template mentions them."""

_NO_TAG = r"(?:[^<]++|<(?!/?[A-Za-z_][A-Za-z0-9_]*>))*+"  # text without a tag
_WELL_TAGGED_RE = re.compile(  # <field>text</field> blocks between such texts, nothing else (possessive: linear)
    rf"(?:{_NO_TAG}<({'|'.join(FIELDS)})>{_NO_TAG}</\1>)*+{_NO_TAG}", re.DOTALL
)


@dataclass(frozen=True)
class Span:
    """One tagged field, located in the tag-free text.

    Attributes:
        field: Tag name, e.g. ``"company"``.
        value: The tagged words, e.g. ``"the British Museum"``.
        start: Character offset of ``value`` in the plain text.
        end: One past the last character of ``value`` in the plain text.
    """

    field: str
    value: str
    start: int
    end: int


def parse_tagged(text: str) -> tuple[str, list[Span]]:
    """Remove the field tags from ``text`` and locate every tagged value in the result.

    Args:
        text: A tagged text, e.g. ``"<name>Ann Lee</name> was born in <city>Oslo</city>."``.

    Returns:
        The plain text (tags removed, nothing else changed) and the spans in order of appearance.
    """
    pieces: list[str] = []
    spans: list[Span] = []
    pos = 0  # position in the tagged text
    length = 0  # length of the plain text written so far
    for match in TAG_RE.finditer(text):
        before = ANY_TAG_RE.sub("", text[pos : match.start()])  # stray unmatched tags are dropped too
        pieces.append(before)
        length += len(before)
        value = ANY_TAG_RE.sub("", match.group("value"))
        spans.append(Span(match.group("field"), value, length, length + len(value)))
        pieces.append(value)
        length += len(value)
        pos = match.end()
    pieces.append(ANY_TAG_RE.sub("", text[pos:]))
    return "".join(pieces), spans


def tag_problem(text: str) -> str | None:
    """Describe the first malformed tag in ``text``, or return None when its tags are fine.

    Tags must be one of :data:`FIELDS`, each opened tag closed by the same tag, and tags never nest. A typo
    such as ``<compnay>`` or a missing ``</city>`` would otherwise silently drop a field from the analyses
    and the questions. Extend :data:`FIELDS` to use other field names.
    """
    if _WELL_TAGGED_RE.fullmatch(text):  # the common case, decided in C (a tenth of the loop's time)
        return None
    return _first_tag_problem(text)


def _first_tag_problem(text: str) -> str | None:
    """:func:`tag_problem` tag by tag: finds the first problem to name it."""
    open_tag: str | None = None
    for match in ANY_TAG_RE.finditer(text):
        tag = match.group(0)
        name = tag.strip("</>")
        if name not in FIELDS:
            return f"unknown tag {tag} (known: {', '.join(FIELDS)})"
        closing = tag.startswith("</")
        if not closing and open_tag is not None:
            return f"<{name}> opens before </{open_tag}> closes <{open_tag}>"
        if closing and open_tag != name:
            return f"{tag} closes a tag that is not open" + (f" (<{open_tag}> is)" if open_tag else "")
        open_tag = None if closing else name
    if open_tag is not None:
        return f"<{open_tag}> is never closed"
    return None


def strip_tags(text: str) -> str:
    """Return ``text`` without its field tags (the plain text of :func:`parse_tagged`, without locating spans)."""
    return ANY_TAG_RE.sub("", text)
