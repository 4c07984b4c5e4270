"""The report of a method sweep (e.g. ``experiment=cpu_study``): one table, paired comparisons and figures.

Written into ``{out_root}/{name}/`` by :class:`StudyReport`, a Hydra callback the preset enables, at the end
of ``python run_experiment.py -m experiment=<preset>`` (and again on every rerun, which skips the finished
runs), or by :func:`study_report` directly:

* ``summary.md`` / ``summary.csv`` — per method and field, exact match and F1 with their 95 % intervals,
  QA and the completion probe side by side, with each run's final training loss;
* ``compare/<mode>_<method>_vs_<baseline>.{json,md}`` — :func:`elusive.reporting.compare.compare` of every method against
  each baseline (plain, random, shuffled and position; each pair once) on the same questions, and
  ``compare/summary.md`` with the mean and the far fields of all of them;
* ``figures/fig1_<mode>.png`` (+ ``.csv``, ``.md``) — accuracy against distance from the name, plain run;
* ``figures/fig4_<method>.png`` (+ ``.html``, ``.csv``) — keep probability per token of one biography under the
  ranked methods.

Each run is found from the settings alone (:func:`elusive.experiment.run_folder`), so runs of other settings in
the same folder are never mixed in; a missing run is listed as missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from elusive.core.config import PlotAccuracyDistanceConfig, PlotKeepProbabilityConfig, RunExperimentConfig
from elusive.core.files import atomic_path, write_text_atomic
from elusive.core.provenance import record_path
from elusive.experiment import EVAL_FOLDERS, run_folder, run_settings, training_data
from elusive.reporting.stats import with_interval

log = logging.getLogger(__name__)

# the question: does a method beat no augmentation, random dropout, a random ranking, position?
BASELINES = ("plain", "random", "shuffled", "position")
FIGURE4_METHODS = ("attention_diff", "released", "position")
FIGURE4_ROW = 0


def method_runs(cfg: RunExperimentConfig, methods: list[str]) -> dict[str, Path]:
    """The run folder of every method under ``cfg``'s other settings (only those that exist).

    A run is found by its settings' key; a run made before the key named models by content (an older key) is
    found by its recorded method and seed when it is the only one of them in the folder.
    """
    root = Path(cfg.out_root) / cfg.name
    data = training_data(cfg, root, write=False)
    by_record = _recorded_runs(root, cfg.seed)
    runs = {}
    for method in methods:
        folder = run_folder(root, run_settings(dataclasses.replace(cfg, method=method), data)) if data.exists() else None
        if folder is not None and folder.is_dir():
            runs[method] = folder
        elif len(by_record.get(method, [])) == 1:
            runs[method] = by_record[method][0]
            log.info("report: %s found by its recorded method and seed (a run of an older key)", runs[method])
        else:
            log.warning("report: no run of method %s with these settings (%s)", method, folder or root)
    return runs


def _recorded_runs(root: Path, seed: int) -> dict[str, list[Path]]:
    """``{method: [run folders of that method and seed]}`` from the runs' ``run.json``."""
    found: dict[str, list[Path]] = {}
    for recorded in sorted(root.glob("*/*/run.json")):
        info = json.loads(recorded.read_text(encoding="utf-8"))
        if info.get("seed") == seed:
            found.setdefault(info.get("method"), []).append(recorded.parent)
    return found


def wilson(entry: dict) -> tuple[float, float]:
    """The Wilson interval of a results.json entry's exact match, from its k/n (older files hold a bootstrap)."""
    from elusive.reporting.stats import wilson_interval

    return wilson_interval(round(entry["exact_match"] * entry["n"]), entry["n"])


def summary_rows(runs: dict[str, Path], modes: list[str]) -> pd.DataFrame:
    """One row per (method, mode, field): EM and F1 in percent with interval ends, n, and the final loss."""
    rows = []
    for method, folder in runs.items():
        meta_path = folder / "lora" / "train_meta.json"
        loss = json.loads(meta_path.read_text()).get("final_train_loss") if meta_path.is_file() else None
        for mode in modes:
            path = folder / EVAL_FOLDERS[mode] / "results.json"
            if not path.is_file():
                continue
            for field, r in json.loads(path.read_text()).items():
                rows.append({"method": method, "mode": mode, "field": field, "n": r["n"],
                             "em": 100 * r["exact_match"], "em_lo": 100 * wilson(r)[0],
                             "em_hi": 100 * wilson(r)[1], "f1": 100 * r["f1"],
                             "f1_lo": 100 * r["f1_ci95"][0], "f1_hi": 100 * r["f1_ci95"][1],
                             "final_train_loss": loss, "run": record_path(folder)})
    return pd.DataFrame(rows)


def headline(runs: dict[str, Path], modes: list[str], seed: int) -> str:
    """The compact table: per method and mode, exact match over all fields (interval resampling people), and
    on the two far fields the paper reports (university, company)."""
    from elusive.reporting.stats import mean_with_interval, wilson_interval

    header = ["method"] + [f"{mode} {what}" for mode in modes for what in ("all fields", "university", "company")]
    out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method, folder in runs.items():
        cells = [method]
        for mode in modes:
            path = folder / EVAL_FOLDERS[mode]
            if not (path / "results.json").is_file():
                cells += ["–"] * 3
                continue
            rows = [json.loads(line) for line in (path / "predictions.jsonl").read_text().splitlines() if line]
            mean = mean_with_interval([(r["person"], r["exact_match"], r["f1"]) for r in rows], seed)
            results = json.loads((path / "results.json").read_text())
            cells.append(with_interval(mean["exact_match"], mean["exact_match_ci95"]))
            for field in ("university", "company"):
                r = results.get(field)
                # Wilson from k/n itself: results.json written before it was Wilson holds a bootstrap interval
                k = None if r is None else round(r["exact_match"] * r["n"])
                cells.append("–" if r is None else with_interval(r["exact_match"], wilson_interval(k, r["n"])))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary_markdown(frame: pd.DataFrame, modes: list[str]) -> str:
    """Per metric, a table: one row per method, per field ``QA | completion`` cells ``value [lo, hi]``."""
    if frame.empty:
        return "No finished runs yet.\n"
    fields = list(dict.fromkeys(frame["field"]))
    out = []
    for metric, title in (("em", "Exact match"), ("f1", "F1")):
        interval = "Wilson 95 % interval" if metric == "em" else "95 % bootstrap interval"
        out += [f"### {title} (%, {interval} over the {frame['n'].iloc[0]} people), " + " | ".join(modes), ""]
        header = ["method", *[f"{field} {mode}" for field in fields for mode in modes], "final loss"]
        out += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for method in dict.fromkeys(frame["method"]):
            cells = [method]
            for field in fields:
                for mode in modes:
                    hit = frame[(frame["method"] == method) & (frame["mode"] == mode) & (frame["field"] == field)]
                    if hit.empty:
                        cells.append("–")
                        continue
                    r = hit.iloc[0]
                    cells.append(f"{r[metric]:.1f} [{r[metric + '_lo']:.1f}, {r[metric + '_hi']:.1f}]")
            loss = frame[frame["method"] == method]["final_train_loss"].iloc[0]
            cells.append("–" if loss is None or loss != loss else f"{loss:.3f}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


FAR = ("university", "company")  # the far fields the paper reports
FAMILY = ("random", "shuffled", "position")  # attention_diff against each control: the question a sweep asks


def comparisons(runs: dict[str, Path], modes: list[str], folder: Path, seed: int) -> str:
    """Every method against each baseline, per mode, over all fields and over the far fields; returns
    ``compare/summary.md``.

    Multiplicity: the p of attention_diff against each control (random, shuffled, position) over all fields, in
    every mode, is Holm-adjusted over that family; every p of the file gets a Benjamini–Hochberg q-value over all
    of them (exploratory: the other comparisons were not declared in advance).
    """
    from elusive.reporting.compare import compare
    from elusive.reporting.stats import benjamini_hochberg, holm

    rows = []  # (mode, method, baseline, all-fields entry, far-fields entry)
    for mode in modes:
        done: set[frozenset[str]] = set()  # a pair of baselines is compared once (b − a is −(a − b))
        for baseline in BASELINES:
            if baseline not in runs:
                continue
            a = runs[baseline] / EVAL_FOLDERS[mode]
            for method, run in runs.items():
                b = run / EVAL_FOLDERS[mode]
                if method == baseline or frozenset((method, baseline)) in done:
                    continue
                if not (a / "predictions.jsonl").is_file() or not (b / "predictions.jsonl").is_file():
                    continue
                done.add(frozenset((method, baseline)))
                result = compare(a, b, folder / f"{mode}_{method}_vs_{baseline}", seed, fields=list(FAR))
                rows.append((mode, method, baseline, result["mean"], result["+".join(FAR)]))
    family = [i for i, (_, m, b, _, _) in enumerate(rows) if m == "attention_diff" and b in FAMILY]
    adjusted = dict(zip(family, holm([rows[i][3]["p_sign_flip"] for i in family])))
    q = benjamini_hochberg([r[k]["p_sign_flip"] for r in rows for k in (3, 4)])
    lines = ["Paired comparisons on the same questions (one training seed): Δ = method − baseline in percentage "
             "points, 95 % bootstrap interval of Δ exact match resampling people, two-sided sign-flip p over "
             "per-person differences. Holm: over the attention_diff − control tests (random, shuffled, position; all "
             f"fields; {', '.join(modes)}), the family the sweep asks about. q: Benjamini–Hochberg over all "
             f"{len(q)} p-values of this table (exploratory).", ""]
    for mode in modes:
        lines += [f"### {mode}", "", "| method | vs | Δ EM all fields [95% CI] | p | p Holm | q | Δ EM university+company "
                  "[95% CI] | p | q |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for i, (m, method, baseline, whole, far) in enumerate(rows):
            if m != mode:
                continue
            lines.append(f"| {method} | {baseline} | {with_interval(whole['diff_exact_match'], whole['ci95'], True)} | "
                         f"{whole['p_sign_flip']:.3g} | {f'{adjusted[i]:.3g}' if i in adjusted else '–'} | "
                         f"{q[2 * i]:.3g} | {with_interval(far['diff_exact_match'], far['ci95'], True)} | "
                         f"{far['p_sign_flip']:.3g} | {q[2 * i + 1]:.3g} |")
        lines.append("")
    text = "\n".join(lines)
    write_text_atomic(folder / "summary.md", text + "\n")
    return text


def figures(cfg: RunExperimentConfig, runs: dict[str, Path], modes: list[str], folder: Path) -> None:
    """Figure 1 from the plain run (each mode) and Figure 4 for one biography under the ranked methods."""
    from elusive.reporting.figure_distance import accuracy_distance
    from elusive.reporting.figure_keep import keep_probability

    root = Path(cfg.out_root) / cfg.name
    data = training_data(cfg, root)
    if "plain" in runs:
        for mode in modes:
            predictions = runs["plain"] / EVAL_FOLDERS[mode] / "predictions.jsonl"
            if predictions.is_file():
                accuracy_distance(PlotAccuracyDistanceConfig(predictions=str(predictions), eval_data=str(data),
                                                             model=cfg.model, output=str(folder / f"fig1_{mode}")))
    for method in FIGURE4_METHODS:
        if method not in runs or not (runs[method] / "aug.json").is_file():
            continue
        record = json.loads((runs[method] / "aug.json").read_text())
        keep_probability(PlotKeepProbabilityConfig(
            augment_type=record["augment_type"], alpha=record["alpha"], beta=record["beta"] or 0.0,
            attn_weights=record["attn_weights"], model=cfg.model, dataset=str(data), rows=[FIGURE4_ROW],
            output=str(folder / f"fig4_{method}"), seed=record["seed"], text_prefix=cfg.text_prefix))


def provenance_line(cfg: RunExperimentConfig, runs: dict[str, Path]) -> str:
    """Which command, code and machine produced the numbers (from the runs' own eval_meta.json records)."""
    metas = [json.loads(p.read_text()) for run in runs.values() for p in sorted(run.glob("eval*/eval_meta.json"))]
    commits = sorted({(m.get("code") or {}).get("commit", "?")[:10] for m in metas})
    dirty = any((m.get("code") or {}).get("dirty") for m in metas)
    seconds = sum(m.get("wall_time_s", 0) for m in metas)
    return (f"`python run_experiment.py -m experiment={cfg.name}`: {len(runs)} runs made by code commit "
            f"{', '.join(commits) or '?'}{' (with uncommitted changes)' if dirty else ''}; people: "
            f"{cfg.n_texts}; evaluation wall time {seconds / 60:.0f} min in all. Per question: results.json, "
            "predictions.jsonl and eval_meta.json in each run's eval*/ folder; loss curves in lora/loss.csv.")


def study_report(cfg: RunExperimentConfig, methods: list[str], draw: bool = True) -> Path:
    """Write the report of ``methods`` under ``cfg``'s other settings (see the module docstring); return the
    path of ``summary.md``. ``draw=False`` leaves the figures as they are (Figure 4 needs the attention dumps,
    which are not committed)."""
    root = Path(cfg.out_root) / cfg.name
    runs = method_runs(cfg, methods)
    frame = summary_rows(runs, cfg.modes)
    with atomic_path(root / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
    text = (provenance_line(cfg, runs) + "\n\n### Exact match (%, 95 % interval: all fields bootstrap over people, "
            "one field Wilson)\n\n"
            + headline(runs, cfg.modes, cfg.seed) + "\n\n" + summary_markdown(frame, cfg.modes))
    write_text_atomic(root / "summary.md", text + "\n")
    comparisons(runs, cfg.modes, root / "compare", cfg.seed)
    if draw:
        figures(cfg, runs, cfg.modes, root / "figures")
    log.info("wrote the report of %d runs to %s", len(runs), root)
    return root / "summary.md"


try:  # the Hydra callback (Hydra is always installed with this project; the import is kept out of the way)
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class StudyReport(Callback):
    """Hydra callback: after a ``-m`` sweep over ``method``, write :func:`study_report` for the swept methods."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from elusive.core.cli import to_settings
        from elusive.core.config import METHODS

        swept = str(OmegaConf.select(config, "hydra.sweeper.params.method", default="") or "")
        overrides = OmegaConf.select(config, "hydra.overrides.task", default=[]) or []
        for item in overrides:  # a method=... on the command line wins over the preset's sweep
            if str(item).startswith("method="):
                swept = str(item).split("=", 1)[1]
        methods = [m for m in swept.split(",") if m in METHODS] or list(METHODS)
        plain = OmegaConf.to_container(config, resolve=False)
        plain.pop("hydra", None)  # its run-time values (job number, ...) are not set at the end of a sweep
        merged = OmegaConf.merge(OmegaConf.structured(RunExperimentConfig), OmegaConf.create(plain))
        settings = to_settings(merged, RunExperimentConfig)
        if settings.dry_run:
            return
        summary = study_report(settings, methods)
        print(f"\n{headline_of(summary.read_text())}\n\nwrote {summary} (every field, F1, final loss), "
              f"{summary.parent / 'compare' / 'summary.md'} (paired comparisons) and {summary.parent / 'figures'}/")


def headline_of(text: str) -> str:
    """The text of a ``summary.md`` up to the end of its first table (the provenance line and the headline)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[:end]).strip()
