"""The questions of stage 5, as prompts with gold answers: biography QA, the completion probe, Wikipedia QA.

**Biography QA** (``mode=qa``, the paper's evaluation): for every field in the prompts file and every person
in ``eval_data``, ``shots`` solved examples about *other* (real, well-known) people from ``fewshot_data``, then
the question::

    Which company did Tim Cook work for?
    Answer: Apple

    ...

    Which company did Liam Thompson work for?
    Answer:

**Completion probe** (``mode=completion``): for every person and tagged field, the person's name followed by
the words of their biography's own sentence up to the field, the pronoun replaced by the name::

    Liam Thompson had a professional role at

The model memorised that sentence (it was trained on it), so the probe measures what was stored, while QA
measures what can be *extracted* with a question — the gap is the paper's starting point. No shots by
default; with ``shots`` > 0, solved completions of the few-shot people come first, blank lines between.

**Wikipedia QA** (``eval_data`` is a ``.json``/``.jsonl`` file, see :mod:`elusive.text.wiki`): each question is
asked closed-book after ``shots`` solved questions about *other* paragraphs (``Question: …`` /
``Answer: …``); those of ``fewshot_data`` when it is also a ``.json``/``.jsonl`` file, otherwise the other
questions of ``eval_data``. A shot never comes from the asked question's own paragraph, so none gives its
answer away. ``results.json`` then has one entry ``qa``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elusive.core.config import default_shots
from elusive.core.errors import InputError
from elusive.evaluation.metrics import normalize_answer
from elusive.text.data import check_tags, read_csv
from elusive.text.tags import Span, parse_tagged
from elusive.text.wiki import WikiQuestion, is_wiki, load_wiki

log = logging.getLogger(__name__)

@dataclass
class Question:
    """One closed-book question and, after evaluation, its answer and scores."""

    person: str
    field: str
    prompt: str
    gold: str | list[str]  # Wikipedia mode: every gold answer
    prediction: str = ""
    exact_match: float = 0.0
    f1: float = 0.0


def load_prompts(path: Path) -> dict[str, str]:
    """Read ``field,prompt`` rows; a literal ``\\n`` in a prompt becomes a newline.

    Raises:
        InputError: Missing columns, duplicate fields, or a prompt without ``{name}``.
    """
    frame = read_csv(path, "prompts", columns=("field", "prompt"))
    prompts: dict[str, str] = {}
    for field, prompt in zip(frame["field"], frame["prompt"]):
        prompt = prompt.replace("\\n", "\n")
        if "{name}" not in prompt:
            raise InputError(f"prompts={path}: the prompt for field {field!r} has no {{name}}; write e.g. 'Where was {{name}} born?\\nAnswer:'")
        if field in prompts:
            raise InputError(f"prompts={path}: field {field!r} appears twice; keep one prompt per field")
        prompts[field] = prompt
    return prompts


def load_people(path: Path, key: str, fields: list[str]) -> list[dict[str, str]]:
    """Read a tagged CSV into ``{"name": ..., field: value, ...}`` per row.

    Raises:
        InputError: A malformed tag, or a row without a ``<name>`` tag or without one of ``fields``.
    """
    people = []
    texts = read_csv(path, key)["text"].tolist()
    check_tags(texts, path, key)
    for row, text in enumerate(texts):
        _, spans = parse_tagged(text)
        values: dict[str, str] = {}
        for span in spans:
            values.setdefault(span.field, span.value.strip())
        for needed in ["name", *fields]:
            if needed not in values:
                raise InputError(
                    f"{key}={path}: row {row} has no <{needed}>...</{needed}> tag; tag every field the prompts ask about "
                    "(or drop that field from the prompts file)"
                )
        people.append(values)
    check_names([person["name"] for person in people], path, key)
    return people


def check_names(names: list[str], path: Path, key: str) -> None:
    """Refuse an empty name and a name on two rows: a question names only the person, so two rows about one
    name would ask one question twice (with two golds, at most one of which the model can give).

    Raises:
        InputError: Naming the row(s).
    """
    first: dict[str, int] = {}
    for row, name in enumerate(names):
        shown = " ".join(name.split())
        if not shown:
            raise InputError(f"{key}={path}: row {row}: the <name> tag is empty; write the person's name in it")
        if shown in first:
            raise InputError(f"{key}={path}: rows {first[shown]} and {row} are both about {shown!r}, and a question "
                             "names only the person; give each person once (drop or rename the other row)")
        first[shown] = row


def render(template: str, name: str) -> str:
    """Fill ``{name}`` (by plain replacement, so other braces in a prompt are harmless)."""
    return template.replace("{name}", name)


def build_questions(
    people: list[dict[str, str]],
    fewshot: list[dict[str, str]],
    prompts: dict[str, str],
    shots: int,
    seed: int,
    shared: bool = False,
) -> list[Question]:
    """Make one k-shot question per field and person; shots never include the person asked about.

    With ``shared``, every question of a field gets the same shots (drawn once per field from the few-shot
    people not asked about), so the prompts share a prefix whose KV cache generation can reuse.
    """
    rng = np.random.default_rng(seed)
    asked = {person["name"] for person in people}
    questions = []
    for field, template in prompts.items():
        shared_pool = [p for p in fewshot if p["name"] not in asked]
        shared_choice = rng.choice(len(shared_pool), size=shots, replace=False) if shared and len(shared_pool) >= shots else None
        for person in people:
            pool = shared_pool if shared else [p for p in fewshot if p["name"] != person["name"]]
            if len(pool) < shots:
                raise InputError(
                    f"fewshot_data: only {len(pool)} usable examples for shots={shots} (people not asked about); "
                    "lower shots= or add people to fewshot_data"
                )
            chosen = shared_choice if shared else rng.choice(len(pool), size=shots, replace=False)
            parts = [f"{render(template, pool[j]['name'])} {pool[j][field]}" for j in chosen]
            parts.append(render(template, person["name"]))
            questions.append(Question(person["name"], field, "\n\n".join(parts), person[field]))
    return questions


WIKI_FIELD = "qa"


def _one_line(text: str) -> str:
    """Collapse whitespace, so a question or answer cannot break the one-line prompt format."""
    return " ".join(text.split())


def wiki_prompt(question: str, shots: list[tuple[str, str]] = ()) -> str:
    """``Question: q`` newline ``Answer: a`` per shot, blank lines between, then the asked ``Question: q`` and ``Answer:``."""
    parts = [f"Question: {_one_line(q)}\nAnswer: {_one_line(a)}" for q, a in shots]
    parts.append(f"Question: {_one_line(question)}\nAnswer:")
    return "\n\n".join(parts)


def build_wiki_questions(
    asked: list[WikiQuestion],
    asked_contexts: list[str],
    pool: list[WikiQuestion],
    pool_contexts: list[str],
    shots: int,
    seed: int,
    key: str = "eval_data",
) -> list[Question]:
    """One k-shot prompt per asked question; shots are drawn (seeded) from ``pool`` minus its own paragraph.

    Args:
        asked: The questions to ask; ``asked_contexts`` are the paragraphs their ``context`` indices refer to.
        pool: Solved questions to draw shots from; ``pool_contexts`` are their paragraphs.
        shots: Examples per prompt.
        seed: Seed of the draw.
        key: Config key that gave the pool (for the error when it is too small).

    Raises:
        InputError: Fewer than ``shots`` pool questions about other paragraphs.
    """
    rng = np.random.default_rng(seed)
    ids: dict[str, int] = {}
    pool_para = np.asarray([ids.setdefault(pool_contexts[q.context], len(ids)) for q in pool], dtype=np.int64)
    out = []
    for q in asked:
        own = ids.get(asked_contexts[q.context], -1)
        chosen: list[tuple[str, str]] = []
        if shots > 0:
            allowed = np.flatnonzero(pool_para != own)  # never the asked question's own paragraph
            if len(allowed) < shots:
                raise InputError(
                    f"{key}: only {len(allowed)} questions about other paragraphs for {shots} shots (question {q.id}); "
                    "lower shots= or give more paragraphs"
                )
            picked = allowed[rng.choice(len(allowed), size=shots, replace=False)]
            chosen = [(pool[j].question, pool[j].answers[0]) for j in picked]
        out.append(Question(q.id, WIKI_FIELD, wiki_prompt(q.question, chosen), list(q.answers)))
    return out



# --------------------------------------------------------------------------------------------------
# The completion probe
# --------------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
_PRONOUN = re.compile(r"\b(He|She|They|he|she|they)\b")
_POSSESSIVE = re.compile(r"^(His|Her|Their)\b")


def completion_prompt(text: str, spans: list[Span], target: Span) -> str:
    """The person's name and the words of ``target``'s own sentence up to the field, pronoun → name.

    The sentence starts after the last sentence end (``. `` and the like) between the previous tagged value
    and the field; if the name's own sentence holds the field, it starts with the name already. The first
    subject pronoun (He/She/They) of the sentence is replaced by the name, else a possessive one that starts it
    (His/Her/Their → "<name>'s"); a sentence without either is prefixed with ``"<name>: "``.

    Args:
        text: The tag-free biography.
        spans: Its tagged spans (:func:`elusive.text.tags.parse_tagged`), with a ``name``.
        target: The field asked about.

    Returns:
        e.g. ``"Liam Thompson had a professional role at"`` (no trailing space).
    """
    name = next(s for s in spans if s.field == "name")
    before = [s for s in spans if s.end <= target.start]
    previous = before[-1] if before else None
    start = previous.end if previous is not None else 0
    between = text[start : target.start]
    ends = list(_SENTENCE_END.finditer(between))
    if ends:
        sentence = between[ends[-1].end() :]
    elif previous is not None and previous.field == "name":
        return (name.value.strip() + between).rstrip()
    else:
        sentence = between
    person = name.value.strip()
    # a function, not a string, as the replacement: a name is text, never a template (r"\g<1>" stays as typed)
    replaced, count = _PRONOUN.subn(lambda _: person, sentence, count=1)
    if not count:
        replaced, count = _POSSESSIVE.subn(lambda _: f"{person}'s", sentence.lstrip(), count=1)
    return (replaced if count else f"{person}: {sentence}").strip()


ABBREVIATIONS = frozenset(
    "st mt ft dr mr mrs ms prof sr jr inc co corp ltd llc plc bros no nos gen col lt sgt capt rev hon gov sen rep "
    "ave blvd rd univ dept assn intl natl vs etc approx est ca".split()
)
"""Words whose period (``St. Petersburg``, ``Acme Inc.``) is not a sentence end by itself (lower case, no period)."""
OPENERS = frozenset("He She They His Her Their It Its I We This These".split())
"""Words that start a new sentence after an abbreviation (``... Acme Inc. He was ...``)."""
_PERIOD = re.compile(r"\.(?=\s|$)")


def completion_answer(generated: str) -> str:
    """The answer in a completion: the first line up to the first sentence end, stripped, final period removed.

    A period followed by whitespace ends the sentence unless it belongs to an abbreviation that a gold answer
    may hold inside (``St. Petersburg, Russia``, ``J. P. Morgan``, ``U.S. Steel``, ``Washington, D.C.``): a
    single letter, a word with a period inside, or one of :data:`ABBREVIATIONS` — and even then it does when
    the next word opens a sentence (:data:`OPENERS`: ``Acme Inc. He was ...``). A period followed by a
    lower-case word never ends one (``approx. three``). A period between characters (``Amazon.com``, ``3.5``)
    is never a sentence end. Not told apart: a sentence that starts with a name right after an abbreviation
    (``Acme Co. Liam Thompson was ...``; in a biography every sentence after the first opens with a pronoun).
    Hand-written: a sentence splitter (nltk's punkt) would be a dependency for
    this one cut, and it still needs the same abbreviation list to keep ``St. Petersburg`` whole.
    """
    line = generated.split("\n", 1)[0]
    for period in _PERIOD.finditer(line):
        end = period.start()
        rest = line[period.end() :].lstrip()
        if not rest:
            return line[:end].strip()
        word_before = line[:end].split()[-1] if line[:end].split() else ""
        next_word = rest.split()[0]
        if next_word[0].islower():
            continue
        bare = word_before.strip("\"'([{").lower()
        abbreviation = (len(bare) == 1 and bare.isalpha()) or "." in bare or bare in ABBREVIATIONS
        if not abbreviation or next_word.strip("\"'([{") in OPENERS:
            return line[:end].strip()
    return line.strip()


def build_completions(people_texts: list[tuple[str, list[Span]]], fewshot: list[tuple[str, list[Span]]],
                      fields: list[str], shots: int, seed: int) -> list[Question]:
    """One completion prompt per person and field (fields in ``fields`` order), with ``shots`` solved
    completions of few-shot people first (never the person asked about)."""
    rng = np.random.default_rng(seed)
    questions = []
    solved = {}
    for text, spans in fewshot:
        name = next(s.value.strip() for s in spans if s.field == "name")
        solved[name] = {s.field: f"{completion_prompt(text, spans, s)} {s.value.strip()}."
                        for s in spans if s.field != "name"}
    for text, spans in people_texts:
        name = next(s.value.strip() for s in spans if s.field == "name")
        by_field = {}
        for s in spans:
            by_field.setdefault(s.field, s)
        for field in fields:
            parts = []
            if shots:
                pool = [p for p in solved if p != name and field in solved[p]]
                if len(pool) < shots:
                    raise InputError(f"fewshot_data: only {len(pool)} usable examples for shots={shots} (people not "
                                     "asked about); lower shots= or add people to fewshot_data")
                parts = [solved[pool[j]][field] for j in rng.choice(len(pool), size=shots, replace=False)]
            parts.append(completion_prompt(text, spans, by_field[field]))
            questions.append(Question(name, field, "\n\n".join(parts), by_field[field].value.strip()))
    return questions


def load_tagged_people(path: Path, key: str, fields: list[str]) -> list[tuple[str, list[Span]]]:
    """Tagged rows of ``path`` as (text, spans), each with a ``<name>`` and every field of ``fields``.

    Raises:
        InputError: A malformed tag, or a row without a name or one of ``fields``.
    """
    texts = read_csv(path, key)["text"].tolist()
    check_tags(texts, path, key)
    rows = []
    for row, raw in enumerate(texts):
        text, spans = parse_tagged(raw)
        present = {s.field for s in spans}
        for needed in ["name", *fields]:
            if needed not in present:
                raise InputError(
                    f"{key}={path}: row {row} has no <{needed}>...</{needed}> tag; tag every field asked about"
                )
        rows.append((text, spans))
    check_names([next(s.value.strip() for s in spans if s.field == "name") for _, spans in rows], path, key)
    return rows


def wiki_questions(eval_data: Path, fewshot_data: Path | None, shots: int, seed: int, max_people: int | None) -> list[Question]:
    """The k-shot prompts of Wikipedia mode (see the module docstring for where the shots come from).

    Raises:
        InputError: A malformed file, no questions, or too few held-out questions for ``shots``.
    """
    contexts, asked = load_wiki(eval_data, "eval_data")
    if not asked:
        raise InputError(f"eval_data={eval_data}: has paragraphs but no questions; give a file with qas/question rows")
    pool, pool_contexts, key = asked, contexts, "eval_data"
    if shots > 0 and is_wiki(fewshot_data):
        pool_contexts, pool = load_wiki(fewshot_data, "fewshot_data")
        key = f"fewshot_data={fewshot_data}"
    elif shots > 0:
        log.info("shots from other paragraphs of eval_data (fewshot_data=%s is not a .json/.jsonl file)", fewshot_data)
        key = f"eval_data={eval_data}"
    if max_people is not None:
        asked = asked[:max_people]
    for q in asked:
        if not any(normalize_answer(a) for a in q.answers):
            check_gold(q.answers[0] if q.answers else "", f"eval_data={eval_data}: question {q.id}", "answer")
    return build_wiki_questions(asked, contexts, pool, pool_contexts, shots, seed, key)


def questions_for(cfg) -> list[Question]:
    """Every question of an evaluation (:class:`elusive.core.config.EvaluateConfig`), read and checked, no model.

    Raises:
        InputError: A data file is malformed, or the settings do not fit the data.
    """
    eval_data, fewshot_data, prompts = Path(cfg.eval_data), Path(cfg.fewshot_data), Path(cfg.prompts)
    shots = default_shots(cfg.shots, cfg.mode)
    if is_wiki(eval_data):
        if cfg.mode == "completion":
            raise InputError(f"mode=completion: eval_data={eval_data} holds Wikipedia questions, not tagged fields to "
                             "complete; use mode=qa, or a tagged biography CSV")
        if cfg.shared_shots:
            raise InputError("shared_shots=true: Wikipedia shots exclude the asked paragraph, so they differ per "
                             "question; use shared_shots=false")
        return wiki_questions(eval_data, fewshot_data, shots, cfg.seed, cfg.max_people)
    if is_wiki(fewshot_data) and shots > 0:
        raise InputError(
            f"fewshot_data={fewshot_data}: Wikipedia questions can only be shots for Wikipedia eval_data "
            f"(eval_data={eval_data} is a CSV); give a tagged CSV of people"
        )
    templates = load_prompts(prompts)
    if cfg.mode == "completion":  # the same fields as QA, so the two modes are comparable
        fields = list(templates)
        people = load_tagged_people(eval_data, "eval_data", fields)[: cfg.max_people]
        for row, (_, spans) in enumerate(people):
            for span in spans:
                if span.field in fields:
                    check_gold(span.value, f"eval_data={eval_data}: row {row}", span.field)
        fewshot = load_tagged_people(fewshot_data, "fewshot_data", fields) if shots > 0 else []
        return build_completions(people, fewshot, fields, shots, cfg.seed)
    people = load_people(eval_data, "eval_data", list(templates))[: cfg.max_people]
    for row, person in enumerate(people):
        for field in templates:
            check_gold(person[field], f"eval_data={eval_data}: row {row}", field)
    fewshot = load_people(fewshot_data, "fewshot_data", list(templates)) if shots > 0 else []
    return build_questions(people, fewshot, templates, shots, cfg.seed, shared=cfg.shared_shots)


def check_gold(value: str, where: str, field: str) -> None:
    """Refuse a gold answer that SQuAD normalisation (:func:`elusive.evaluation.metrics.normalize_answer`) empties.

    Such a gold (``"The"``, ``"-"``) would score an empty prediction as an exact match: a data error.

    Raises:
        InputError: Naming the row (or question) and the field.
    """
    if not normalize_answer(value):
        raise InputError(
            f"{where}: the {field} {value!r} is empty once lower-cased and stripped of punctuation and articles "
            "(SQuAD normalisation), so an empty answer would count as correct; give the real answer or drop the row"
        )
