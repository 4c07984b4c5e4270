"""The pre-registered CPU study (results/cpu_prereg/PREREGISTRATION.md): its units and its analysis, in one file.

    python scripts/prereg.py list                 # the units (arm × seed) in run order, and which are done
    python scripts/prereg.py run [--only N ...]   # run the units not done yet, one after the other (resumable)
    python scripts/prereg.py analyze              # results/cpu_prereg/analysis.{md,json} from the committed runs
    python scripts/prereg.py pilot                # the pilot's table (results/cpu_prereg_pilot/), as in PREREGISTRATION.md

A unit is one ``run_experiment.py experiment=cpu_prereg`` run (one arm, one training seed) with the arm's
training length; ``run`` skips finished units and resumes an interrupted one (run_experiment does). The analysis
is the :class:`elusive.reporting.study.Plan` below, written before any run of the study; it reads only the runs' committed
files (predictions of every kept pass, run.json), so anyone can recompute it on another machine.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from elusive.reporting.study import Comparison, DerivedArm, Plan

ROOT = Path(__file__).resolve().parent.parent

PRESET = "cpu_prereg"
SEEDS = (0, 1, 2)  # training seeds, shared by every arm (paired)
GRID = (3, 6, 9, 12)  # passes every arm chooses from (from the pilot; the paper searched 10-30 epochs with 10 copies)
COPIES = 3  # augmented copies per original (the paper: 10): an augmented pass takes COPIES + 1 times the steps
FAR = ("university", "company")  # the primary endpoint's fields: the far fields the paper reports
ALL = ("date", "city", "university", "major", "company")

FLAT_ALPHA = 0.45  # random_flat: the mean p(r) of the ranked arms on these people, 0.4506 (PREREGISTRATION.md)


@dataclass(frozen=True)
class Arm:
    """One arm: the run_experiment method, the passes it keeps (it trains to the last), extra overrides."""

    method: str
    passes: tuple[int, ...]
    extra: tuple[str, ...] = ()


ARMS = {
    # plain also keeps (COPIES + 1) × every grid pass: the step count of an augmented pass (compute-matched)
    "plain": Arm("plain", tuple(sorted(set(GRID) | {(COPIES + 1) * e for e in GRID}))),
    "attention_diff": Arm("attention_diff", GRID),
    "shuffled": Arm("shuffled", GRID),
    # exploratory, run if time remains
    "position": Arm("position", GRID),
    "random_flat": Arm("random", GRID, (f"alpha={FLAT_ALPHA}",)),
}
PRIMARY_ARMS = ("plain", "attention_diff", "shuffled")
EXPLORATORY_ARMS = ("position", "random_flat")

# the order units run in: every primary arm of a seed before the next seed, exploratory arms last
UNITS = [(arm, seed) for seed in SEEDS for arm in PRIMARY_ARMS] + [(arm, seed) for arm in EXPLORATORY_ARMS
                                                                     for seed in SEEDS]


def comparisons(arms: set[str]) -> tuple[Comparison, ...]:
    """The declared comparisons; exploratory ones only for the exploratory arms that were run."""
    out = [
        Comparison("attention_diff", "shuffled", "qa", FAR, "primary", "H1: attention_diff − shuffled, QA far fields"),
        Comparison("attention_diff", "plain", "qa", FAR, "primary", "H2: attention_diff − plain, QA far fields"),
        Comparison("attention_diff", "plain_compute", "qa", FAR, "secondary"),
        Comparison("shuffled", "plain", "qa", FAR, "secondary"),
    ]
    for mode in ("completion",):
        out += [Comparison("attention_diff", "shuffled", mode, FAR, "secondary"),
                Comparison("attention_diff", "plain", mode, FAR, "secondary"),
                Comparison("attention_diff", "plain_compute", mode, FAR, "secondary")]
    for mode in ("qa", "completion"):
        out += [Comparison("attention_diff", "shuffled", mode, ALL, "secondary"),
                Comparison("attention_diff", "plain", mode, ALL, "secondary")]
    for name in FAR:
        out += [Comparison("attention_diff", "shuffled", "qa", (name,), "secondary"),
                Comparison("attention_diff", "plain", "qa", (name,), "secondary")]
    if "position" in arms:
        out += [Comparison("attention_diff", "position", "qa", FAR, "exploratory"),
                Comparison("position", "plain", "qa", FAR, "exploratory")]
    if "random_flat" in arms:
        out += [Comparison("attention_diff", "random_flat", "qa", FAR, "exploratory"),
                Comparison("shuffled", "random_flat", "qa", FAR, "exploratory")]
    return tuple(out)


def plan(arms: tuple[str, ...]) -> Plan:
    """The pre-registered analysis of the arms that were run (the primary ones always)."""
    return Plan(
        arms=arms, seeds=SEEDS, modes=("qa", "completion"), selection_mode="qa", selection_fields=FAR,
        comparisons=comparisons(set(arms)), search_passes=GRID,
        derived=(DerivedArm("plain_compute", "plain", "attention_diff", COPIES + 1),),
        seed=0, resamples=10_000,
    )


def overrides(arm: str, seed: int) -> list[str]:
    """The unit's command line after ``run_experiment.py``."""
    a = ARMS[arm]
    return [f"experiment={PRESET}", f"method={a.method}", f"seed={seed}", f"train.epochs={a.passes[-1]}",
            f"train.save_at_passes=[{','.join(map(str, a.passes))}]", *a.extra]


def run_folder(arm: str, seed: int) -> Path:
    """The unit's run folder, found from its settings alone (as run_experiment names it)."""
    from elusive.core.cli import compose_settings
    from elusive.experiment import run_folder as folder_of
    from elusive.experiment import run_settings, training_data

    cfg = compose_settings("run_experiment", overrides(arm, seed))
    root = Path(cfg.out_root) / cfg.name
    return folder_of(root, run_settings(cfg, training_data(cfg, root)))


def done(arm: str, seed: int) -> bool:
    folder = run_folder(arm, seed)
    return all((folder / f"pass-{e}" / mode / "results.json").is_file() for e in ARMS[arm].passes
               for mode in ("eval", "eval_completion"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("list", "run", "analyze", "pilot"))
    parser.add_argument("--only", type=int, nargs="+", help="unit numbers (as `list` prints them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "list":
        for i, (arm, seed) in enumerate(UNITS):
            print(f"{i:2d} {arm:15s} seed {seed}  {'done' if done(arm, seed) else 'to do'}  {run_folder(arm, seed)}")
        return 0
    if args.command == "pilot":
        print(pilot_table(ROOT / "results" / "cpu_prereg_pilot"))
        return 0
    if args.command == "run":
        for i, (arm, seed) in enumerate(UNITS):
            if (args.only and i not in args.only) or done(arm, seed):
                continue
            command = [sys.executable, "run_experiment.py", *overrides(arm, seed)]
            print(f"unit {i}: {' '.join(command[1:])}", flush=True)
            status = subprocess.run(command, cwd=ROOT).returncode
            if status != 0:
                print(f"error: unit {i} ({arm}, seed {seed}) stopped with status {status}", file=sys.stderr)
                return status
        return 0
    return analyze()


def pilot_table(root: Path) -> str:
    """Per arm and kept pass of the pilot: steps, loss on the originals, far-field and all-field QA exact match."""
    import json

    lines = ["| arm | pass | steps | loss on the originals | QA university+company | QA all fields | QA wall time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for run in sorted(root.glob("*/*/run.json")):
        folder = run.parent
        for kept in sorted(folder.glob("pass-*"), key=lambda p: int(p.name.split("-")[1])):
            meta = json.loads((folder / "lora" / kept.name / "train_meta.json").read_text())
            results = json.loads((kept / "eval" / "results.json").read_text())
            wall = json.loads((kept / "eval" / "eval_meta.json").read_text())["wall_time_s"]
            far = sum(round(results[f]["exact_match"] * results[f]["n"]) for f in FAR)
            right = sum(round(r["exact_match"] * r["n"]) for r in results.values())
            total = sum(r["n"] for r in results.values())
            lines.append(f"| {folder.parent.name} | {kept.name.split('-')[1]} | {meta['global_step']} | "
                         f"{meta['loss_originals']:.3f} | {far}/{2 * results[FAR[0]]['n']} | {right}/{total} | "
                         f"{wall:.0f} |")
    return "\n".join(lines)


def analyze() -> int:
    from elusive.core.errors import InputError
    from elusive.core.provenance import record_path
    from elusive.reporting.study import analyze as run_analysis
    from elusive.reporting.study import load_evaluations, write

    ran = tuple(a for a in ARMS if all(done(a, s) for s in SEEDS))
    missing = [a for a in PRIMARY_ARMS if a not in ran]
    if missing:
        print(f"error: arm(s) {', '.join(missing)} not finished for every seed; `python scripts/prereg.py run` first",
              file=sys.stderr)
        return 2
    the_plan = plan(ran)
    runs = {(a, s): run_folder(a, s) for a in ran for s in SEEDS}
    try:
        result = run_analysis(load_evaluations(runs, the_plan), the_plan)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = ROOT / "results" / PRESET / "analysis"
    header = ("`python scripts/prereg.py analyze` on the runs of `python scripts/prereg.py run` (" + ", ".join(
        f"{a}: {record_path(runs[(a, 0)].parent)}" for a in ran) + ").")
    write(result, the_plan, out, header)
    print(f"wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
