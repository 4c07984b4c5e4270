"""What stage 3 and Figure 4 read before they rank: the texts, their tokens and one score per token, checked.

A dump fits the dataset when it was extracted from the same file (SHA-256), holds as many texts, and either
holds the token ids the tokenizer of ``model=`` gives now (token-level) or is a word-level contrast of two
tokenizers, projected here onto this tokenizer's tokens. The tokens are taken from the dump when its
``tokens_sha256`` proves re-tokenising would give the same arrays; then a recorded tokenizer
(:mod:`elusive.text.tokenizer_records`) stands in for transformers', so stage 3 imports neither torch nor
transformers. Every mismatch is an :class:`~elusive.core.errors.InputError` naming ``attn_weights=`` and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from elusive.attention.dump import AttentionDump
from elusive.core.config import AUGMENT_TYPES
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.models import load_tokenizer
from elusive.text.align import project
from elusive.text.data import load_texts
from elusive.text.fingerprints import tokens_sha256, vocab_sha256
from elusive.text.tokenizer_records import TokenizerRecord, recall
from elusive.text.tokens import Encoded, EncodedBatch, encode_batch

log = logging.getLogger(__name__)


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


def validate(augment_type: str, attn_weights: Path | str | None) -> None:
    """Check what the settings' own rules cannot: the ranked types need a dump.

    Raises:
        InputError: Naming the offending key.
    """
    if augment_type not in AUGMENT_TYPES:
        raise InputError(f"augment_type={augment_type}: unknown; use one of {', '.join(AUGMENT_TYPES)}")
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
    """The record of ``model``'s tokenizer (:mod:`elusive.text.tokenizer_records`) if it may stand in for it here.

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
    tokenizer's full definition, the ``text_prefix`` and the dataset hash (:func:`elusive.text.fingerprints.tokens_sha256`),
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


def ranking_inputs(augment_type: str, model: str, dataset: Path, attn_weights: Path | None, text_prefix: str = ""
                   ) -> tuple[list[str], EncodedBatch, np.ndarray | None, AttentionDump | None]:
    """What the drop plan needs, read and checked: the texts, their tokens, one score per token and the dump.

    The tokens are the dump's own when its ``tokens_sha256`` shows they are what the tokenizer of ``model``
    gives (otherwise the texts are tokenised again and compared); a word-level contrast is projected onto the
    tokens. Without a dump, scores and dump are None.

    Raises:
        InputError: The dataset, tokenizer or dump is unusable or they do not fit together.
    """
    validate(augment_type, attn_weights)
    texts = load_texts(dataset, "dataset")
    dump = tokenizer = batch = None
    if attn_weights is not None and augment_type in ("random", "shuffled", "position"):
        log.warning("attn_weights=%s: not used by augment_type=%s", attn_weights, augment_type)
    elif attn_weights is not None:
        dump = AttentionDump.load(attn_weights, "attn_weights")
        tokenizer = recorded_tokenizer(dump, model)
    if tokenizer is None:
        tokenizer = load_tokenizer(model)
    if dump is not None:
        dump, text_prefix = load_scores(attn_weights, augment_type, dataset, tokenizer, len(texts), sha256_file(dataset),
                                        dump)
        batch = dump_tokens(dump, tokenizer)
        if batch is None and isinstance(tokenizer, TokenizerRecord):  # it vouches only for the dump's own tokens
            tokenizer = load_tokenizer(model)
            batch = dump_tokens(dump, tokenizer)
    if batch is None:
        batch = encode_batch(tokenizer, texts, text_prefix)
    scores = None if dump is None else batch_scores(dump, batch, f"attn_weights={attn_weights}")
    return texts, batch, scores, dump
