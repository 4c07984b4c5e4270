"""Collect ``results.json`` files of evaluation runs into the paper's table layout (markdown and CSV).

Each run is described by its settings: ``run.json`` of run_experiment.py (every setting that decides its
results, flattened to columns like ``train.learning_rate``), or, for a run of the five scripts, what
``eval_meta.json`` records (the model, the evaluation mode and settings, train.py's settings and the
augmentation it trained on). Runs that agree on every setting but the seed are one row: the mean over seeds,
± the standard deviation across seeds and the number of seeds; a row of one seed shows the 95 % bootstrap
interval of its ``results.json`` instead. Settings that differ between rows become columns, so runs with
different learning rates are never averaged as if they were seeds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.artifacts import atomic_path, write_text_atomic
from elusive.config import SummarizeConfig, check
from elusive.errors import InputError
from elusive.outputs import check_outputs, suffixed

log = logging.getLogger(__name__)

LABELS = ["name", "model", "method", "alpha", "beta", "multiply"]
"""Columns always shown (when not empty), in this order; other settings follow where they differ (mode too)."""
METHOD_ORDER = {"base": -1, "plain": 0, "random": 1, "attention": 2, "attention_diff": 3, "released": 4,
                "shuffled": 5, "position": 6}
NOT_SETTINGS = {"seed", "run", "dataset", "n_texts", "epochs", "learning_rate", "pair"}


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def run_info(results: Path) -> dict:
    """The labels and settings of one run (see the module docstring): flat columns."""
    info: dict = {"name": str(results.parent), "model": "", "method": "", "alpha": None, "beta": None,
                  "multiply": None, "seed": None}
    meta_path = results.parent / "eval_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    info["mode"] = meta.get("mode", "qa")
    for folder in (results.parent, results.parent.parent):
        if (folder / "run.json").is_file():
            recorded = json.loads((folder / "run.json").read_text())
            settings = recorded.pop("settings", {})
            info.update({k: v for k, v in recorded.items() if k not in NOT_SETTINGS or k == "seed"})
            _flatten("", {k: v for k, v in settings.items() if k not in info and k != "seed"}, info)
            return info
    training = meta.get("training") or {}
    aug = training.get("augmentation") or {}
    info["model"] = Path(str(meta.get("model", ""))).name
    info["seed"] = training.get("seed", meta.get("seed"))
    if not training:
        info["method"] = "base"
    elif not aug or (aug.get("augment_type") == "random" and aug.get("alpha") == 0):
        info["method"] = "plain"
        info["multiply"] = aug.get("multiply", 0)
    else:
        info.update(method=aug["augment_type"], alpha=aug.get("alpha"), beta=aug.get("beta"), multiply=aug.get("multiply"))
    settings = {k: v for k, v in (training.get("settings") or {}).items() if k != "seed"}
    _flatten("train", settings, info)
    for key in ("shots", "max_new_tokens", "dtype", "quant"):
        if key in meta:
            info[f"evaluate.{key}"] = meta[key]
    return info


def collect(roots: list[Path]) -> pd.DataFrame:
    """One row per ``results.json`` under ``roots`` (folders, Hydra multirun folders or files).

    Columns: the run's labels and settings (:func:`run_info`), ``run``, then ``<field>_em`` / ``<field>_f1`` in
    percent with ``_lo`` / ``_hi`` interval ends when results.json has them, and the means over fields.

    Raises:
        InputError: A root does not exist or holds no results.json.
    """
    rows = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise InputError(f"runs={root}: no such folder; give evaluation output folders")
        files = [root] if root.name == "results.json" else sorted(root.rglob("results.json"))
        if not files:
            raise InputError(f"runs={root}: no results.json inside; run evaluate.py or run_experiment.py first")
        for path in files:
            results = json.loads(path.read_text())
            row = run_info(path)
            row["run"] = str(path.parent)
            for field, r in results.items():
                for metric, short in (("exact_match", "em"), ("f1", "f1")):
                    row[f"{field}_{short}"] = 100 * r[metric]
                    if f"{metric}_ci95" in r:
                        row[f"{field}_{short}_lo"], row[f"{field}_{short}_hi"] = (100 * v for v in r[f"{metric}_ci95"])
            row["mean_em"] = float(np.mean([100 * r["exact_match"] for r in results.values()]))
            row["mean_f1"] = float(np.mean([100 * r["f1"] for r in results.values()]))
            rows.append(row)
    return pd.DataFrame(rows)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.endswith(("_em", "_f1"))]


def setting_columns(frame: pd.DataFrame) -> list[str]:
    """Every column that describes a run's settings (not its seed, folder or scores)."""
    scores = set(metric_columns(frame)) | {c for c in frame.columns if c.endswith(("_lo", "_hi"))}
    return [c for c in frame.columns if c not in scores and c not in ("seed", "run")]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: mean and standard deviation over seeds, the number of seeds, and (one seed) the
    run's interval ends."""
    metrics = metric_columns(frame)
    keys = setting_columns(frame)
    keyed = frame.assign(**{k: frame[k].map(lambda v: "None" if v is None or v != v else str(v)) for k in keys})
    grouped = keyed.groupby(keys, sort=False, dropna=False)
    out = grouped[metrics].mean().join(grouped[metrics].std(ddof=0).add_suffix("_std"))
    bounds = [c for c in frame.columns if c.endswith(("_lo", "_hi"))]
    if bounds:
        out = out.join(grouped[bounds].first())
    out["seeds"] = grouped.size()
    out = out.reset_index()
    order = out["method"].map(METHOD_ORDER).fillna(9) if "method" in out else 0
    out = out.assign(_order=order).sort_values([k for k in ("name", "model", "mode") if k in out] + ["_order"],
                                                kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def shown_labels(table: pd.DataFrame) -> list[str]:
    """The label columns to print: :data:`LABELS` that are not empty, then every other setting that differs."""
    keys = setting_columns(table.drop(columns=[c for c in table.columns if c.endswith("_std")] + ["seeds"],
                                      errors="ignore"))
    labels = [k for k in LABELS if k in keys and table[k].astype(str).ne("None").any()]
    varying = [k for k in keys if k not in LABELS and table[k].map(str).loc[lambda v: v != "None"].nunique() > 1]
    return labels + varying


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown in percent: ``mean ± std`` over seeds, or ``value [lo, hi]`` (95 % interval) for one seed."""
    metrics = [c for c in metric_columns(table) if not c.endswith("_std")]
    labels = shown_labels(table)
    header = labels + [m.replace("_em", " EM").replace("_f1", " F1") for m in metrics] + ["seeds"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * len(labels) + ["---:"] * (len(header) - len(labels))) + "|"]
    for _, row in table.iterrows():
        cells = [("" if str(row[k]) in ("None", "nan") else str(row[k])) for k in labels]
        for m in metrics:
            if row["seeds"] > 1:
                cells.append(f"{row[m]:.1f} ± {row[f'{m}_std']:.1f}")
            elif f"{m}_lo" in row and pd.notna(row[f"{m}_lo"]):
                cells.append(f"{row[m]:.1f} [{row[f'{m}_lo']:.0f}, {row[f'{m}_hi']:.0f}]")
            else:
                cells.append(f"{row[m]:.1f}")
        cells.append(str(row["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(cfg: SummarizeConfig) -> str:
    """Collect, aggregate over seeds, and (with ``cfg.output``) write ``{output}.md``, ``{output}.csv`` (one row
    per setting) and ``{output}_runs.csv`` (one row per run, with its seed); return the markdown."""
    check(cfg)
    runs = [cfg.runs] if isinstance(cfg.runs, (str, Path)) else list(cfg.runs)
    if not runs:
        raise InputError("runs=[]: give at least one folder with results.json files")
    if cfg.output is not None:
        check_outputs("summarize", suffixed("output", cfg.output, (".md", ".csv", "_runs.csv")),
                      {"runs": [str(r) for r in runs if Path(r).is_file()]})  # folders are only searched
    per_run = collect([Path(r) for r in runs])
    table = aggregate(per_run)
    markdown = to_markdown(table)
    if cfg.output is not None:
        output = Path(cfg.output)
        write_text_atomic(output.with_name(output.name + ".md"), markdown + "\n")
        with atomic_path(output.with_name(output.name + ".csv")) as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
        with atomic_path(output.with_name(output.name + "_runs.csv")) as tmp:
            per_run.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
        log.info("wrote %s.md and %s.csv", output, output)
    return markdown
