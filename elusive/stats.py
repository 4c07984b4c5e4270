"""Uncertainty of evaluation results: bootstrap intervals, an exact McNemar test, tables with intervals.

Everything here is pure NumPy on per-question scores (no model, no torch), seeded and deterministic: the same
values and seed give the same floats on every run.

* :func:`bootstrap_ci` — percentile bootstrap interval of a mean; questions (or, with ``groups``, whole groups
  of questions such as all questions about one person) are resampled with replacement.
* :func:`paired_bootstrap_ci` — the same for the mean difference ``b − a`` of two runs on the same questions.
* :func:`mcnemar_exact` — exact two-sided McNemar test on paired 0/1 outcomes (exact match).
* :func:`add_intervals` / :func:`mean_with_interval` — ``exact_match_ci95`` and ``f1_ci95`` for the entries of
  stage 5's ``results.json``, and for the pooled mean over all questions.
* :func:`format_table` — the results as a markdown table in percent with their intervals.

Intervals are 95 % percentile intervals over ``resamples`` bootstrap replicates. They describe how much the
score would move with another sample of questions (people) of the same kind, not run-to-run variation of
training (use several training seeds for that; see :mod:`elusive.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
CHUNK = 1 << 22  # resampled indices drawn per block (32 MB of int64); fixed, so results do not depend on memory
EXACT_LIMIT = 20_000  # discordant pairs up to which the binomial tail is summed in exact integers (~0.05 s)


def _resampled_means(sums: np.ndarray, counts: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """Bootstrap replicates of ``sum(values) / count`` drawing ``len(sums)`` groups with replacement each time."""
    rng = np.random.default_rng(seed)
    groups = len(sums)
    rows = max(1, CHUNK // groups)
    out = np.empty(resamples, dtype=np.float64)
    equal = bool((counts == counts[0]).all())  # every group the same size: the denominator is fixed
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, groups, size=(stop - start, groups))
        total = counts[0] * groups if equal else counts[idx].sum(axis=1)
        out[start:stop] = sums[idx].sum(axis=1) / total
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    seed: int,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    groups: Sequence[object] | None = None,
) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of the mean of ``values``.

    Each replicate draws ``len(values)`` indices with replacement (``numpy.random.default_rng(seed)``) and takes
    the mean of the drawn values; the interval is the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the
    replicates (linear interpolation). With ``groups`` (one label per value, e.g. the person a question is
    about), whole groups are drawn instead — a cluster bootstrap — and a replicate is the mean over all values
    of the drawn groups; questions about the same person then move together, as they do when another set of
    people is asked.

    The interval always contains the point estimate ``mean(values)``: percentile intervals of a skewed or
    very discrete bootstrap distribution (few questions, scores near 0 or 1) can exclude it by rounding, and
    then the interval is widened just enough to include it. All values equal gives ``(v, v)`` exactly.

    Args:
        values: Per-question scores (finite numbers).
        seed: Seed of the resampling; the same values and seed always give the same interval.
        resamples: Bootstrap replicates (>= 1).
        level: Coverage, in (0, 1).
        groups: Optional cluster label per value; None resamples single values.

    Returns:
        ``(lo, hi)`` as Python floats, ``lo <= mean(values) <= hi``.

    Raises:
        ValueError: No values (an empty sample has no mean, so no interval: the caller must not report one),
            non-finite values, ``groups`` of another length, ``resamples < 1`` or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"values: need a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values: contain NaN or infinity")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1)")
    mean = float(np.mean(x))
    if (x == x[0]).all():
        return float(x[0]), float(x[0])
    if groups is None:
        sums, counts = x, np.ones(len(x))
    else:
        if len(groups) != len(x):
            raise ValueError(f"groups: {len(groups)} labels for {len(x)} values")
        labels = {label: i for i, label in enumerate(dict.fromkeys(groups))}
        which = np.fromiter((labels[g] for g in groups), dtype=np.int64, count=len(x))
        sums = np.bincount(which, weights=x, minlength=len(labels))
        counts = np.bincount(which, minlength=len(labels)).astype(np.float64)
    means = _resampled_means(sums, counts, seed, resamples)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return min(float(lo), mean), max(float(hi), mean)


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    seed: int,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    groups: Sequence[object] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b − a)``, resampling question pairs (or groups of pairs).

    ``a[i]`` and ``b[i]`` are the two runs' scores on the same question; a replicate draws pairs with
    replacement, which is :func:`bootstrap_ci` of the differences ``b − a``: the interval contains
    ``mean(b − a)``, and identical runs give ``(0, 0)``.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or as in :func:`bootstrap_ci`.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"a, b: paired scores need equal lengths, got {x.shape} and {y.shape}")
    return bootstrap_ci(y - x, seed, resamples, level, groups)


def binomial_cdf_half(k: int, m: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(m, 1/2)``.

    Summed in exact integers (``sum C(m, i) / 2**m``, one correctly rounded division) up to ``m =
    EXACT_LIMIT``; above that in log space with ``math.lgamma`` (relative error ~1e-9), which keeps a
    million discordant pairs under a second.
    """
    if m < 0 or k < 0:
        raise ValueError(f"k={k}, m={m}: must be >= 0")
    if k >= m:
        return 1.0
    if m <= EXACT_LIMIT:
        term = total = 1
        for i in range(k):
            term = term * (m - i) // (i + 1)
            total += term
        return total / (1 << m)
    log_pmf = np.array([math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) for i in range(k + 1)])
    log_pmf -= m * math.log(2)
    top = float(log_pmf.max())  # the last term (k < m/2 for the McNemar tail); factored out against underflow
    return min(1.0, math.exp(top) * math.fsum(np.exp(log_pmf - top)))


def _binary(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a bool array; every value must be 0 or 1 (False/True)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: need a 1-D sequence of 0/1 outcomes, got shape {x.shape}")
    bad = np.flatnonzero((x != 0) & (x != 1))
    if len(bad):
        value = float(x[bad[0]])
        raise ValueError(f"{name}: value {value!r} at index {bad[0]} is not 0 or 1; McNemar needs binary outcomes")
    return x == 1


def discordant(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[int, int]:
    """``(n01, n10)``: pairs where ``a`` is wrong and ``b`` right, and where ``a`` is right and ``b`` wrong."""
    x, y = _binary(a, "a"), _binary(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a, b: paired outcomes need equal lengths, got {len(x)} and {len(y)}")
    return int(np.sum(~x & y)), int(np.sum(x & ~y))


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided McNemar test of paired 0/1 outcomes (e.g. exact match of two runs per question).

    Only discordant pairs count: under the null hypothesis each is equally likely to favour either run, so
    ``p = min(1, 2 · P(X <= min(n01, n10)))`` with ``X ~ Binomial(n01 + n10, 1/2)``; no discordant pair gives
    ``p = 1``. Symmetric in ``a`` and ``b``. The test treats questions as independent.

    Returns:
        The p-value in (0, 1] (it may underflow to 0.0 for thousands of one-sided discordant pairs).

    Raises:
        ValueError: A value other than 0/1, or ``a`` and ``b`` of different lengths.
    """
    n01, n10 = discordant(a, b)
    m = n01 + n10
    if m == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf_half(min(n01, n10), m))


def add_intervals(
    results: dict[str, dict],
    questions_by_field: dict[str, Sequence[tuple[float, float]]],
    seed: int,
    resamples: int = RESAMPLES,
) -> dict[str, dict]:
    """``results`` with ``exact_match_ci95`` and ``f1_ci95`` (``[lo, hi]`` fractions) added to every field.

    Existing keys keep their values and order; the two new keys come after them. A field's questions are
    resampled on their own (each question of a field is about a different person), with the same ``seed``
    for every field and metric, so each interval can be recomputed from that field's scores alone with
    :func:`bootstrap_ci`. The input is not changed.

    Args:
        results: ``{field: {"exact_match": x, "f1": y, "n": n, ...}}`` as in ``results.json``.
        questions_by_field: ``{field: [(exact_match, f1), ...]}``, one pair per question of that field.
        seed: Seed of the resampling.
        resamples: Bootstrap replicates.

    Returns:
        A new dict in the same layout with the intervals added.

    Raises:
        ValueError: The fields differ, a field has no questions, or a field's ``n`` or scores do not match
            its questions (so intervals are never attached to the wrong numbers).
    """
    if list(results) != list(questions_by_field):
        raise ValueError(f"questions_by_field: fields {list(questions_by_field)} differ from results' {list(results)}")
    out: dict[str, dict] = {}
    for field, entry in results.items():
        scores = np.asarray(questions_by_field[field], dtype=np.float64).reshape(-1, 2)
        if len(scores) != entry["n"]:
            raise ValueError(f"field {field!r}: {len(scores)} questions but results say n={entry['n']}")
        for column, key in enumerate(("exact_match", "f1")):
            if not math.isclose(float(np.mean(scores[:, column])), entry[key], rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"field {field!r}: mean {key} of the questions differs from results' {entry[key]}")
        out[field] = dict(entry)
        out[field]["exact_match_ci95"] = list(bootstrap_ci(scores[:, 0], seed, resamples))
        out[field]["f1_ci95"] = list(bootstrap_ci(scores[:, 1], seed, resamples))
    return out


def mean_with_interval(
    rows: Sequence[tuple[str, float, float]], seed: int, resamples: int = RESAMPLES
) -> dict[str, float | int | list[float]]:
    """The mean over all questions with intervals that resample people (all of a person's questions together).

    The mean pools every question of every field; it equals the mean over fields that
    :func:`format_table` shows without intervals whenever the fields have equal ``n`` (always, for
    biographies: one question per person and field). The interval is a cluster bootstrap by person
    (:func:`bootstrap_ci` with ``groups``): a person whose biography was learnt well tends to be right on
    several fields, so resampling single questions would understate the spread. In Wikipedia mode every
    question has its own id in ``person``, so this is the plain question bootstrap.

    Args:
        rows: ``(person, exact_match, f1)`` per question, all fields.
        seed: Seed of the resampling.
        resamples: Bootstrap replicates.

    Returns:
        ``{"exact_match", "f1", "n", "exact_match_ci95", "f1_ci95"}`` in the layout of a ``results.json`` entry.

    Raises:
        ValueError: No rows.
    """
    if not rows:
        raise ValueError("rows: no questions, so no mean")
    people = [r[0] for r in rows]
    em = np.asarray([r[1] for r in rows], dtype=np.float64)
    f1 = np.asarray([r[2] for r in rows], dtype=np.float64)
    return {
        "exact_match": float(np.mean(em)),
        "f1": float(np.mean(f1)),
        "n": len(rows),
        "exact_match_ci95": list(bootstrap_ci(em, seed, resamples, groups=people)),
        "f1_ci95": list(bootstrap_ci(f1, seed, resamples, groups=people)),
    }


def percent(value: float, signed: bool = False) -> str:
    """A fraction as percent with one decimal (``0.4213`` → ``42.1``); never prints ``-0.0``."""
    shown = round(100 * value, 1) + 0.0
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def with_interval(value: float, interval: Sequence[float] | None, signed: bool = False) -> str:
    """``42.1 [35.0, 49.3]`` (percent), or just ``42.1`` without an interval."""
    if interval is None:
        return percent(value, signed)
    return f"{percent(value, signed)} [{percent(interval[0], signed)}, {percent(interval[1], signed)}]"


def format_table(results: dict[str, dict], mean: dict | None = None) -> str:
    """Results as a markdown table in percent: ``EM [lo, hi]`` and ``F1 [lo, hi]`` with n, the mean last.

    Example::

        | field | exact match [95% CI] | F1 [95% CI] | n |
        |---|---:|---:|---:|
        | city | 50.0 [30.0, 70.0] | 61.2 [44.0, 77.5] | 20 |
        | company | 10.0 [0.0, 25.0] | 20.3 [8.1, 34.2] | 20 |
        | mean | 30.0 [17.5, 42.5] | 40.8 [29.6, 52.0] | 40 |

    Args:
        results: ``results.json`` entries; fields without ``*_ci95`` keys show the value alone.
        mean: The :func:`mean_with_interval` entry for the last row; None shows the plain mean over fields
            (no interval, no n) when there is more than one field, as ``markdown_table`` did.
    """
    lines = ["| field | exact match [95% CI] | F1 [95% CI] | n |", "|---|---:|---:|---:|"]
    for field, r in results.items():
        em = with_interval(r["exact_match"], r.get("exact_match_ci95"))
        f1 = with_interval(r["f1"], r.get("f1_ci95"))
        lines.append(f"| {field} | {em} | {f1} | {r['n']} |")
    if mean is not None:
        em = with_interval(mean["exact_match"], mean.get("exact_match_ci95"))
        f1 = with_interval(mean["f1"], mean.get("f1_ci95"))
        lines.append(f"| mean | {em} | {f1} | {mean['n']} |")
    elif len(results) > 1:
        em = float(np.mean([r["exact_match"] for r in results.values()]))
        f1 = float(np.mean([r["f1"] for r in results.values()]))
        lines.append(f"| mean | {percent(em)} | {percent(f1)} | |")
    return "\n".join(lines)
