"""elusive.reporting.stats: proportions, per-person paired tests, multiple testing, bootstrap intervals, tables (all fast).

The last test runs the functions under every SIMD level numpy can dispatch to and compares the bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from elusive.reporting import stats
from elusive.reporting.stats import (
    PersonDifferences,
    add_intervals,
    benjamini_hochberg,
    binomial_cdf_half,
    bootstrap_ci,
    clopper_pearson_interval,
    format_table,
    holm,
    mcnemar_exact,
    mean_with_interval,
    paired_bootstrap_ci,
    per_person_differences,
    person_cluster_bootstrap_ci,
    sign_flip_test,
    wilson_interval,
)

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal distribution


def outcomes(n01: int, n10: int, agree_right: int = 3, agree_wrong: int = 2) -> tuple[list[float], list[float]]:
    """Paired 0/1 outcomes with n01 pairs (a wrong, b right), n10 pairs (a right, b wrong) and some agreements."""
    a = [0.0] * n01 + [1.0] * n10 + [1.0] * agree_right + [0.0] * agree_wrong
    b = [1.0] * n01 + [0.0] * n10 + [1.0] * agree_right + [0.0] * agree_wrong
    return a, b


# --- McNemar -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n01", "n10", "expected"),
    [
        (0, 5, 0.0625),  # 2 * 1/32
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
        (3, 0, 0.25),  # 2 * 1/8
        (2, 3, 1.0),  # 2 * (1 + 5 + 10)/32 = 1
        (4, 4, 1.0),  # balanced
        (0, 0, 1.0),  # no discordant pair
        (2, 10, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_mcnemar_hand_computed(n01, n10, expected):
    a, b = outcomes(n01, n10)
    assert mcnemar_exact(a, b) == expected
    assert mcnemar_exact(b, a) == expected  # symmetric


def test_mcnemar_symmetric_and_ignores_agreements():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
        assert mcnemar_exact(a, b) == mcnemar_exact(b, a)
        both = np.concatenate([a, [1, 1, 0]]), np.concatenate([b, [1, 1, 0]])
        assert mcnemar_exact(*both) == mcnemar_exact(a, b)
    assert mcnemar_exact([True, False], [False, False]) == 1.0  # bools are outcomes too


def test_mcnemar_refuses_non_binary_and_unequal_lengths():
    with pytest.raises(ValueError, match="0.5 at index 1 is not 0 or 1"):
        mcnemar_exact([1.0, 0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([1.0, 0.0], [1.0])


def test_binomial_tail_exact_and_log_space_agree(monkeypatch):
    for m, k in [(20_000, 9_800), (19_999, 9_999), (5_001, 2_400), (30, 3)]:
        exact = binomial_cdf_half(k, m)
        monkeypatch.setattr(stats, "EXACT_LIMIT", 0)  # force the log-space sum
        logged = binomial_cdf_half(k, m)
        monkeypatch.setattr(stats, "EXACT_LIMIT", 20_000)
        assert math.isclose(exact, logged, rel_tol=1e-9)
    assert binomial_cdf_half(3, 30) == (1 + 30 + 435 + 4060) / 2**30
    assert binomial_cdf_half(7, 7) == 1.0
    # thousands of discordant pairs: no overflow, a tiny but positive p; the far tail underflows to 0, not NaN
    assert 0 < mcnemar_exact(*outcomes(400, 600)) < 1e-9
    assert mcnemar_exact(*outcomes(0, 3000)) == 0.0
    assert 0.02 < 2 * binomial_cdf_half(499_000, 1_000_000) < 0.06  # z = -2: p ~ 0.046


# --- bootstrap ------------------------------------------------------------------------------------------------


def test_bootstrap_follows_the_documented_recipe():
    values = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.25])
    rng = np.random.default_rng(7)
    means = values[rng.integers(0, len(values), size=(500, len(values)))].sum(axis=1) / len(values)
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert bootstrap_ci(values, seed=7, resamples=500) == (min(lo, values.mean()), max(hi, values.mean()))


def test_bootstrap_contains_mean_deterministic_and_seeded():
    rng = np.random.default_rng(1)
    values = (rng.random(300) < 0.3).astype(float)
    ci = bootstrap_ci(values, seed=0)
    assert ci[0] <= values.mean() <= ci[1] and ci[0] < ci[1]
    assert bootstrap_ci(values, seed=0) == ci  # same floats
    assert bootstrap_ci(values.tolist(), seed=0) == ci  # lists and arrays alike
    scores = rng.random(300)  # F1-like: replicates are not on the k/n lattice of 0/1 scores, so every seed differs
    assert bootstrap_ci(scores, seed=1) != bootstrap_ci(scores, seed=0) == bootstrap_ci(scores, seed=0)
    assert 0.6 * 1.96 * 2 * math.sqrt(0.3 * 0.7 / 300) < ci[1] - ci[0] < 1.4 * 1.96 * 2 * math.sqrt(0.3 * 0.7 / 300)
    assert all(isinstance(x, float) for x in ci)


def test_bootstrap_widens_to_include_the_mean():
    values = [0.0, 0.0, 0.0, 1.0, 1.0]
    for seed in range(20):  # one replicate: its mean is the whole interval unless widened
        lo, hi = bootstrap_ci(values, seed=seed, resamples=1)
        assert lo <= 0.4 <= hi and 0.4 in (lo, hi)


def test_bootstrap_constant_and_empty():
    assert bootstrap_ci([0.1] * 7, seed=3) == (0.1, 0.1)
    assert bootstrap_ci([1.0], seed=0) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([], seed=0)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.0, float("nan")], seed=0)
    with pytest.raises(ValueError, match="resamples=0"):
        bootstrap_ci([0.0, 1.0], seed=0, resamples=0)


def test_bootstrap_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(123)
    hits = 0
    for trial in range(150):
        sample = (rng.random(200) < 0.3).astype(float)
        lo, hi = bootstrap_ci(sample, seed=trial, resamples=1000)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 150 <= 0.99


def test_cluster_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(5)
    per_person = (rng.random(60) < 0.5).astype(float)
    values = np.repeat(per_person, 5)  # a person's 5 questions are all right or all wrong
    people = np.repeat(np.arange(60), 5).tolist()
    plain = bootstrap_ci(values, seed=0)
    clustered = bootstrap_ci(values, seed=0, groups=people)
    assert (clustered[1] - clustered[0]) > 1.7 * (plain[1] - plain[0])  # ~sqrt(5) wider
    assert clustered[0] <= values.mean() <= clustered[1]
    # one group per value is the plain bootstrap, float for float
    assert bootstrap_ci(values, seed=0, groups=[f"q{i}" for i in range(len(values))]) == plain
    with pytest.raises(ValueError, match="3 labels for 300 values"):
        bootstrap_ci(values, seed=0, groups=[1, 2, 3])


def _exact_percentile_interval(a, b, level=0.95):
    """Brute force: the bootstrap distribution of mean(b) − mean(a) over every one of the n**n equally likely
    draws of n question pairs (each pair (a[i], b[i]) drawn whole), and its tail quantiles (the first value whose
    cumulative probability reaches the tail)."""
    n = len(a)
    draws = np.array(list(itertools.product(range(n), repeat=n)))  # [n**n, n] pair indices
    deltas = np.sort(b[draws].mean(axis=1) - a[draws].mean(axis=1))
    cdf = np.arange(1, len(deltas) + 1) / len(deltas)
    tail = (1 - level) / 2
    return deltas[np.searchsorted(cdf, tail)], deltas[np.searchsorted(cdf, 1 - tail)], cdf, deltas


def test_paired_bootstrap_matches_the_enumerated_bootstrap_distribution():
    """Six question pairs: all 6**6 resamples enumerated give the exact percentile interval [−1/3, 2/3] of
    mean(b − a) = 1/6; 50,000 seeded replicates land on the same two values (the exact distribution puts 1.9 %
    below −1/3 and 6.9 % at or below it, 93.6 % below 2/3 and 98.6 % at or below it: far from 2.5 % and 97.5 %
    for 50,000 draws, whose empirical quantiles err by ~0.1 %)."""
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    b = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    lo, hi, cdf, deltas = _exact_percentile_interval(a, b)
    assert (lo, hi) == pytest.approx((-1 / 3, 2 / 3), abs=1e-12)
    assert cdf[deltas < lo - 1e-9].max() < 0.02 and cdf[deltas < hi - 1e-9].max() < 0.94
    assert paired_bootstrap_ci(a, b, seed=0, resamples=50_000) == pytest.approx((lo, hi), abs=1e-12)
    # and the other way round: the interval of a − b is the mirror image
    assert paired_bootstrap_ci(b, a, seed=0, resamples=50_000) == pytest.approx((-hi, -lo), abs=1e-12)


def test_paired_bootstrap_resamples_pairs_not_each_run():
    """Two runs that agree on most questions: resampling pairs keeps the agreement, so the interval's width is
    that of the differences, 2·1.96·sd(b − a)/√n, not the much wider 2·1.96·√((var a + var b)/n) of two runs
    resampled apart."""
    rng = np.random.default_rng(2)
    n = 400
    a = (rng.random(n) < 0.4).astype(float)
    b = np.where(rng.random(n) < 0.1, 1.0 - a, a)  # 10 % of the answers changed
    lo, hi = paired_bootstrap_ci(a, b, seed=0)
    assert lo <= np.mean(b - a) <= hi
    paired = 2 * 1.96 * np.std(b - a) / math.sqrt(n)
    apart = 2 * 1.96 * math.sqrt((np.var(a) + np.var(b)) / n)
    assert paired < 0.5 * apart
    assert 0.85 * paired < hi - lo < 1.15 * paired
    assert paired_bootstrap_ci(a, a, seed=0) == (0.0, 0.0)  # identical runs
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_ci(a, b[:-1], seed=0)


# --- results.json intervals and the table ---------------------------------------------------------------------


def test_add_intervals_keeps_keys_and_adds_intervals():
    questions = {"city": [(1.0, 1.0), (0.0, 0.5), (1.0, 1.0), (0.0, 0.0)], "company": [(0.0, 0.0)] * 4}
    results = {
        "city": {"exact_match": 0.5, "f1": 0.625, "n": 4},
        "company": {"exact_match": 0.0, "f1": 0.0, "n": 4},
    }
    before = json.dumps(results)
    out = add_intervals(results, questions, seed=0)
    assert json.dumps(results) == before  # input unchanged
    assert list(out) == ["city", "company"]
    assert list(out["city"]) == ["exact_match", "f1", "n", "exact_match_ci95", "f1_ci95"]
    assert out["city"]["exact_match_ci95"] == list(wilson_interval(2, 4))  # exact match: Wilson of k/n
    assert out["city"]["f1_ci95"] == list(bootstrap_ci([1, 0.5, 1, 0], seed=0))  # F1: the percentile bootstrap
    # 0/4 is not [0, 0] (what the percentile bootstrap gave): the Wilson upper end z²/(n + z²)
    assert out["company"]["exact_match_ci95"] == [0.0, pytest.approx(Z95**2 / (4 + Z95**2), abs=1e-12)]
    assert add_intervals(results, questions, seed=5)["city"]["exact_match_ci95"] == out["city"]["exact_match_ci95"]
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="n=5"):
        add_intervals({**results, "city": {**results["city"], "n": 5}}, questions, seed=0)
    with pytest.raises(ValueError, match="differs from results"):
        add_intervals({**results, "city": {**results["city"], "exact_match": 0.75}}, questions, seed=0)
    with pytest.raises(ValueError, match="fields"):
        add_intervals(results, {"city": questions["city"]}, seed=0)
    with pytest.raises(ValueError, match="0.5 at index 1 is not 0 or 1"):
        add_intervals(results, {**questions, "city": [(1.0, 1.0), (0.5, 0.5), (1.0, 1.0), (0.0, 0.0)]}, seed=0)


def test_mean_with_interval_pools_questions_and_resamples_people():
    rows = [("ann", 1.0, 1.0), ("bob", 0.0, 0.5), ("ann", 1.0, 1.0), ("bob", 0.0, 0.0), ("cy", 1.0, 1.0), ("cy", 0.0, 0.5)]
    mean = mean_with_interval(rows, seed=4)
    assert mean["exact_match"] == 0.5 and mean["f1"] == 4 / 6 and mean["n"] == 6
    assert mean["exact_match_ci95"] == list(bootstrap_ci([1, 0, 1, 0, 1, 0], seed=4, groups=["ann", "bob", "ann", "bob", "cy", "cy"]))
    # people ann (2/2) and bob (0/2) and cy (1/2): replicates are means of three person averages
    assert 0.0 <= mean["exact_match_ci95"][0] <= 0.5 <= mean["exact_match_ci95"][1] <= 1.0


def test_format_table():
    results = {
        "city": {"exact_match": 0.5, "f1": 0.6124, "n": 20, "exact_match_ci95": [0.3, 0.7], "f1_ci95": [0.44, 0.775]},
        "company": {"exact_match": 0.1, "f1": 0.203, "n": 20, "exact_match_ci95": [0.0, 0.25], "f1_ci95": [0.081, 0.342]},
    }
    mean = {"exact_match": 0.3, "f1": 0.4077, "n": 40, "exact_match_ci95": [0.175, 0.425], "f1_ci95": [0.296, 0.52]}
    assert format_table(results, mean).splitlines() == [
        "| field | exact match [95% CI] | F1 [95% CI] | n |",
        "|---|---:|---:|---:|",
        "| city | 50.0 [30.0, 70.0] | 61.2 [44.0, 77.5] | 20 |",
        "| company | 10.0 [0.0, 25.0] | 20.3 [8.1, 34.2] | 20 |",
        "| mean | 30.0 [17.5, 42.5] | 40.8 [29.6, 52.0] | 40 |",
    ]
    plain = {f: {k: r[k] for k in ("exact_match", "f1", "n")} for f, r in results.items()}
    assert format_table(plain).splitlines()[2:] == ["| city | 50.0 | 61.2 | 20 |", "| company | 10.0 | 20.3 | 20 |", "| mean | 30.0 | 40.8 | |"]
    assert stats.percent(-0.0001, signed=True) == "+0.0"  # no "-0.0"


# --- single proportions ---------------------------------------------------------------------------------------


def test_wilson_hand_computed():
    # k = 0 and k = n: the ends are z²/(n + z²) and n/(n + z²)
    assert wilson_interval(0, 40) == (0.0, pytest.approx(Z95**2 / (40 + Z95**2), abs=1e-15))
    assert wilson_interval(0, 40)[1] == pytest.approx(0.087622, abs=1e-6)
    assert wilson_interval(1, 1) == (pytest.approx(1 / (1 + Z95**2), abs=1e-15), 1.0)
    assert wilson_interval(1, 1)[0] == pytest.approx(0.206549, abs=1e-6)
    # 5/10: centre (5 + z²/2)/(10 + z²) = 0.5, half-width z/(10 + z²)·sqrt(2.5 + z²/4) = 0.263407
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-6), pytest.approx(0.763407, abs=1e-6))
    # 90 %: z = 1.644854
    assert wilson_interval(0, 10, level=0.90)[1] == pytest.approx(1.644854**2 / (10 + 1.644854**2), abs=1e-6)


def test_wilson_contains_the_estimate_and_is_symmetric():
    for n in (1, 2, 7, 40, 1000):
        for k in range(0, n + 1, max(1, n // 9)):
            lo, hi = wilson_interval(k, n)
            assert 0 <= lo <= k / n <= hi <= 1
            mirror = wilson_interval(n - k, n)
            assert (1 - mirror[1], 1 - mirror[0]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert all(isinstance(x, float) for x in wilson_interval(np.int64(3), np.int64(9)))


def test_clopper_pearson_hand_computed():
    t = 0.025
    assert clopper_pearson_interval(0, 40) == (0.0, pytest.approx(1 - t ** (1 / 40), abs=1e-15))
    assert clopper_pearson_interval(0, 40)[1] == pytest.approx(0.0881, abs=1e-4)  # the reviewer's 8.8 %
    assert clopper_pearson_interval(40, 40) == (pytest.approx(t ** (1 / 40), abs=1e-15), 1.0)
    lo, hi = clopper_pearson_interval(5, 10)  # the textbook value
    assert (lo, hi) == (pytest.approx(0.187086, abs=1e-6), pytest.approx(0.812914, abs=1e-6))
    assert clopper_pearson_interval(1, 1) == (pytest.approx(0.025), 1.0)  # p = 0.025 makes 1/1 as likely as t


def exact_tail(n: int, p: float, below: int) -> Fraction:
    """P(X <= below) for X ~ Binomial(n, p), in exact rationals (p as the exact value of its float)."""
    q = Fraction(p)
    return sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(below + 1))


@pytest.mark.parametrize(("k", "n"), [(3, 12), (1, 40), (17, 40), (39, 40), (2, 300)])
def test_clopper_pearson_meets_its_definition_in_exact_arithmetic(k, n):
    lo, hi = clopper_pearson_interval(k, n)
    assert float(1 - exact_tail(n, lo, k - 1)) == pytest.approx(0.025, rel=1e-9)  # P(X >= k; lo) = 2.5 %
    assert float(exact_tail(n, hi, k)) == pytest.approx(0.025, rel=1e-9)  # P(X <= k; hi) = 2.5 %
    assert lo < k / n < hi


def test_proportion_intervals_refuse_bad_counts():
    for interval in (wilson_interval, clopper_pearson_interval):
        with pytest.raises(ValueError, match="n=0: no questions"):
            interval(0, 0)
        with pytest.raises(ValueError, match=r"k=5: must be in \[0, n=4\]"):
            interval(5, 4)
        with pytest.raises(ValueError, match="k=1.5: must be an integer"):
            interval(1.5, 4)
        with pytest.raises(ValueError, match="level=1"):
            interval(1, 4, level=1)


# --- per-person differences -----------------------------------------------------------------------------------


def row(person: str, field: str, em: int, prompt: str = "") -> dict:
    return {"person": person, "field": field, "prompt": prompt or f"{field} of {person}?", "exact_match": em}


def test_per_person_differences_sum_fields_and_seeds_by_hand():
    # seed 0: a gets Ann's city and Bob's city right, b gets Ann's city and company and Bob's company
    a0 = [row("Ann", "city", 1), row("Ann", "company", 0), row("Bob", "city", 1), row("Bob", "company", 0)]
    b0 = [row("Bob", "company", 1), row("Ann", "city", 1), row("Ann", "company", 1), row("Bob", "city", 0)]
    # seed 1 asks other prompts (other shots): pairing is within the seed
    a1 = [row("Ann", "city", 0, "p1"), row("Ann", "company", 0, "p2"), row("Bob", "city", 0, "p3"), row("Bob", "company", 1, "p4")]
    b1 = [row("Ann", "city", 1, "p1"), row("Ann", "company", 1, "p2"), row("Bob", "city", 0, "p3"), row("Bob", "company", 0, "p4")]
    d = per_person_differences([a0, a1], [b0, b1])
    # Ann: (1−1) + (1−0) + (1−0) + (1−0) = 3; Bob: (0−1) + (1−0) + (0−0) + (0−1) = −1
    assert d == PersonDifferences(("Ann", "Bob"), (3, -1), (4, 4))
    assert d.mean == 2 / 8
    assert per_person_differences([a0, a1], [b0, b1], fields=["company"]) == PersonDifferences(("Ann", "Bob"), (2, 0), (2, 2))
    assert per_person_differences([a0], [b0], fields={"city"}) == PersonDifferences(("Ann", "Bob"), (0, -1), (1, 1))
    swapped = per_person_differences([b0, b1], [a0, a1])
    assert (swapped.people, swapped.diffs) == (("Bob", "Ann"), (1, -3))  # people in the order of arm a's rows


def test_per_person_differences_refuse_unpaired_runs():
    a = [row("Ann", "city", 1), row("Bob", "city", 0)]
    with pytest.raises(ValueError, match="1 and 2 seeds"):
        per_person_differences([a], [a, a])
    with pytest.raises(ValueError, match="no seed"):
        per_person_differences([], [])
    with pytest.raises(ValueError, match=r"a_runs\[1\], b_runs\[1\]: the question \(person='Bob', field='city'\) is only "
                       r"in a_runs\[1\]"):
        per_person_differences([a, a], [a, a[:1]])
    with pytest.raises(ValueError, match=r"the question \(person='Bob', field='city'\) is only in b_runs\[0\]"):
        per_person_differences([a[:1]], [a])
    with pytest.raises(ValueError, match=r"the question \(person='Bob', field='city'\) is only in a_runs\[0\]"):
        per_person_differences([[a[0], row("Bob", "city", 0, "other shots")]], [a])  # same person, other prompt
    with pytest.raises(ValueError, match=r"fields: \['major'\] not asked"):
        per_person_differences([a], [a], fields=["city", "major"])
    with pytest.raises(ValueError, match=r"b_runs\[0\]: row 1 has exact_match=0.5"):
        per_person_differences([a], [[a[0], {**a[1], "exact_match": 0.5}]])
    with pytest.raises(ValueError, match=r"a_runs\[0\]: row 1 repeats the question"):
        per_person_differences([[a[0], a[0]]], [a])


# --- the sign-flip test ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([1, 1, 1], 2 / 8),  # only all + and all − reach |T| = 3
        ([1, 1, 1, 0, 0], 2 / 8),  # zeros contribute nothing
        ([2, 1], 2 / 4),  # ±2 ± 1 ∈ {3, 1, −1, −3}
        ([3, -1, -1], 1.0),  # T = 1: every pattern is odd, so |T*| >= 1
        ([2, 2, 1, 1, 1], 2 / 32),  # T = 7 = sum|d|
        ([-1] * 6, 2 / 64),
        ([0, 0], 1.0),
        ([2, -2], 1.0),  # T = 0
        ([4, 1, 1], 2 / 8),  # T = 6: ±(4 ± 1 ± 1) gives ±6, ±4, ±4, ±2
    ],
)
def test_sign_flip_hand_computed(diffs, expected):
    result = sign_flip_test(diffs)
    assert result.p_value == expected and result.exact and result.resamples == 0
    assert result.statistic == sum(diffs) and result.nonzero == sum(d != 0 for d in diffs)


def brute_force_p(diffs: list[int]) -> float:
    nonzero = [d for d in diffs if d]
    observed = abs(sum(nonzero))
    hits = sum(abs(sum(s * d for s, d in zip(signs, nonzero))) >= observed
               for signs in itertools.product((1, -1), repeat=len(nonzero)))
    return Fraction(hits, 2 ** len(nonzero)).__float__() if nonzero else 1.0


def test_sign_flip_equals_brute_force_enumeration():
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(1, 13))
        diffs = rng.integers(-4, 5, n).tolist()
        assert sign_flip_test(diffs).p_value == brute_force_p(diffs), diffs
        assert sign_flip_test([-d for d in diffs]).p_value == sign_flip_test(diffs[::-1]).p_value == brute_force_p(diffs)


def test_sign_flip_of_one_field_and_seed_is_exact_mcnemar():
    rng = np.random.default_rng(3)
    for trial in range(40):
        a, b = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
        assert sign_flip_test(b - a).p_value == mcnemar_exact(a, b)  # the same rational, rounded once


def test_sign_flip_monte_carlo_follows_the_documented_recipe(monkeypatch):
    rng = np.random.default_rng(8)
    diffs = rng.integers(-3, 4, 25)
    diffs[:5] = 3  # a real effect: p well below 1
    exact = sign_flip_test(diffs)
    monkeypatch.setattr(stats, "EXACT_SIGN_FLIP_CELLS", 0)
    mc = sign_flip_test(diffs, seed=4, resamples=20_000)
    assert not mc.exact and mc.resamples == 20_000 and mc.statistic == exact.statistic
    nonzero = np.array([abs(d) for d in diffs if d])
    draws = np.random.default_rng(4).integers(0, 2, size=(20_000, len(nonzero)), dtype=np.int8).astype(bool)
    hits = int((np.abs(np.where(draws, -nonzero, nonzero).sum(axis=1)) >= abs(exact.statistic)).sum())
    assert mc.p_value == (1 + hits) / (1 + 20_000)
    assert abs(mc.p_value - exact.p_value) < 4 * math.sqrt(exact.p_value * (1 - exact.p_value) / 20_000)
    assert sign_flip_test(diffs, seed=4, resamples=20_000) == mc  # seeded
    assert sign_flip_test([5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5], resamples=99).p_value >= 1 / 100  # never 0


def test_sign_flip_is_exact_for_many_people_and_refuses_fractions():
    diffs = [1] * 70 + [-1] * 30  # 2**100 patterns: counted exactly, not listed
    result = sign_flip_test(diffs)
    assert result.exact and result.p_value == 2 * binomial_cdf_half(30, 100)  # the two-sided sign test
    with pytest.raises(ValueError, match="0.5 at index 1 is not a whole number"):
        sign_flip_test([1, 0.5])
    with pytest.raises(ValueError, match="non-empty"):
        sign_flip_test([])
    with pytest.raises(ValueError, match="resamples=0"):
        sign_flip_test([1], resamples=0)
    assert sign_flip_test(np.array([1.0, 2.0, 1.0])).p_value == brute_force_p([1, 2, 1])


# --- the person bootstrap -------------------------------------------------------------------------------------


def test_person_cluster_bootstrap_is_the_group_bootstrap_of_the_questions():
    rng = np.random.default_rng(6)
    people = [f"p{i}" for i in range(30)]
    per_question = rng.integers(-1, 2, (30, 10))  # 5 fields × 2 seeds per person: b − a of each question
    diffs, questions = per_question.sum(axis=1), np.full(30, 10)
    ci = person_cluster_bootstrap_ci(diffs, questions, seed=2, resamples=3000)
    assert ci == bootstrap_ci(per_question.reshape(-1), seed=2, resamples=3000, groups=np.repeat(people, 10).tolist())
    assert person_cluster_bootstrap_ci(diffs, 10, seed=2, resamples=3000) == ci  # one count for everyone
    assert ci[0] <= diffs.sum() / 300 <= ci[1] and ci[0] < ci[1]
    # unequal question counts: a replicate is sum(d) / sum(m) of the drawn people
    m = rng.integers(1, 6, 30)
    d = np.clip(rng.integers(-2, 3, 30), -m, m)
    draws = np.random.default_rng(9).integers(0, 30, size=(500, 30))
    replicates = d[draws].sum(axis=1) / m[draws].sum(axis=1)
    tail = (1 - 0.95) / 2  # as the code computes it (0.025000000000000022)
    lo, hi = np.quantile(replicates, [tail, 1 - tail])
    estimate = d.sum() / m.sum()
    assert person_cluster_bootstrap_ci(d, m, seed=9, resamples=500) == (min(lo, estimate), max(hi, estimate))


def test_person_cluster_bootstrap_edges_and_refusals():
    assert person_cluster_bootstrap_ci([0, 0, 0], 5, seed=0) == (0.0, 0.0)
    assert person_cluster_bootstrap_ci([2, 4], [4, 8], seed=0) == (0.5, 0.5)  # every person at +50 %
    with pytest.raises(ValueError, match="2 counts for 3 people"):
        person_cluster_bootstrap_ci([1, 0, 1], [5, 5], seed=0)
    with pytest.raises(ValueError, match=r"person 1: difference 6 over 5 questions"):
        person_cluster_bootstrap_ci([1, 6], 5, seed=0)
    with pytest.raises(ValueError, match="not a whole number"):
        person_cluster_bootstrap_ci([0.5], 5, seed=0)
    with pytest.raises(ValueError, match="resamples=0"):
        person_cluster_bootstrap_ci([1], 5, seed=0, resamples=0)


# --- many tests -----------------------------------------------------------------------------------------------


def test_holm_and_benjamini_hochberg_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04: Holm 4·0.005, 3·0.01, 2·0.03, max(0.06, 1·0.04)
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH m·p/rank: 0.02, 0.02, 0.04, 0.04 (already monotone from the top)
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    five = [0.01, 0.02, 0.03, 0.04, 0.05]
    assert holm(five) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert benjamini_hochberg(five) == pytest.approx([0.05] * 5)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert benjamini_hochberg([0.5, 0.6]) == pytest.approx([0.6, 0.6])
    assert holm([]) == benjamini_hochberg([]) == []
    assert holm([0.3]) == benjamini_hochberg([0.3]) == [0.3]
    with pytest.raises(ValueError, match="1.5 at index 1"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match="nan at index 0"):
        benjamini_hochberg([float("nan")])


def test_adjusted_pvalues_reject_what_the_step_procedures_reject():
    rng = np.random.default_rng(21)
    alpha = 0.05
    for trial in range(200):
        m = int(rng.integers(1, 30))
        p = np.where(rng.random(m) < 0.4, rng.random(m) * 0.01, rng.random(m)).tolist()
        order = sorted(range(m), key=p.__getitem__)
        step_down = set()
        for rank, i in enumerate(order):  # Holm: reject while p(i) <= alpha / (m − i + 1)
            if p[i] > alpha / (m - rank):
                break
            step_down.add(i)
        passing = [rank for rank, i in enumerate(order) if p[i] <= (rank + 1) * alpha / m]
        step_up = set(order[: passing[-1] + 1]) if passing else set()  # BH: the largest k with p(k) <= kα/m
        adjusted, q = holm(p), benjamini_hochberg(p)
        assert {i for i in range(m) if adjusted[i] <= alpha} == step_down
        assert {i for i in range(m) if q[i] <= alpha} == step_up
        for values in (adjusted, q):
            assert all(raw <= v <= 1 for raw, v in zip(p, values))
            assert all(values[i] <= values[j] for i, j in zip(order, order[1:]))  # monotone in the raw p


# --- the same bytes under every SIMD level --------------------------------------------------------------------


def fingerprint() -> str:
    """Every function's output on fixed inputs, floats as hex: compared byte for byte across SIMD levels."""
    rng = np.random.default_rng(2024)
    per_question = rng.integers(0, 2, (2, 3, 200, 5))  # arm, seed, person, field
    runs = [[[row(f"p{i}", f"f{j}", int(per_question[arm, s, i, j])) for i in range(200) for j in range(5)]
             for s in range(3)] for arm in range(2)]
    d = per_person_differences(runs[0], runs[1], fields=["f3", "f4"])
    f1 = rng.random(400)
    saved = stats.EXACT_SIGN_FLIP_CELLS
    try:
        stats.EXACT_SIGN_FLIP_CELLS = 0
        monte_carlo = sign_flip_test(d.diffs, seed=1, resamples=50_000).p_value
    finally:
        stats.EXACT_SIGN_FLIP_CELLS = saved
    pvalues = rng.random(50).tolist()
    out = {
        "diffs": list(d.diffs),
        "wilson": [wilson_interval(k, 200) for k in (0, 3, 117, 200)],
        "clopper_pearson": [clopper_pearson_interval(k, 200) for k in (0, 3, 117, 200)],
        "sign_flip": sign_flip_test(d.diffs).p_value,
        "sign_flip_mc": monte_carlo,
        "person_bootstrap": person_cluster_bootstrap_ci(d.diffs, d.questions, seed=3, resamples=20_000),
        "holm": holm(pvalues),
        "bh": benjamini_hochberg(pvalues),
        "f1_bootstrap": bootstrap_ci(f1, seed=5, resamples=20_000),
    }

    def hexed(value):
        if isinstance(value, float):
            return value.hex()
        if isinstance(value, (list, tuple)):
            return [hexed(v) for v in value]
        return value

    return json.dumps({k: hexed(v) for k, v in out.items()})


def test_results_do_not_depend_on_the_simd_level():
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    here = fingerprint()
    levels = {}  # the SIMD level numpy picks → the targets to disable to get it
    for i in range(len(__cpu_dispatch__) + 1):
        usable = [t for t in __cpu_dispatch__[:i] if __cpu_features__.get(t)]
        levels.setdefault(usable[-1] if usable else "baseline", __cpu_dispatch__[i:])
    assert "baseline" in levels and len(levels) >= 2  # at least the machine's best level and numpy's baseline
    code = ("from elusive.core.provenance import numpy_simd; "  # run in this file's folder, where python -c finds test_stats
            "from test_stats import fingerprint; print(numpy_simd()); print(fingerprint())")
    for level, disabled in levels.items():
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(disabled)}
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True,
                             text=True, check=True, timeout=300)
        simd, printed = out.stdout.splitlines()
        assert simd == level  # numpy really ran at that level
        assert printed == here, level
