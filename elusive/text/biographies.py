"""Seeded synthetic biographies in the style of the bioS dataset (Allen-Zhu & Li) used by the paper.

Each person gets a unique full name, a pronoun (he, she, or for a small seeded share of people they), a
birth date (1900-2005), a birth city with its country, a university, a major and an employer, drawn from the
word pools below. A biography is one sentence per field; the first sentence has the tagged name as its
subject and every later sentence the person's pronoun, so the fields mentioned last sit far from the name.
With ``template="paper"`` (the default) every sentence is the paper's frame for its field, exactly as in the
paper's example biography::

    <name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He spent his early years in
    <city>Melbourne, Australia</city>. He received mentorship and guidance from faculty members at
    <university>Sorbonne University</university>. He completed his education with a focus on
    <major>Biomedical Engineering</major>. He had a professional role at <company>the British Museum</company>.

(She/her for women; "They were born on", "They spent their early years in", ... for they-people; a name as
subject always takes "was".) ``template="varied"`` draws one of five frames per field instead. Every frame
starts with its subject, so any ``field_order`` reads naturally: a permuted biography opens with the name in
its first field's frame, e.g. ``"<name>Liam Thompson</name> had a professional role at ..."``.

Every tagged value is exactly the gold answer of the closed-book question for that field (see
``data/prompts.csv``); nothing else is inside a tag. People are drawn with one ``random.Random(seed)``, the
permuted orders and the varied frames each with their own stream, so the same arguments always give the same
bytes, and the people depend on neither ``field_order`` nor ``template``.

The pools are hand-written for this project. They deliberately contain no surname of the real people in
``data/biography_fewshot.csv`` (see :data:`FEWSHOT_PEOPLE`), and those full names are also excluded
explicitly, so a few-shot example can never share a name with a synthetic person.
"""

from __future__ import annotations

import calendar
import datetime
import logging
import numbers
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from elusive.core.config import FIELD_ORDER_MODES, TEMPLATE_MODES
from elusive.core.errors import InputError
from elusive.core.files import atomic_path
from elusive.text.pools import (
    CITIES,
    COMPANIES,
    FEMALE_FIRST_NAMES,
    LAST_NAMES,
    MAJORS,
    MALE_FIRST_NAMES,
    PRONOUNS,
    TEMPLATES,
    UNIVERSITIES,
)

log = logging.getLogger(__name__)


ATTRIBUTE_FIELDS = ("date", "city", "university", "major", "company")
"""The five non-name fields, in the ``"fixed"`` order."""




THEY_SHARE = 0.1
"""Fraction of generated people (drawn per person, seeded) referred to as they/their."""


DATE_MIN = datetime.date(1900, 1, 1)


DATE_MAX = datetime.date(2005, 12, 31)


@dataclass(frozen=True)
class Person:
    """One biography's facts; every attribute is the exact gold answer for its field.

    Attributes:
        name: Unique full name, e.g. ``"Liam Thompson"``.
        gender: ``"male"``, ``"female"`` or ``"nonbinary"`` (chooses He/his, She/her or They/their).
        date: Birth date, e.g. ``"January 5, 1990"``.
        city: Birth city with its country, e.g. ``"Oslo, Norway"``.
        university: University, with a leading ``"the"`` where English needs one.
        major: Field of study, e.g. ``"Biomedical Engineering"``.
        company: Employer, e.g. ``"the British Museum"``.
    """

    name: str
    gender: str
    date: str
    city: str
    university: str
    major: str
    company: str


FEWSHOT_PEOPLE: tuple[Person, ...] = (
    Person("Tim Cook", "male", "November 1, 1960", "Mobile, USA", "Auburn University",
           "Industrial Engineering", "Apple"),
    Person("Satya Nadella", "male", "August 19, 1967", "Hyderabad, India", "the Manipal Institute of Technology",
           "Electrical Engineering", "Microsoft"),
    Person("Andy Grove", "male", "September 2, 1936", "Budapest, Hungary", "the City College of New York",
           "Chemical Engineering", "Intel"),
    Person("Mary Barra", "female", "December 24, 1961", "Royal Oak, USA", "Kettering University",
           "Electrical Engineering", "General Motors"),
    Person("Jensen Huang", "male", "February 17, 1963", "Tainan, Taiwan", "Oregon State University",
           "Electrical Engineering", "Nvidia"),
    Person("Lisa Su", "female", "November 7, 1969", "Tainan, Taiwan", "the Massachusetts Institute of Technology",
           "Electrical Engineering", "Advanced Micro Devices"),
    Person("Susan Wojcicki", "female", "July 5, 1968", "Santa Clara, USA", "Harvard University",
           "History and Literature", "Google"),
    Person("Marissa Mayer", "female", "May 30, 1975", "Wausau, USA", "Stanford University",
           "Symbolic Systems", "Yahoo"),
    Person("Gwynne Shotwell", "female", "November 23, 1963", "Evanston, USA", "Northwestern University",
           "Mechanical Engineering", "SpaceX"),
    Person("Tim Berners-Lee", "male", "June 8, 1955", "London, United Kingdom", "the University of Oxford",
           "Physics", "CERN"),
    Person("Demis Hassabis", "male", "July 27, 1976", "London, United Kingdom", "the University of Cambridge",
           "Computer Science", "DeepMind"),
    Person("Reed Hastings", "male", "October 8, 1960", "Boston, USA", "Bowdoin College", "Mathematics",
           "Netflix"),
    Person("Alan Turing", "male", "June 23, 1912", "London, United Kingdom", "the University of Cambridge",
           "Mathematics", "the National Physical Laboratory"),
    Person("Steve Wozniak", "male", "August 11, 1950", "San Jose, USA",
           "the University of California, Berkeley", "Electrical Engineering and Computer Science", "Hewlett-Packard"),
)
"""Real, well-known people for ``data/biography_fewshot.csv`` (few-shot QA examples only).

Facts: birth date and city, a university attended, the field of study there, and one employer — each a
widely documented public fact (checked against their Wikipedia biographies).
"""


RESERVED_NAMES = frozenset(person.name for person in FEWSHOT_PEOPLE)
"""Full names the generator never produces (the few-shot people)."""


_FIRST_NAMES = MALE_FIRST_NAMES + FEMALE_FIRST_NAMES


def _excluded_name_indices() -> frozenset[int]:
    """Indices into the first-name x last-name grid that must not be used (reserved or "Henry Henry")."""
    n_last = len(LAST_NAMES)
    excluded = set()
    last_index = {last: j for j, last in enumerate(LAST_NAMES)}
    for i, first in enumerate(_FIRST_NAMES):
        if first in last_index:
            excluded.add(i * n_last + last_index[first])
    for name in RESERVED_NAMES:
        first, _, last = name.partition(" ")
        if first in _FIRST_NAMES and last in last_index:
            excluded.add(_FIRST_NAMES.index(first) * n_last + last_index[last])
    return frozenset(excluded)


_EXCLUDED = _excluded_name_indices()


MAX_PEOPLE = len(_FIRST_NAMES) * len(LAST_NAMES) - len(_EXCLUDED)
"""How many people with distinct full names the pools allow."""


def format_date(day: datetime.date) -> str:
    """Format a date like ``"January 5, 1990"`` (no leading zero, English month name)."""
    return f"{calendar.month_name[day.month]} {day.day}, {day.year}"


def generate_people(n: int, seed: int) -> list[Person]:
    """Draw ``n`` people with distinct full names.

    The first name sets the gender (he or she), except for a share :data:`THEY_SHARE` of people, drawn per
    person, who are referred to as they/their whatever their first name.

    Args:
        n: Number of people, ``1 <= n <= MAX_PEOPLE``.
        seed: Seed of the ``random.Random`` that draws everything.

    Returns:
        The people in drawing order.

    Raises:
        InputError: ``n`` is out of range.
    """
    if n < 1:
        raise InputError(f"n_people={n}: must be >= 1")
    if n > MAX_PEOPLE:
        raise InputError(f"n_people={n}: must be <= {MAX_PEOPLE}, the number of distinct full names the pools allow")
    rng = random.Random(seed)
    n_last = len(LAST_NAMES)
    grid = len(_FIRST_NAMES) * n_last
    # Sample grid cells without replacement (lazy over range, so no big list), then drop excluded cells.
    cells = [c for c in rng.sample(range(grid), min(grid, n + len(_EXCLUDED))) if c not in _EXCLUDED][:n]
    span_days = (DATE_MAX - DATE_MIN).days
    people = []
    for cell in cells:
        first_i, last_i = divmod(cell, n_last)
        date = format_date(DATE_MIN + datetime.timedelta(days=rng.randint(0, span_days)))
        city, university = rng.choice(CITIES), rng.choice(UNIVERSITIES)
        major, company = rng.choice(MAJORS), rng.choice(COMPANIES)
        if rng.random() < THEY_SHARE:
            gender = "nonbinary"
        else:
            gender = "male" if first_i < len(MALE_FIRST_NAMES) else "female"
        people.append(Person(f"{_FIRST_NAMES[first_i]} {LAST_NAMES[last_i]}", gender, date, city, university, major,
                             company))
    return people


def render_biography(
    person: Person, order: Sequence[str], rng: random.Random, template: str = "paper"
) -> str:
    """Write ``person``'s tagged biography, one sentence per field in ``order``.

    Args:
        person: The facts.
        order: A permutation of :data:`ATTRIBUTE_FIELDS`; the first field's sentence has the tagged name as
            subject, the others the person's pronoun (He, She or They, with the verb agreeing).
        rng: Chooses one frame per field when ``template="varied"``; not used by ``"paper"``.
        template: ``"paper"`` (the paper's frame for each field) or ``"varied"`` (see :data:`TEMPLATES`).

    Returns:
        The tagged text, e.g. ``"<name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He ..."``.
    """
    frames = TEMPLATES[template]
    pronoun, possessive, pronoun_was, pronoun_s = PRONOUNS[person.gender]
    sentences = []
    for k, field in enumerate(order):
        choices = frames[field]
        frame = choices[0] if len(choices) == 1 else rng.choice(choices)
        # A name is a singular subject ("Sam Lee was born"), whatever the person's pronoun.
        subject, was, s = (f"<name>{person.name}</name>", "was", "s") if k == 0 else (pronoun, pronoun_was, pronoun_s)
        value = f"<{field}>{getattr(person, field)}</{field}>"
        sentences.append(frame.format(S=subject, p=possessive, X=value, was=was, s=s))
    return " ".join(sentences)


def _check_field_order(field_order: object) -> str | tuple[str, ...]:
    """Return ``"fixed"``, ``"permuted"`` or the explicit order as a tuple; raise InputError otherwise."""
    if isinstance(field_order, str):
        if field_order in FIELD_ORDER_MODES:
            return field_order
    elif isinstance(field_order, Sequence) and all(isinstance(f, str) for f in field_order):
        if sorted(field_order) == sorted(ATTRIBUTE_FIELDS):
            return tuple(field_order)
    shown = f"[{', '.join(map(str, field_order))}]" if isinstance(field_order, (list, tuple)) else field_order
    raise InputError(
        f'field_order={shown}: must be "fixed", "permuted" or a permutation of {", ".join(ATTRIBUTE_FIELDS)}'
    )


def _check_template(template: object) -> str:
    """Return ``template`` if it is one of :data:`TEMPLATE_MODES`; raise InputError otherwise."""
    if isinstance(template, str) and template in TEMPLATE_MODES:
        return template
    raise InputError(f'template={template}: must be "paper" (the paper\'s frames) or "varied" (several per field)')


def _check_int(key: str, value: object) -> int:
    """Return ``value`` as an int; raise InputError naming ``key`` if it is not an integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{key}={value}: must be an integer")
    return int(value)


def biography_texts(
    n_people: int, seed: int, field_order: str | Sequence[str] = "fixed", template: str = "paper"
) -> list[str]:
    """Return the tagged biographies ``make_biographies`` would write (validated like it)."""
    n_people = _check_int("n_people", n_people)
    seed = _check_int("seed", seed)
    order_spec = _check_field_order(field_order)
    template = _check_template(template)
    people = generate_people(n_people, seed)
    # Separate streams: the people depend on neither field_order nor template, and the permuted orders
    # do not depend on the template.
    order_rng = random.Random(f"order:{seed}")
    frame_rng = random.Random(f"render:{seed}")
    texts = []
    for person in people:
        if order_spec == "fixed":
            order: Sequence[str] = ATTRIBUTE_FIELDS
        elif order_spec == "permuted":
            order = order_rng.sample(ATTRIBUTE_FIELDS, len(ATTRIBUTE_FIELDS))
        else:
            order = order_spec
        texts.append(render_biography(person, order, frame_rng, template))
    return texts


def _csv_bytes(texts: list[str]) -> bytes:
    """The bytes of a one-column ``text`` CSV of ``texts`` (UTF-8, ``\\n`` line ends)."""
    return pd.DataFrame({"text": texts}).to_csv(index=False, lineterminator="\n").encode("utf-8")


def _write_text_csv(texts: list[str], output: Path) -> int:
    """Write a one-column ``text`` CSV atomically; return its size in bytes."""
    data = _csv_bytes(texts)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _check_output(output: object) -> Path:
    if output is None or str(output) == "":
        raise InputError("output=None: give the CSV file to write, e.g. output=data/biography.csv")
    path = Path(output)
    if path.is_dir():
        raise InputError(f"output={output}: is a folder; give a CSV file path, e.g. output=data/biography.csv")
    from elusive.core.outputs import Output, check_outputs

    check_outputs("make_biographies", [Output("output", output, path)], {})  # under a file, not writable
    return path


def make_biographies(
    n_people: int, seed: int, field_order: str | Sequence[str], output: Path, template: str = "paper",
    overwrite: bool = False,
) -> Path:
    """Generate ``n_people`` tagged biographies and write them to a one-column (``text``) CSV.

    Args:
        n_people: Number of people (distinct full names), ``1 <= n_people <= MAX_PEOPLE``.
        seed: Seed; the same arguments give a byte-identical file.
        field_order: ``"fixed"`` (date, city, university, major, company), ``"permuted"`` (a fresh random
            order per person) or an explicit permutation of those five field names.
        output: The CSV to write (atomically; parent folders are created).
        template: ``"paper"`` (the paper's five frames, one per field: "was born on", "spent his early years
            in", "received mentorship and guidance from faculty members at", "completed his education with
            a focus on", "had a professional role at") or ``"varied"`` (one of five frames per field, drawn
            with the seed).
        overwrite: Replace ``output`` if it exists (else refused, unless it holds exactly what would be written:
            then it is left as it is).

    Returns:
        ``output``.

    Raises:
        InputError: An argument is invalid, or ``output`` exists with other contents and ``overwrite`` is
            false; nothing is written.
    """
    path = _check_output(output)
    texts = biography_texts(n_people, seed, field_order, template)
    if path.exists() and not overwrite:
        if path.is_file() and path.read_bytes() == _csv_bytes(texts):
            log.info("%s already holds these %d biographies; left as it is", path, len(texts))
            return path
        raise InputError(f"output={output}: the file exists (a dataset someone made or committed); give a new "
                         "output= path, or add overwrite=true to replace it")
    size = _write_text_csv(texts, path)
    log.info("wrote %d biographies (template=%s, %d bytes) to %s", len(texts), template, size, path)
    return path


def make_fewshot(output: Path) -> Path:
    """Write :data:`FEWSHOT_PEOPLE` as tagged biographies (paper template, fixed order) to ``output``."""
    path = _check_output(output)
    rng = random.Random("fewshot")  # the paper template draws nothing from it
    texts = [render_biography(person, ATTRIBUTE_FIELDS, rng, "paper") for person in FEWSHOT_PEOPLE]
    size = _write_text_csv(texts, path)
    log.info("wrote %d few-shot biographies (%d bytes) to %s", len(texts), size, path)
    return path
