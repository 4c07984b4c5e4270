"""Tiny random language models and tokenizers trained on the project's own corpus, built offline in seconds.

Tests and smoke runs use them where no real model can be downloaded. Three tokenizer kinds cover the
families the pipeline must handle:

* ``bpe``       — byte-level BPE, no BOS token (like Llama 3 and Qwen).
* ``unigram``   — SentencePiece-style Unigram with a ``▁`` metaspace and a BOS token (like Gemma).
* ``wordlevel`` — one id per whitespace-separated word or punctuation mark.

Models use a larger ``initializer_range`` than real ones so that attention depends on content: at the
default 0.02, two random models attend almost uniformly and give near-identical scores.

:func:`save_tiny_gguf` writes a saved tiny Llama as a llama.cpp GGUF file (F32 or F16), for testing the
offline models' conversion (``scripts/offline_models.py``) on a real file.
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

from elusive.text.data import read_csv
from elusive.text.tags import strip_tags

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


GGUF_NAMES = {  # transformers' Llama parameter names -> llama.cpp's GGUF tensor names (per layer: blk.N.)
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def to_rope_pairs(weight, heads: int):
    """Reorder the rows of a q or k projection from transformers' rotary layout to GGUF's.

    transformers rotates dimension i of a head with dimension i + d/2 (``rotate_half``); llama.cpp rotates
    neighbours 2i and 2i + 1. So within each head the rows of the two halves are interleaved: GGUF row 2i is
    row i, GGUF row 2i + 1 is row i + d/2 (transformers undoes this when it loads a Llama GGUF).
    """
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def save_tiny_gguf(path: Path, model_dir: Path, tensor_type: str = "F32") -> Path:
    """Write the tiny Llama saved in ``model_dir`` (a :func:`save_tiny` folder with a byte-level BPE tokenizer) as
    a GGUF file, as llama.cpp lays one out: its hyper-parameters under ``llama.*``, the tokenizer as ``gpt2``
    (vocabulary, merges, token types, special token ids), and the weights under GGUF names with q and k in
    GGUF's rotary order (:func:`to_rope_pairs`).

    Args:
        path: The ``.gguf`` file to write.
        model_dir: The model folder.
        tensor_type: ``F32``, or ``F16`` for the matrices (norms stay F32, as llama.cpp keeps 1-D tensors).

    Returns:
        ``path``.
    """
    import json

    import gguf
    import numpy as np
    from transformers import AutoTokenizer

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(Path(model_dir).name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if tensor_type == "F32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    assert [i for _, i in vocab] == list(range(len(vocab))), "the vocabulary must be dense"
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in vocab])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for name in ("eos", "unk", "pad", "bos"):
        token_id = getattr(tokenizer, f"{name}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(False)

    def add(name: str, weight: torch.Tensor) -> None:
        array = weight.detach().numpy()
        writer.add_tensor(name, array.astype(np.float16) if tensor_type == "F16" and array.ndim == 2 else array)

    add("token_embd.weight", model.model.embed_tokens.weight)
    for i, layer in enumerate(model.model.layers):
        for hf_name, gguf_name in GGUF_NAMES.items():
            weight = layer.get_submodule(hf_name).weight
            if gguf_name in ("attn_q", "attn_k"):
                weight = to_rope_pairs(weight, heads if gguf_name == "attn_q" else kv_heads)
            add(f"blk.{i}.{gguf_name}.weight", weight)
    add("output_norm.weight", model.model.norm.weight)
    add("output.weight", model.lm_head.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(out: Path) -> None:
    """Build the tiny small/large pair used by ``experiment=cpu_tiny`` under ``out``."""
    root = Path(__file__).resolve().parents[2] / "data"
    tokenizer = train_tokenizer("bpe", corpus([root / "biography.csv", root / "biography_fewshot.csv", root / "prompts.csv"]))
    save_tiny(out / "small", "llama", tokenizer, layers=2, hidden=32, seed=1)
    save_tiny(out / "large", "llama", tokenizer, layers=3, hidden=48, seed=2)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/tiny"))
