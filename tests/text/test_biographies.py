"""Tests of the synthetic biography generator, its Hydra script and the committed data files."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pandas as pd
import pytest
from helpers.run import ROOT  # noqa: E402

from elusive.core.errors import InputError
from elusive.text import biographies as bio_biographies
from elusive.text import pools as bio_pools
from elusive.text.biographies import (
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
from elusive.text.tags import FIELDS, parse_tagged

DATA = ROOT / "data"


def _fields_of(text: str) -> dict[str, str]:
    _, spans = parse_tagged(text)
    assert sorted(s.field for s in spans) == sorted(FIELDS), text
    return {s.field: s.value for s in spans}


def _sentences(plain: str) -> list[str]:
    # A new sentence starts after ". " followed by a pronoun (no tagged value contains that pattern).
    return re.split(r"(?<=\.) (?=(?:He|She|They) )", plain)


# The paper's template, written out by hand (not built from the module's frames): name + date, then four
# sentences whose subject is one pronoun with its matching possessive.
PAPER_RE = re.compile(
    r"<name>[^<]+</name> was born on <date>[A-Z][a-z]+ [1-9]\d?, \d{4}</date>\. "
    r"(?P<S>He|She|They) spent (?P<p>his|her|their) early years in <city>[^<,]+, [^<,]+</city>\. "
    r"(?P=S) received mentorship and guidance from faculty members at <university>[^<]+</university>\. "
    r"(?P=S) completed (?P=p) education with a focus on <major>[^<]+</major>\. "
    r"(?P=S) had a professional role at <company>[^<]+</company>\."
)
PAIRS = {("He", "his"), ("She", "her"), ("They", "their")}


def _matches_paper(text: str) -> bool:
    match = PAPER_RE.fullmatch(text)
    return match is not None and (match["S"], match["p"]) in PAIRS


LIAM = Person("Liam Thompson", "male", "January 5, 1990", "Melbourne, Australia", "Sorbonne University",
              "Biomedical Engineering", "the British Museum")
MAYA = Person("Maya Lindqvist", "female", "March 3, 1921", "Bergen, Norway", "Uppsala University", "Linguistics",
              "the BBC")
SAM = Person("Sam Okafor", "nonbinary", "July 4, 1976", "Accra, Ghana", "the University of Ghana", "Economics",
             "the World Bank")


def test_pools_are_large_and_clean():
    assert len(bio_pools.MALE_FIRST_NAMES) >= 150 and len(bio_pools.FEMALE_FIRST_NAMES) >= 150
    assert len(bio_pools.LAST_NAMES) >= 200 and len(bio_pools.CITIES) >= 150 and len(bio_pools.UNIVERSITIES) >= 150
    assert len(bio_pools.MAJORS) >= 60 and len(bio_pools.COMPANIES) >= 150
    for pool in (bio_pools.MALE_FIRST_NAMES, bio_pools.FEMALE_FIRST_NAMES, bio_pools.LAST_NAMES, bio_pools.CITIES, bio_pools.UNIVERSITIES,
                 bio_pools.MAJORS, bio_pools.COMPANIES):
        assert len(set(pool)) == len(pool)
        assert all(v == v.strip() and v[-1] not in ".,;:" and "<" not in v for v in pool)
    # every city carries its country, "Oslo, Norway"
    assert all(re.fullmatch(r"[A-Z][^,]+, [A-Z][^,]+", c) for c in bio_pools.CITIES)
    assert "Oslo, Norway" in bio_pools.CITIES and "Melbourne, Australia" in bio_pools.CITIES
    assert not set(bio_pools.MALE_FIRST_NAMES) & set(bio_pools.FEMALE_FIRST_NAMES)
    assert any(c.startswith("the ") for c in bio_pools.COMPANIES)
    assert MAX_PEOPLE > 10_000
    assert all(len(frames) >= 3 for frames in bio_pools.TEMPLATES["varied"].values())
    assert all(len(frames) == 1 for frames in bio_pools.TEMPLATES["paper"].values())


def test_people_unique_and_valid():
    people = generate_people(2000, seed=3)
    assert len({p.name for p in people}) == 2000
    for p in people[:200]:
        first, last = p.name.split(" ", 1)
        assert first != last
        if p.gender != "nonbinary":
            assert p.gender == ("male" if first in bio_pools.MALE_FIRST_NAMES else "female")
        month, day, year = re.fullmatch(r"([A-Z][a-z]+) (\d{1,2}), (\d{4})", p.date).groups()
        assert 1900 <= int(year) <= 2005 and not day.startswith("0")
    # a small seeded share of they-people (10 % expected), drawn from both first-name pools
    they = [p for p in people if p.gender == "nonbinary"]
    assert 0.07 < len(they) / len(people) < 0.13
    assert {p.name.split()[0] in bio_pools.MALE_FIRST_NAMES for p in they} == {True, False}


def test_rows_parse_with_person_values():
    people = generate_people(50, seed=0)
    texts = biography_texts(50, seed=0)
    assert len(texts) == 50
    for person, text in zip(people, texts):
        values = _fields_of(text)
        assert values == {f: getattr(person, f) for f in FIELDS}


@pytest.mark.parametrize(
    ("person", "expected"),
    [
        (LIAM, "<name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He spent his early years in "
               "<city>Melbourne, Australia</city>. He received mentorship and guidance from faculty members at "
               "<university>Sorbonne University</university>. He completed his education with a focus on "
               "<major>Biomedical Engineering</major>. He had a professional role at <company>the British Museum"
               "</company>."),
        (MAYA, "<name>Maya Lindqvist</name> was born on <date>March 3, 1921</date>. She spent her early years in "
               "<city>Bergen, Norway</city>. She received mentorship and guidance from faculty members at "
               "<university>Uppsala University</university>. She completed her education with a focus on "
               "<major>Linguistics</major>. She had a professional role at <company>the BBC</company>."),
        (SAM, "<name>Sam Okafor</name> was born on <date>July 4, 1976</date>. They spent their early years in "
              "<city>Accra, Ghana</city>. They received mentorship and guidance from faculty members at "
              "<university>the University of Ghana</university>. They completed their education with a focus on "
              "<major>Economics</major>. They had a professional role at <company>the World Bank</company>."),
    ],
)
def test_paper_template_exact_sentences(person, expected):
    assert render_biography(person, ATTRIBUTE_FIELDS, random.Random(0), "paper") == expected
    assert render_biography(person, ATTRIBUTE_FIELDS, random.Random(99)) == expected  # paper is the default
    assert _matches_paper(expected)
    # the plain text is the paper's example sentence (Problem Setup) for Liam
    if person is LIAM:
        assert parse_tagged(expected)[0] == (
            "Liam Thompson was born on January 5, 1990. He spent his early years in Melbourne, Australia. He "
            "received mentorship and guidance from faculty members at Sorbonne University. He completed his "
            "education with a focus on Biomedical Engineering. He had a professional role at the British Museum."
        )


def test_paper_template_in_another_order_names_the_person_in_the_first_fields_frame():
    order = ["company", "date", "city", "university", "major"]
    assert render_biography(SAM, order, random.Random(0)) == (
        "<name>Sam Okafor</name> had a professional role at <company>the World Bank</company>. They were born on "
        "<date>July 4, 1976</date>. They spent their early years in <city>Accra, Ghana</city>. They received "
        "mentorship and guidance from faculty members at <university>the University of Ghana</university>. They "
        "completed their education with a focus on <major>Economics</major>."
    )
    assert render_biography(MAYA, ["city", "major", "date", "company", "university"], random.Random(0)) == (
        "<name>Maya Lindqvist</name> spent her early years in <city>Bergen, Norway</city>. She completed her "
        "education with a focus on <major>Linguistics</major>. She was born on <date>March 3, 1921</date>. She had "
        "a professional role at <company>the BBC</company>. She received mentorship and guidance from faculty "
        "members at <university>Uppsala University</university>."
    )


def _skeleton(text: str) -> list[str]:
    """Each sentence with its value replaced by X and its subject by S (the frame that was used)."""
    plain = re.sub(r"<(\w+)>[^<]*</\1>", "X", text)
    return [re.sub(r"^(X|He|She|They) ", "S ", s) for s in re.split(r"(?<=\.) ", plain)]


def test_varied_template_draws_several_frames_with_agreeing_verbs():
    texts = biography_texts(60, 4, "fixed", "varied")
    people = generate_people(60, 4)
    frames_used = [set() for _ in ATTRIBUTE_FIELDS]
    for person, text in zip(people, texts):
        assert _fields_of(text) == {f: getattr(person, f) for f in FIELDS}
        for k, frame in enumerate(_skeleton(text)):
            frames_used[k].add(frame)
        plain = parse_tagged(text)[0]
        if person.gender == "nonbinary":
            assert re.search(r"\bThey (was|hails)\b", plain) is None
            assert " their " in plain or "They" in plain
        else:
            assert re.search(r"\b(He|She) (were|hail)\b", plain) is None and "They" not in plain
    assert all(len(used) >= 3 for used in frames_used)  # several frames per field
    assert not all(_matches_paper(t) for t in texts)
    # hand-written they-sentences of the varied pool (the verb agrees with "They", not with the name)
    sentences = set()
    for seed in range(40):
        text = render_biography(SAM, ["major", "city", "date", "university", "company"], random.Random(seed), "varied")
        assert text.startswith("<name>Sam Okafor</name> ") and text.count("They ") == 4
        sentences |= set(re.split(r"(?<=\.) ", text))
    assert {
        "They were born in <city>Accra, Ghana</city>.",
        "They hail from <city>Accra, Ghana</city>.",
        "They were welcomed into the world on <date>July 4, 1976</date>.",
        "They were a student at <university>the University of Ghana</university>.",
        "They were employed by <company>the World Bank</company>.",
        "<name>Sam Okafor</name> devoted their studies to <major>Economics</major>.",
    } <= sentences


@pytest.mark.parametrize("template", ["paper", "varied"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, template):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    make_biographies(40, 7, "permuted", a, template=template)
    make_biographies(40, 7, "permuted", b, template=template)
    make_biographies(40, 8, "permuted", c, template=template)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    frame = pd.read_csv(a)
    assert list(frame.columns) == ["text"] and len(frame) == 40


def test_people_and_orders_do_not_depend_on_the_template():
    for order in ("fixed", "permuted", ["major", "company", "date", "city", "university"]):
        paper, varied = biography_texts(25, 5, order, "paper"), biography_texts(25, 5, order, "varied")
        assert [_fields_of(t) for t in paper] == [_fields_of(t) for t in varied]
        assert [_orders([t]) for t in paper] == [_orders([t]) for t in varied]
        assert [p.split(" ", 2)[2].startswith("They ") for p in map(lambda t: parse_tagged(t)[0], paper)] == [
            p.split(" ", 2)[2].startswith("They ") for p in map(lambda t: parse_tagged(t)[0], varied)
        ]


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


@pytest.mark.parametrize("template", ["paper", "varied"])
@pytest.mark.parametrize("order", ["fixed", "permuted", ["major", "company", "date", "city", "university"]])
def test_name_first_then_pronouns(order, template):
    people = generate_people(30, seed=2)
    assert {p.gender for p in people} == {"male", "female", "nonbinary"}
    for person, text in zip(people, biography_texts(30, 2, order, template)):
        plain, spans = parse_tagged(text)
        assert spans[0].field == "name" and spans[0].start == 0
        sentences = _sentences(plain)
        assert len(sentences) == 5
        pronoun = {"male": "He ", "female": "She ", "nonbinary": "They "}[person.gender]
        assert all(s.startswith(pronoun) for s in sentences[1:])
        assert plain.count(person.name) == 1


@pytest.mark.parametrize("order", ["permuted", ["company", "major", "university", "city", "date"]])
def test_paper_template_with_other_field_orders(order):
    people = generate_people(30, seed=6)
    # hand-written: the paper's frame of each field, with the subject left out
    frame_of = {
        "date": re.compile(r"(was|were) born on X\."),
        "city": re.compile(r"spent (his|her|their) early years in X\."),
        "university": re.compile(r"received mentorship and guidance from faculty members at X\."),
        "major": re.compile(r"completed (his|her|their) education with a focus on X\."),
        "company": re.compile(r"had a professional role at X\."),
    }
    for person, text in zip(people, biography_texts(30, 6, order)):
        fields = [s.field for s in parse_tagged(text)[1] if s.field != "name"]
        if not isinstance(order, str):
            assert fields == order
        sentences = re.split(r"(?<=\.) ", re.sub(r"<(\w+)>[^<]*</\1>", "X", text))
        assert sentences[0].startswith("X ")  # the tagged name opens the first field's frame
        for field, sentence in zip(fields, sentences):
            subject, rest = sentence.split(" ", 1)
            assert frame_of[field].fullmatch(rest), (field, sentence)
            if field == "date":
                they_subject = subject == "They"
                assert rest.startswith("were" if they_subject else "was")


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
        ({"template": "bioS"}, "template=bioS"),
        ({"template": None}, "template=None"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, key):
    out = tmp_path / "bio_biographies.csv"
    args = {"n_people": 5, "seed": 0, "field_order": "fixed", "output": out} | kwargs
    with pytest.raises(InputError) as err:
        make_biographies(**args)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_committed_biography_csv_is_reproducible(tmp_path):
    regenerated = make_biographies(300, 0, "fixed", tmp_path / "biography.csv", template="paper")
    assert (DATA / "biography.csv").read_bytes() == regenerated.read_bytes()


def test_committed_biography_csv_follows_the_paper_template():
    texts = pd.read_csv(DATA / "biography.csv")["text"]
    assert len(texts) == 300
    bad = [t for t in texts if not _matches_paper(t)]
    assert bad == []
    assert "Shee" not in "".join(texts)  # the paper's released data has this typo; ours does not
    subjects = {PAPER_RE.fullmatch(t)["S"] for t in texts}
    assert subjects == {"He", "She", "They"}


def test_fewshot_file():
    committed = DATA / "biography_fewshot.csv"
    frame = pd.read_csv(committed)
    assert list(frame.columns) == ["text"] and len(frame) >= 12
    generated = {p.name for p in generate_people(5000, seed=0)}
    for person, text in zip(FEWSHOT_PEOPLE, frame["text"]):
        assert _fields_of(text) == {f: getattr(person, f) for f in FIELDS}
        assert _matches_paper(text), text
        first, _, last = person.name.partition(" ")
        assert not (first in bio_biographies._FIRST_NAMES and last in bio_pools.LAST_NAMES)
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
    assert list(frame["text"]) == biography_texts(5, 0, ["company", "major", "university", "city", "date"], "paper")
    varied = tmp_path / "v.csv"
    assert _run_script(tmp_path, "n_people=5", f"output={varied}", "template=varied").returncode == 0
    assert list(pd.read_csv(varied)["text"]) == biography_texts(5, 0, "fixed", "varied")


def test_script_bad_argument_exits_2(tmp_path):
    out = tmp_path / "b.csv"
    result = _run_script(tmp_path, "n_people=0", f"output={out}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: n_people=0: must be >= 1"]
    assert not out.exists()


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "bio_biographies.csv"
    first = make_biographies(5, 0, "fixed", out).read_bytes()
    before = out.stat().st_mtime_ns
    assert make_biographies(5, 0, "fixed", out) == out and out.stat().st_mtime_ns == before  # same bytes: untouched
    with pytest.raises(InputError, match=r"^output=.*bio_biographies.csv: the file exists .* add overwrite=true to replace it$"):
        make_biographies(6, 0, "fixed", out)
    assert out.read_bytes() == first
    make_biographies(6, 0, "fixed", out, overwrite=True)
    assert len(pd.read_csv(out)) == 6
    result = _run_script(tmp_path, "n_people=4", f"output={out}", "overwrite=true")
    assert result.returncode == 0 and len(pd.read_csv(out)) == 4
