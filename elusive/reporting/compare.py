"""Compare two arms of a study on the same questions, paired by person and by training seed.

``a`` (the reference) and ``b`` are each one evaluation (``evaluate.py``'s output folder or its
``predictions.jsonl``) or a list of them, one per training seed, paired by position: ``a[i]`` and ``b[i]`` were
trained with the same seed and must have asked exactly the same questions (same ``eval_data``, prompts,
``shots`` and evaluation ``seed``), matched by ``(person, field, prompt)``. When both folders record their
training seed (``eval_meta.json``), a pair of different seeds is refused.

Rows: every field, ``mean`` (all fields pooled) and, with ``fields=[university,company]``, the pooled set
(``university+company``, the far-fields endpoint). The unit of inference is the person: a person's difference
is the number of their questions ``b`` got right minus those ``a`` got right, summed over the row's fields and
every seed (:func:`elusive.reporting.stats.per_person_differences`). Each row reports

* ``diff_exact_match`` / ``diff_f1`` — mean of ``b − a`` over all paired questions of the row and every seed;
* ``ci95`` — 95 % percentile bootstrap interval of the exact-match difference, people resampled with all their
  questions (:func:`elusive.reporting.stats.person_cluster_bootstrap_ci`);
* ``p_sign_flip`` — two-sided sign-flip (paired permutation) test of the per-person differences
  (:func:`elusive.reporting.stats.sign_flip_test`); ``p_exact`` says whether it counted every sign pattern (else seeded
  Monte Carlo with ``resamples`` patterns);
* ``diff_exact_match_by_seed`` — the exact-match difference of each seed pair, and ``seeds_agree`` — how many
  of them have the sign of the pooled difference (0 counts as a sign);
* ``n`` (paired questions over all seeds), ``people``, ``seeds`` and both arms' scores ``exact_match_a``,
  ``exact_match_b``, ``f1_a``, ``f1_b``.

McNemar's test is not reported: it counts every question as independent, while a person's five fields (and
the seeds) are not; for one field of one seed each person has one question, and the sign-flip test is then
exactly McNemar's exact test (tests check this), so nothing is lost.

Output: ``<output>.json`` (strict JSON, ``{row: entry}``) and ``<output>.md`` (the same as a table in
percentage points), both written atomically; the same inputs and seed give identical bytes on every CPU.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from elusive.core.config import CompareRunsConfig, check
from elusive.core.errors import InputError
from elusive.core.files import write_json_atomic, write_text_atomic
from elusive.core.outputs import check_outputs, suffixed
from elusive.core.provenance import record_path
from elusive.reporting.stats import (
    RESAMPLES,
    per_person_differences,
    percent,
    person_cluster_bootstrap_ci,
    sign_flip_test,
    with_interval,
)

log = logging.getLogger(__name__)

MEAN = "mean"
Key = tuple[str, str, str]  # (person, field, prompt)
GIVE = "give the predictions.jsonl evaluate.py wrote"
Runs = str | Path | Sequence[str | Path]


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
                raise InputError(f"{where}: exact_match={em!r}; comparing needs 0 or 1 per question (right or wrong)")
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


def check_same_questions(rows_a: dict[Key, dict], rows_b: dict[Key, dict], path_a: Path, path_b: Path,
                         pair: str = "") -> None:
    """Refuse two runs that did not ask exactly the same questions, naming the first difference.

    Args:
        pair: Prefix naming the seed pair (``seed pair 2 of 3: ``), empty for a single pair.

    Raises:
        InputError: A question of one run is missing from the other (or its prompt differs).
    """
    for (rows, other, here, there) in ((rows_a, rows_b, "a", "b"), (rows_b, rows_a, "b", "a")):
        missing = next((k for k in rows if k not in other), None)
        if missing is None:
            continue
        prefix = f"{pair}a={path_a}, b={path_b}"
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


def as_runs(value: Runs, key: str) -> list[Path]:
    """``a=`` or ``b=`` as a list of paths: one path, or a list of them (one per training seed).

    Raises:
        InputError: An empty list or an entry that is not a path.
    """
    items = [value] if isinstance(value, (str, Path)) else list(value)
    if not items or not all(isinstance(item, (str, Path)) and str(item) for item in items):
        raise InputError(f"{key}={value}: give an evaluation folder or a list of them, one per training seed, "
                         f"e.g. {key}=[seed0/eval,seed1/eval]")
    return [Path(item) for item in items]


def training_seed(predictions: Path) -> int | None:
    """The training seed ``eval_meta.json`` beside ``predictions`` records, or None (no record, base model)."""
    try:
        meta = json.loads((predictions.parent / "eval_meta.json").read_text(encoding="utf-8"))
        seed = (meta.get("training") or {}).get("seed")
    except (OSError, ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def load_pairs(a: list[Path], b: list[Path]) -> tuple[list[tuple[dict, dict]], list[Path], list[Path]]:
    """Read and check every seed pair: same count, no evaluation twice, same questions, same training seed.

    Returns:
        ``[(rows_a, rows_b), ...]`` per seed pair and the two lists of ``predictions.jsonl`` files.

    Raises:
        InputError: Naming the pair (and both files) that is wrong.
    """
    if len(a) != len(b):
        raise InputError(f"a={_shown(a)}, b={_shown(b)}: {len(a)} evaluations in a but {len(b)} in b; give one "
                         "evaluation per training seed in both, in the same seed order")
    files_a = [predictions_file(p, "a") for p in a]
    files_b = [predictions_file(p, "b") for p in b]
    for key, files in (("a", files_a), ("b", files_b)):
        seen: dict[Path, int] = {}
        for i, file in enumerate(files):
            j = seen.setdefault(file.resolve(), i)
            if j != i:
                raise InputError(f"{key}={_shown(a if key == 'a' else b)}: {file} is listed twice (seeds {j + 1} and "
                                 f"{i + 1}); give each training seed's evaluation once")
    pairs = []
    fields: list[str] | None = None
    for i, (path_a, path_b) in enumerate(zip(files_a, files_b)):
        pair = f"seed pair {i + 1} of {len(a)}: " if len(a) > 1 else ""
        rows_a, rows_b = load_predictions(path_a, "a"), load_predictions(path_b, "b")
        check_same_questions(rows_a, rows_b, path_a, path_b, pair)
        seed_a, seed_b = training_seed(path_a), training_seed(path_b)
        if seed_a is not None and seed_b is not None and seed_a != seed_b:
            raise InputError(f"{pair}a={path_a}, b={path_b}: trained with seeds {seed_a} and {seed_b}; list both "
                             "arms' evaluations in the same seed order")
        asked = list(dict.fromkeys(k[1] for k in rows_a))
        if fields is None:
            fields = asked
        elif set(asked) != set(fields):
            raise InputError(f"{pair}a={path_a}: asks about {', '.join(asked)}, seed pair 1 about "
                             f"{', '.join(fields)}; give evaluations of the same fields for every seed")
        pairs.append((rows_a, rows_b))
    return pairs, files_a, files_b


def _shown(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else "[" + ",".join(map(str, paths)) + "]"


def row_entry(pairs: list[tuple[dict, dict]], fields: set[str], seed: int, resamples: int) -> dict:
    """The comparison over ``fields`` of every seed pair (see the module docstring)."""
    by_seed, right_a, right_b, f1_a, f1_b = [], 0, 0, [], []
    for rows_a, rows_b in pairs:
        keys = [k for k in rows_a if k[1] in fields]
        ka = sum(int(rows_a[k]["exact_match"]) for k in keys)
        kb = sum(int(rows_b[k]["exact_match"]) for k in keys)
        by_seed.append((kb - ka) / len(keys))
        right_a, right_b = right_a + ka, right_b + kb
        f1_a += [float(rows_a[k]["f1"]) for k in keys]
        f1_b += [float(rows_b[k]["f1"]) for k in keys]
    people = per_person_differences([list(r.values()) for r, _ in pairs], [list(r.values()) for _, r in pairs], fields)
    n = sum(people.questions)
    diff = people.mean
    test = sign_flip_test(people.diffs, seed, resamples)
    sign = (diff > 0) - (diff < 0)
    return {
        "diff_exact_match": diff,
        "diff_f1": math.fsum(y - x for x, y in zip(f1_a, f1_b)) / n,  # fsum: the same float in any order
        "ci95": list(person_cluster_bootstrap_ci(people.diffs, people.questions, seed, resamples)),
        "p_sign_flip": test.p_value,
        "p_exact": test.exact,
        "diff_exact_match_by_seed": by_seed,
        "seeds_agree": sum(((d > 0) - (d < 0)) == sign for d in by_seed),
        "n": n,
        "people": len(people.people),
        "seeds": len(pairs),
        "exact_match_a": right_a / n,
        "exact_match_b": right_b / n,
        "f1_a": math.fsum(f1_a) / n,
        "f1_b": math.fsum(f1_b) / n,
    }


def format_p(p: float) -> str:
    """Three significant digits (``0.0215``, ``1``, ``3.1e-07``)."""
    return f"{p:.3g}"


def comparison_table(result: dict[str, dict], a: list[Path], b: list[Path], seed: int, resamples: int) -> str:
    """The comparison as markdown: lines naming the runs and the methods, then one row per field and pooled row."""
    seeds = len(a)
    runs = "" if seeds == 1 else f" ({seeds} training seeds, paired in this order)"
    lines = [
        f"a = {', '.join(f'`{record_path(p)}`' for p in a)}; b = {', '.join(f'`{record_path(p)}`' for p in b)}{runs}.",
        "",
        "Scores in percent over all seeds; Δ = b − a in percentage points. 95% CI: bootstrap over people, each "
        f"resampled with all their questions in every seed ({resamples} resamples, seed {seed}). p: two-sided "
        "sign-flip test of the per-person differences in exact-match counts (summed over the row's fields and the "
        "seeds; exact unless marked MC). Per seed: Δ EM of each seed pair; agree: seeds whose Δ has the sign of "
        "the pooled Δ.",
        "",
        "| row | EM a | EM b | Δ EM [95% CI] | p | Δ EM per seed | agree | F1 a | F1 b | Δ F1 | people | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result.items():
        p = format_p(r["p_sign_flip"]) + ("" if r["p_exact"] else " MC")
        per_seed = ", ".join(percent(d, signed=True) for d in r["diff_exact_match_by_seed"])
        lines.append(
            f"| {name} | {percent(r['exact_match_a'])} | {percent(r['exact_match_b'])} | "
            f"{with_interval(r['diff_exact_match'], r['ci95'], signed=True)} | {p} | {per_seed} | "
            f"{r['seeds_agree']}/{r['seeds']} | {percent(r['f1_a'])} | {percent(r['f1_b'])} | "
            f"{percent(r['diff_f1'], signed=True)} | {r['people']} | {r['n']} |"
        )
    return "\n".join(lines)


def pooled_name(fields: Sequence[str]) -> str:
    """The row name of a pooled field set: ``university+company``."""
    return "+".join(fields)


def compare_runs(cfg: CompareRunsConfig) -> str:
    """Run ``compare_runs.py``: :func:`compare` with the script's settings; return the markdown table."""
    check(cfg)
    a, b = as_runs(cfg.a, "a"), as_runs(cfg.b, "b")
    check_outputs("compare_runs", suffixed("output", cfg.output, (".json", ".md")),
                  {"a": [str(p) for p in a], "b": [str(p) for p in b]})
    _, table = _compare(a, b, Path(cfg.output), cfg.seed, cfg.resamples, cfg.fields)
    return table


def compare(a: Runs, b: Runs, output: Path, seed: int = 0, resamples: int = RESAMPLES,
            fields: Sequence[str] | None = None) -> dict[str, dict]:
    """Compare arm ``b`` with arm ``a`` on their common questions; write ``<output>.json`` and ``<output>.md``.

    Args:
        a: Evaluation output folder (or its ``predictions.jsonl``) of the reference arm, or a list of them, one
            per training seed.
        b: The same for the arm compared with it, in the same seed order; differences are ``b − a``.
        output: Output path without suffix: ``<output>.json`` and ``<output>.md`` are written.
        seed: Seed of the bootstrap (and of the sign flips when they are drawn at random).
        resamples: Bootstrap replicates (and Monte Carlo sign patterns).
        fields: Two or more fields pooled into one more row (``university+company``); None for none.

    Returns:
        ``{field: entry, ..., "mean": entry[, "<f1>+<f2>": entry]}`` as written to ``<output>.json`` (fields in
        ``a``'s order).

    Raises:
        InputError: A missing or malformed predictions file, a repeated question, seed pairs that do not match
            (count, questions, fields, training seed), an evaluation listed twice, unknown or too few ``fields``,
            ``seed < 0`` or ``resamples < 1``.
    """
    return _compare(as_runs(a, "a"), as_runs(b, "b"), Path(output), seed, resamples, fields)[0]


def _compare(a: list[Path], b: list[Path], output: Path, seed: int, resamples: int,
             fields: Sequence[str] | None) -> tuple[dict[str, dict], str]:
    if seed < 0:
        raise InputError(f"seed={seed}: must be >= 0")
    if resamples < 1:
        raise InputError(f"resamples={resamples}: must be >= 1 (2000 is usual)")
    if fields is not None and (len(set(fields)) < 2 or len(set(fields)) != len(fields)):
        raise InputError(f"fields=[{','.join(fields)}]: give two or more different fields to pool, e.g. "
                         "fields=[university,company] (each field has its own row already)")
    pairs, files_a, files_b = load_pairs(a, b)
    asked = list(dict.fromkeys(k[1] for k in pairs[0][0]))
    unknown = [f for f in fields or () if f not in asked]
    if unknown:
        raise InputError(f"fields=[{','.join(fields)}]: {', '.join(unknown)} not asked in these runs (asked: "
                         f"{', '.join(asked)}); name fields of the predictions")
    if fields is not None and pooled_name(fields) in asked:
        raise InputError(f"fields=[{','.join(fields)}]: the pooled row {pooled_name(fields)!r} would clash with "
                         "the field of that name; rename the field")
    result = {field: row_entry(pairs, {field}, seed, resamples) for field in asked}
    result[MEAN] = row_entry(pairs, set(asked), seed, resamples)
    if fields is not None:
        result[pooled_name(fields)] = row_entry(pairs, set(fields), seed, resamples)
    write_json_atomic(output.with_name(output.name + ".json"), result)
    table = comparison_table(result, files_a, files_b, seed, resamples)
    write_text_atomic(output.with_name(output.name + ".md"), table + "\n")
    log.info("compared %d seed pair(s), %d questions each: wrote %s.json and %s.md", len(pairs), len(pairs[0][0]),
             output, output)
    return result, table
