"""The analysis of a sweep at the level of its design: arms × training seeds × people, kept passes chosen by
cross-fitting, a declared family of comparisons.

Input: for every arm (method) and training seed, a run folder of ``run_experiment.py`` whose adapters were kept
at several passes (``train.save_at_passes``) and evaluated (``pass-<E>/eval*/predictions.jsonl``); a run
without kept passes counts as one pass. A :class:`Plan` declares, before any result is seen:

* the **selection**: the evaluation mode and fields whose exact matches choose each arm's pass
  (:mod:`elusive.reporting.selection`: chosen on one fold of people, reported on the other);
* **derived arms**, e.g. plain at the step count of an augmented arm's chosen pass (``DerivedArm``);
* the **comparisons** (arm − reference, mode, fields), each in a family: ``primary`` (Holm-adjusted together),
  or ``secondary`` / ``exploratory`` (Benjamini–Hochberg q-values over all of them, labelled as such).

Each comparison pairs the arms seed by seed on the same questions; a person's difference in exact-match counts
is summed over the fields and seeds (:func:`elusive.reporting.stats.per_person_differences`), the estimate is the mean
difference per question in percentage points, the interval a person-cluster bootstrap, the p-value a two-sided
sign-flip test over people; the difference of each seed and how many seeds agree in sign are reported beside.
Everything is computed from integer counts, so the numbers are the same on every CPU.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elusive.core.errors import InputError
from elusive.core.files import write_json_atomic, write_text_atomic
from elusive.experiment import EVAL_FOLDERS
from elusive.reporting.selection import CrossFit, cross_fit, folds, reported_rows
from elusive.reporting.stats import (
    benjamini_hochberg,
    holm,
    per_person_differences,
    person_cluster_bootstrap_ci,
    sign_flip_test,
    wilson_interval,
)

log = logging.getLogger(__name__)

FAMILIES = ("primary", "secondary", "exploratory")


@dataclass(frozen=True)
class Comparison:
    """One declared test: ``arm − reference`` on ``mode``'s answers about ``fields``, in ``family``."""

    arm: str
    reference: str
    mode: str
    fields: tuple[str, ...]
    family: str
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.arm} − {self.reference}, {self.mode}, {'+'.join(self.fields)}"


@dataclass(frozen=True)
class DerivedArm:
    """An arm read from another arm's kept passes: ``source`` at ``factor`` × the pass chosen for ``follows``
    (e.g. plain at 4 × the passes of an arm whose pass holds 4× the steps: the same compute)."""

    name: str
    source: str
    follows: str
    factor: int


@dataclass(frozen=True)
class Plan:
    """What is analysed and how, declared before any result (see the module docstring)."""

    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    modes: tuple[str, ...]
    selection_mode: str
    selection_fields: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    derived: tuple[DerivedArm, ...] = ()
    search_passes: tuple[int, ...] | None = None  # the passes every arm chooses from (None: all it kept)
    seed: int = 0  # of the bootstrap and of any Monte Carlo sign-flip draw
    resamples: int = 10_000
    level: float = 0.95


Evaluations = dict[str, dict[str, dict[int, list[list[dict]]]]]
"""``{arm: {mode: {pass: [rows of seed 0, rows of seed 1, ...]}}}``."""


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``predictions.jsonl``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_evaluations(runs: Mapping[tuple[str, int], Path], plan: Plan) -> Evaluations:
    """Read every kept pass of every ``(arm, seed)`` run, in the plan's seed order.

    A run folder's kept passes are its ``pass-<E>/`` folders; a run without any counts as one pass, numbered by
    its training epochs (``lora/train_meta.json``).

    Raises:
        InputError: A run of the plan is missing, or some mode of a pass was not evaluated, or the seeds of an
            arm kept different passes.
    """
    out: Evaluations = {}
    for arm in plan.arms:
        out[arm] = {mode: {} for mode in plan.modes}
        for seed in plan.seeds:
            run = runs.get((arm, seed))
            if run is None or not Path(run).is_dir():
                raise InputError(f"arm {arm}, seed {seed}: no run folder ({run}); run it first")
            folders = _pass_folders(Path(run))
            for mode in plan.modes:
                for passes, folder in folders.items():
                    predictions = folder / EVAL_FOLDERS[mode] / "predictions.jsonl"
                    if not predictions.is_file():
                        raise InputError(f"arm {arm}, seed {seed}: {predictions} is missing; finish the run first")
                    out[arm][mode].setdefault(passes, []).append(read_rows(predictions))
        for mode, by_pass in out[arm].items():
            short = [e for e, seeds in by_pass.items() if len(seeds) != len(plan.seeds)]
            if short:
                raise InputError(f"arm {arm}: pass {short[0]} was kept by some seeds only; train every seed alike")
    return out


def _pass_folders(run: Path) -> dict[int, Path]:
    kept = {int(p.name.split("-", 1)[1]): p for p in run.glob("pass-*") if p.name.split("-", 1)[1].isdigit()}
    if kept:
        return dict(sorted(kept.items()))
    meta = json.loads((run / "lora" / "train_meta.json").read_text())
    return {round(float(meta["epochs"])): run}


@dataclass
class Analysis:
    """What :func:`analyze` found (written as ``analysis.json``)."""

    folds: dict[str, int]
    chosen: dict[str, dict[int, int]]  # arm -> fold -> pass chosen on that fold
    selection: dict[str, dict[int, dict[int, dict]]]  # arm -> fold -> pass -> score
    arms: list[dict] = field(default_factory=list)  # per arm, mode, endpoint: correct / questions and interval
    comparisons: list[dict] = field(default_factory=list)


def analyze(evaluations: Evaluations, plan: Plan) -> Analysis:
    """Cross-fit each arm's pass, then run every comparison of the plan (see the module docstring)."""
    people = sorted({r["person"] for seeds in next(iter(evaluations[plan.arms[0]][plan.selection_mode].values()))
                     for r in seeds})
    fold_of = folds(people)
    fits: dict[str, CrossFit] = {}
    for arm in plan.arms:
        rows = evaluations[arm][plan.selection_mode]
        if plan.search_passes is not None:
            rows = {e: r for e, r in rows.items() if e in plan.search_passes}
            if not rows:
                raise InputError(f"arm {arm}: kept none of the searched passes {list(plan.search_passes)}")
        fits[arm] = cross_fit(rows, fold_of, plan.selection_fields)
    reported: dict[str, dict[str, list[list[dict]]]] = {}
    passes_of: dict[str, dict[str, int]] = {}
    for arm in plan.arms:
        passes_of[arm] = fits[arm].reported_pass
    for d in plan.derived:
        chosen = fits[d.follows].chosen
        passes_of[d.name] = {p: d.factor * chosen[1 - f] for p, f in fold_of.items()}
    for name, per_person in passes_of.items():
        source = next((d.source for d in plan.derived if d.name == name), name)
        reported[name] = {}
        for mode in plan.modes:
            rows = evaluations[source][mode]
            missing = sorted(set(per_person.values()) - set(rows))
            if missing:
                raise InputError(f"arm {name}: needs pass {missing[0]} of {source}, which was not kept; add it to "
                                 "train.save_at_passes")
            reported[name][mode] = reported_rows(rows, per_person)
    result = Analysis(
        folds=fold_of,
        chosen={arm: dict(fit.chosen) for arm, fit in fits.items()}
        | {d.name: {f: d.factor * fits[d.follows].chosen[f] for f in (0, 1)} for d in plan.derived},
        selection={arm: {f: {e: asdict(s) for e, s in by.items()} for f, by in fit.selection.items()}
                   for arm, fit in fits.items()},
    )
    endpoints = {(c.mode, c.fields) for c in plan.comparisons} | {(plan.selection_mode, plan.selection_fields)}
    for name in reported:
        for mode, fields in sorted(endpoints):
            result.arms.append(arm_entry(name, mode, fields, reported[name][mode], plan))
    for c in plan.comparisons:
        result.comparisons.append(compare_arms(c, reported[c.reference][c.mode], reported[c.arm][c.mode], plan))
    _adjust(result.comparisons)
    return result


def arm_entry(arm: str, mode: str, fields: Sequence[str], rows_by_seed: list[list[dict]], plan: Plan) -> dict:
    """One arm's exact match on an endpoint: correct / questions pooled over seeds with a person-cluster
    interval, and per seed with its Wilson interval (people are independent within a seed)."""
    per_seed = []
    per_person: dict[str, list[int]] = {}
    for rows in rows_by_seed:
        mine = [r for r in rows if r["field"] in fields]
        k = sum(int(r["exact_match"]) for r in mine)
        per_seed.append({"correct": k, "questions": len(mine), "wilson95": list(wilson_interval(k, len(mine)))})
        for r in mine:
            counts = per_person.setdefault(r["person"], [0, 0])
            counts[0] += int(r["exact_match"])
            counts[1] += 1
    correct = sum(c for c, _ in per_person.values())
    questions = sum(q for _, q in per_person.values())
    # the interval of a mean of 0/1 answers by person: the bootstrap of (correct − 0) per person
    interval = person_cluster_bootstrap_ci([c for c, _ in per_person.values()], [q for _, q in per_person.values()],
                                           plan.seed, plan.resamples, plan.level)
    return {"arm": arm, "mode": mode, "fields": list(fields), "correct": correct, "questions": questions,
            "exact_match": correct / questions, "ci95_people": list(interval), "per_seed": per_seed}


def compare_arms(c: Comparison, reference: list[list[dict]], arm: list[list[dict]], plan: Plan) -> dict:
    """One comparison: the estimate, its interval and p over people, and the difference of each seed."""
    pooled = per_person_differences(reference, arm, c.fields)
    test = sign_flip_test(pooled.diffs, plan.seed)
    interval = person_cluster_bootstrap_ci(pooled.diffs, pooled.questions, plan.seed, plan.resamples, plan.level)
    estimate = sum(pooled.diffs) / sum(pooled.questions)
    seeds = []
    for a, b in zip(reference, arm):
        one = per_person_differences([a], [b], c.fields)
        seeds.append(sum(one.diffs) / sum(one.questions))
    agree = sum(1 for s in seeds if s != 0 and math.copysign(1, s) == math.copysign(1, estimate) and estimate != 0)
    return {"name": c.name, "arm": c.arm, "reference": c.reference, "mode": c.mode, "fields": list(c.fields),
            "family": c.family, "people": len(pooled.people), "questions": sum(pooled.questions),
            "diff": estimate, "ci95": list(interval), "p": test.p_value, "p_exact": test.exact,
            "nonzero_people": test.nonzero, "per_seed": seeds, "seeds_agreeing": agree}


def _adjust(comparisons: list[dict]) -> None:
    """Holm over the primary family; BH q-values over everything else (labelled by its family)."""
    primary = [c for c in comparisons if c["family"] == "primary"]
    for c, adjusted in zip(primary, holm([c["p"] for c in primary])):
        c["p_holm"] = adjusted
    rest = [c for c in comparisons if c["family"] != "primary"]
    for c, q in zip(rest, benjamini_hochberg([c["p"] for c in rest])):
        c["q_bh"] = q


# --------------------------------------------------------------------------------------------------
# Writing it down
# --------------------------------------------------------------------------------------------------


def points(x: float, signed: bool = False) -> str:
    shown = round(100 * x, 1) + 0.0
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def markdown(result: Analysis, plan: Plan, header: str = "") -> str:
    """The analysis as markdown: chosen passes, the arms, then every comparison by family."""
    lines = [header, ""] if header else []
    n0 = sum(1 for f in result.folds.values() if f == 0)
    lines += [f"People: {len(result.folds)} in two folds by the SHA-256 of the name ({n0} + {len(result.folds) - n0}). "
              f"Seeds: {', '.join(map(str, plan.seeds))}. Passes chosen on one fold by {plan.selection_mode} exact "
              f"match on {'+'.join(plan.selection_fields)} (summed over seeds), reported on the other.", "",
              "| arm | pass chosen on fold 0 (reported on fold 1) | on fold 1 (reported on fold 0) |", "|---|---:|---:|"]
    for arm, chosen in result.chosen.items():
        lines.append(f"| {arm} | {chosen[0]} | {chosen[1]} |")
    lines += ["", "### Arms: exact match in % (pooled over seeds: 95 % person-cluster bootstrap; per seed: Wilson)", "",
              "| arm | mode | fields | EM [95 % CI] | correct / questions | per seed |", "|---|---|---|---:|---:|---|"]
    for a in result.arms:
        seeds = "; ".join(f"{points(s['correct'] / s['questions'])} [{points(s['wilson95'][0])}, "
                          f"{points(s['wilson95'][1])}]" for s in a["per_seed"])
        lines.append(f"| {a['arm']} | {a['mode']} | {'+'.join(a['fields'])} | {points(a['exact_match'])} "
                     f"[{points(a['ci95_people'][0])}, {points(a['ci95_people'][1])}] | {a['correct']} / "
                     f"{a['questions']} | {seeds} |")
    for family in FAMILIES:
        rows = [c for c in result.comparisons if c["family"] == family]
        if not rows:
            continue
        adjusted = "p (Holm)" if family == "primary" else "q (BH, all non-primary)"
        lines += ["", f"### {family.capitalize()} comparisons: Δ exact match in percentage points", "",
                  f"| comparison | Δ [95 % CI] | p | {adjusted} | Δ per seed | seeds agreeing | people (≠ 0) |",
                  "|---|---:|---:|---:|---|---:|---:|"]
        for c in rows:
            adj = c.get("p_holm", c.get("q_bh"))
            lines.append(f"| {c['name']} | {points(c['diff'], True)} [{points(c['ci95'][0], True)}, "
                         f"{points(c['ci95'][1], True)}] | {c['p']:.3g} | {adj:.3g} | "
                         f"{', '.join(points(s, True) for s in c['per_seed'])} | {c['seeds_agreeing']}/"
                         f"{len(c['per_seed'])} | {c['people']} ({c['nonzero_people']}) |")
    return "\n".join(lines) + "\n"


def write(result: Analysis, plan: Plan, output: Path, header: str = "") -> None:
    """``{output}.json`` (everything, plan included) and ``{output}.md``, atomically."""
    record = {"plan": asdict(plan), **asdict(result)}
    write_json_atomic(output.with_name(output.name + ".json"), record)
    write_text_atomic(output.with_name(output.name + ".md"), markdown(result, plan, header))


# --------------------------------------------------------------------------------------------------
# Any sweep of run_experiment runs (analyze_sweep.py)
# --------------------------------------------------------------------------------------------------


def sweep_runs(root: Path) -> dict[tuple[str, int], Path]:
    """``{(method, seed): run folder}`` of the run_experiment runs under ``root`` (from each ``run.json``).

    Raises:
        InputError: No run, or two runs of one method and seed (other settings: the analysis would not know
            which one is the arm).
    """
    runs: dict[tuple[str, int], Path] = {}
    for recorded in sorted(Path(root).glob("*/*/run.json")):
        info = json.loads(recorded.read_text(encoding="utf-8"))
        key = (info["method"], int(info["seed"]))
        if key in runs:
            raise InputError(
                f"root={root}: two runs of method {key[0]} and seed {key[1]} ({runs[key].name} and "
                f"{recorded.parent.name}: other settings); analyse a sweep with one setting per method and seed, or "
                "move one run aside")
        runs[key] = recorded.parent
    if not runs:
        raise InputError(f"root={root}: no run_experiment run (no <method>/<run>/run.json); give a sweep's folder")
    return runs


def sweep_plan(runs: Mapping[tuple[str, int], Path], reference: str, primary: Sequence[str], mode: str,
               fields: Sequence[str], seed: int, resamples: int) -> Plan:
    """Every arm of the sweep against ``reference``: the ``primary`` arms form the Holm family, the others are
    secondary; each arm's kept pass is chosen by cross-fitting on ``mode``'s exact match on ``fields``.

    Raises:
        InputError: The reference or a primary arm is not in the sweep, or the arms were run with different seeds.
    """
    methods = sorted({m for m, _ in runs}, key=lambda m: (m != reference, m))
    for arm in (reference, *primary):
        if arm not in methods:
            raise InputError(f"{'reference' if arm == reference else 'primary'}={arm}: no run of that method in the "
                             f"sweep (it has {', '.join(methods)})")
    seeds = {m: sorted(s for k, s in runs if k == m) for m in methods}
    if len({tuple(s) for s in seeds.values()}) != 1:
        listed = "; ".join(f"{m}: {s}" for m, s in seeds.items())
        raise InputError(f"the arms were run with different seeds ({listed}); pair every arm with every seed")
    comparisons = tuple(Comparison(m, reference, mode, tuple(fields), "primary" if m in primary else "secondary")
                        for m in methods if m != reference)
    return Plan(arms=tuple(methods), seeds=tuple(seeds[reference]), modes=(mode,), selection_mode=mode,
                selection_fields=tuple(fields), comparisons=comparisons, seed=seed, resamples=resamples)


def analyze_sweep(cfg) -> str:
    """Run ``analyze_sweep.py``: find the sweep's runs, analyse them, write ``{output}.json`` and ``.md``.

    Args:
        cfg: :class:`elusive.core.config.AnalyzeSweepConfig`.

    Returns:
        The markdown written.
    """
    from elusive.core.config import check
    from elusive.core.outputs import check_outputs, suffixed

    check(cfg)
    check_outputs("analyze_sweep", suffixed("output", cfg.output, (".json", ".md")), {"root": cfg.root})
    runs = sweep_runs(Path(cfg.root))
    plan = sweep_plan(runs, cfg.reference, cfg.primary, cfg.mode, cfg.fields, cfg.seed, cfg.resamples)
    result = analyze(load_evaluations(runs, plan), plan)
    header = f"`python analyze_sweep.py root={cfg.root} reference={cfg.reference}`: {len(runs)} runs."
    output = Path(cfg.output)
    write(result, plan, output, header)
    return markdown(result, plan, header)
