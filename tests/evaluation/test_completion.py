"""The completion probe (evaluate.py mode=completion): prompts by hand, answers cut by hand, the whole stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.run import ROOT
from helpers.stages import evaluate

from elusive.core.config import EvaluateConfig
from elusive.core.errors import InputError
from elusive.evaluation.questions import completion_answer, completion_prompt, questions_for
from elusive.text.tags import parse_tagged

PAPER = ("<name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He spent his early years in "
         "<city>Melbourne, Australia</city>. He received mentorship and guidance from faculty members at "
         "<university>Sorbonne University</university>. He completed his education with a focus on "
         "<major>Biomedical Engineering</major>. He had a professional role at <company>the British Museum</company>.")
THEY = ("<name>Alex Kim</name> was born on <date>May 2, 1971</date>. They spent their early years in "
        "<city>Oslo, Norway</city>. They had a professional role at <company>St. Mary's Hospital</company>.")


def _prompts(text):
    plain, spans = parse_tagged(text)
    return {s.field: completion_prompt(plain, spans, s) for s in spans if s.field != "name"}


def test_completion_prompts_by_hand():
    assert _prompts(PAPER) == {
        "date": "Liam Thompson was born on",
        "city": "Liam Thompson spent his early years in",
        "university": "Liam Thompson received mentorship and guidance from faculty members at",
        "major": "Liam Thompson completed his education with a focus on",
        "company": "Liam Thompson had a professional role at",
    }
    assert _prompts(THEY)["city"] == "Alex Kim spent their early years in"
    assert _prompts(THEY)["company"] == "Alex Kim had a professional role at"
    # a field in the name's own sentence, after another value, and a sentence without a pronoun
    odd = "<name>Bo Li</name>, born in <city>Rome</city>, worked at <company>Acme</company>. Her field: <major>Law</major>."
    assert _prompts(odd) == {"city": "Bo Li, born in", "company": "Bo Li: , worked at", "major": "Bo Li's field:"}


def test_completion_answers_are_cut_at_a_newline_or_a_sentence_end():
    assert completion_answer(" the British Museum. She later") == "the British Museum"
    assert completion_answer(" Melbourne, Australia\nText: more") == "Melbourne, Australia"
    assert completion_answer(" St. Mary's Hospital. She") == "St. Mary's Hospital"  # "St." is an abbreviation
    assert completion_answer(" January 5, 1990.") == "January 5, 1990"
    assert completion_answer("Google") == "Google"
    assert completion_answer(" Acme Inc. He was born") == "Acme Inc"  # an abbreviation, then a sentence opener
    assert completion_answer(" approx. three weeks. Then") == "approx. three weeks"  # lower case: no sentence end
    assert completion_answer(" Amazon.com. Their") == "Amazon.com"


GOLDS_WITH_PERIODS = ["St. Petersburg, Russia", "Washington, D.C.", "J. P. Morgan", "J.P. Morgan Chase", "U.S. Steel",
                      "Amazon.com, Inc.", "Dr. Reddy's Laboratories", "Mt. Sinai Hospital", "3.5 million",
                      "Acme Co.", "Texas A&M University", "McDonald's"]
AFTER = ["", ".", ". He spent his early years in", ". She had", ". They", ". Their", ". His", "\nText: more",
         ". Liam Thompson was born"]


def test_no_gold_of_the_pools_wikipedia_or_with_periods_is_ever_cut_short():
    """Every gold the generator draws (elusive/biographies_biographies.py's pools), every answer of the Wikipedia sample
    and golds with abbreviations, followed by what a model trained on the biographies writes next, come back
    whole (SQuAD normalisation, as scored)."""
    from elusive.evaluation.metrics import normalize_answer
    from elusive.text import biographies as biographies_biographies
    from elusive.text import pools as biographies_pools
    from elusive.text.wiki import load_wiki

    pools = [biographies_pools.CITIES, biographies_pools.UNIVERSITIES, biographies_pools.MAJORS, biographies_pools.COMPANIES,
             [p.date for p in biographies_biographies.generate_people(50, 0)], [getattr(p, f) for p in biographies_biographies.FEWSHOT_PEOPLE
                                                                     for f in ("city", "university", "company")]]
    wiki = [a for q in load_wiki(ROOT / "data" / "wiki_sample.json", "eval_data")[1] for a in q.answers]
    golds = [g for pool in pools for g in pool] + wiki + GOLDS_WITH_PERIODS
    assert len(golds) > 700
    for gold in golds:
        for after in AFTER:
            if gold.endswith(".") and "Liam" in after:  # a name after an abbreviation: not told apart (docstring)
                continue
            assert normalize_answer(completion_answer(" " + gold + after)) == normalize_answer(gold), (gold, after)


def test_a_name_is_put_into_a_prompt_as_text_not_as_a_regex_template():
    for name in [r"Ann \g<1> Lee", r"Bo \1 Li", r"Cy \\ Xu", "Di $1 Wu"]:
        text = f"<name>{name}</name> was born on <date>May 1, 1990</date>. He lived in <city>Oslo</city>. " \
               "His employer was <company>Acme</company>."
        prompts = _prompts(text)
        assert prompts["city"] == f"{name} lived in"  # the pronoun replaced by the name, character for character
        assert prompts["company"] == f"{name}'s employer was"


def test_questions_follow_the_prompts_fields_and_refuse_wikipedia(tmp_path):
    data = tmp_path / "bios.csv"
    pd.DataFrame({"text": [PAPER]}).to_csv(data, index=False)
    cfg = EvaluateConfig(model="m", output_dir="o", eval_data=str(data), mode="completion")
    questions = questions_for(cfg)
    assert [q.field for q in questions] == ["date", "city", "university", "major", "company"]
    assert questions[4].prompt == "Liam Thompson had a professional role at" and questions[4].gold == "the British Museum"
    with_shots = questions_for(EvaluateConfig(model="m", output_dir="o", eval_data=str(data), mode="completion",
                                              shots=2))
    shots = with_shots[4].prompt.split("\n\n")
    assert len(shots) == 3 and shots[-1] == "Liam Thompson had a professional role at"
    assert all(s.endswith(".") and " had a professional role at " in s for s in shots[:2])
    with pytest.raises(InputError, match=r"^mode=completion: eval_data=.*wiki_sample.json holds Wikipedia questions"):
        questions_for(EvaluateConfig(model="m", output_dir="o", eval_data=str(ROOT / "data" / "wiki_sample.json"),
                                     mode="completion"))


def test_evaluate_in_completion_mode_writes_the_usual_files(small_model, bios, tmp_path):
    results = evaluate(small_model, bios, tmp_path / "out", mode="completion", max_people=3, device="cpu",
                       max_new_tokens=4)
    assert list(results) == ["date", "city", "university", "major", "company"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 15 and all("\n\n" not in row["prompt"] for row in lines)  # no shots by default
    assert all("\n" not in row["prediction"] and not row["prediction"].endswith(".") for row in lines)
    meta = json.loads((tmp_path / "out" / "eval_meta.json").read_text())
    assert meta["mode"] == "completion" and meta["shots"] == 0
    for r in results.values():
        lo, hi = r["exact_match_ci95"]
        assert lo <= r["exact_match"] <= hi
