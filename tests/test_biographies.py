"""Tests of the synthetic biography generator, its Hydra script and the committed data files."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from elusive import biographies as bio
from elusive.biographies import (
    ATTRIBUTE_FIELDS,
    FEWSHOT_PEOPLE,
    MAX_PEOPLE,
    Person,
    biography_texts,
    generate_people,
    make_biographies,
    make_fewshot,
    render_biography,
)
from elusive.errors import InputError
from elusive.tags import FIELDS, parse_tagged

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _fields_of(text: str) -> dict[str, str]:
    _, spans = parse_tagged(text)
    assert sorted(s.field for s in spans) == sorted(FIELDS), text
    return {s.field: s.value for s in spans}


def _sentences(plain: str) -> list[str]:
    # A new sentence starts after ". " followed by a pronoun (no tagged value contains that pattern).
    return re.split(r"(?<=\.) (?=(?:He|She) )", plain)


def test_pools_are_large_and_clean():
    assert len(bio.MALE_FIRST_NAMES) >= 150 and len(bio.FEMALE_FIRST_NAMES) >= 150
    assert len(bio.LAST_NAMES) >= 200 and len(bio.CITIES) >= 150 and len(bio.UNIVERSITIES) >= 150
    assert len(bio.MAJORS) >= 60 and len(bio.COMPANIES) >= 150
    for pool in (bio.MALE_FIRST_NAMES, bio.FEMALE_FIRST_NAMES, bio.LAST_NAMES, bio.CITIES, bio.UNIVERSITIES,
                 bio.MAJORS, bio.COMPANIES):
        assert len(set(pool)) == len(pool)
        assert all(v == v.strip() and v[-1] not in ".,;:" and "<" not in v for v in pool)
    assert not set(bio.MALE_FIRST_NAMES) & set(bio.FEMALE_FIRST_NAMES)
    assert any(c.startswith("the ") for c in bio.COMPANIES)
    assert MAX_PEOPLE > 10_000
    assert all(len(ts) >= 3 for ts in bio.TEMPLATES.values())


def test_people_unique_and_valid():
    people = generate_people(2000, seed=3)
    assert len({p.name for p in people}) == 2000
    for p in people[:200]:
        first, last = p.name.split(" ", 1)
        assert first != last
        assert p.gender == ("male" if first in bio.MALE_FIRST_NAMES else "female")
        month, day, year = re.fullmatch(r"([A-Z][a-z]+) (\d{1,2}), (\d{4})", p.date).groups()
        assert 1900 <= int(year) <= 2005 and not day.startswith("0")


def test_rows_parse_with_person_values():
    people = generate_people(50, seed=0)
    texts = biography_texts(50, seed=0)
    assert len(texts) == 50
    for person, text in zip(people, texts):
        values = _fields_of(text)
        assert values == {f: getattr(person, f) for f in FIELDS}


def test_render_example_format():
    person = Person("Liam Thompson", "male", "January 5, 1990", "Oslo", "Kyoto University",
                    "Biomedical Engineering", "the British Museum")
    text = render_biography(person, ATTRIBUTE_FIELDS, random.Random(0))
    assert text.startswith("<name>Liam Thompson</name> ")
    assert "<company>the British Museum</company>." in text
    assert text.count(" He ") == 4


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    make_biographies(40, 7, "permuted", a)
    make_biographies(40, 7, "permuted", b)
    make_biographies(40, 8, "permuted", c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    frame = pd.read_csv(a)
    assert list(frame.columns) == ["text"] and len(frame) == 40


def _orders(texts):
    return {tuple(s.field for s in parse_tagged(t)[1] if s.field != "name") for t in texts}


def test_field_orders():
    assert _orders(biography_texts(30, 1, "fixed")) == {ATTRIBUTE_FIELDS}
    assert len(_orders(biography_texts(30, 1, "permuted"))) > 1
    explicit = ["company", "major", "university", "city", "date"]
    assert _orders(biography_texts(30, 1, explicit)) == {tuple(explicit)}
    # The people do not depend on the order: same names and facts.
    assert [_fields_of(t) for t in biography_texts(10, 1, "fixed")] == [
        _fields_of(t) for t in biography_texts(10, 1, explicit)
    ]


@pytest.mark.parametrize("order", ["fixed", "permuted", ["major", "company", "date", "city", "university"]])
def test_name_first_then_pronouns(order):
    people = generate_people(30, seed=2)
    for person, text in zip(people, biography_texts(30, 2, order)):
        plain, spans = parse_tagged(text)
        assert spans[0].field == "name" and spans[0].start == 0
        sentences = _sentences(plain)
        assert len(sentences) == 5
        pronoun = "He " if person.gender == "male" else "She "
        assert all(s.startswith(pronoun) for s in sentences[1:])
        assert plain.count(person.name) == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_people": 0}, "n_people=0"),
        ({"n_people": MAX_PEOPLE + 1}, "n_people="),
        ({"n_people": "ten"}, "n_people=ten"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"field_order": "random"}, "field_order=random"),
        ({"field_order": ["date", "city"]}, "field_order=[date, city]"),
        ({"field_order": ["date", "date", "university", "major", "company"]}, "field_order="),
        ({"output": None}, "output="),
    ],
)
def test_bad_arguments(tmp_path, kwargs, key):
    out = tmp_path / "bio.csv"
    args = {"n_people": 5, "seed": 0, "field_order": "fixed", "output": out} | kwargs
    with pytest.raises(InputError) as err:
        make_biographies(**args)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_committed_biography_csv_is_reproducible(tmp_path):
    regenerated = make_biographies(300, 0, "fixed", tmp_path / "biography.csv")
    assert (DATA / "biography.csv").read_bytes() == regenerated.read_bytes()


def test_fewshot_file():
    committed = DATA / "biography_fewshot.csv"
    frame = pd.read_csv(committed)
    assert list(frame.columns) == ["text"] and len(frame) >= 12
    generated = {p.name for p in generate_people(5000, seed=0)}
    for person, text in zip(FEWSHOT_PEOPLE, frame["text"]):
        assert _fields_of(text) == {f: getattr(person, f) for f in FIELDS}
        first, _, last = person.name.partition(" ")
        assert not (first in bio._FIRST_NAMES and last in bio.LAST_NAMES)
        assert person.name not in generated


def test_fewshot_file_is_reproducible(tmp_path):
    assert (DATA / "biography_fewshot.csv").read_bytes() == make_fewshot(tmp_path / "f.csv").read_bytes()


def test_prompts_file():
    frame = pd.read_csv(DATA / "prompts.csv")
    assert list(frame.columns) == ["field", "prompt"]
    assert list(frame["field"]) == list(ATTRIBUTE_FIELDS)
    for prompt in frame["prompt"]:
        assert "{name}" in prompt and prompt.endswith("\nAnswer:")
        assert prompt.format(name="Ann Lee").count("Ann Lee") == 1


def _run_script(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, "make_biographies.py", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_script_writes_csv(tmp_path):
    out = tmp_path / "b.csv"
    result = _run_script(tmp_path, "n_people=5", f"output={out}", "field_order=[company,major,university,city,date]")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 5
    assert _orders(frame["text"]) == {("company", "major", "university", "city", "date")}


def test_script_bad_argument_exits_2(tmp_path):
    out = tmp_path / "b.csv"
    result = _run_script(tmp_path, "n_people=0", f"output={out}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: n_people=0: must be >= 1"]
    assert not out.exists()
