"""Tiny random language models and tokenizers trained on the project's own corpus, built offline in seconds.

Tests and smoke runs use them where no real model can be downloaded. Three tokenizer kinds cover the
families the pipeline must handle:

* ``bpe``       — byte-level BPE, no BOS token (like Llama 3 and Qwen).
* ``unigram``   — SentencePiece-style Unigram with a ``▁`` metaspace and a BOS token (like Gemma).
* ``wordlevel`` — one id per whitespace-separated word or punctuation mark.

Models use a larger ``initializer_range`` than real ones so that attention depends on content: at the
default 0.02, two random models attend almost uniformly and give near-identical scores.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from elusive.data import read_csv
from elusive.tags import strip_tags

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def corpus(paths: list[Path]) -> list[str]:
    """Tag-free texts (and prompts) from the project's CSVs, for training a tokenizer."""
    lines: list[str] = []
    for path in paths:
        frame = read_csv(path, "corpus", columns=())
        for column in ("text", "prompt"):
            if column in frame:
                lines.extend(strip_tags(t) for t in frame[column])
    return lines


def train_tokenizer(kind: str, texts: list[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Train a fast tokenizer of ``kind`` (``bpe``, ``unigram`` or ``wordlevel``) on ``texts``."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>")
        tok.train_from_iterator(texts, trainer)
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
        )
    if kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size * 10, special_tokens=SPECIALS)
        tok.train_from_iterator(texts, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    raise ValueError(f"unknown tokenizer kind {kind!r}; use bpe, unigram or wordlevel")


def build_model(
    arch: str,
    tokenizer: PreTrainedTokenizerFast,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    seed: int = 0,
    initializer_range: float = 0.4,
):
    """A random causal LM of architecture ``llama``, ``gemma2`` (attention logits soft-capped at 50, final logits
    at 30, every other layer sliding-window) or ``gemma3`` sized for tests."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        initializer_range=initializer_range,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "gemma2":
        config = Gemma2Config(head_dim=hidden // heads, sliding_window=16, query_pre_attn_scalar=hidden // heads,
                              attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **common)
        return Gemma2ForCausalLM(config)
    if arch == "gemma3":
        config = Gemma3TextConfig(head_dim=hidden // heads, sliding_window=16, query_pre_attn_scalar=hidden // heads, **common)
        return Gemma3ForCausalLM(config)
    raise ValueError(f"unknown architecture {arch!r}; use llama, gemma2 or gemma3")


def save_tiny(
    out: Path, arch: str, tokenizer: PreTrainedTokenizerFast, layers: int = 2, hidden: int = 32, seed: int = 0
) -> Path:
    """Build a tiny model and save it with its tokenizer to ``out`` (a normal model directory)."""
    model = build_model(arch, tokenizer, layers=layers, hidden=hidden, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("saved a tiny %s (%d layers, %d parameters) to %s", arch, layers, model.num_parameters(), out)
    return out


def main(out: Path) -> None:
    """Build the tiny small/large pair used by ``experiment=cpu_tiny`` under ``out``."""
    root = Path(__file__).resolve().parent.parent / "data"
    tokenizer = train_tokenizer("bpe", corpus([root / "biography.csv", root / "biography_fewshot.csv", root / "prompts.csv"]))
    save_tiny(out / "small", "llama", tokenizer, layers=2, hidden=32, seed=1)
    save_tiny(out / "large", "llama", tokenizer, layers=3, hidden=48, seed=2)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/tiny"))
