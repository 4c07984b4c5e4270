"""Cross-fitted checkpoint choice: folds by name hash, the rule, and reporting on the other fold (by hand)."""

from __future__ import annotations

import hashlib
import random

import pytest

from elusive.reporting.selection import Score, choose, cross_fit, folds, reported_rows, score

PEOPLE = ["Ann Lee", "Bob Ray", "Cy Oda", "Di Fox", "Ed Wu"]


def test_folds_split_by_the_sha256_of_the_name_in_halves():
    ordered = sorted(PEOPLE, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    expected = {n: 0 if i < 3 else 1 for i, n in enumerate(ordered)}  # 5 people: fold 0 gets the odd one
    assert folds(PEOPLE) == expected
    shuffled = PEOPLE[:]
    random.Random(3).shuffle(shuffled)
    assert folds(shuffled) == expected  # the order people come in does not matter


def test_folds_refuse_repeated_or_too_few_people():
    with pytest.raises(ValueError, match="'Ann Lee' appears twice"):
        folds(["Ann Lee", "Bob Ray", "Ann Lee"])
    with pytest.raises(ValueError, match="at least two people"):
        folds(["Ann Lee"])


def test_the_rule_takes_most_correct_then_f1_then_fewest_passes():
    assert choose({2: Score(3, 4.0, 10), 4: Score(5, 5.0, 10), 8: Score(4, 9.0, 10)}) == 4
    assert choose({2: Score(5, 4.0, 10), 4: Score(5, 5.0, 10)}) == 4  # tie on correct: larger F1
    assert choose({2: Score(5, 5.0, 10), 4: Score(5, 5.0, 10)}) == 2  # full tie: fewer passes
    with pytest.raises(ValueError):
        choose({})


def _rows(correct: dict[tuple[str, str], int]) -> list[dict]:
    return [{"person": p, "field": f, "exact_match": em, "f1": 0.5 + 0.5 * em} for (p, f), em in correct.items()]


def test_cross_fit_reports_each_person_at_the_pass_chosen_on_the_other_fold():
    fold_of = folds(PEOPLE)
    zero = sorted(p for p, f in fold_of.items() if f == 0)
    one = sorted(p for p, f in fold_of.items() if f == 1)
    fields = ["university", "company"]

    def em(passes: int, person: str, field: str) -> int:
        # fold 0's people are answered right only after 2 passes, fold 1's only after 4
        if field == "date":
            return 1
        return int((person in zero and passes == 2) or (person in one and passes == 4))

    rows = {e: [_rows({(p, f): em(e, p, f) for p in PEOPLE for f in ["date", *fields]})] for e in (2, 4)}
    result = cross_fit(rows, fold_of, fields)
    assert result.chosen == {0: 2, 1: 4}
    assert result.selection[0][2] == Score(2 * len(zero), 2 * len(zero) * 1.0, 2 * len(zero))
    assert result.reported_pass == {**{p: 4 for p in zero}, **{p: 2 for p in one}}  # chosen on the other fold
    (reported,) = reported_rows(rows, result.reported_pass)
    assert len(reported) == 3 * len(PEOPLE)
    assert all(r["exact_match"] == (r["field"] == "date") for r in reported)  # the choice never saw their answers


def test_score_refuses_a_person_missing_from_a_seed():
    rows = [_rows({("Ann Lee", "company"): 1})]
    with pytest.raises(ValueError, match="no answer of 'Bob Ray' on field 'company'"):
        score(rows, {"Ann Lee", "Bob Ray"}, ["company"])


def test_cross_fit_sums_seeds_and_needs_the_same_seeds_for_every_pass():
    fold_of = folds(PEOPLE)
    one_seed = [_rows({(p, "company"): 1 for p in PEOPLE})]
    two_seeds = one_seed * 2
    assert cross_fit({1: two_seeds}, fold_of, ["company"]).selection[0][1].correct == 2 * 3
    with pytest.raises(ValueError, match="same seeds"):
        cross_fit({1: one_seed, 2: two_seeds}, fold_of, ["company"])
