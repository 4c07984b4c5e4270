"""Tokenising tag-free texts with character offsets, the link between token scores and text edits."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
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
    enc = tokenizer(
        [text_prefix + text for text in texts],
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    cut = len(text_prefix)
    out = []
    for ids, offsets, special in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
        ids_arr = np.asarray(ids, dtype=np.int64)
        offsets_arr = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        in_text = ~np.asarray(special, dtype=bool) & (offsets_arr[:, 1] > cut)
        spans = np.full((len(ids_arr), 2), -1, dtype=np.int64)
        spans[in_text, 0] = np.maximum(offsets_arr[in_text, 0], cut) - cut
        spans[in_text, 1] = offsets_arr[in_text, 1] - cut
        out.append(Encoded(input_ids=ids_arr, char_spans=spans, ranked=in_text))
    return out


def is_droppable(piece: str) -> bool:
    """True if a token's characters may be dropped: not whitespace-only and not punctuation-only."""
    stripped = "".join(piece.split())
    if not stripped:
        return False
    return not all(unicodedata.category(ch).startswith("P") for ch in stripped)
