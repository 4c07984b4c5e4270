"""Tokenising tag-free texts with character offsets, the link between token scores and text edits."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only for hints: importing transformers costs ~3 s, and stage 3 may not need it
    from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    """One text, tokenised.

    Attributes:
        input_ids: Token ids as fed to the model (special tokens and ``text_prefix`` included).
        char_spans: [n, 2] (start, end) of each token in the text *without* the prefix; -1 for special and
            prefix tokens.
        ranked: [n] True for tokens of the text itself (not special, not prefix): the tokens stage 3 ranks.
    """

    input_ids: np.ndarray
    char_spans: np.ndarray
    ranked: np.ndarray


@dataclass
class EncodedBatch:
    """Many texts, tokenised: the arrays of :class:`Encoded` concatenated over the texts.

    Attributes:
        input_ids, char_spans, ranked: As in :class:`Encoded`, for all tokens of all texts in order.
        offsets: [n_texts + 1] text i owns tokens ``offsets[i]:offsets[i + 1]``.
    """

    input_ids: np.ndarray
    char_spans: np.ndarray
    ranked: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Encoded:
        """Text ``i`` as an :class:`Encoded` (views into the batch's arrays)."""
        rows = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return Encoded(input_ids=self.input_ids[rows], char_spans=self.char_spans[rows], ranked=self.ranked[rows])

    @classmethod
    def of(cls, encoded: list[Encoded]) -> EncodedBatch:
        """Concatenate single-text encodings."""
        lengths = [len(e.input_ids) for e in encoded]
        return cls(
            input_ids=np.concatenate([e.input_ids for e in encoded] or [np.zeros(0, np.int64)]).astype(np.int64),
            char_spans=np.concatenate([e.char_spans for e in encoded] or [np.zeros((0, 2), np.int64)]).astype(np.int64),
            ranked=np.concatenate([e.ranked for e in encoded] or [np.zeros(0, bool)]).astype(bool),
            offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        )


def encode(tokenizer: PreTrainedTokenizerBase, text: str, text_prefix: str = "") -> Encoded:
    """Tokenise ``text_prefix + text`` and map each token back to characters of ``text``.

    A token that straddles the end of the prefix (e.g. BPE's " Liam" after "Text:") belongs to the text;
    its span is clipped to start at the text's first character.

    Args:
        tokenizer: A fast tokenizer (offsets are needed).
        text: Tag-free text.
        text_prefix: Optional string put in front (e.g. ``"Text: "``); stored but never ranked.
    """
    return encode_many(tokenizer, [text], text_prefix)[0]


def encode_many(tokenizer: PreTrainedTokenizerBase, texts: list[str], text_prefix: str = "") -> list[Encoded]:
    """:func:`encode` for many texts in one call of the (Rust, parallel) fast tokenizer."""
    batch = encode_batch(tokenizer, texts, text_prefix)
    return [batch[i] for i in range(len(batch))]


_BLOCK = 8192  # texts per call of the tokenizer


def _backend(tokenizer: PreTrainedTokenizerBase):
    """The Rust tokenizer behind ``tokenizer`` if calling it directly gives what ``tokenizer(...)`` gives, else None.

    ``tokenizer(texts, add_special_tokens=True)`` first switches the backend's truncation and padding off
    and sets its ``encode_special_tokens`` to ``split_special_tokens``, then calls ``encode_batch``; when
    the backend is already in that state the direct call is the same computation without the per-text
    Python conversion (``_convert_encoding``) of the wrapper.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    try:
        ready = (
            backend.truncation is None
            and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
        )
    except AttributeError:
        return None
    return backend if ready else None


def _tokenize_block(tokenizer: PreTrainedTokenizerBase, full: list[str]) -> tuple[np.ndarray, ...]:
    """Token counts, ids, offsets [n, 2] and special-token flags of the texts ``full``, as flat arrays."""
    backend = _backend(tokenizer)
    if not full:
        ids, offsets, special = [], [], []
    elif backend is not None:
        encodings = backend.encode_batch(full, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        offsets = [e.offsets for e in encodings]
        special = [e.special_tokens_mask for e in encodings]
    else:
        enc = tokenizer(full, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    n = int(lengths.sum())
    # flattened in one pass each: per-text np.asarray calls cost more than the tokenizer for short texts
    flat_offsets = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64, count=2 * n)
    return (
        lengths,
        np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=n),
        flat_offsets.reshape(n, 2),
        np.fromiter(chain.from_iterable(special), dtype=np.int64, count=n).astype(bool),
    )


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], text_prefix: str = "") -> EncodedBatch:
    """:func:`encode_many` as one :class:`EncodedBatch` (flat arrays, no per-text objects)."""
    blocks = [  # blocks bound the memory held at once by the tokenizer's Python lists
        _tokenize_block(tokenizer, [text_prefix + text for text in texts[a : a + _BLOCK]])
        for a in range(0, len(texts), _BLOCK)
    ] or [_tokenize_block(tokenizer, [])]
    lengths, ids, offsets, special = (np.concatenate(arrays) for arrays in zip(*blocks))
    cut = len(text_prefix)
    in_text = ~special & (offsets[:, 1] > cut)
    spans = np.full((len(ids), 2), -1, dtype=np.int64)
    spans[in_text, 0] = np.maximum(offsets[in_text, 0], cut) - cut
    spans[in_text, 1] = offsets[in_text, 1] - cut
    return EncodedBatch(input_ids=ids, char_spans=spans, ranked=in_text,
                        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def is_droppable(piece: str) -> bool:
    """True if a token's characters may be dropped: not whitespace-only and not punctuation-only."""
    stripped = "".join(piece.split())
    if not stripped:
        return False
    return not all(unicodedata.category(ch).startswith("P") for ch in stripped)


def _is_word_char(ch: str) -> bool:
    """Neither whitespace nor punctuation: a piece is droppable iff it has one (see :func:`is_droppable`)."""
    return not ch.isspace() and not unicodedata.category(ch).startswith("P")


_TABLE_SIZE = 0x3000  # lookup table for the common code points; the rest are classified one by one
_WORD_TABLE = np.array([_is_word_char(chr(c)) for c in range(_TABLE_SIZE)], dtype=bool)


def word_chars(codes: np.ndarray) -> np.ndarray:
    """:func:`_is_word_char` for every code point of ``codes`` (uint32), vectorised with a lookup table.

    A token is droppable iff its characters include a word character, so per-character flags and a
    cumulative sum decide :func:`is_droppable` for all tokens at once.
    """
    out = _WORD_TABLE[np.minimum(codes, _TABLE_SIZE - 1)]
    rare = np.flatnonzero(codes >= _TABLE_SIZE)
    if len(rare):
        values, inverse = np.unique(codes[rare], return_inverse=True)
        out[rare] = np.array([_is_word_char(chr(c)) for c in values.tolist()], dtype=bool)[inverse]
    return out
