"""SQuAD v1.1 exact match and token F1, checked against values computed by hand."""

from __future__ import annotations

import pytest

from elusive.evaluation.metrics import exact_match, f1_score, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Bank, of England!", "bank of england"),
        ("Athens", "athens"),  # articles only as whole words: the "a" of Athens stays
        ("An apple a day", "apple day"),
        ("Theatre of the Absurd", "theatre of absurd"),
        ("Anna and Thea", "anna and thea"),
        ("  plan   a\tb  ", "plan b"),
        ("A-team", "ateam"),  # punctuation is removed before articles (official order)
        ("the.cat", "thecat"),
        ("Tom's", "toms"),
        ("THE", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    assert exact_match("the Bank of England.", "Bank of England") == 1.0
    assert exact_match("Bank", "Bank of England") == 0.0
    assert exact_match("Athens", "Athen") == 0.0
    assert exact_match("a", "the") == 1.0  # both normalise to ""
    assert exact_match("", "Paris") == 0.0
    assert isinstance(exact_match("x", "x"), float)


def test_f1_partial_overlap():
    # pred tokens: cat sat on mat (4); gold tokens: cat on mat (3); common 3 -> P=3/4, R=1, F1=6/7
    assert f1_score("The cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # pred: bank (1); gold: bank of england (3); common 1 -> P=1, R=1/3, F1=0.5
    assert f1_score("Bank", "The Bank of England") == pytest.approx(0.5)
    assert f1_score("Rome", "Paris") == 0.0


def test_f1_repeated_tokens_count_once_per_match():
    # pred: paris x3; gold: paris x1; common = min(3, 1) = 1 -> P=1/3, R=1, F1=0.5
    assert f1_score("Paris Paris Paris", "Paris") == pytest.approx(0.5)
    # pred: york york; gold: new york; common 1 -> P=1/2, R=1/2, F1=0.5
    assert f1_score("York York", "New York") == pytest.approx(0.5)
    # pred: new york new (new:2, york:1); gold: new new york city; common 3 -> P=1, R=3/4, F1=6/7
    assert f1_score("new york new", "new new york city") == pytest.approx(6 / 7)


def test_f1_empty_answers():
    assert f1_score("", "") == 1.0
    assert f1_score("the", "a") == 1.0  # both empty after normalisation
    assert f1_score("", "Paris") == 0.0
    assert f1_score("Paris", "") == 0.0
    assert f1_score("!!", "Paris") == 0.0


def test_several_golds_take_the_max():
    golds = ["Bank of England", "Central Bank"]
    # vs first: P=1, R=1/3 -> 0.5; vs second: P=1, R=1/2 -> 2/3
    assert f1_score("Bank", golds) == pytest.approx(2 / 3)
    assert f1_score("Bank", tuple(golds)) == pytest.approx(2 / 3)  # any iterable
    assert f1_score("bank of england", golds) == 1.0
    assert exact_match("X!", ["y", "x"]) == 1.0
    assert exact_match("z", ["y", "x"]) == 0.0
    assert exact_match("central bank", iter(golds)) == 1.0


def test_scores_are_fractions():
    for pred, gold in [("a b c", "b c d e"), ("x", "x y"), ("", ""), ("q", "r")]:
        assert 0.0 <= f1_score(pred, gold) <= 1.0
        assert exact_match(pred, gold) in (0.0, 1.0)
        assert exact_match(pred, gold) <= f1_score(pred, gold)
