"""Stage 3: token-dropout augmentation guided by attention (or its contrast between two models).

For each text, the droppable tokens (not special, not ``text_prefix``, not whitespace- or
punctuation-only) are ranked by score, rank 0 = largest. Each of ``multiply`` copies drops the token of rank
r with probability

    p(r) = alpha * (1 - exp(-beta * r))

so the tokens the score favours are kept and the rest are dropped more and more often.

``augment_type``:
  * ``random``          — every droppable token dropped with probability ``alpha`` (the paper's baseline;
                          the released code used alpha as a keep probability here).
  * ``attention``       — ranks from one model's dump (``attn_weights`` of kind ``attention``).
  * ``attention_diff``  — ranks from a contrast (``attn_weights`` of kind ``attention_diff``).
  * ``shuffled``        — the p(r) schedule over a random ranking, drawn once per text (fixed across its
                          copies, like a real ranking): the control that separates ranking from schedule.

A dropped token's characters are removed (tokens may share characters: byte-level BPE splits one
character over several tokens), then the whitespace is tidied: runs of spaces/tabs become one space,
spaces next to a newline go, and so does whitespace at both ends (:func:`remove_spans`). A copy that
drops nothing is the text unchanged, and so is the original (``copy`` 0).

Random stream: one ``numpy.random.default_rng(seed)``, consumed text by text in dataset order. For a
text with n droppable tokens it draws, with ``rng.random``, first (``shuffled`` only) n keys whose ranking
is the text's random ranking (:func:`shuffled_ranks`: rank 0 = largest key), then ``multiply`` × n
uniforms u, copy by copy and within a copy token by token; the token is dropped from that copy iff
u < p(rank). :func:`augment_text` consumes the generator in the same way for one text, so calling it on
each text in turn with one generator gives the rows of :func:`data_augmentation`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elusive import augment_engine as engine
from elusive.align import project
from elusive.artifacts import (
    AttentionDump,
    atomic_path,
    dump_path,
    sha256_file,
    tokens_sha256,
    vocab_sha256,
    write_text_atomic,
)
from elusive.augment_engine import CSV_HEADER
from elusive.data import load_texts
from elusive.errors import InputError
from elusive.models import load_tokenizer
from elusive.tokenizer_records import TokenizerRecord, recall
from elusive.tokens import Encoded, EncodedBatch, encode_batch, is_droppable, word_chars

log = logging.getLogger(__name__)

AUGMENT_TYPES = ("random", "attention", "attention_diff", "shuffled")
_SPACES = re.compile(r"[ \t]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")


def drop_probabilities(ranks: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """p(r) = alpha * (1 - exp(-beta * r)) for integer ranks r (0 = highest score)."""
    return alpha * (1.0 - np.exp(-beta * ranks.astype(np.float64)))


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry, 0 for the largest score; ties broken by position (earlier token first)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(len(scores))
    return ranks


def shuffled_ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    """The random ranking ``shuffled`` gives a text's ``n`` droppable tokens: ``n`` keys ranked like scores."""
    return ranks_from_scores(rng.random(n))


def remove_spans(text: str, spans: np.ndarray) -> str:
    """Delete the characters of ``spans`` ([k, 2], sorted, non-overlapping) and tidy the whitespace.

    Runs of spaces left by a deletion become one space; spaces at the ends and around newlines go.
    The reference for the compiled :func:`engine.drop_rows`, which gives the same
    strings (spans in increasing start order may overlap: their union is removed).
    """
    if len(spans) == 0:
        return text
    pieces = []
    pos = 0
    for start, end in spans.tolist():
        pieces.append(text[pos:start])
        pos = max(pos, end)
    pieces.append(text[pos:])
    return _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", "".join(pieces))).strip()


def droppable_tokens(text: str, enc: Encoded) -> np.ndarray:
    """Indices of the tokens of ``text`` that may be dropped."""
    idx = np.flatnonzero(enc.ranked)
    return np.asarray([i for i in idx if is_droppable(text[enc.char_spans[i, 0] : enc.char_spans[i, 1]])], dtype=np.int64)


def augment_text(
    text: str,
    enc: Encoded,
    scores: np.ndarray | None,
    augment_type: str,
    alpha: float,
    beta: float,
    multiply: int,
    rng: np.random.Generator,
) -> list[str]:
    """Make ``multiply`` token-dropout copies of one tag-free text.

    The computation :func:`data_augmentation` does for each text (the module docstring says in which
    order ``rng`` is consumed).

    Args:
        text: The tag-free text.
        enc: Its tokens (character spans into ``text``).
        scores: Per-token scores aligned with ``enc`` (None for ``random`` and ``shuffled``).
        augment_type: One of :data:`AUGMENT_TYPES`.
        alpha: Maximum drop probability, in [0, 1].
        beta: How fast p(r) rises with rank, >= 0.
        multiply: Number of copies.
        rng: The seeded generator (consumed in a fixed order, so outputs are reproducible).

    Returns:
        The augmented copies.
    """
    plan = CopyPlan(augment_type, alpha, beta, multiply, keep_original=False)
    rows = _augment_chunk([text], EncodedBatch.of([enc]), scores, plan, rng)
    return rows.strings()


# --------------------------------------------------------------------------------------------------
# The chunked computation: a chunk of texts at a time (its compiled loops are in elusive.augment_engine)
# --------------------------------------------------------------------------------------------------

_CHUNK_CHARS = 1 << 19  # output characters per chunk (512k: a few MB of arrays at a time, whatever the dataset size)


@dataclass(frozen=True)
class CopyPlan:
    """The rows every text gets: its original first if ``keep_original``, then ``multiply`` copies that drop
    each droppable token with p(rank) of ``augment_type``, ``alpha`` and ``beta``."""

    augment_type: str
    alpha: float
    beta: float
    multiply: int
    keep_original: bool


def _augment_chunk(
    texts: list[str],
    batch: EncodedBatch,
    scores: np.ndarray | None,
    plan: CopyPlan,
    rng: np.random.Generator,
) -> engine.Rows:
    """The rows of ``texts`` (with their tokens ``batch`` and flat token ``scores``): per text its original
    (if ``keep_original``) and ``multiply`` copies, consuming ``rng`` as the module docstring says."""
    augment_type, alpha, beta, multiply, keep_original = (
        plan.augment_type, plan.alpha, plan.beta, plan.multiply, plan.keep_original
    )
    n_texts = len(texts)
    codes = engine.codes_of("".join(texts))
    text_length = np.fromiter(map(len, texts), dtype=np.int64, count=n_texts)
    text_start = engine.exclusive_cumsum(text_length)

    # droppable tokens: ranked, and covering a character that is neither whitespace nor punctuation
    cand, cand_start = engine.candidates(word_chars(codes), text_start, batch.offsets, batch.char_spans, batch.ranked)
    n_cand = np.diff(cand_start)

    # one draw for the whole chunk; text i's part: [n_i keys if shuffled] then multiply × n_i uniforms
    shuffled = augment_type == "shuffled"
    part_start = engine.exclusive_cumsum(n_cand * (multiply + shuffled))
    uniforms = rng.random(int(part_start[-1]))
    if augment_type == "random":
        p = np.full(len(cand), float(alpha))
    else:
        if shuffled:  # text i's keys are the first n_i draws of its part
            keys = uniforms[np.arange(len(cand)) - np.repeat(cand_start[:-1] - part_start[:-1], n_cand)]
        else:
            keys = scores[cand]
        p = drop_probabilities(engine.ranks_by_group(keys, cand_start), alpha, beta)

    # copy k of text i draws its uniforms after the text's keys (shuffled) and the k copies before it
    draw_start = (part_start[:-1, None] + n_cand[:, None] * (shuffled + np.arange(multiply))).reshape(-1)
    out_codes, out_starts = engine.drop_rows(codes, text_start, batch.char_spans[cand], cand_start, p, uniforms,
                                             draw_start, multiply, keep_original)
    per_text = multiply + keep_original
    row_text = np.repeat(np.arange(n_texts), per_text)
    row_copy = np.tile(np.arange(1 - keep_original, multiply + 1), n_texts)
    return engine.Rows(out_codes, out_starts, row_text, row_copy)


def _augment_chunks(
    texts: list[str],
    batch: EncodedBatch,
    scores: np.ndarray | None,
    plan: CopyPlan,
    rng: np.random.Generator,
) -> Iterator[engine.Rows]:
    """:func:`_augment_chunk` over consecutive chunks of about :data:`_CHUNK_CHARS` output characters.

    The generator is consumed text by text in dataset order whatever the chunks, so they do not change
    the output; ``source_row`` is the text's index in ``texts``.
    """
    weight = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) * (plan.multiply + plan.keep_original)
    cuts = np.searchsorted(np.cumsum(weight), np.arange(_CHUNK_CHARS, weight.sum(), _CHUNK_CHARS), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(texts)]])).tolist()
    for a, b in itertools.pairwise(bounds):
        tokens = slice(int(batch.offsets[a]), int(batch.offsets[b]))
        part = EncodedBatch(batch.input_ids[tokens], batch.char_spans[tokens], batch.ranked[tokens],
                            batch.offsets[a : b + 1] - batch.offsets[a])
        rows = _augment_chunk(texts[a:b], part, None if scores is None else scores[tokens], plan, rng)
        rows.source_row = rows.source_row + a
        yield rows


def batch_scores(dump: AttentionDump, batch: EncodedBatch, key: str) -> np.ndarray:
    """:func:`token_scores` for all texts of ``batch``, concatenated (one flat score per token).

    A token-level dump whose token ids are the batch's is used as it is (checked in one comparison);
    otherwise every text goes through :func:`token_scores`, which projects word-level scores and raises
    for the first text tokenised differently.
    """
    if (dump.metadata.get("unit") != "word" and np.array_equal(dump.offsets, batch.offsets)
            and np.array_equal(dump.input_ids, batch.input_ids)):
        return dump.scores
    parts = [token_scores(dump, i, batch[i], key) for i in range(len(batch))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def validate(augment_type: str, alpha: float, beta: float, multiply: int, attn_weights: Path | None) -> None:
    """Check the augmentation settings before anything is read or written.

    Raises:
        InputError: Naming the offending key.
    """
    if augment_type not in AUGMENT_TYPES:
        raise InputError(f"augment_type={augment_type}: unknown; use one of {', '.join(AUGMENT_TYPES)}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha={alpha}: must be in [0, 1] (the largest drop probability)")
    if beta < 0:
        raise InputError(f"beta={beta}: must be >= 0 (how fast the drop probability rises with rank)")
    if multiply < 1 or int(multiply) != multiply:
        raise InputError(f"multiply={multiply}: must be a whole number >= 1 (augmented copies per text)")
    if augment_type in ("attention", "attention_diff") and attn_weights is None:
        raise InputError(f"attn_weights=null: augment_type={augment_type} needs a dump; give attn_weights=<save_name>")


def load_scores(
    attn_weights: Path, augment_type: str, dataset: Path, tokenizer, n_texts: int, dataset_sha256: str,
    dump: AttentionDump | None = None,
) -> tuple[AttentionDump, str]:
    """Load the dump that ranks tokens (unless ``dump`` is it, already loaded) and check it fits the dataset
    and tokenizer.

    Returns:
        The dump and the ``text_prefix`` it was extracted with.
    """
    if dump is None:
        dump = AttentionDump.load(attn_weights, "attn_weights")
    kind = dump.metadata.get("kind")
    if augment_type in ("attention", "attention_diff") and kind != augment_type:
        raise InputError(
            f"attn_weights={attn_weights}: holds {kind} scores but augment_type={augment_type}; "
            f"use augment_type={kind} or the matching dump"
        )
    if dump.metadata.get("dataset_sha256") != dataset_sha256:
        raise InputError(
            f"attn_weights={attn_weights}: was computed on a different dataset ({dump.metadata.get('dataset')}) than "
            f"dataset={dataset}; rerun save_attention.py on this dataset"
        )
    if dump.n_texts != n_texts:
        raise InputError(f"attn_weights={attn_weights}: has {dump.n_texts} texts, dataset={dataset} has {n_texts}")
    if dump.metadata.get("unit") == "word":
        return dump, text_prefix_of(dump)  # word-level contrast: mapped onto this tokenizer's tokens later
    if dump.metadata.get("vocab_sha256") != vocab_sha256(tokenizer):
        raise InputError(
            f"attn_weights={attn_weights}: was made with tokenizer {dump.metadata.get('tokenizer')}, not the one of "
            f"model={tokenizer.name_or_path}; set model= to a model with the dump's tokenizer"
        )
    return dump, text_prefix_of(dump)


def recorded_tokenizer(dump: AttentionDump, model: str) -> TokenizerRecord | None:
    """The record of ``model``'s tokenizer (:mod:`elusive.tokenizer_records`) if it may stand in for it here.

    That is when the dump is token-level, carries ``tokens_sha256``, and its ``tokenizer_sha256`` is the
    recorded one: then, if its ``tokens_sha256`` also verifies (:func:`dump_tokens`), stage 3 takes the
    tokens from the dump and needs no tokenizer, so neither transformers nor torch is imported. The record
    matches only while ``model``'s files and the libraries are as when transformers last loaded it, so every
    check gives what it would give with transformers' tokenizer. Otherwise None: load it with transformers.
    """
    wanted = dump.metadata.get("tokenizer_sha256")
    if dump.metadata.get("unit") == "word" or not dump.metadata.get("tokens_sha256") or not wanted:
        return None
    record = recall(model)
    if record is None or record.recorded_tokenizer_sha256 != wanted:
        return None
    return record


def dump_tokens(dump: AttentionDump, tokenizer) -> EncodedBatch | None:
    """The dump's own tokens, if its ``tokens_sha256`` shows they are what ``tokenizer`` gives on the dataset now.

    Tokenising every text again was half of stage 3's time. The stored hash covers the token arrays, the
    tokenizer's full definition, the ``text_prefix`` and the dataset hash (:func:`elusive.artifacts.tokens_sha256`),
    so a match means re-tokenising would give these very arrays. Otherwise (an older dump without the hash,
    a word-level contrast, another tokenizer, edited arrays) None: the caller tokenises and compares text
    by text, which names the first text tokenised differently.
    """
    stored = dump.metadata.get("tokens_sha256")
    if not stored or dump.metadata.get("unit") == "word":
        return None
    now = tokens_sha256(tokenizer, text_prefix_of(dump), dump.metadata.get("dataset_sha256", ""), dump.offsets,
                        dump.input_ids, dump.char_spans, dump.ranked)
    if now != stored:
        log.info("the dump's tokens_sha256 does not match tokenizer %s: tokenising the dataset again", tokenizer.name_or_path)
        return None
    return EncodedBatch(dump.input_ids, dump.char_spans, dump.ranked, dump.offsets)


def text_prefix_of(dump: AttentionDump) -> str:
    """The ``text_prefix`` a dump was extracted with."""
    return json.loads(dump.metadata.get("text_prefix", '""'))


def token_scores(dump: AttentionDump, i: int, enc: Encoded, key: str) -> np.ndarray:
    """The scores of text ``i`` aligned with its tokens ``enc``.

    A token-level dump must hold exactly these token ids; a word-level dump (a contrast of two tokenizers)
    is projected onto the tokens: each token gets the mean score of the words it overlaps.
    """
    rows = dump.text_slice(i)
    if dump.metadata.get("unit") == "word":
        return project(dump.scores[rows], dump.char_spans[rows], np.where(enc.ranked[:, None], enc.char_spans, -1))
    if not np.array_equal(dump.input_ids[rows], enc.input_ids):
        raise InputError(
            f"{key}: text {i} was tokenised differently than the tokenizer of model= does now; "
            "extract the dump with the same tokenizer and text_prefix"
        )
    return dump.scores[rows]


def data_augmentation(
    augment_type: str,
    alpha: float,
    beta: float,
    multiply: int,
    model: str,
    dataset: Path,
    save_name: Path,
    attn_weights: Path | None = None,
    seed: int = 0,
    keep_original: bool = True,
    text_prefix: str = "",
) -> Path:
    """Run stage 3: write ``{save_name}.csv`` with the originals and their augmented copies.

    Args:
        augment_type: ``random``, ``attention``, ``attention_diff`` or ``shuffled``.
        alpha: Maximum drop probability (the drop probability itself for ``random``).
        beta: Rate at which p(r) approaches alpha with rank.
        multiply: Augmented copies per text.
        model: Tokenizer source (hub id, directory or .gguf); must match the dump's tokenizer.
        dataset: The CSV the dump was computed on.
        save_name: Output path without ``.csv``.
        attn_weights: The dump that ranks tokens (needed for ``attention`` and ``attention_diff``).
        seed: Seed of the dropout generator; same inputs and seed give a byte-identical CSV.
        keep_original: Also write each original text (``copy`` = 0).
        text_prefix: Prefix for tokenising when no dump is given (a dump's own prefix wins).

    Returns:
        The CSV written; its settings go to ``{save_name}.json`` beside it (read back by train.py and the summary).
    """
    validate(augment_type, alpha, beta, multiply, attn_weights)
    texts = load_texts(dataset, "dataset")
    dataset_sha256 = sha256_file(dataset)
    dump = tokenizer = batch = None
    if attn_weights is not None and augment_type == "random":
        log.warning("attn_weights=%s: not used by augment_type=random (every token dropped with probability alpha)",
                    attn_weights)
    if attn_weights is not None and augment_type != "random":
        dump = AttentionDump.load(attn_weights, "attn_weights")
        tokenizer = recorded_tokenizer(dump, model)
    if tokenizer is None:
        tokenizer = load_tokenizer(model)
    if dump is not None:
        dump, text_prefix = load_scores(attn_weights, augment_type, dataset, tokenizer, len(texts), dataset_sha256,
                                        dump)
        batch = dump_tokens(dump, tokenizer)
        if batch is None and isinstance(tokenizer, TokenizerRecord):  # it vouches only for the dump's own tokens
            tokenizer = load_tokenizer(model)
            batch = dump_tokens(dump, tokenizer)
    if batch is None:
        batch = encode_batch(tokenizer, texts, text_prefix)
    scores = None if dump is None else batch_scores(dump, batch, f"attn_weights={attn_weights}")
    rng = np.random.default_rng(seed)
    path = Path(str(save_name) + ".csv") if not str(save_name).endswith(".csv") else Path(save_name)
    digest = hashlib.sha256()  # of the bytes as written: the file is not read back
    chunks = _augment_chunks(texts, batch, scores, CopyPlan(augment_type, alpha, beta, multiply, keep_original), rng)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle, ThreadPoolExecutor(1) as writer:

        def write(rows: engine.Rows) -> None:
            data = engine.csv_lines(rows)
            handle.write(data)
            digest.update(data)

        # One chunk is encoded, written and hashed in a second thread (the compiled loop, the write and
        # hashlib release the GIL) while the next one is computed; chunks are written in order.
        handle.write(CSV_HEADER.encode("utf-8"))
        digest.update(CSV_HEADER.encode("utf-8"))
        previous = None
        for rows in chunks:
            if previous is not None:
                previous.result()
            previous = writer.submit(write, rows)
        if previous is not None:
            previous.result()
    settings = {
        "augment_type": augment_type,
        "alpha": alpha,
        "beta": None if augment_type == "random" else beta,
        "multiply": multiply,
        "seed": seed,
        "keep_original": keep_original,
        "attn_weights": None if dump is None else str(dump_path(attn_weights).absolute()),
        "dataset": str(Path(dataset).absolute()),
        "dataset_sha256": dataset_sha256,
        "csv_sha256": digest.hexdigest(),
    }
    write_text_atomic(path.with_suffix(".json"), json.dumps(settings, indent=2) + "\n")  # provenance for the summary
    log.info("wrote %s: %d rows (%d texts × %d copies%s)", path, len(texts) * (multiply + keep_original),
             len(texts), multiply, " + originals" if keep_original else "")
    return path
