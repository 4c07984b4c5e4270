"""Collect ``results.json`` files of evaluation runs into one table (markdown and CSV)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from elusive.errors import InputError

log = logging.getLogger(__name__)


def collect(roots: list[Path]) -> pd.DataFrame:
    """One row per ``results.json`` found under ``roots``: run (its folder), then EM/F1 per field, and means.

    Raises:
        InputError: A root does not exist or holds no results.json.
    """
    rows = []
    for root in roots:
        if not Path(root).exists():
            raise InputError(f"runs={root}: no such folder; give evaluation output folders")
        files = [Path(root)] if Path(root).name == "results.json" else sorted(Path(root).rglob("results.json"))
        if not files:
            raise InputError(f"runs={root}: no results.json inside; run evaluate.py first")
        for path in files:
            results = json.loads(path.read_text())
            row = {"run": str(path.parent)}
            for field, r in results.items():
                row[f"{field}_em"] = 100 * r["exact_match"]
                row[f"{field}_f1"] = 100 * r["f1"]
            row["mean_em"] = sum(100 * r["exact_match"] for r in results.values()) / len(results)
            row["mean_f1"] = sum(100 * r["f1"] for r in results.values()) / len(results)
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """The table as markdown, numbers in percent with one decimal."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if c == "run" else "---:" for c in columns) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]) if c == "run" else f"{row[c]:.1f}" for c in columns) + " |")
    return "\n".join(lines)
