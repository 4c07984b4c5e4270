"""compare_runs: two arms paired by person and training seed, per field and pooled, checked by hand (all fast)."""

from __future__ import annotations

import json

import pytest
from helpers.run import run_in_process

from elusive.core.config import CompareRunsConfig
from elusive.core.errors import InputError
from elusive.reporting.compare import compare, compare_runs
from elusive.reporting.stats import mcnemar_exact, paired_bootstrap_ci, person_cluster_bootstrap_ci

QUESTIONS = {"city": "Where was {} born?", "university": "Where did {} study?", "company": "Which company did {} work for?"}


def prompt(field: str, person: str, shots: str = "Tim Cook") -> str:
    question = QUESTIONS[field].format(person)
    return f"{question.replace(person, shots)}\nAnswer: x\n\n{question}\nAnswer:"


def write_run(folder, rows: list[tuple], extra: list[str] = (), training_seed: int | None = None) -> None:
    """predictions.jsonl with (person, field, exact_match, f1) rows, as evaluate.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"person": p, "field": f, "prompt": prompt(f, p), "gold": "g", "prediction": "x", "exact_match": em,
                    "f1": f1})
        for p, f, em, f1 in rows
    ]
    (folder / "predictions.jsonl").write_text("\n".join([*lines, *extra]) + "\n")
    if training_seed is not None:
        (folder / "eval_meta.json").write_text(json.dumps({"training": {"seed": training_seed}}))


def strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(name)

    return json.loads(text, parse_constant=refuse)


# --- one seed -------------------------------------------------------------------------------------------------

PEOPLE = ["Ann", "Bob", "Cy", "Di"]
RUN_A = [(p, "city", em, f1) for p, em, f1 in zip(PEOPLE, [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.0])] + [
    (p, "company", 0.0, 0.0) for p in PEOPLE
]
RUN_B = [(p, "city", 1.0, 1.0) for p in PEOPLE] + [
    (p, "company", em, f1) for p, em, f1 in zip(PEOPLE, [1.0, 0.0, 0.0, 0.0], [1.0, 0.25, 0.0, 0.0])
]


def test_one_seed_hand_computed(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    write_run(tmp_path / "b", list(reversed(RUN_B)))  # row order does not matter
    out = compare(tmp_path / "a", tmp_path / "b" / "predictions.jsonl", tmp_path / "cmp" / "a_vs_b", seed=0)
    assert list(out) == ["city", "company", "mean"]
    city, company, mean = out["city"], out["company"], out["mean"]
    # per person, city: Ann 0, Bob 0, Cy +1, Di +1 → T = 2 over 2 nonzero: 2 of 4 sign patterns reach |T| = 2
    assert (city["diff_exact_match"], city["diff_f1"], city["p_sign_flip"], city["n"]) == (0.5, 0.375, 0.5, 4)
    assert (company["diff_exact_match"], company["diff_f1"], company["p_sign_flip"]) == (0.25, 0.3125, 1.0)
    # all fields: Ann +1, Bob 0, Cy +1, Di +1 → T = 3 over 3 nonzero: 2 of 8
    assert (mean["diff_exact_match"], mean["diff_f1"], mean["p_sign_flip"], mean["n"]) == (0.375, 0.34375, 0.25, 8)
    # one field of one seed: the sign-flip test is McNemar's exact test
    assert city["p_sign_flip"] == mcnemar_exact([1, 1, 0, 0], [1, 1, 1, 1])
    assert (city["exact_match_a"], city["exact_match_b"], company["f1_b"]) == (0.5, 1.0, 0.3125)
    assert all(r["p_exact"] and r["seeds"] == 1 and r["people"] == 4 for r in out.values())
    assert (city["diff_exact_match_by_seed"], city["seeds_agree"]) == ([0.5], 1)
    # the interval resamples people: one question each per field, all of a person's questions in the mean row
    assert city["ci95"] == list(person_cluster_bootstrap_ci([0, 0, 1, 1], 1, seed=0))
    assert city["ci95"] == list(paired_bootstrap_ci([1, 1, 0, 0], [1, 1, 1, 1], seed=0))
    assert mean["ci95"] == list(person_cluster_bootstrap_ci([1, 0, 1, 1], 2, seed=0))
    assert mean["ci95"] == list(paired_bootstrap_ci([1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], seed=0,
                                                    groups=PEOPLE * 2))
    written = (tmp_path / "cmp" / "a_vs_b.json").read_text()
    assert strict(written) == out
    table = (tmp_path / "cmp" / "a_vs_b.md").read_text().splitlines()
    assert "(2000 resamples, seed 0)" in table[2]
    assert table[6].startswith("| city | 50.0 | 100.0 | +50.0 [")
    assert table[6].endswith("| 0.5 | +50.0 | 1/1 | 62.5 | 100.0 | +37.5 | 4 | 4 |")
    assert table[-1].startswith("| mean | 25.0 | 62.5 | +37.5 [")
    assert table[-1].endswith("| 0.25 | +37.5 | 1/1 | 31.2 | 65.6 | +34.4 | 4 | 8 |")
    # same inputs and seed: same bytes
    compare(tmp_path / "a", tmp_path / "b", tmp_path / "again", seed=0)
    assert (tmp_path / "again.json").read_bytes() == written.encode()


def test_compare_run_with_itself(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    out = compare(tmp_path / "a", tmp_path / "a", tmp_path / "self")
    for r in out.values():
        assert (r["diff_exact_match"], r["diff_f1"], r["ci95"], r["p_sign_flip"]) == (0.0, 0.0, [0.0, 0.0], 1.0)
        assert r["seeds_agree"] == 1  # 0 has the sign of 0
    assert "+0.0 [+0.0, +0.0] | 1 | +0.0 | 1/1 |" in (tmp_path / "self.md").read_text()


# --- several seeds --------------------------------------------------------------------------------------------

FIELDS = ["city", "university", "company"]


def grid(right: set[tuple[str, str]]) -> list[tuple]:
    """Ann, Bob and Cy asked about every field; the (person, field) pairs in ``right`` are answered right."""
    return [(p, f, float((p, f) in right), float((p, f) in right)) for p in ("Ann", "Bob", "Cy") for f in FIELDS]


SEEDS = {  # seed → (arm a right, arm b right)
    0: ({("Ann", "city")}, {("Ann", "city"), ("Ann", "university"), ("Bob", "company"), ("Cy", "city")}),
    1: ({("Ann", "company"), ("Bob", "city")}, {("Bob", "city"), ("Cy", "university")}),
}


def two_seeds(tmp_path) -> tuple[list, list]:
    a, b = [], []
    for seed, (right_a, right_b) in SEEDS.items():
        write_run(tmp_path / f"a{seed}", grid(right_a), training_seed=seed)
        write_run(tmp_path / f"b{seed}", grid(right_b), training_seed=seed)
        a.append(tmp_path / f"a{seed}")
        b.append(tmp_path / f"b{seed}")
    return a, b


def test_two_seeds_pool_people_over_fields_and_seeds_by_hand(tmp_path):
    a, b = two_seeds(tmp_path)
    out = compare(a, b, tmp_path / "cmp", fields=["university", "company"])
    assert list(out) == ["city", "university", "company", "mean", "university+company"]
    # seed 0: Ann +1 (university), Bob +1 (company), Cy +1 (city); seed 1: Ann −1 (company), Cy +1 (university)
    mean = out["mean"]
    assert (mean["diff_exact_match"], mean["n"], mean["people"], mean["seeds"]) == (3 / 18, 18, 3, 2)
    assert (mean["exact_match_a"], mean["exact_match_b"]) == (3 / 18, 6 / 18)
    assert (mean["diff_exact_match_by_seed"], mean["seeds_agree"]) == ([3 / 9, 0.0], 1)
    # per person over all fields and seeds: Ann 0, Bob +1, Cy +2 → T = 3; ±1 ± 2 reaches |3| in 2 of 4 patterns
    assert mean["p_sign_flip"] == 0.5
    assert mean["ci95"] == list(person_cluster_bootstrap_ci([0, 1, 2], 6, seed=0))
    far = out["university+company"]  # Ann +1 −1 = 0, Bob +1, Cy +1 → T = 2: 2 of 4
    assert (far["diff_exact_match"], far["p_sign_flip"], far["diff_exact_match_by_seed"], far["n"]) == (
        2 / 12, 0.5, [2 / 6, 0.0], 12)
    assert far["ci95"] == list(person_cluster_bootstrap_ci([0, 1, 1], 4, seed=0))
    university, company, city = out["university"], out["company"], out["city"]
    assert (university["diff_exact_match_by_seed"], university["seeds_agree"], university["p_sign_flip"]) == (
        [1 / 3, 1 / 3], 2, 0.5)
    # company: +1/3 in seed 0, −1/3 in seed 1 → pooled 0; per person Ann −1, Bob +1 → T = 0, p = 1
    assert (company["diff_exact_match"], company["diff_exact_match_by_seed"], company["seeds_agree"]) == (
        0.0, [1 / 3, -1 / 3], 0)
    assert company["p_sign_flip"] == 1.0 and city["p_sign_flip"] == 1.0 and city["diff_exact_match"] == 1 / 6
    table = (tmp_path / "cmp.md").read_text()
    assert "(2 training seeds, paired in this order)" in table
    assert "| university+company | 8.3 | 25.0 | +16.7 [" in table and "| +33.3, +0.0 | 1/2 |" in table
    # the same seed pairs in another order give the same pooled numbers, their per-seed list reversed
    swapped = compare(a[::-1], b[::-1], tmp_path / "swapped", fields=["university", "company"])
    assert swapped["mean"]["diff_exact_match_by_seed"] == [0.0, 3 / 9]
    assert swapped["mean"]["p_sign_flip"] == 0.5


def test_the_script_takes_lists_and_a_field_set(tmp_path, capsys):
    a, b = two_seeds(tmp_path)
    status, stderr = run_in_process("compare_runs.py", [f"a=[{a[0]},{a[1]}]", f"b=[{b[0]},{b[1]}]",
                                                        "fields=[university,company]", f"output={tmp_path / 'out'}",
                                                        f"hydra.run.dir={tmp_path / 'hydra'}"], capsys)
    assert status == 0, stderr[-2000:]
    written = strict((tmp_path / "out.json").read_text())
    assert written == compare(a, b, tmp_path / "direct", fields=["university", "company"])
    status, stderr = run_in_process("compare_runs.py", [f"a={a[0]}", f"b={b[0]}", "fields=[company]",
                                                        f"output={tmp_path / 'x'}", f"hydra.run.dir={tmp_path / 'h'}"],
                                    capsys)
    assert status == 2
    assert "error: fields=['company']: must list two or more different fields, e.g. [university,company]" in stderr
    assert not list(tmp_path.glob("x.*"))


def test_seed_pairs_that_do_not_match_are_refused(tmp_path):
    a, b = two_seeds(tmp_path)
    with pytest.raises(InputError, match=r"2 evaluations in a but 1 in b; give one evaluation per training seed"):
        compare(a, b[:1], tmp_path / "x")
    with pytest.raises(InputError, match=r"a=\[.*a0,.*a0\]: .*a0/predictions.jsonl is listed twice \(seeds 1 and 2\)"):
        compare([a[0], a[0]], b, tmp_path / "x")
    with pytest.raises(InputError, match=r"seed pair 1 of 2: a=.*a0/predictions.jsonl, b=.*b1/predictions.jsonl: "
                                         r"trained with seeds 0 and 1; list both arms' evaluations in the same seed"):
        compare(a, [b[1], b[0]], tmp_path / "x")  # paired 0↔1: the recorded training seeds differ
    write_run(tmp_path / "b1", grid(SEEDS[1][1])[:-1])  # seed 1's b lost Cy's company question
    with pytest.raises(InputError, match=r"seed pair 2 of 2: a=.*a1/predictions.jsonl, b=.*b1/predictions.jsonl: "
                                         r"question \(person='Cy', field='company'.* is in a but not in b"):
        compare(a, b, tmp_path / "x")
    no_company = [r for r in grid(set()) if r[1] != "company"]
    write_run(tmp_path / "a1", no_company)
    write_run(tmp_path / "b1", no_company)
    with pytest.raises(InputError, match=r"seed pair 2 of 2: a=.*a1/predictions.jsonl: asks about city, university, "
                                         r"seed pair 1 about city, university, company; give evaluations of the same"):
        compare(a, b, tmp_path / "x")
    with pytest.raises(InputError, match=r"fields=\[major,company\]: major not asked in these runs \(asked: city, "
                                         r"university, company\)"):
        compare(a[:1], b[:1], tmp_path / "x", fields=["major", "company"])
    with pytest.raises(InputError, match=r"fields=\[company\]: give two or more different fields"):
        compare(a[:1], b[:1], tmp_path / "x", fields=["company"])
    with pytest.raises(InputError, match=r"a=\[\]: give an evaluation folder or a list of them"):
        compare([], [], tmp_path / "x")
    assert not list(tmp_path.glob("x*"))


def test_refuses_bad_files(tmp_path):
    write_run(tmp_path / "a", RUN_A)
    cases = {
        "dup": ([*RUN_A, RUN_A[1]], [], r"line 9 repeats the question of line 2 \(person='Bob', field='city'"),
        "json": (RUN_A, ["{not json"], "line 9 is not valid JSON"),
        "nan": (RUN_A, ['{"person": "Eve", "field": "city", "prompt": "p", "exact_match": 1, "f1": NaN}'],
                "line 9 is not valid JSON"),
        "keys": (RUN_A, ['{"person": "Eve", "field": "city"}'], "line 9: needs string keys person, field and prompt"),
        "em": ([*RUN_A[:3], ("Di", "city", 0.5, 0.5), *RUN_A[4:]], [], r"line 4: exact_match=0.5; comparing needs 0 or 1"),
        "f1": ([*RUN_A[:3], ("Di", "city", 0.0, 1.5), *RUN_A[4:]], [], r"line 4: f1=1.5; needs a number in \[0, 1\]"),
        "mean": ([], ['{"person": "A", "field": "mean", "prompt": "p", "exact_match": 1, "f1": 1}'],
                 "field 'mean' clashes"),
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


def test_the_output_may_not_replace_a_file_of_the_evaluation(tmp_path):
    """output=<eval>/results would replace evaluate's results.json: refused, though predictions.jsonl is the input."""
    write_run(tmp_path / "eval", RUN_A)
    (tmp_path / "eval" / ".elusive-evaluate").write_text("{}\n")
    (tmp_path / "eval" / "results.json").write_text('{"city": {"exact_match": 0.5, "f1": 0.5, "n": 4}}\n')
    before = (tmp_path / "eval" / "results.json").read_bytes()
    predictions = str(tmp_path / "eval" / "predictions.jsonl")
    cfg = CompareRunsConfig(a=predictions, b=predictions, output=str(tmp_path / "eval" / "results"))
    with pytest.raises(InputError, match=r"output=.*eval/results: would replace .*eval/results.json, a file in "
                                         r".*eval, which evaluate fills; choose another output"):
        compare_runs(cfg)
    assert (tmp_path / "eval" / "results.json").read_bytes() == before and not (tmp_path / "eval" / "results.md").exists()
    # a new file beside the evaluation's is fine, and so is writing it again
    for _ in range(2):
        compare_runs(CompareRunsConfig(a=predictions, b=predictions, output=str(tmp_path / "cmp")))
    assert (tmp_path / "cmp.json").is_file()
