"""Wikipedia paragraphs with questions (the paper's Table 3 data, Du & Cardie 2018) in two file forms.

* **Nested SQuAD-style JSON** (``.json``), the form Du & Cardie released (xinyadu/harvestingQA)::

      {"data": [{"title": "...", "paragraphs": [{"context": "paragraph text",
                 "qas": [{"id": "...", "question": "...?", "answers": [{"text": "...", "answer_start": 12}]}]}]}]}

  A paragraph without ``qas`` is a training text with no questions.
* **One row per question** (``.jsonl``), one JSON object a line::

      {"context": "paragraph text", "question": "...?", "answers": ["13"], "id": "optional"}

  ``answers`` is a list of strings, a list of ``{"text": ...}`` objects, or the Hugging Face ``squad`` form
  ``{"text": [...], "answer_start": [...]}``. Rows with the same context belong to one paragraph.

Contexts are the continual-pretraining texts: the distinct paragraphs in file order (the same text twice is
one paragraph). Questions keep file order; a question without an ``id`` gets ``"<paragraph>-<k>"`` (the k-th
question of that paragraph), so both forms of the same data give the same ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from elusive.core.errors import InputError

WIKI_SUFFIXES = (".json", ".jsonl")


@dataclass
class WikiQuestion:
    """One question about a paragraph: its gold answers and the index of the paragraph in the contexts."""

    question: str
    answers: list[str]
    context: int
    id: str


def is_wiki(path: str | os.PathLike[str] | None) -> bool:
    """True if ``path`` names a Wikipedia QA file (``.json`` or ``.jsonl``) rather than a CSV."""
    return path is not None and Path(path).suffix.lower() in WIKI_SUFFIXES


def load_contexts(path: str | os.PathLike[str], key: str = "dataset") -> list[str]:
    """The distinct paragraphs of a Wikipedia QA file in file order (the continual-pretraining texts).

    Raises:
        InputError: See :func:`load_wiki`.
    """
    return load_wiki(path, key)[0]


def load_questions(path: str | os.PathLike[str], key: str = "eval_data") -> list[WikiQuestion]:
    """Every question of a Wikipedia QA file in file order, with its answers and paragraph index.

    Raises:
        InputError: See :func:`load_wiki`.
    """
    return load_wiki(path, key)[1]


def load_wiki(path: str | os.PathLike[str], key: str = "dataset") -> tuple[list[str], list[WikiQuestion]]:
    """Read either form into (contexts, questions).

    Args:
        path: A ``.json`` (nested) or ``.jsonl`` (one question a line) file.
        key: The config key that named the file, for error messages.

    Raises:
        InputError: Missing or unreadable file, not JSON, a missing ``data``/``paragraphs``/``context``/
            ``question``/``answers`` entry, an empty context, a question without answer text, or a JSONL
            line that is not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}={path}: no such file; fix the path")
    if path.suffix.lower() not in WIKI_SUFFIXES:
        raise InputError(f"{key}={path}: not a .json or .jsonl file; give a Wikipedia QA file in one of those forms")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{key}={path}: not UTF-8 text ({err}); save the file as UTF-8") from err
    reader = _Reader(path, key)
    if path.suffix.lower() == ".jsonl":
        reader.read_rows(text)
    else:
        reader.read_nested(text)
    if not reader.contexts:
        raise InputError(f"{key}={path}: holds no paragraphs; give a file with at least one context")
    return reader.contexts, reader.questions


class _Reader:
    """Collects contexts (deduplicated, in order) and questions while checking every entry."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.contexts: list[str] = []
        self.index: dict[str, int] = {}
        self.questions: list[WikiQuestion] = []
        self.per_context: dict[int, int] = {}

    def fail(self, where: str, problem: str, fix: str) -> InputError:
        return InputError(f"{self.key}={self.path}: {where} {problem}; {fix}")

    def context(self, value: object, where: str) -> int:
        if not isinstance(value, str):
            raise self.fail(where, 'has no "context" string', 'give each paragraph its text as "context": "..."')
        if not value.strip():
            raise self.fail(where, 'has an empty "context"', "remove the paragraph or fill in its text")
        if value not in self.index:
            self.index[value] = len(self.contexts)
            self.contexts.append(value)
        return self.index[value]

    def question(self, entry: dict, context: int, where: str) -> None:
        question = entry.get("question")
        if not isinstance(question, str) or not question.strip():
            raise self.fail(where, 'has no "question" string', 'give every question as "question": "...?"')
        if "answers" not in entry:
            raise self.fail(where, 'has no "answers"', 'add "answers": ["..."] (or [{"text": "..."}])')
        answers = self.answers(entry["answers"], where)
        k = self.per_context.get(context, 0)
        self.per_context[context] = k + 1
        qid = entry.get("id")
        qid = f"{context}-{k}" if qid is None or str(qid) == "" else str(qid)
        self.questions.append(WikiQuestion(question.strip(), answers, context, qid))

    def answers(self, raw: object, where: str) -> list[str]:
        if isinstance(raw, dict):  # Hugging Face squad: {"text": [...], "answer_start": [...]}
            raw = raw.get("text")
            raw = [raw] if isinstance(raw, str) else raw
        texts: list[str] = []
        if isinstance(raw, list):
            for item in raw:
                value = item.get("text") if isinstance(item, dict) else item
                if not isinstance(value, str):
                    raise self.fail(
                        where, f"has an answer that is not a string or {{\"text\": ...}} ({json.dumps(item)[:60]})",
                        'write answers as ["..."] or [{"text": "..."}]',
                    )
                if value.strip() and value.strip() not in texts:
                    texts.append(value.strip())
        elif raw is not None:
            raise self.fail(where, 'has "answers" that is not a list', 'write answers as ["..."] or [{"text": "..."}]')
        if not texts:
            raise self.fail(
                where, 'has no answer text in "answers"', "give at least one non-empty answer or drop the question"
            )
        return texts

    def read_nested(self, text: str) -> None:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{self.key}={self.path}: not JSON ({err}); fix the file (one question per line belongs in a .jsonl file)"
            ) from err
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise InputError(
                f'{self.key}={self.path}: has no "data" list at the top; a .json file must be nested SQuAD-style '
                '{"data": [{"paragraphs": [...]}]} (rows of context/question/answers go in a .jsonl file)'
            )
        for a, article in enumerate(doc["data"]):
            paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
            if not isinstance(paragraphs, list):
                raise self.fail(
                    f"data[{a}]", 'has no "paragraphs" list', 'give each article "paragraphs": [{"context": ..., "qas": [...]}]'
                )
            for p, paragraph in enumerate(paragraphs):
                where = f"data[{a}].paragraphs[{p}]"
                if not isinstance(paragraph, dict):
                    raise self.fail(where, "is not an object", 'write {"context": "...", "qas": [...]}')
                context = self.context(paragraph.get("context"), where)
                qas = paragraph.get("qas", [])
                if not isinstance(qas, list):
                    raise self.fail(where, '"qas" is not a list', 'write "qas": [{"question": ..., "answers": [...]}]')
                for q, entry in enumerate(qas):
                    if not isinstance(entry, dict):
                        raise self.fail(f"{where}.qas[{q}]", "is not an object", 'write {"question": ..., "answers": [...]}')
                    self.question(entry, context, f"{where}.qas[{q}]")

    def read_rows(self, text: str) -> None:
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise self.fail(where, f"is not JSON ({err})", "write one JSON object per line") from err
            if not isinstance(row, dict):
                raise self.fail(
                    where, "is not a JSON object", 'write one {"context": ..., "question": ..., "answers": [...]} per line'
                )
            self.question(row, self.context(row.get("context"), where), where)
