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
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.align import project
from elusive.artifacts import AttentionDump, atomic_path, dump_path, sha256_file, vocab_sha256, write_text_atomic
from elusive.data import load_texts
from elusive.errors import InputError
from elusive.models import load_tokenizer
from elusive.tokens import Encoded, encode_many, is_droppable

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


def remove_spans(text: str, spans: np.ndarray) -> str:
    """Delete the characters of ``spans`` ([k, 2], sorted, non-overlapping) and tidy the whitespace.

    Runs of spaces left by a deletion become one space; spaces at the ends and around newlines go.
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
    cand = droppable_tokens(text, enc)
    if augment_type == "random":
        p = np.full(len(cand), alpha)
    else:
        ranks = rng.permutation(len(cand)) if augment_type == "shuffled" else ranks_from_scores(scores[cand])
        p = drop_probabilities(ranks, alpha, beta)
    drops = rng.random((multiply, len(cand))) < p[None, :]
    spans = enc.char_spans[cand]
    return [remove_spans(text, spans[row]) for row in drops]


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
    attn_weights: Path, augment_type: str, dataset: Path, tokenizer, n_texts: int
) -> tuple[AttentionDump, str]:
    """Load the dump that ranks tokens and check it fits the dataset and tokenizer.

    Returns:
        The dump and the ``text_prefix`` it was extracted with.
    """
    dump = AttentionDump.load(attn_weights, "attn_weights")
    kind = dump.metadata.get("kind")
    if augment_type in ("attention", "attention_diff") and kind != augment_type:
        raise InputError(
            f"attn_weights={attn_weights}: holds {kind} scores but augment_type={augment_type}; "
            f"use augment_type={kind} or the matching dump"
        )
    if dump.metadata.get("dataset_sha256") != sha256_file(dataset):
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
    tokenizer = load_tokenizer(model)
    dump = None
    if attn_weights is not None and augment_type != "random":
        dump, text_prefix = load_scores(attn_weights, augment_type, dataset, tokenizer, len(texts))
    encoded = encode_many(tokenizer, texts, text_prefix)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, int]] = []
    for i, (text, enc) in enumerate(zip(texts, encoded)):
        scores = None if dump is None else token_scores(dump, i, enc, f"attn_weights={attn_weights}")
        if keep_original:
            rows.append((text, i, 0))
        copies = augment_text(text, enc, scores, augment_type, alpha, beta, multiply, rng)
        rows.extend((copy, i, k) for k, copy in enumerate(copies, start=1))
    frame = pd.DataFrame(rows, columns=["text", "source_row", "copy"])
    path = Path(str(save_name) + ".csv") if not str(save_name).endswith(".csv") else Path(save_name)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    settings = {
        "augment_type": augment_type,
        "alpha": alpha,
        "beta": None if augment_type == "random" else beta,
        "multiply": multiply,
        "seed": seed,
        "keep_original": keep_original,
        "attn_weights": None if dump is None else str(dump_path(attn_weights).absolute()),
        "dataset": str(Path(dataset).absolute()),
        "dataset_sha256": sha256_file(dataset),
        "csv_sha256": sha256_file(path),
    }
    write_text_atomic(path.with_suffix(".json"), json.dumps(settings, indent=2) + "\n")  # provenance for the summary
    log.info("wrote %s: %d rows (%d texts × %d copies%s)", path, len(frame), len(texts), multiply,
             " + originals" if keep_original else "")
    return path
