"""Choosing a checkpoint without looking at the reported questions: two folds of people and cross-fitting.

An epoch search (``train.save_at_passes``) evaluates every kept pass on the same people; picking the best pass
and reporting its score would report the maximum of several noisy scores. Instead the people are split into
two folds by a stable hash of their name (:func:`folds`); each arm's pass is chosen on one fold and that
arm's answers are reported on the other, then the folds swap (:func:`cross_fit`). Every person's reported
answer thus comes from a pass chosen without their questions, and every person is reported once.

The rule (:func:`choose`) is the same for every arm: the pass with the most correct answers on the chosen
fields of the selection fold, summed over seeds; ties go to the larger summed F1, then to fewer passes.

Pure Python on prediction rows (``person``, ``field``, ``exact_match``, ``f1`` as in ``predictions.jsonl``);
sums of F1 are taken with :func:`math.fsum`, so a choice never depends on summation order or the CPU.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Rows = Sequence[Mapping]
"""Prediction rows of one evaluation: dicts with ``person``, ``field``, ``exact_match`` (0/1) and ``f1``."""


def name_hash(name: str) -> str:
    """The SHA-256 of a person's name (UTF-8) as hex: the stable key that orders people into folds."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def folds(people: Iterable[str]) -> dict[str, int]:
    """Split ``people`` into folds 0 and 1 of equal size (fold 0 gets the odd one out).

    People are ordered by :func:`name_hash` (ties, which need equal names, cannot occur: names are distinct);
    the first half is fold 0. The split depends only on the names, not on their order, any seed or any score.

    Raises:
        ValueError: Fewer than two people, or a name given twice.
    """
    names = list(people)
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"people: {repeated!r} appears twice; folds need distinct names")
    if len(names) < 2:
        raise ValueError(f"people: {len(names)} given; two folds need at least two people")
    ordered = sorted(names, key=name_hash)
    half = math.ceil(len(ordered) / 2)
    return {name: 0 if i < half else 1 for i, name in enumerate(ordered)}


@dataclass(frozen=True)
class Score:
    """What the rule compares for one pass: correct answers (summed over seeds) and the summed F1."""

    correct: int
    f1: float
    questions: int


def score(rows_by_seed: Sequence[Rows], people: set[str], fields: Sequence[str]) -> Score:
    """:class:`Score` of one pass: its rows (one list per seed) restricted to ``people`` and ``fields``.

    Raises:
        ValueError: A person of ``people`` has no row for a field in some seed (the pass was not evaluated on
            everyone the same way).
    """
    correct = questions = 0
    f1: list[float] = []
    for seed, rows in enumerate(rows_by_seed):
        seen = set()
        for row in rows:
            if row["person"] in people and row["field"] in fields:
                correct += int(row["exact_match"])
                f1.append(float(row["f1"]))
                questions += 1
                seen.add((row["person"], row["field"]))
        missing = {(p, f) for p in people for f in fields} - seen
        if missing:
            person, field = sorted(missing)[0]
            raise ValueError(f"seed {seed}: no answer of {person!r} on field {field!r}; evaluate every kept pass on "
                             "the same people and fields")
    return Score(correct, math.fsum(f1), questions)


def choose(scores: Mapping[int, Score]) -> int:
    """The pass the rule picks from ``{pass: score}``: most correct answers, then the larger F1 sum, then the
    fewest passes.

    Raises:
        ValueError: No passes.
    """
    if not scores:
        raise ValueError("scores: no passes to choose from")
    return min(scores, key=lambda e: (-scores[e].correct, -scores[e].f1, e))


@dataclass(frozen=True)
class CrossFit:
    """The outcome of :func:`cross_fit` for one arm.

    Attributes:
        chosen: ``{fold: pass}`` — the pass chosen on fold ``f`` (and reported on the other fold).
        reported_pass: ``{person: pass}`` — the pass whose answers are reported for each person.
        selection: ``{fold: {pass: Score}}`` — what the rule saw on each fold.
    """

    chosen: dict[int, int]
    reported_pass: dict[str, int]
    selection: dict[int, dict[int, Score]]


def cross_fit(rows: Mapping[int, Sequence[Rows]], fold_of: Mapping[str, int], fields: Sequence[str]) -> CrossFit:
    """Choose a pass on each fold and report it on the other.

    Args:
        rows: ``{pass: [rows of seed 0, rows of seed 1, ...]}`` — every kept pass of one arm, the same seeds
            in the same order for each pass.
        fold_of: :func:`folds` of the people.
        fields: The fields the rule counts (e.g. the primary endpoint's ``["university", "company"]``).

    Returns:
        The :class:`CrossFit`; ``reported_pass[p]`` is ``chosen[1 - fold_of[p]]``.

    Raises:
        ValueError: No passes, passes with different numbers of seeds, or a person missing an answer.
    """
    if not rows:
        raise ValueError("rows: no kept passes")
    if len({len(seeds) for seeds in rows.values()}) != 1:
        raise ValueError("rows: every pass needs the same seeds")
    chosen, selection = {}, {}
    for fold in (0, 1):
        people = {p for p, f in fold_of.items() if f == fold}
        selection[fold] = {e: score(seeds, people, fields) for e, seeds in sorted(rows.items())}
        chosen[fold] = choose(selection[fold])
    reported = {p: chosen[1 - f] for p, f in fold_of.items()}
    return CrossFit(chosen, reported, selection)


def reported_rows(rows: Mapping[int, Sequence[Rows]], reported_pass: Mapping[str, int]) -> list[list[dict]]:
    """Per seed, each person's rows from the pass reported for them (:attr:`CrossFit.reported_pass`), in the
    order of the first reported pass's rows (people of the other fold interleaved as they come)."""
    n_seeds = len(next(iter(rows.values())))
    out = []
    for seed in range(n_seeds):
        by_pass = {e: [dict(r) for r in seeds[seed]] for e, seeds in rows.items()}
        first = by_pass[min(by_pass)]
        index = {e: {(r["person"], r["field"]): r for r in rs} for e, rs in by_pass.items()}
        out.append([index[reported_pass[r["person"]]][(r["person"], r["field"])] for r in first
                    if r["person"] in reported_pass])
    return out
