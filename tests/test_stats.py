"""Bootstrap intervals, the exact McNemar test, tables with intervals, and comparing two runs (all fast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from elusive import stats
from elusive.compare import compare
from elusive.errors import InputError
from elusive.stats import (
    add_intervals,
    binomial_cdf_half,
    bootstrap_ci,
    format_table,
    mcnemar_exact,
    mean_with_interval,
    paired_bootstrap_ci,
)


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


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    a = (rng.random(100) < 0.4).astype(float)
    b = np.where(rng.random(100) < 0.2, 1.0, a)
    assert paired_bootstrap_ci(a, a, seed=0) == (0.0, 0.0)
    lo, hi = paired_bootstrap_ci(a, b, seed=0)
    assert lo <= np.mean(b - a) <= hi
    assert (lo, hi) == bootstrap_ci(b - a, seed=0)
    assert paired_bootstrap_ci(b, a, seed=0) == pytest.approx((-hi, -lo), abs=1e-12)
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
    assert out["city"]["exact_match_ci95"] == list(bootstrap_ci([1, 0, 1, 0], seed=0))
    assert out["city"]["f1_ci95"] == list(bootstrap_ci([1, 0.5, 1, 0], seed=0))
    assert out["company"]["exact_match_ci95"] == [0.0, 0.0]
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="n=5"):
        add_intervals({**results, "city": {**results["city"], "n": 5}}, questions, seed=0)
    with pytest.raises(ValueError, match="differs from results"):
        add_intervals({**results, "city": {**results["city"], "exact_match": 0.75}}, questions, seed=0)
    with pytest.raises(ValueError, match="fields"):
        add_intervals(results, {"city": questions["city"]}, seed=0)


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


# --- comparing two runs ---------------------------------------------------------------------------------------


def prompt(field: str, person: str) -> str:
    question = {"city": "Where was {} born?", "company": "Which company did {} work for?"}[field].format(person)
    return f"{question.replace(person, 'Tim Cook')}\nAnswer: x\n\n{question}\nAnswer:"


def write_run(folder, rows: list[tuple[str, str, float, float]], extra: list[str] = ()) -> None:
    """predictions.jsonl with (person, field, exact_match, f1) rows, as evaluate.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"person": p, "field": f, "prompt": prompt(f, p), "gold": "g", "prediction": "x", "exact_match": em, "f1": f1})
        for p, f, em, f1 in rows
    ]
    (folder / "predictions.jsonl").write_text("\n".join([*lines, *extra]) + "\n")


PEOPLE = ["Ann", "Bob", "Cy", "Di"]
RUN_A = [(p, "city", em, f1) for p, em, f1 in zip(PEOPLE, [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.0])] + [
    (p, "company", 0.0, 0.0) for p in PEOPLE
]
RUN_B = [(p, "city", 1.0, 1.0) for p in PEOPLE] + [
    (p, "company", em, f1) for p, em, f1 in zip(PEOPLE, [1.0, 0.0, 0.0, 0.0], [1.0, 0.25, 0.0, 0.0])
]


def strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(name)

    return json.loads(text, parse_constant=refuse)


def test_compare_runs_hand_computed(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    write_run(tmp_path / "b", list(reversed(RUN_B)))  # row order does not matter
    out = compare(tmp_path / "a", tmp_path / "b" / "predictions.jsonl", tmp_path / "cmp" / "a_vs_b", seed=0)
    assert list(out) == ["city", "company", "mean"]
    city, company, mean = out["city"], out["company"], out["mean"]
    assert (city["diff_exact_match"], city["diff_f1"], city["p_value"], city["n"]) == (0.5, 0.375, 0.5, 4)  # n01=2: 2/4
    assert (company["diff_exact_match"], company["diff_f1"], company["p_value"], company["n"]) == (0.25, 0.3125, 1.0, 4)
    assert (mean["diff_exact_match"], mean["diff_f1"], mean["p_value"], mean["n"]) == (0.375, 0.34375, 0.25, 8)  # n01=3: 2/8
    assert (city["exact_match_a"], city["exact_match_b"], company["f1_b"]) == (0.5, 1.0, 0.3125)
    for r in out.values():
        assert r["ci95"][0] <= r["diff_exact_match"] <= r["ci95"][1]
    assert city["ci95"] == list(paired_bootstrap_ci([1, 1, 0, 0], [1, 1, 1, 1], seed=0))
    assert mean["ci95"] == list(paired_bootstrap_ci([1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], seed=0, groups=PEOPLE * 2))
    written = (tmp_path / "cmp" / "a_vs_b.json").read_text()
    assert strict(written) == out
    table = (tmp_path / "cmp" / "a_vs_b.md").read_text().splitlines()
    assert "| city | 50.0 | 100.0 | +50.0 [" in table[4] and table[4].endswith("| 0.5 | 62.5 | 100.0 | +37.5 | 4 |")
    assert table[-1].startswith("| mean | 25.0 | 62.5 | +37.5 [") and table[-1].endswith("| 0.25 | 31.2 | 65.6 | +34.4 | 8 |")
    assert "(2000 resamples, seed 0; the mean row resamples people)" in table[0]
    # same inputs and seed: same bytes
    compare(tmp_path / "a", tmp_path / "b", tmp_path / "again", seed=0)
    assert (tmp_path / "again.json").read_bytes() == written.encode() and (tmp_path / "again.md").read_text().splitlines()[1:] == table[1:]


def test_compare_run_with_itself(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    out = compare(tmp_path / "a", tmp_path / "a", tmp_path / "self")
    for r in out.values():
        assert (r["diff_exact_match"], r["diff_f1"], r["ci95"], r["p_value"]) == (0.0, 0.0, [0.0, 0.0], 1.0)
    assert "+0.0 [+0.0, +0.0] | 1 |" in (tmp_path / "self.md").read_text()


def test_compare_refuses_different_questions(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    write_run(tmp_path / "b", RUN_B[:-1])  # Di's company question missing
    with pytest.raises(InputError, match=r"question \(person='Di', field='company', question='Which company did Di work for\? Answer:'\) "
                       r"is in a but not in b; compare runs evaluated on the same questions"):
        compare(tmp_path / "a", tmp_path / "b", tmp_path / "x")
    with pytest.raises(InputError, match="is in b but not in a"):
        compare(tmp_path / "b", tmp_path / "a", tmp_path / "x")
    rows = [json.loads(line) for line in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    rows[2]["prompt"] = rows[2]["prompt"].replace("Tim Cook", "Ada Lovelace")  # other shots
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"the prompt for person='Cy', field='city' differs between the runs \(first at character 10"):
        compare(tmp_path / "a", tmp_path / "c", tmp_path / "x")
    assert not list(tmp_path.glob("x*"))


def test_compare_refuses_bad_files(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    cases = {
        "dup": ([*RUN_A, RUN_A[1]], [], r"line 9 repeats the question of line 2 \(person='Bob', field='city'"),
        "json": (RUN_A, ["{not json"], "line 9 is not valid JSON"),
        "nan": (RUN_A, ['{"person": "Eve", "field": "city", "prompt": "p", "exact_match": 1, "f1": NaN}'], "line 9 is not valid JSON"),
        "keys": (RUN_A, ['{"person": "Eve", "field": "city"}'], "line 9: needs string keys person, field and prompt"),
        "em": ([*RUN_A[:3], ("Di", "city", 0.5, 0.5), *RUN_A[4:]], [], r"line 4: exact_match=0.5; comparing needs 0 or 1"),
        "f1": ([*RUN_A[:3], ("Di", "city", 0.0, 1.5), *RUN_A[4:]], [], r"line 4: f1=1.5; needs a number in \[0, 1\]"),
        "mean": ([], ['{"person": "A", "field": "mean", "prompt": "p", "exact_match": 1, "f1": 1}'], "field 'mean' clashes"),
    }
    for name, (rows, extra, message) in cases.items():
        write_run(tmp_path / name, rows, extra)
        with pytest.raises(InputError, match=message):
            compare(tmp_path / "a", tmp_path / name, tmp_path / "x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "predictions.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no predictions"):
        compare(tmp_path / "empty", tmp_path / "a", tmp_path / "x")
    with pytest.raises(InputError, match=r"b=.*nowhere: no predictions.jsonl there"):
        compare(tmp_path / "a", tmp_path / "nowhere", tmp_path / "x")
    with pytest.raises(InputError, match="resamples=0"):
        compare(tmp_path / "a", tmp_path / "a", tmp_path / "x", resamples=0)
    assert not list(tmp_path.glob("x*"))
