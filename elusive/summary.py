"""Collect ``results.json`` files of evaluation runs into the paper's table layout (markdown and CSV).

A run made by ``run_experiment.py`` has a ``run.json`` beside its ``eval/`` folder with the columns the
table needs (name, method, model, alpha, beta, seed); a run of the five scripts is described by the
``eval_meta.json`` evaluate.py writes (which records train.py's metadata, which records the augmentation
settings data_augmentation.py wrote beside its CSV); anything else is labelled by its folder. Runs that
differ only in ``seed`` are one row: mean ± standard deviation over seeds, and the number of seeds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.artifacts import atomic_path, write_text_atomic
from elusive.errors import InputError

log = logging.getLogger(__name__)

KEYS = ["name", "model", "method", "alpha", "beta", "multiply"]
METHOD_ORDER = {"base": -1, "plain": 0, "random": 1, "attention": 2, "attention_diff": 3, "shuffled": 4}


def run_info(results: Path) -> dict:
    """The columns of one run: run_experiment's ``run.json`` (in the results' folder or the one above), else
    what evaluate.py recorded in ``eval_meta.json`` (model, and train.py's record of the augmentation it
    trained on), else labels from the path."""
    for folder in (results.parent, results.parent.parent):
        if (folder / "run.json").is_file():
            return json.loads((folder / "run.json").read_text())
    info = {"name": str(results.parent), "model": "", "method": "", "alpha": None, "beta": None, "multiply": None, "seed": None}
    meta_path = results.parent / "eval_meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
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
    return info


def collect(roots: list[Path]) -> pd.DataFrame:
    """One row per ``results.json`` under ``roots`` (folders, Hydra multirun folders or files).

    Columns: name, model, method, alpha, beta, multiply, seed, run, then ``<field>_em`` / ``<field>_f1`` in
    percent and their means over fields.

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
            info = run_info(path)
            row = {key: info.get(key) for key in [*KEYS, "seed"]}
            row["run"] = str(path.parent)
            for field, r in results.items():
                row[f"{field}_em"] = 100 * r["exact_match"]
                row[f"{field}_f1"] = 100 * r["f1"]
            row["mean_em"] = float(np.mean([100 * r["exact_match"] for r in results.values()]))
            row["mean_f1"] = float(np.mean([100 * r["f1"] for r in results.values()]))
            rows.append(row)
    return pd.DataFrame(rows)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of runs that agree on every other setting."""
    metrics = [c for c in frame.columns if c.endswith(("_em", "_f1"))]
    keyed = frame.assign(**{k: frame[k].astype(str) for k in KEYS})
    grouped = keyed.groupby(KEYS, sort=False, dropna=False)
    out = grouped[metrics].mean()
    std = grouped[metrics].std(ddof=0).add_suffix("_std")
    out = out.join(std)
    out["seeds"] = grouped.size()
    out = out.reset_index()
    out["_order"] = out["method"].map(METHOD_ORDER).fillna(9)
    return out.sort_values(["name", "model", "_order"], kind="stable").drop(columns="_order")


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown in percent: ``mean ± std`` where a row has more than one seed."""
    metrics = [c for c in table.columns if c.endswith(("_em", "_f1"))]
    labels = [k for k in KEYS if k in table.columns and table[k].astype(str).ne("None").any()]
    header = labels + [m.replace("_em", " EM").replace("_f1", " F1") for m in metrics] + (["seeds"] if "seeds" in table else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(labels) + ["---:"] * (len(header) - len(labels))) + "|"]
    for _, row in table.iterrows():
        cells = [("" if str(row[k]) in ("None", "nan") else str(row[k])) for k in labels]
        for m in metrics:
            std = row.get(f"{m}_std", 0.0)
            cells.append(f"{row[m]:.1f} ± {std:.1f}" if row.get("seeds", 1) > 1 else f"{row[m]:.1f}")
        if "seeds" in table:
            cells.append(str(row["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(runs: list[Path], output: Path | None = None) -> str:
    """Collect, aggregate over seeds, and (with ``output``) write ``{output}.md``, ``{output}.csv`` (one row per
    setting, mean and std over seeds) and ``{output}_runs.csv`` (one row per run, with its seed)."""
    if not runs:
        raise InputError("runs=[]: give at least one folder with results.json files")
    per_run = collect(runs)
    table = aggregate(per_run)
    markdown = to_markdown(table)
    if output is not None:
        output = Path(output)
        write_text_atomic(output.with_name(output.name + ".md"), markdown + "\n")
        with atomic_path(output.with_name(output.name + ".csv")) as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
        with atomic_path(output.with_name(output.name + "_runs.csv")) as tmp:
            per_run.to_csv(tmp, index=False, lineterminator="\n", float_format="%.4f")
        log.info("wrote %s.md and %s.csv", output, output)
    return markdown
