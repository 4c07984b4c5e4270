"""Uncertainty of evaluation results, at the level of the design: questions, people and training seeds.

Everything here is pure NumPy and the standard library on per-question scores (no model, no torch), seeded and
deterministic. Exact match is 0/1, so the functions on it count in integers: their results do not depend on the
order of a float sum, hence not on the SIMD level numpy dispatches to (tests run them under every level).

Single proportions (one field of one run: ``k`` right answers out of ``n`` questions):

* :func:`wilson_interval` — Wilson score interval (the exact-match interval of ``results.json``);
* :func:`clopper_pearson_interval` — exact (Clopper–Pearson) interval: 0/40 gives [0, 0.0881].

Two arms on the same questions, paired by person and by training seed:

* :func:`per_person_differences` — from both arms' ``predictions.jsonl`` rows of every seed, each person's
  difference ``b − a`` in exact-match counts, summed over the chosen fields and the seeds
  (:class:`PersonDifferences`); the unit of the two functions below;
* :func:`sign_flip_test` — two-sided paired permutation test of those differences (:class:`SignFlipResult`):
  exact, else seeded Monte Carlo;
* :func:`person_cluster_bootstrap_ci` — percentile bootstrap interval of the mean paired difference,
  resampling people;
* :func:`mcnemar_exact` (with :func:`discordant`, :func:`binomial_cdf_half`) — exact McNemar test on paired 0/1
  outcomes; it treats questions as independent (for one field of one seed it equals :func:`sign_flip_test`).

Many tests at once: :func:`holm` (adjusted p-values, family-wise error) and :func:`benjamini_hochberg`
(q-values, false discovery rate).

Bootstrap of a mean and the tables of stage 5:

* :func:`bootstrap_ci` — percentile bootstrap interval of a mean; questions (or, with ``groups``, whole groups
  of questions such as all questions about one person) are resampled with replacement;
* :func:`paired_bootstrap_ci` — the same for the mean difference ``b − a`` of two runs on the same questions;
* :func:`add_intervals` / :func:`mean_with_interval` — ``exact_match_ci95`` (Wilson) and ``f1_ci95``
  (bootstrap) for the entries of stage 5's ``results.json``, and for the pooled mean over all questions
  (bootstrap resampling people);
* :func:`format_table`, :func:`percent`, :func:`with_interval` — the results as a markdown table in percent.

Bootstrap intervals are 95 % percentile intervals over ``resamples`` replicates. Intervals over questions or
people describe how much a score would move with another sample of people of the same kind, not run-to-run
variation of training: that is what several training seeds measure (the per-seed differences that
:mod:`elusive.reporting.compare` reports, the spread over seeds in :mod:`elusive.reporting.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

RESAMPLES = 2000
SIGN_FLIPS = 10_000  # Monte Carlo sign flips when the exact test is too big (p resolves to 1/10,001)
LEVEL = 0.95
CHUNK = 1 << 22  # resampled indices drawn per block (32 MB of int64); fixed, so results do not depend on memory
EXACT_LIMIT = 20_000  # discordant pairs up to which the binomial tail is summed in exact integers (~0.05 s)
EXACT_SIGN_FLIP_CELLS = 20_000_000  # people × (sum of |differences| + 1) up to which sign flips are counted exactly


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
    return _percentile_interval(sums, counts, mean, seed, resamples, level)


def _percentile_interval(sums: np.ndarray, counts: np.ndarray, estimate: float, seed: int, resamples: int,
                         level: float) -> tuple[float, float]:
    """The ``level`` percentile interval of the group bootstrap of ``sum(sums) / sum(counts)``, widened to hold
    ``estimate``."""
    means = _resampled_means(sums, counts, seed, resamples)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return min(float(lo), estimate), max(float(hi), estimate)


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
        raise ValueError(f"{name}: value {value!r} at index {bad[0]} is not 0 or 1; need right/wrong outcomes")
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


# --- single proportions ---------------------------------------------------------------------------------------


def _counts(k: int, n: int, level: float) -> tuple[int, int]:
    """``k`` and ``n`` as Python ints after checking ``0 <= k <= n``, ``n >= 1`` and ``0 < level < 1``."""
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}={value!r}: must be an integer count")
    if n < 1:
        raise ValueError(f"n={n}: no questions, so no interval; need n >= 1")
    if not 0 <= k <= n:
        raise ValueError(f"k={k}: must be in [0, n={n}]")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1)")
    return int(k), int(n)


def wilson_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (e.g. right answers out of questions).

    The set of ``p`` that the score test ``|k/n − p| <= z·sqrt(p(1 − p)/n)`` does not reject, ``z`` the
    ``(1 + level)/2`` normal quantile (1.959964 for 95 %)::

        (k + z²/2) / (n + z²)  ±  z / (n + z²) · sqrt(k(n − k)/n + z²/4)

    It always contains ``k/n``, is not ``[0, 0]`` at 0/n (0/40: [0, 0.0876]) and keeps close to ``level``
    coverage for small ``n`` and proportions near 0 or 1 (Brown, Cai & DasGupta, Statistical Science 2001), where
    the percentile bootstrap and the Wald interval collapse. Plain float arithmetic: the same bits on every CPU.

    Args:
        k: Successes, ``0 <= k <= n``.
        n: Trials, ``>= 1``.
        level: Coverage, in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats, ``0 <= lo <= k/n <= hi <= 1``; ``lo`` is exactly 0.0 at ``k = 0`` and
        ``hi`` exactly 1.0 at ``k = n``.

    Raises:
        ValueError: ``k`` or ``n`` not an integer, ``n < 1``, ``k`` outside [0, n] or ``level`` outside (0, 1).
    """
    k, n = _counts(k, n, level)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    z2 = z * z
    center = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return lo, hi


def clopper_pearson_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of the proportion ``k / n``: coverage at least ``level`` for every ``p``.

    With ``X ~ Binomial(n, p)`` and ``t = (1 − level)/2``, the lower end is the ``p`` with ``P(X >= k) = t`` and
    the upper end the ``p`` with ``P(X <= k) = t`` (the beta quantiles ``Beta(t; k, n − k + 1)`` and
    ``Beta(1 − t; k + 1, n − k)``); the lower end is 0 at ``k = 0`` and the upper 1 at ``k = n``. At the edges
    it has a closed form: 0/n reaches up to ``1 − t**(1/n)`` (0/40: 0.0881), n/n down to ``t**(1/n)``.

    Hand-written instead of scipy's beta quantile (one monotone root does not justify a new dependency): each end
    is found by bisection to adjacent floats on the binomial tail, summed with ``math.fsum`` from terms
    ``exp(log C(n, i) + i log p + (n − i) log(1 − p))`` (``log C`` from exact integers) in Python's ``math``, not
    numpy, so the result does not depend on numpy's SIMD level. It agrees with the definition evaluated in exact
    rationals to ~1e-10 (tests); each end costs ~60 tail sums of at most ``k + 1`` terms (n = 10,000: ~0.1 s).

    Args:
        k: Successes, ``0 <= k <= n``.
        n: Trials, ``>= 1``.
        level: Coverage, in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats, ``lo <= k/n <= hi``; always at least as wide as :func:`wilson_interval`
        at the edges.

    Raises:
        ValueError: As :func:`wilson_interval`.
    """
    k, n = _counts(k, n, level)
    tail = (1 - level) / 2
    if k == 0:
        lo = 0.0
    elif k == n:
        lo = tail ** (1 / n)
    else:  # P(X >= k) = tail  <=>  P(X <= k − 1) = 1 − tail
        lo = _binomial_cdf_root(k - 1, n, 1 - tail)[0]
    if k == n:
        hi = 1.0
    elif k == 0:
        hi = 1 - tail ** (1 / n)
    else:
        hi = _binomial_cdf_root(k, n, tail)[1]
    return lo, hi


def _binomial_cdf_root(j: int, n: int, target: float) -> tuple[float, float]:
    """Adjacent floats ``(lo, hi)`` around the ``p`` where ``P(X <= j) = target``, ``X ~ Binomial(n, p)``, ``j < n``.

    ``P(X <= j)`` falls from 1 at ``p = 0`` to 0 at ``p = 1``; bisection keeps ``cdf(lo) > target >= cdf(hi)``.
    """
    log_comb = []
    comb = 1
    for i in range(j + 1):
        log_comb.append(math.log(comb))  # math.log of a Python int is accurate however large the int
        comb = comb * (n - i) // (i + 1)

    def cdf(p: float) -> float:
        log_p, log_q = math.log(p), math.log1p(-p)
        return math.fsum(math.exp(c + i * log_p + (n - i) * log_q) for i, c in enumerate(log_comb))

    lo, hi = 0.0, 1.0
    for _ in range(2000):  # ~60 halvings reach adjacent floats for any root above 1e-300
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:
            break
        if cdf(mid) > target:
            lo = mid
        else:
            hi = mid
    return lo, hi


# --- two arms, paired by person and training seed -------------------------------------------------------------


@dataclass(frozen=True)
class PersonDifferences:
    """Each person's paired difference in exact-match counts between two arms (:func:`per_person_differences`).

    Attributes:
        people: The people, in order of first appearance (arm a's rows, first seed first).
        diffs: Per person, ``b − a``: the person's questions arm b got right minus those arm a got right, over
            the chosen fields and every seed (an integer in ``[-questions, questions]``).
        questions: Per person, the paired questions counted (fields × seeds when each seed asks each field once).
    """

    people: tuple[str, ...]
    diffs: tuple[int, ...]
    questions: tuple[int, ...]

    @property
    def mean(self) -> float:
        """The mean paired difference per question, ``sum(diffs) / sum(questions)`` (one correctly rounded division)."""
        return sum(self.diffs) / sum(self.questions)


def _exact_matches(rows: Iterable[Mapping], name: str) -> dict[tuple[str, str, str], int]:
    """``{(person, field, prompt): exact_match as 0 or 1}`` of prediction rows, refusing repeats and non-0/1 scores."""
    out: dict[tuple[str, str, str], int] = {}
    for i, row in enumerate(rows):
        key = (row["person"], row["field"], row["prompt"])
        em = row["exact_match"]
        if em not in (0, 1) or isinstance(em, str):
            raise ValueError(f"{name}: row {i} has exact_match={em!r}; need 0 or 1")
        if key in out:
            raise ValueError(f"{name}: row {i} repeats the question (person={key[0]!r}, field={key[1]!r})")
        out[key] = int(em)
    return out


def per_person_differences(
    a_runs: Sequence[Iterable[Mapping]],
    b_runs: Sequence[Iterable[Mapping]],
    fields: Iterable[str] | None = None,
) -> PersonDifferences:
    """Per-person paired differences in exact-match counts between two arms, summed over fields and seeds.

    ``a_runs[s]`` and ``b_runs[s]`` are the ``predictions.jsonl`` rows of the two arms trained with the same
    training seed (paired by position). Within a seed pair the questions are matched by ``(person, field,
    prompt)``, and both arms must hold exactly the same questions; different seed pairs may ask different
    prompts (other shots) or people. A person's difference adds, over every seed pair and every question about
    them in ``fields``, ``exact_match(b) − exact_match(a)``. This is the unit of :func:`sign_flip_test` and
    :func:`person_cluster_bootstrap_ci`: a person is one independent draw, however many fields and seeds ask
    about them.

    Args:
        a_runs: The reference arm: one sequence of prediction rows per training seed, each row a mapping with
            ``person``, ``field``, ``prompt`` (strings) and ``exact_match`` (0 or 1).
        b_runs: The compared arm, in the same seed order; differences are ``b − a``.
        fields: The fields to pool, e.g. ``["university", "company"]``; None for every field.

    Returns:
        :class:`PersonDifferences` (integers; people in order of first appearance).

    Raises:
        ValueError: No seed or different numbers of seeds; a seed pair whose arms asked different questions
            (naming the pair and one such question); a repeated question or an ``exact_match`` other than 0/1; a
            field of ``fields`` that no seed pair asks about; no question selected.
    """
    if len(a_runs) != len(b_runs):
        raise ValueError(f"a_runs, b_runs: {len(a_runs)} and {len(b_runs)} seeds; pair one run of each arm per seed")
    if not a_runs:
        raise ValueError("a_runs, b_runs: no seed; give at least one pair of runs")
    wanted = None if fields is None else set(fields)
    diffs: dict[str, int] = {}
    questions: dict[str, int] = {}
    asked: set[str] = set()
    for s, (rows_a, rows_b) in enumerate(zip(a_runs, b_runs)):
        em_a, em_b = _exact_matches(rows_a, f"a_runs[{s}]"), _exact_matches(rows_b, f"b_runs[{s}]")
        if em_a.keys() != em_b.keys():
            only = next((k for k in em_a if k not in em_b), None) or next(k for k in em_b if k not in em_a)
            arm = "a" if only in em_a else "b"
            raise ValueError(f"a_runs[{s}], b_runs[{s}]: the question (person={only[0]!r}, field={only[1]!r}) is only "
                             f"in {arm}_runs[{s}]; pair runs that asked the same questions")
        for key, right_a in em_a.items():
            person, field = key[0], key[1]
            asked.add(field)
            if wanted is not None and field not in wanted:
                continue
            diffs[person] = diffs.get(person, 0) + em_b[key] - right_a
            questions[person] = questions.get(person, 0) + 1
    if wanted is not None and wanted - asked:
        raise ValueError(f"fields: {sorted(wanted - asked)} not asked in any run (asked: {sorted(asked)})")
    if not diffs:
        raise ValueError("a_runs, b_runs: no question selected")
    people = tuple(diffs)
    return PersonDifferences(people, tuple(diffs[p] for p in people), tuple(questions[p] for p in people))


def _whole_numbers(values: Sequence[float] | np.ndarray, name: str) -> list[int]:
    """``values`` as Python ints; each must be a finite whole number below 2**53."""
    x = np.asarray(values)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{name}: need a non-empty 1-D sequence, got shape {x.shape}")
    if x.dtype.kind in "iub":
        return [int(v) for v in x]
    x = x.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(x) | (x != np.round(x)) | (np.abs(x) >= 2.0**53))
    if len(bad):
        raise ValueError(f"{name}: value {float(x[bad[0]])!r} at index {bad[0]} is not a whole number; give "
                         "differences in exact-match counts (PersonDifferences.diffs)")
    return [int(v) for v in x]


@dataclass(frozen=True)
class SignFlipResult:
    """The outcome of :func:`sign_flip_test`.

    Attributes:
        p_value: Two-sided p-value in (0, 1].
        statistic: The observed ``T = sum(diffs)``.
        nonzero: How many differences are not zero (the people that carry the test).
        exact: True when every sign pattern was counted, False for the Monte Carlo estimate.
        resamples: Monte Carlo sign patterns drawn (0 when exact).
    """

    p_value: float
    statistic: int
    nonzero: int
    exact: bool
    resamples: int


def sign_flip_test(diffs: Sequence[int] | np.ndarray, seed: int = 0, resamples: int = SIGN_FLIPS) -> SignFlipResult:
    """Two-sided paired permutation (sign-flip) test of per-person differences.

    Under the null hypothesis the two arms are exchangeable for every person, so each person's difference is as
    likely to have either sign. The statistic is ``T = sum(diffs)`` (the mean up to the fixed number of people);
    p is the probability under the null that ``|T*| >= |T|``, where ``T* = sum(s_i · d_i)`` with independent
    signs ``s_i = ±1`` of probability 1/2 each. A zero difference is the same under either sign and contributes
    nothing; without any nonzero difference p = 1.

    * **Exact** when ``nonzero · (sum|d| + 1) <= EXACT_SIGN_FLIP_CELLS``: the ``2**nonzero`` sign patterns are
      counted, not listed — how many patterns give each value of ``T*`` is a subset-sum count built one person
      at a time in Python integers — and p is that exact fraction, rounded once. It reaches far beyond listing
      2**20 patterns: 1,000 people with |d| <= 15 take ~1 s; the paper's 100 people, 5 fields and 5 seeds
      (|d| <= 25) ~10 ms.
    * Otherwise **Monte Carlo**: ``resamples`` sign patterns drawn with ``numpy.random.default_rng(seed)``,
      ``p = (1 + #{|T*| >= |T|}) / (1 + resamples)`` (the observed pattern counts as one, so p > 0).

    The differences must be whole numbers (exact-match counts): every sum is an integer sum, so p is the same on
    every CPU. With one field of one seed each person's difference is −1, 0 or +1, and the test is the exact
    McNemar test (:func:`mcnemar_exact`) of the discordant pairs.

    Args:
        diffs: Per-person differences ``b − a`` in counts (e.g. :attr:`PersonDifferences.diffs`).
        seed: Seed of the Monte Carlo draw (not used when exact).
        resamples: Monte Carlo sign patterns, ``>= 1``.

    Returns:
        :class:`SignFlipResult` with the p-value, ``T``, the number of nonzero differences and the method.

    Raises:
        ValueError: No differences, a difference that is not a finite whole number, or ``resamples < 1``.
    """
    d = _whole_numbers(diffs, "diffs")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    statistic = sum(d)
    size = [abs(v) for v in d if v != 0]
    n = len(size)
    if statistic == 0 or n == 0:  # every pattern is at least as extreme as T = 0
        return SignFlipResult(1.0, statistic, n, True, 0)
    total = sum(size)
    if n * (total + 1) <= EXACT_SIGN_FLIP_CELLS:
        return SignFlipResult(_exact_sign_flip_p(size, abs(statistic)), statistic, n, True, 0)
    rng = np.random.default_rng(seed)
    values = np.asarray(size, dtype=np.int64)
    rows = max(1, CHUNK // n)
    hits = 0
    for start in range(0, resamples, rows):
        flips = rng.integers(0, 2, size=(min(rows, resamples - start), n), dtype=np.int8).astype(bool)
        flipped = np.where(flips, -values, values).sum(axis=1)  # int64: exact in any order
        hits += int(np.count_nonzero(np.abs(flipped) >= abs(statistic)))
    return SignFlipResult((1 + hits) / (1 + resamples), statistic, n, False, resamples)


def _exact_sign_flip_p(size: list[int], observed: int) -> float:
    """``P(|sum(±size)| >= observed)`` over all sign patterns, ``observed > 0``, counted in Python integers.

    With ``U`` the sum of the sizes that get a plus sign, ``T* = 2U − S`` (``S = sum(size)``); ``counts[u]`` is
    the number of sign patterns with ``U = u`` (a subset-sum count, one person at a time).
    """
    total = sum(size)
    counts = np.zeros(total + 1, dtype=object)  # Python ints: 2**n overflows int64 beyond 62 people
    counts[0] = 1
    top = 0
    for v in size:
        counts[v: top + v + 1] = counts[v: top + v + 1] + counts[: top + 1]  # the right side is read before writing
        top += v
    upper = -(-(total + observed) // 2)  # U >= (S + |T|)/2, i.e. T* >= |T|
    lower = (total - observed) // 2  # U <= (S − |T|)/2, i.e. T* <= −|T|
    extreme = sum(counts[upper:].tolist()) + sum(counts[: lower + 1].tolist())
    return extreme / (1 << len(size))  # int / int: one correctly rounded division


def person_cluster_bootstrap_ci(
    diffs: Sequence[int] | np.ndarray,
    questions: Sequence[int] | np.ndarray | int,
    seed: int,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference ``sum(diffs) / sum(questions)``, by person.

    Each replicate draws ``len(diffs)`` people with replacement (``numpy.random.default_rng(seed)``) and takes
    ``sum(diffs[drawn]) / sum(questions[drawn])``: all of a person's questions — every field and every seed —
    move together, as they would with another sample of people. The interval is the ``(1 − level)/2`` and
    ``(1 + level)/2`` quantiles of the replicates (linear interpolation), widened just enough to contain the
    estimate when a very discrete bootstrap distribution leaves it outside. Value for value, it is
    :func:`bootstrap_ci` of the per-question differences with ``groups`` = person (same draws, same quantiles),
    computed from per-person integer sums: the sums are exact, so the interval is the same on every CPU.

    Args:
        diffs: Per person, the difference ``b − a`` in exact-match counts (:attr:`PersonDifferences.diffs`).
        questions: Per person, the paired questions behind the difference (:attr:`PersonDifferences.questions`),
            or one number for everyone.
        seed: Seed of the resampling; the same inputs and seed always give the same interval.
        resamples: Bootstrap replicates (>= 1).
        level: Coverage, in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats, differences per question (fractions), ``lo <= mean <= hi``.

    Raises:
        ValueError: No people, lengths that differ, a difference that is not a whole number, fewer than 1
            question or more right answers than questions for a person, ``resamples < 1`` or ``level`` outside (0, 1).
    """
    d = _whole_numbers(diffs, "diffs")
    m = [questions] * len(d) if isinstance(questions, (int, np.integer)) else _whole_numbers(questions, "questions")
    if len(m) != len(d):
        raise ValueError(f"questions: {len(m)} counts for {len(d)} people")
    bad = next((i for i, (x, q) in enumerate(zip(d, m)) if q < 1 or abs(x) > q), None)
    if bad is not None:
        raise ValueError(f"person {bad}: difference {d[bad]} over {m[bad]} questions; need questions >= 1 and "
                         "|difference| <= questions")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1)")
    estimate = sum(d) / sum(m)
    return _percentile_interval(np.asarray(d, dtype=np.float64), np.asarray(m, dtype=np.float64), estimate, seed,
                                resamples, level)


# --- many tests ---------------------------------------------------------------------------------------------


def _pvalues(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    values = [float(p) for p in np.asarray(pvalues, dtype=np.float64).reshape(-1)]
    bad = next((i for i, p in enumerate(values) if not 0 <= p <= 1), None)  # NaN fails too
    if bad is not None:
        raise ValueError(f"pvalues: value {values[bad]!r} at index {bad} is not a p-value in [0, 1]")
    return values


def holm(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values: family-wise error control over all the tests, any dependence.

    With the ``m`` p-values sorted ascending, ``p(1) <= ... <= p(m)``, the adjusted value of the ``i``-th is
    ``max over j <= i of min(1, (m − j + 1) · p(j))``. Rejecting every test whose adjusted p is ``<= alpha`` keeps
    the probability of any false rejection ``<= alpha``. Ties keep their input order (the values are equal).

    Args:
        pvalues: Raw p-values in [0, 1].

    Returns:
        The adjusted p-values in the input order: each ``>=`` its raw p and ``<= 1``, and ordered as the raw ones
        (a smaller raw p never gets a larger adjusted p). An empty input gives ``[]``.

    Raises:
        ValueError: A value that is not a number in [0, 1].
    """
    p = _pvalues(pvalues)
    m = len(p)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=p.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    """Benjamini–Hochberg q-values: false-discovery-rate control over all the tests.

    With the ``m`` p-values sorted ascending, the q-value of the ``i``-th is
    ``min over j >= i of min(1, m · p(j) / j)``. Rejecting every test with ``q <= alpha`` keeps the expected share
    of false rejections among the rejections ``<= alpha`` for independent or positively dependent tests.

    Args:
        pvalues: Raw p-values in [0, 1].

    Returns:
        The q-values in the input order: each ``>=`` its raw p and ``<= 1``, ordered as the raw ones; ``[]`` for
        an empty input.

    Raises:
        ValueError: A value that is not a number in [0, 1].
    """
    p = _pvalues(pvalues)
    m = len(p)
    out = [0.0] * m
    running = 1.0
    order = sorted(range(m), key=p.__getitem__)
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, m / (rank + 1) * p[i])  # a factor >= 1 times p: never rounds below p
        out[i] = running
    return out


def add_intervals(
    results: dict[str, dict],
    questions_by_field: dict[str, Sequence[tuple[float, float]]],
    seed: int,
    resamples: int = RESAMPLES,
) -> dict[str, dict]:
    """``results`` with ``exact_match_ci95`` and ``f1_ci95`` (``[lo, hi]`` fractions) added to every field.

    Exact match is a proportion (right answers out of the field's ``n`` questions): its interval is the Wilson
    interval (:func:`wilson_interval`), which the seed does not change. F1 is not a proportion: its interval is
    the percentile bootstrap over the field's questions (:func:`bootstrap_ci` with ``seed``; each question of a
    field is about a different person). Existing keys keep their values and order; the two new keys come after
    them; each interval can be recomputed from that field's scores alone. The input is not changed.

    Args:
        results: ``{field: {"exact_match": x, "f1": y, "n": n, ...}}`` as in ``results.json``.
        questions_by_field: ``{field: [(exact_match, f1), ...]}``, one pair per question of that field;
            exact match 0 or 1.
        seed: Seed of the F1 resampling.
        resamples: Bootstrap replicates of the F1 interval.

    Returns:
        A new dict in the same layout with the intervals added.

    Raises:
        ValueError: The fields differ, a field has no questions, an exact match is not 0 or 1, or a field's ``n``
            or scores do not match its questions (so intervals are never attached to the wrong numbers).
    """
    if list(results) != list(questions_by_field):
        raise ValueError(f"questions_by_field: fields {list(questions_by_field)} differ from results' {list(results)}")
    out: dict[str, dict] = {}
    for field, entry in results.items():
        scores = np.asarray(questions_by_field[field], dtype=np.float64).reshape(-1, 2)
        if len(scores) != entry["n"]:
            raise ValueError(f"field {field!r}: {len(scores)} questions but results say n={entry['n']}")
        right = _binary(scores[:, 0], f"field {field!r} exact_match")
        for column, key in enumerate(("exact_match", "f1")):
            if not math.isclose(float(np.mean(scores[:, column])), entry[key], rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"field {field!r}: mean {key} of the questions differs from results' {entry[key]}")
        out[field] = dict(entry)
        out[field]["exact_match_ci95"] = list(wilson_interval(int(right.sum()), len(right)))
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
