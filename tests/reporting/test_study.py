"""The design-level analysis: cross-fitted passes, derived arms, paired comparisons over people (by hand), and a
sweep of tiny runs read back from their folders."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers.run import ROOT, run_in_process

from elusive.core.config import EvaluateSettings, RunExperimentConfig, TrainSettings
from elusive.core.errors import InputError
from elusive.experiment import run_experiment, run_folder, run_settings, training_data
from elusive.reporting.selection import folds
from elusive.reporting.study import (
    Comparison,
    DerivedArm,
    Plan,
    analyze,
    load_evaluations,
    markdown,
    sweep_plan,
    sweep_runs,
    write,
)

PEOPLE = ["Ann Lee", "Bob Ray", "Cy Oda", "Di Fox"]
FIELDS = ("university", "company")


def _rows(right: bool, date_right: bool = True) -> list[dict]:
    rows = []
    for person in PEOPLE:
        for field in ("date", *FIELDS):
            em = int(date_right) if field == "date" else int(right)
            rows.append({"person": person, "field": field, "prompt": f"{person}/{field}", "exact_match": em,
                         "f1": float(em)})
    return rows


def _plan(**changes) -> Plan:
    settings = dict(arms=("a", "b"), seeds=(0, 1), modes=("qa",), selection_mode="qa", selection_fields=FIELDS,
                    comparisons=(Comparison("b", "a", "qa", FIELDS, "primary"),), resamples=200)
    settings.update(changes)
    return Plan(**settings)


def test_an_arm_right_everywhere_against_one_never_right():
    # a never answers the far fields; b does from pass 2 on; both always answer the date
    evaluations = {"a": {"qa": {1: [_rows(False)] * 2, 2: [_rows(False)] * 2}},
                   "b": {"qa": {1: [_rows(False)] * 2, 2: [_rows(True)] * 2}}}
    result = analyze(evaluations, _plan())
    assert result.chosen["b"] == {0: 2, 1: 2}
    assert result.chosen["a"] == {0: 1, 1: 1}  # all tied at 0: fewer passes
    (c,) = result.comparisons
    # every person: +1 on 2 fields × 2 seeds = +4 of 4 questions; 4 people all positive: exact p = 2 / 2**4
    assert c["diff"] == 1.0 and c["ci95"] == [1.0, 1.0] and c["p"] == 2 / 16 and c["p_exact"]
    assert c["p_holm"] == 2 / 16 and c["per_seed"] == [1.0, 1.0] and c["seeds_agreeing"] == 2
    assert c["people"] == 4 and c["questions"] == 16 and c["nonzero_people"] == 4
    b_far = next(a for a in result.arms if a["arm"] == "b" and a["fields"] == list(FIELDS))
    assert (b_far["correct"], b_far["questions"], b_far["exact_match"]) == (16, 16, 1.0)
    assert b_far["per_seed"][0]["wilson95"][1] == 1.0
    text = markdown(result, _plan())
    assert "| b − a, qa, university+company | +100.0 [+100.0, +100.0] | 0.125 | 0.125 | +100.0, +100.0 | 2/2 | 4 (4) |" in text


def test_each_fold_is_reported_at_the_pass_the_other_fold_chose():
    fold_of = folds(PEOPLE)
    zero = {p for p, f in fold_of.items() if f == 0}

    def rows(passes: int) -> list[dict]:  # fold 0 right only at pass 1, fold 1 only at pass 2
        out = _rows(False)
        for r in out:
            if r["field"] != "date":
                r["exact_match"] = int((r["person"] in zero) == (passes == 1))
                r["f1"] = float(r["exact_match"])
        return out

    evaluations = {"a": {"qa": {1: [_rows(False)], 2: [_rows(False)]}}, "b": {"qa": {1: [rows(1)], 2: [rows(2)]}}}
    result = analyze(evaluations, _plan(seeds=(0,)))
    assert result.chosen["b"] == {0: 1, 1: 2}
    b_far = next(a for a in result.arms if a["arm"] == "b" and a["fields"] == list(FIELDS))
    assert b_far["correct"] == 0  # each person reported where the other fold's choice leaves them wrong


def test_a_derived_arm_reads_its_source_at_a_multiple_of_the_followed_choice():
    evaluations = {"a": {"qa": {1: [_rows(False)], 2: [_rows(False)], 4: [_rows(True)], 8: [_rows(False)]}},
                   "b": {"qa": {1: [_rows(False)], 2: [_rows(True)]}}}
    plan = _plan(seeds=(0,), search_passes=(1, 2), derived=(DerivedArm("a_compute", "a", "b", 2),),
                 comparisons=(Comparison("b", "a_compute", "qa", FIELDS, "secondary"),
                              Comparison("b", "a", "qa", FIELDS, "primary")))
    result = analyze(evaluations, plan)
    assert result.chosen["b"] == {0: 2, 1: 2} and result.chosen["a_compute"] == {0: 4, 1: 4}
    assert result.chosen["a"] == {0: 1, 1: 1}  # a's own choice is among the searched passes only
    secondary = next(c for c in result.comparisons if c["family"] == "secondary")
    assert secondary["diff"] == 0.0 and secondary["p"] == 1.0 and secondary["q_bh"] == 1.0
    missing = _plan(seeds=(0,), search_passes=(1, 2), derived=(DerivedArm("a_compute", "a", "b", 3),))
    with pytest.raises(InputError, match="needs pass 6 of a, which was not kept"):
        analyze(evaluations, missing)


def _cfg(small_model, tmp_path, method, seed):
    return RunExperimentConfig(
        name="s", method=method, model=str(small_model), dataset=str(ROOT / "data" / "biography.csv"), n_texts=4,
        out_root=str(tmp_path / "exp"), multiply=1, device="cpu", seed=seed, modes=["qa"],
        train=TrainSettings(epochs=2, batch_size=4, logging_steps=1, save_at_passes=[1, 2], lr_schedule="constant",
                            warmup_passes=0, report_to=[]),
        evaluate=EvaluateSettings(shots=1, max_new_tokens=2, fewshot_data=str(ROOT / "data" / "biography_fewshot.csv"),
                                  prompts=str(ROOT / "data" / "prompts.csv")))


@pytest.fixture(scope="module")
def sweep(small_model, tmp_path_factory):
    """Two methods × two seeds of tiny runs keeping passes 1 and 2: ``(runs, root)``."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    runs = {}
    for method in ("plain", "position"):
        for seed in (0, 1):
            cfg = _cfg(small_model, tmp_path, method, seed)
            run_experiment(cfg)
            root = tmp_path / "exp" / "s"
            runs[(method, seed)] = run_folder(root, run_settings(cfg, training_data(cfg, root)))
    return runs, tmp_path / "exp" / "s"


def test_a_sweep_of_kept_passes_is_read_back_and_analysed(sweep, tmp_path):
    runs, _ = sweep
    plan = Plan(arms=("plain", "position"), seeds=(0, 1), modes=("qa",), selection_mode="qa",
                selection_fields=FIELDS, comparisons=(Comparison("position", "plain", "qa", FIELDS, "primary"),),
                resamples=200)
    evaluations = load_evaluations(runs, plan)
    assert sorted(evaluations["plain"]["qa"]) == [1, 2] and len(evaluations["plain"]["qa"][1]) == 2
    result = analyze(evaluations, plan)
    (c,) = result.comparisons
    assert c["people"] == 4 and c["questions"] == 4 * 2 * 2 and 0 < c["p"] <= 1 and len(c["per_seed"]) == 2
    write(result, plan, tmp_path / "analysis")
    record = json.loads((tmp_path / "analysis.json").read_text())
    assert record["plan"]["seeds"] == [0, 1] and set(record["chosen"]) == {"plain", "position"}
    assert (tmp_path / "analysis.md").read_text().count("| position − plain") == 1
    with pytest.raises(InputError, match="arm plain, seed 2: no run folder"):
        load_evaluations(runs, dataclasses.replace(plan, seeds=(0, 1, 2)))


def test_analyze_sweep_finds_the_runs_and_writes_the_same_analysis(sweep, tmp_path, capsys):
    runs, root = sweep
    assert sweep_runs(root) == runs
    code, out = run_in_process("analyze_sweep.py", [f"root={root}", "primary=[position]", f"output={tmp_path / 'a'}",
                                                    "resamples=200"], capsys)
    assert code == 0, out
    record = json.loads((tmp_path / "a.json").read_text())
    (c,) = record["comparisons"]
    assert c["family"] == "primary" and c["name"] == "position − plain, qa, university+company" and "p_holm" in c
    plan = sweep_plan(runs, "plain", ["position"], "qa", FIELDS, 0, 200)
    assert record["comparisons"] == analyze(load_evaluations(runs, plan), plan).comparisons


def test_analyze_sweep_refuses_what_it_cannot_pair(sweep, tmp_path):
    runs, root = sweep
    with pytest.raises(InputError, match=r"^primary=random: no run of that method in the sweep \(it has plain, "
                                         r"position\)$"):
        sweep_plan(runs, "plain", ["random"], "qa", FIELDS, 0, 200)
    fewer = {k: v for k, v in runs.items() if k != ("position", 1)}
    with pytest.raises(InputError, match="different seeds"):
        sweep_plan(fewer, "plain", [], "qa", FIELDS, 0, 200)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    twin = copy / "plain" / "zz-twin"
    shutil.copytree(runs[("plain", 0)], twin)
    with pytest.raises(InputError, match="two runs of method plain and seed 0"):
        sweep_runs(copy)
