"""Collect ``results.json`` files of evaluation runs into the paper's table layout (markdown and CSV).

Each run is described by its settings: ``run.json`` of run_experiment.py (every setting that decides its
results, flattened to columns like ``train.learning_rate``), or, for a run of the five scripts, what
``eval_meta.json`` records (the model, the evaluation mode and settings, train.py's settings and the
augmentation it trained on). Runs that agree on every setting but the seed are one row: the mean over seeds,
± the standard deviation across seeds and the number of seeds; a row of one seed shows the 95 % interval of each
score instead — exact match: the Wilson interval of ``k/n`` (:func:`elusive.reporting.stats.wilson_interval`, recomputed
from ``results.json``'s exact match and ``n``, whatever interval the file holds), F1: the file's bootstrap
interval. Every row names the evaluation data (``dataset``: file name and the first 8 hex digits of its SHA-256,
from ``eval_meta.json``) and ``n``, the questions per field (with biographies: the people); both are part of
what makes a row, so runs on 40 and on 8 people are never averaged as seeds. Settings that differ between rows
become columns, so runs with different learning rates are never averaged as if they were seeds either.

Every ``results.json`` found must be one evaluate.py wrote: a file that is not JSON (truncated), or whose
entries lack ``exact_match``, ``f1`` or ``n`` (e.g. another tool's ``results.json`` under the folder), stops
the summary with one error naming it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.core.config import SummarizeConfig, check
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, write_text_atomic
from elusive.core.outputs import check_outputs, suffixed
from elusive.reporting.stats import wilson_interval

log = logging.getLogger(__name__)

LABELS = ["name", "model", "method", "alpha", "beta", "multiply"]
"""Columns always shown (when not empty), in this order; other settings follow where they differ (mode too)."""
METHOD_ORDER = {"base": -1, "plain": 0, "random": 1, "attention": 2, "attention_diff": 3, "released": 4,
                "shuffled": 5, "position": 6}
NOT_SETTINGS = {"seed", "run", "dataset", "n_texts", "epochs", "learning_rate", "pair"}
DATA = ["seeds", "n", "dataset"]
"""Columns shown last on every row: the seeds averaged, the questions per field and the evaluation data."""
FIX = "give folders of evaluate.py runs (or remove that file)"


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


def read_json(path: Path, root: Path) -> dict:
    """A JSON object file read strictly (no NaN), or one error naming it.

    Raises:
        InputError: ``runs=<root>: <path> ...`` when the file is unreadable, not JSON or not an object.
    """
    def refuse(name: str) -> float:
        raise ValueError(f"{name} is not a number")

    try:
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"runs={root}: {path} is not valid JSON ({err}); {FIX}") from None
    if not isinstance(value, dict):
        raise InputError(f"runs={root}: {path} holds a JSON {type(value).__name__}, not an object; {FIX}")
    return value


def read_results(path: Path, root: Path) -> dict[str, dict]:
    """``results.json`` checked to be evaluate.py's: per field ``exact_match`` = k/n and ``f1`` in [0, 1], ``n >= 1``.

    Raises:
        InputError: Naming the file and the first field or key that is wrong.
    """
    results = read_json(path, root)
    if not results:
        raise InputError(f"runs={root}: {path} has no fields; {FIX}")
    for field, r in results.items():
        what = None
        if not isinstance(r, dict) or not {"exact_match", "f1", "n"} <= set(r):
            what = "needs exact_match, f1 and n"
        elif isinstance(r["n"], bool) or not isinstance(r["n"], int) or r["n"] < 1:
            what = f"n={r['n']!r} is not a count >= 1"
        elif any(isinstance(r[k], bool) or not isinstance(r[k], (int, float)) or not 0 <= r[k] <= 1
                 for k in ("exact_match", "f1")):
            what = "exact_match and f1 must be numbers in [0, 1]"
        elif abs(r["exact_match"] * r["n"] - round(r["exact_match"] * r["n"])) > 1e-6:
            what = f"exact_match={r['exact_match']} is not a count out of n={r['n']}"
        if what is not None:
            raise InputError(f"runs={root}: {path}: field {field!r} {what}; it is not a results.json of evaluate.py; "
                             f"{FIX}")
    return results


def dataset_label(meta: dict) -> str:
    """``bio.csv#d675b5ce``: the evaluation data's file name and the first 8 hex digits of its SHA-256."""
    data, digest = meta.get("eval_data"), meta.get("eval_data_sha256")
    if not data:
        return ""
    return Path(str(data)).name + (f"#{str(digest)[:8]}" if digest else "")


def run_info(results: Path, root: Path | None = None) -> dict:
    """The labels and settings of one run (see the module docstring): flat columns.

    Raises:
        InputError: Its ``eval_meta.json`` or ``run.json`` is not a JSON object (naming the file).
    """
    root = results.parent if root is None else root
    info: dict = {"name": str(results.parent), "model": "", "method": "", "alpha": None, "beta": None,
                  "multiply": None, "seed": None}
    meta_path = results.parent / "eval_meta.json"
    meta = read_json(meta_path, root) if meta_path.is_file() else {}
    info["mode"] = meta.get("mode", "qa")
    info["dataset"] = dataset_label(meta)
    for folder in (results.parent, results.parent.parent):
        if (folder / "run.json").is_file():
            recorded = read_json(folder / "run.json", root)
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

    Columns: the run's labels and settings (:func:`run_info`), ``n`` (questions per field), ``run``, then
    ``<field>_em`` / ``<field>_f1`` in percent with ``_lo`` / ``_hi`` interval ends (exact match: Wilson; F1:
    results.json's interval, when it has one), and the means over fields.

    Raises:
        InputError: A root does not exist or holds no results.json, or a results.json, eval_meta.json or
            run.json that is not evaluate.py's (naming the file).
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
            results = read_results(path, root)
            row = run_info(path, root)
            row["n"] = max(r["n"] for r in results.values())
            row["run"] = str(path.parent)
            for field, r in results.items():
                row[f"{field}_em"] = 100 * r["exact_match"]
                wilson = wilson_interval(round(r["exact_match"] * r["n"]), r["n"])
                row[f"{field}_em_lo"], row[f"{field}_em_hi"] = (100 * v for v in wilson)
                row[f"{field}_f1"] = 100 * r["f1"]
                interval = r.get("f1_ci95")
                if isinstance(interval, list) and len(interval) == 2:
                    row[f"{field}_f1_lo"], row[f"{field}_f1_hi"] = (100 * v for v in interval)
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
    keys = setting_columns(table.drop(columns=[c for c in table.columns if c.endswith("_std")] + DATA,
                                      errors="ignore"))
    labels = [k for k in LABELS if k in keys and table[k].astype(str).ne("None").any()]
    varying = [k for k in keys if k not in LABELS and table[k].map(str).loc[lambda v: v != "None"].nunique() > 1]
    return labels + varying


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown in percent: ``mean ± std`` over seeds, or ``value [lo, hi]`` (95 % interval: exact match Wilson,
    F1 bootstrap) for one seed; then the seeds, ``n`` (questions per field) and the dataset of every row."""
    metrics = [c for c in metric_columns(table) if not c.endswith("_std")]
    labels = shown_labels(table)
    header = labels + [m.replace("_em", " EM").replace("_f1", " F1") for m in metrics] + DATA
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
        cells += [str(row["seeds"]), str(row["n"]), "" if str(row["dataset"]) in ("None", "nan") else str(row["dataset"])]
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
