"""Stage 3: token-dropout augmentation guided by attention (or its contrast between two models).

For each text, the droppable tokens (not special, not ``text_prefix``, not whitespace- or punctuation-only)
are ranked, rank 0 = kept most, and each of ``multiply`` copies drops the token of rank r with probability

    p(r) = alpha * (1 - exp(-beta * r))

:func:`drop_plan` is the one definition of which tokens may be dropped and with what probability; Figure 4
calls it too. ``augment_type``:

  * ``random``          — every droppable token dropped with probability ``alpha`` (the paper's baseline;
                          the released code used alpha as a keep probability here).
  * ``attention``       — ranked by one model's dump (``attn_weights`` of kind ``attention``), largest first.
  * ``attention_diff``  — ranked by a contrast (``attn_weights`` of kind ``attention_diff``), largest first.
  * ``shuffled``        — the same p(r) over a random ranking, fixed per text across its copies: the control
                          that separates the ranking from the schedule.
  * ``position``        — the same p(r) with rank 0 = the last droppable token: the control for "attention or
                          position?" (a released contrast is nearly reverse position on biographies).

A dump of ``aggregate=released`` is ranked as the released code ranked it (:func:`released_ranks`), equal
scores ordered the same way on every machine (``released_ties=position``, the later token first) unless
``released_ties=numpy`` asks for this machine's own ``numpy.argsort`` order.

A dropped token's characters are removed (tokens may share characters: byte-level BPE splits one character
over several tokens), then the whitespace is tidied: runs of spaces/tabs become one space, spaces next to a
newline go, and so does whitespace at both ends. A copy that drops nothing is the text unchanged, and so is
the original (``copy`` 0).

Random stream: one ``numpy.random.default_rng(seed)``, consumed text by text in dataset order: for a text with
n droppable tokens, ``multiply`` × n uniforms u, copy by copy and within a copy token by token; the token is
dropped from that copy iff u < p(rank). The shuffled ranking has generators of its own (one per text), so
every ranking can be recomputed without replaying the stream.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elusive.attention.dump import dump_path
from elusive.augment import engine
from elusive.augment.engine import CSV_HEADER
from elusive.augment.inputs import ranking_inputs
from elusive.core.config import DataAugmentationConfig, check
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, sha256_file, write_json_atomic
from elusive.core.outputs import Output, check_outputs
from elusive.core.provenance import numpy_simd, record_path
from elusive.text.tokens import EncodedBatch, word_chars

log = logging.getLogger(__name__)



def drop_probabilities(ranks: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """p(r) = alpha * (1 - exp(-beta * r)) for integer ranks r (0 = highest score)."""
    return alpha * (1.0 - np.exp(-beta * ranks.astype(np.float64)))


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry, 0 for the largest score; ties broken by position (earlier token first)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(len(scores))
    return ranks


# --------------------------------------------------------------------------------------------------
# The drop plan (one definition for stage 3 and Figure 4), and the chunked computation (compiled loops in
# elusive.augment.engine)
# --------------------------------------------------------------------------------------------------

_CHUNK_CHARS = 1 << 19  # output characters per chunk (512k: a few MB of arrays at a time, whatever the dataset size)
RELEASED_RANKING = {
    "position": "released (numpy.argsort(d)[::-1], ties: the later token first; machine-independent)",
    "numpy": "released (numpy.argsort(d)[::-1], default kind, ties as this machine's numpy orders them)",
}
"""The ranking a released dump's augmentation records, by ``released_ties``."""
SHUFFLE_STREAM = 0x5E1F  # the shuffled ranking's generator: default_rng([seed, SHUFFLE_STREAM, text index])


@dataclass(frozen=True)
class DropSettings:
    """What decides each token's drop probability: the method, its schedule, and (``shuffled``) the seed.

    ``released=True`` ranks as the released code did (see :func:`released_ranks`); it is set for dumps of
    ``aggregate=released``. ``ties`` orders their equal scores: ``position`` (the later token first, on every
    machine) or ``numpy`` (this machine's ``numpy.argsort``).
    """

    augment_type: str
    alpha: float
    beta: float
    seed: int = 0
    released: bool = False
    ties: str = "position"


@dataclass(frozen=True)
class DropPlan:
    """Which tokens of each text may be dropped, their rank and their drop probability.

    Attributes:
        candidates: [m] index (into the batch's token arrays) of every droppable token, text by text, in order.
        starts: [texts + 1] text t's candidates are ``candidates[starts[t]:starts[t + 1]]``.
        ranks: [m] each candidate's rank in its text (0 = kept most); ``random`` has none (all 0).
        p: [m] each candidate's drop probability.
    """

    candidates: np.ndarray
    starts: np.ndarray
    ranks: np.ndarray
    p: np.ndarray


def drop_plan(texts: list[str], batch: EncodedBatch, scores: np.ndarray | None, settings: DropSettings,
              first_text: int = 0) -> DropPlan:
    """The one definition of "which tokens can be dropped, and with what probability" (stage 3 and Figure 4).

    Droppable: a text token (not special, not ``text_prefix``) covering a character that is neither whitespace
    nor punctuation. Ranks, rank 0 = kept most: ``attention``/``attention_diff`` by score, largest first, ties
    by position; with ``released`` as the released code (:func:`released_ranks`); ``shuffled`` by random keys
    drawn per text from ``default_rng([seed, SHUFFLE_STREAM, first_text + t])`` (so a text's ranking does not
    depend on the others); ``position``: the last droppable token first. p(r) = alpha·(1 − exp(−beta·r));
    ``random``: alpha for every droppable token.

    Args:
        texts: The tag-free texts.
        batch: Their tokens (character spans into each text).
        scores: One score per token of ``batch`` (ranked types only).
        settings: The method and schedule.
        first_text: Index of ``texts[0]`` in the dataset (the shuffled ranking of text i depends on i).
    """
    codes = engine.codes_of("".join(texts))
    text_start = engine.exclusive_cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    return _plan(codes, text_start, batch, scores, settings, first_text)


def _plan(codes: np.ndarray, text_start: np.ndarray, batch: EncodedBatch, scores: np.ndarray | None,
          settings: DropSettings, first_text: int) -> DropPlan:
    """:func:`drop_plan` for texts already turned into code points (``codes``, texts at ``text_start``)."""
    cand, starts = engine.candidates(word_chars(codes), text_start, batch.offsets, batch.char_spans, batch.ranked)
    n_cand = np.diff(starts)
    kind = settings.augment_type
    if kind == "random":
        return DropPlan(cand, starts, np.zeros(len(cand), np.int64), np.full(len(cand), float(settings.alpha)))
    if kind == "position":  # rank 0 = the text's last droppable token
        ranks = np.repeat(starts[1:] - 1, n_cand) - np.arange(len(cand))
    elif kind == "shuffled":
        keys = [np.random.default_rng([settings.seed, SHUFFLE_STREAM, first_text + t]).random(int(n))
                for t, n in enumerate(n_cand)]
        ranks = engine.ranks_by_group(np.concatenate(keys) if keys else np.zeros(0), starts)
    elif settings.released:
        ranks = released_ranks(scores, batch.offsets, cand, starts, settings.ties)
    else:
        ranks = engine.ranks_by_group(scores[cand], starts)
    return DropPlan(cand, starts, ranks, drop_probabilities(ranks, settings.alpha, settings.beta))


def released_ranks(scores: np.ndarray, offsets: np.ndarray, cand: np.ndarray, starts: np.ndarray,
                   ties: str = "position") -> np.ndarray:
    """The released code's ranking: per text, ``numpy.argsort(scores)[::-1]`` over *all* its tokens.

    The float32 scores of the text's tokens (special and prefix tokens included, as the released code tokenised
    them) are sorted ascending and the order reversed; a token's rank is its place in the reversed order, so
    tokens that are never dropped still take up ranks. A released contrast is exactly 0 almost everywhere, so
    the order of equal scores decides most ranks:

    * ``ties="position"``: equal scores keep their positions in the ascending sort (a stable sort, ``-0.0`` equal
      to ``0.0``), so after reversing, the *later* token of two equal scores ranks first. Defined by the scores
      alone: the same on every machine. It is the order numpy's default sort gives an all-zero array on AVX2 and
      AVX-512 CPUs (not on its baseline path), the released ranking's nearly-reverse-position shape.
    * ``ties="numpy"``: numpy's default sort kind (quicksort, not stable), the released code's own call. Its
      order of equal scores depends on numpy's version and the SIMD level it dispatches to on this CPU
      (:func:`elusive.core.provenance.numpy_simd`, recorded beside the result): another machine may rank otherwise.
      Hand-written per text because it must be numpy's own argsort, not a compiled or stable one.
    """
    if ties == "position":
        n = int(offsets[-1])
        text_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        keys = np.asarray(scores[:n], dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0: one zero
        # by text, then score descending, then position descending (the reversed stable ascending sort)
        order = np.lexsort((-np.arange(n), -keys, text_of))
        rank_of = np.empty(n, dtype=np.int64)
        rank_of[order] = np.arange(n) - offsets[text_of[order]]
        return rank_of[cand]
    if ties != "numpy":
        raise ValueError(f"ties={ties!r}: use position or numpy")
    ranks = np.empty(len(cand), dtype=np.int64)
    for t in range(len(starts) - 1):
        a, b = int(offsets[t]), int(offsets[t + 1])
        order = np.argsort(np.asarray(scores[a:b], dtype=np.float32))[::-1]
        rank_of = np.empty(b - a, dtype=np.int64)
        rank_of[order] = np.arange(b - a)
        ranks[starts[t] : starts[t + 1]] = rank_of[cand[starts[t] : starts[t + 1]] - a]
    return ranks


def _augment_chunk(texts: list[str], batch: EncodedBatch, scores: np.ndarray | None, settings: DropSettings,
                   multiply: int, keep_original: bool, rng: np.random.Generator, first_text: int = 0) -> engine.Rows:
    """The rows of ``texts``: per text its original (if ``keep_original``) and ``multiply`` copies, each copy
    dropping a candidate iff its uniform draw is below its p (``rng`` consumed as the module docstring says)."""
    codes = engine.codes_of("".join(texts))
    text_start = engine.exclusive_cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    plan = _plan(codes, text_start, batch, scores, settings, first_text)
    n_cand = np.diff(plan.starts)
    part_start = engine.exclusive_cumsum(n_cand * multiply)  # text t's uniforms: multiply × n_t, copy by copy
    uniforms = rng.random(int(part_start[-1]))
    draw_start = (part_start[:-1, None] + n_cand[:, None] * np.arange(multiply)).reshape(-1)
    out_codes, out_starts = engine.drop_rows(codes, text_start, batch.char_spans[plan.candidates], plan.starts, plan.p,
                                             uniforms, draw_start, multiply, keep_original)
    per_text = multiply + keep_original
    row_text = np.repeat(np.arange(len(texts)), per_text)
    row_copy = np.tile(np.arange(1 - keep_original, multiply + 1), len(texts))
    # the p of each draw: text t's draws are multiply × n_t, copy by copy, candidate by candidate
    text_of_draw = np.repeat(np.arange(len(texts)), n_cand * multiply)
    within = np.arange(len(uniforms)) - part_start[text_of_draw]
    p_draw = plan.p[plan.starts[text_of_draw] + within % n_cand[text_of_draw]]
    dropped = int(np.count_nonzero(uniforms < p_draw))  # the rule drop_rows applies, counted
    return engine.Rows(out_codes, out_starts, row_text, row_copy, dropped, len(uniforms))


def _augment_chunks(texts: list[str], batch: EncodedBatch, scores: np.ndarray | None, settings: DropSettings,
                    multiply: int, keep_original: bool, rng: np.random.Generator) -> Iterator[engine.Rows]:
    """:func:`_augment_chunk` over consecutive chunks of about :data:`_CHUNK_CHARS` output characters.

    The generator is consumed text by text in dataset order whatever the chunks, so they do not change
    the output; ``source_row`` is the text's index in ``texts``.
    """
    weight = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) * (multiply + keep_original)
    cuts = np.searchsorted(np.cumsum(weight), np.arange(_CHUNK_CHARS, weight.sum(), _CHUNK_CHARS), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(texts)]])).tolist()
    for a, b in itertools.pairwise(bounds):
        part = batch_slice(batch, a, b)
        tokens = slice(int(batch.offsets[a]), int(batch.offsets[b]))
        rows = _augment_chunk(texts[a:b], part, None if scores is None else scores[tokens], settings, multiply,
                              keep_original, rng, first_text=a)
        rows.source_row = rows.source_row + a
        yield rows


def batch_slice(batch: EncodedBatch, a: int, b: int) -> EncodedBatch:
    """Texts ``a:b`` of ``batch`` as a batch of their own."""
    tokens = slice(int(batch.offsets[a]), int(batch.offsets[b]))
    return EncodedBatch(batch.input_ids[tokens], batch.char_spans[tokens], batch.ranked[tokens],
                        batch.offsets[a : b + 1] - batch.offsets[a])


def check_schedule(augment_type: str, alpha: float) -> None:
    """Refuse ``augment_type=random`` with ``alpha=1``: it drops every word of every copy.

    (A ranked type keeps its rank-0 token whatever alpha: p(0) = 0.)

    Raises:
        InputError: Naming alpha and the fix.
    """
    if augment_type == "random" and alpha >= 1.0:
        raise InputError(f"alpha={alpha}: augment_type=random drops every droppable token with probability alpha, so "
                         "each copy would keep no word (punctuation only, or nothing); use "
                         "alpha < 1 (the paper: 0.6-0.7)")


def empty_rows(rows: engine.Rows) -> int:
    """How many of ``rows`` are empty: copies that dropped every token of a text without punctuation (a short
    text under a high alpha). They are written as they are (the copy's draw); train.py leaves them out, with
    a warning (:func:`elusive.text.data.training_texts`), and ``{save_name}.json`` counts them."""
    return int(np.count_nonzero(np.diff(rows.starts) == 0))


class Survival:
    """Counts, over the written copies (copy >= 1), how many tokens were dropped and in how many copies each tagged
    field's value (the name, each answer) is still there verbatim — what a copy can still teach."""

    def __init__(self, dataset: Path, texts: list[str]):
        from elusive.text.data import load_tagged

        tagged = load_tagged(dataset, "dataset")
        # the fields of each text whose value can be looked for in its copies (a tag-free dataset has none)
        self.values = [{span.field: span.value for span in spans if span.value.strip()} for _, spans in tagged]
        self.fields = list(dict.fromkeys(f for values in self.values for f in values))
        self.kept = dict.fromkeys(self.fields, 0)
        self.present = dict.fromkeys(self.fields, 0)
        self.dropped = self.draws = 0

    def count(self, rows: engine.Rows) -> None:
        self.dropped += rows.dropped
        self.draws += rows.draws
        if not self.fields:
            return
        for text, source, copy in zip(rows.strings(), rows.source_row.tolist(), rows.copy.tolist()):
            if copy == 0:
                continue
            for field, value in self.values[source].items():
                self.present[field] += 1
                self.kept[field] += value in text

    def shares(self) -> dict[str, float] | None:
        """``{field: share of copies keeping its value}``; None for a dataset without tags or without copies."""
        if not self.fields or not any(self.present.values()):
            return None
        return {f: self.kept[f] / self.present[f] for f in self.fields if self.present[f]}


def expected_drop_rate(texts: list[str], batch: EncodedBatch, scores: np.ndarray | None,
                       settings: DropSettings) -> float | None:
    """The mean p(r) over every droppable token of the dataset: the drop rate the schedule gives on average
    (the realised rate of a seed scatters around it); None when no token can be dropped."""
    plan = drop_plan(texts, batch, scores, settings)
    # math.fsum: correctly rounded, so the record does not depend on the order numpy's SIMD path sums in
    return math.fsum(plan.p.tolist()) / len(plan.p) if len(plan.p) else None


def data_augmentation(cfg: DataAugmentationConfig) -> Path:
    """Run stage 3: write ``{cfg.save_name}.csv`` with the originals and their augmented copies.

    Args:
        cfg: The settings (:class:`elusive.core.config.DataAugmentationConfig` says what each one means).

    Returns:
        The CSV written; its settings go to ``{save_name}.json`` beside it (read back by train.py and the summary).

    Raises:
        InputError: A setting, the dataset, the tokenizer or the dump is unusable (before anything is written).
    """
    check(cfg)
    check_schedule(cfg.augment_type, cfg.alpha)
    augment_type, alpha, beta, multiply, seed = cfg.augment_type, cfg.alpha, cfg.beta, cfg.multiply, cfg.seed
    model, dataset, save_name, keep_original, text_prefix = (
        cfg.model, Path(cfg.dataset), Path(cfg.save_name), cfg.keep_original, cfg.text_prefix
    )
    attn_weights = None if cfg.attn_weights is None else Path(cfg.attn_weights)
    path = Path(str(save_name) + ".csv") if not str(save_name).endswith(".csv") else Path(save_name)
    check_outputs("data_augmentation",
                  [Output("save_name", cfg.save_name, path), Output("save_name", cfg.save_name, path.with_suffix(".json"))],
                  {"dataset": cfg.dataset, "attn_weights": None if attn_weights is None else dump_path(attn_weights),
                   "model": cfg.model})
    texts, batch, scores, dump = ranking_inputs(augment_type, model, dataset, attn_weights, text_prefix)
    dataset_sha256 = dump.metadata["dataset_sha256"] if dump is not None else sha256_file(dataset)
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()  # of the bytes as written: the file is not read back
    released = dump is not None and dump.metadata.get("aggregate") == "released"
    if cfg.released_ties != "position" and not released:
        log.warning("released_ties=%s: only a dump of aggregate=released is ranked by ties; unused here",
                    cfg.released_ties)
    settings = DropSettings(augment_type, alpha, beta, seed, released, cfg.released_ties)
    chunks = _augment_chunks(texts, batch, scores, settings, multiply, keep_original, rng)
    survival = Survival(dataset, texts)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle, ThreadPoolExecutor(1) as writer:

        def write(rows: engine.Rows) -> None:
            data = engine.csv_lines(rows)
            handle.write(data)
            digest.update(data)
            survival.count(rows)

        # One chunk is encoded, written and hashed in a second thread (the compiled loop, the write and
        # hashlib release the GIL) while the next one is computed; chunks are written in order.
        handle.write(CSV_HEADER.encode("utf-8"))
        digest.update(CSV_HEADER.encode("utf-8"))
        previous = None
        empty = 0
        for rows in chunks:
            empty += empty_rows(rows)
            if previous is not None:
                previous.result()
            previous = writer.submit(write, rows)
        if previous is not None:
            previous.result()
    record = {
        "augment_type": augment_type,
        "ranking": RELEASED_RANKING[cfg.released_ties] if released else "scores" if dump is not None else augment_type,
        "released_ties": cfg.released_ties if released else None,
        "numpy": np.__version__,
        "numpy_simd": numpy_simd(),  # what numpy dispatched to here (decides released_ties=numpy's order)
        "alpha": alpha,
        "beta": None if augment_type == "random" else beta,
        "multiply": multiply,
        "seed": seed,
        "keep_original": keep_original,
        "attn_weights": None if dump is None else record_path(dump_path(attn_weights)),
        "dataset": record_path(dataset),
        "dataset_sha256": dataset_sha256,
        "csv_sha256": digest.hexdigest(),
        # what the copies kept: the share of droppable tokens dropped (and the mean p(r) it realises), and per
        # tagged field the share of copies in which its whole value (the name, each answer) survived verbatim
        "drop_rate": survival.dropped / survival.draws if survival.draws else None,
        "expected_drop_rate": expected_drop_rate(texts, batch, scores, settings),
        "survival": survival.shares(),
        "empty_copies": empty,  # copies that dropped every token: train.py leaves them out
    }
    write_json_atomic(path.with_suffix(".json"), record)  # provenance
    if empty:
        log.warning("%d of the %d copies dropped every token (empty rows; train.py leaves them out): alpha=%g is high "
                    "for texts this short", empty, len(texts) * multiply, alpha)
    log.info("wrote %s: %d rows (%d texts × %d copies%s)", path, len(texts) * (multiply + keep_original),
             len(texts), multiply, " + originals" if keep_original else "")
    return path
