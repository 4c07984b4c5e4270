"""Compare two evaluation runs question by question: paired differences, bootstrap intervals, McNemar p-values.

Both runs must have asked the same questions — same ``eval_data``, prompts, ``shots`` and ``seed`` — so each
question of run ``a`` has its twin in run ``b`` (matched by ``(person, field, prompt)`` in
``predictions.jsonl``). Per field, and pooled over all questions as ``mean``, the comparison reports
``b − a`` and whether it could be chance:

* ``diff_exact_match`` / ``diff_f1`` — mean of ``b − a`` over the paired questions (fractions);
* ``ci95`` — 95 % paired percentile bootstrap interval of the exact-match difference
  (:func:`elusive.stats.paired_bootstrap_ci`); the ``mean`` row resamples people, all of a person's
  questions together (in Wikipedia mode every question is its own "person");
* ``p_value`` — exact two-sided McNemar test on exact match (:func:`elusive.stats.mcnemar_exact`), which
  treats questions as independent;
* ``n`` and the two runs' own scores ``exact_match_a``, ``exact_match_b``, ``f1_a``, ``f1_b``.

Output: ``<output>.json`` (strict JSON, ``{field: entry, ..., "mean": entry}``) and ``<output>.md`` (the same
as a table in percentage points), both written atomically; the same inputs and seed give identical bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from elusive.artifacts import write_json_atomic, write_text_atomic
from elusive.config import CompareRunsConfig, check
from elusive.errors import InputError
from elusive.outputs import check_outputs, suffixed
from elusive.stats import RESAMPLES, mcnemar_exact, paired_bootstrap_ci, percent, with_interval

log = logging.getLogger(__name__)

MEAN = "mean"
Key = tuple[str, str, str]  # (person, field, prompt)
GIVE = "give the predictions.jsonl evaluate.py wrote"


def predictions_file(run: Path, key: str) -> Path:
    """``run`` itself if it is a file, else ``run/predictions.jsonl``.

    Raises:
        InputError: Neither exists.
    """
    run = Path(run)
    path = run if run.is_file() else run / "predictions.jsonl"
    if not path.is_file():
        raise InputError(
            f"{key}={run}: no predictions.jsonl there; give an evaluate.py output folder or its predictions.jsonl"
        )
    return path


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def load_predictions(path: Path, key: str) -> dict[Key, dict]:
    """The rows of ``predictions.jsonl`` by ``(person, field, prompt)``, in file order.

    Each row needs string ``person``, ``field`` and ``prompt``, ``exact_match`` 0 or 1 and ``f1`` in [0, 1];
    blank lines are skipped.

    Raises:
        InputError: A line that is not such a JSON object, a question that appears twice, or no rows.
    """
    rows: dict[Key, dict] = {}
    first_line: dict[Key, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{key}={path}: line {number}"
            try:
                row = json.loads(line, parse_constant=_refuse_constant)
            except ValueError as err:
                raise InputError(f"{where} is not valid JSON ({err}); {GIVE}") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("person", "field", "prompt")):
                raise InputError(f"{where}: needs string keys person, field and prompt; {GIVE}")
            em, f1 = row.get("exact_match"), row.get("f1")
            if isinstance(em, bool) or em not in (0, 1):
                raise InputError(
                    f"{where}: exact_match={em!r}; comparing needs 0 or 1 per question (McNemar tests right/wrong)"
                )
            if isinstance(f1, bool) or not isinstance(f1, (int, float)) or not 0 <= f1 <= 1:
                raise InputError(f"{where}: f1={f1!r}; needs a number in [0, 1]")
            k = (row["person"], row["field"], row["prompt"])
            if k in rows:
                raise InputError(
                    f"{where} repeats the question of line {first_line[k]} ({_describe(k)}); "
                    "give predictions with one row per question"
                )
            if row["field"] == MEAN:
                raise InputError(f"{where}: field 'mean' clashes with the pooled 'mean' entry; rename the field")
            rows[k] = row
            first_line[k] = number
    if not rows:
        raise InputError(f"{key}={path}: no predictions; give the predictions.jsonl of a finished evaluate.py run")
    return rows


def _describe(k: Key) -> str:
    """``person='X', field='city', question='Where was X born? Answer:'`` (the prompt's last block, shortened)."""
    question = " ".join(k[2].rsplit("\n\n", 1)[-1].split())
    if len(question) > 80:
        question = question[:77] + "..."
    return f"person={k[0]!r}, field={k[1]!r}, question={question!r}"


def check_same_questions(rows_a: dict[Key, dict], rows_b: dict[Key, dict], path_a: Path, path_b: Path) -> None:
    """Refuse two runs that did not ask exactly the same questions, naming the first difference.

    Raises:
        InputError: A question of one run is missing from the other (or its prompt differs).
    """
    for (rows, other, here, there) in ((rows_a, rows_b, "a", "b"), (rows_b, rows_a, "b", "a")):
        missing = next((k for k in rows if k not in other), None)
        if missing is None:
            continue
        prefix = f"a={path_a}, b={path_b}"
        fix = "compare runs evaluated on the same questions (same eval_data, prompts, shots, seed)"
        twin = next((k for k in other if k[:2] == missing[:2]), None)
        if twin is not None:
            shorter = min(len(missing[2]), len(twin[2]))
            at = next((i for i, (x, y) in enumerate(zip(missing[2], twin[2])) if x != y), shorter)
            raise InputError(
                f"{prefix}: the prompt for person={missing[0]!r}, field={missing[1]!r} differs between the runs "
                f"(first at character {at}: different shots?); {fix}"
            )
        raise InputError(f"{prefix}: question ({_describe(missing)}) is in {here} but not in {there}; {fix}")


def paired_entry(a: list[dict], b: list[dict], seed: int, resamples: int, people: list[str] | None = None) -> dict:
    """The comparison of paired rows ``a[i]``/``b[i]`` (see the module docstring); ``people`` clusters the interval."""
    em_a = np.array([r["exact_match"] for r in a], dtype=np.float64)
    em_b = np.array([r["exact_match"] for r in b], dtype=np.float64)
    f1_a = np.array([r["f1"] for r in a], dtype=np.float64)
    f1_b = np.array([r["f1"] for r in b], dtype=np.float64)
    return {
        "diff_exact_match": float(np.mean(em_b - em_a)),
        "diff_f1": float(np.mean(f1_b - f1_a)),
        "ci95": list(paired_bootstrap_ci(em_a, em_b, seed, resamples, groups=people)),
        "p_value": mcnemar_exact(em_a, em_b),
        "n": len(a),
        "exact_match_a": float(np.mean(em_a)),
        "exact_match_b": float(np.mean(em_b)),
        "f1_a": float(np.mean(f1_a)),
        "f1_b": float(np.mean(f1_b)),
    }


def format_p(p: float) -> str:
    """Three significant digits (``0.0215``, ``1``, ``3.1e-07``)."""
    return f"{p:.3g}"


def comparison_table(result: dict[str, dict], a: Path, b: Path, seed: int, resamples: int) -> str:
    """The comparison as markdown: a line naming the runs, then one row per field and the pooled mean."""
    lines = [
        f"a = `{a}`, b = `{b}`. Scores in percent, Δ = b − a in percentage points; 95% CI: paired bootstrap of "
        f"Δ exact match ({resamples} resamples, seed {seed}; the mean row resamples people); "
        "p: exact two-sided McNemar on exact match.",
        "",
        "| field | EM a | EM b | Δ EM [95% CI] | p | F1 a | F1 b | Δ F1 | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for field, r in result.items():
        lines.append(
            f"| {field} | {percent(r['exact_match_a'])} | {percent(r['exact_match_b'])} | "
            f"{with_interval(r['diff_exact_match'], r['ci95'], signed=True)} | {format_p(r['p_value'])} | "
            f"{percent(r['f1_a'])} | {percent(r['f1_b'])} | {percent(r['diff_f1'], signed=True)} | {r['n']} |"
        )
    return "\n".join(lines)


def compare_runs(cfg: CompareRunsConfig) -> str:
    """Run ``compare_runs.py``: :func:`compare` with the script's settings; return the markdown table."""
    check(cfg)
    check_outputs("compare_runs", suffixed("output", cfg.output, (".json", ".md")), {"a": cfg.a, "b": cfg.b})
    result = compare(Path(cfg.a), Path(cfg.b), Path(cfg.output), cfg.seed, cfg.resamples)
    return comparison_table(result, predictions_file(Path(cfg.a), "a"), predictions_file(Path(cfg.b), "b"), cfg.seed,
                            cfg.resamples)


def compare(a: Path, b: Path, output: Path, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, dict]:
    """Compare evaluation run ``b`` with run ``a`` on their common questions; write ``<output>.json`` and ``.md``.

    Args:
        a: Evaluation output folder (or its ``predictions.jsonl``) of the reference run.
        b: The same for the run compared with it; differences are ``b − a``.
        output: Output path without suffix: ``<output>.json`` and ``<output>.md`` are written.
        seed: Seed of the bootstrap resampling.
        resamples: Bootstrap replicates.

    Returns:
        ``{field: entry, ..., "mean": entry}`` as written to ``<output>.json`` (fields in ``a``'s order).

    Raises:
        InputError: A missing or malformed predictions file, a repeated question, runs that asked different
            questions, ``seed < 0`` or ``resamples < 1``.
    """
    if seed < 0:
        raise InputError(f"seed={seed}: must be >= 0")
    if resamples < 1:
        raise InputError(f"resamples={resamples}: must be >= 1 (2000 is usual)")
    path_a, path_b = predictions_file(a, "a"), predictions_file(b, "b")
    rows_a, rows_b = load_predictions(path_a, "a"), load_predictions(path_b, "b")
    check_same_questions(rows_a, rows_b, path_a, path_b)
    keys = list(rows_a)
    result: dict[str, dict] = {}
    for field in dict.fromkeys(k[1] for k in keys):
        mine = [k for k in keys if k[1] == field]
        result[field] = paired_entry([rows_a[k] for k in mine], [rows_b[k] for k in mine], seed, resamples)
    people = [k[0] for k in keys]
    result[MEAN] = paired_entry([rows_a[k] for k in keys], [rows_b[k] for k in keys], seed, resamples, people)
    output = Path(output)
    write_json_atomic(output.with_name(output.name + ".json"), result)
    table = comparison_table(result, path_a, path_b, seed, resamples)
    write_text_atomic(output.with_name(output.name + ".md"), table + "\n")
    log.info("compared %d questions: wrote %s.json and %s.md", len(keys), output, output)
    return result
