"""Stage 2: the attention difference ``large − small`` between two dumps of the same texts and tokens."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from elusive.attention.dump import AttentionDump, dump_path
from elusive.core.config import ContrastAttentionConfig, check
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.outputs import Output, check_outputs
from elusive.core.provenance import record_path
from elusive.text.align import project, word_spans
from elusive.text.data import load_texts

log = logging.getLogger(__name__)


def same_tokenizer(large: AttentionDump, small: AttentionDump) -> bool:
    """True when both dumps were tokenised with the same vocabulary (then they are compared token by token)."""
    return large.metadata.get("vocab_sha256") == small.metadata.get("vocab_sha256")


def check_compatible(
    large: AttentionDump, small: AttentionDump, large_name: str, small_name: str, cross_tokenizer: bool = False
) -> None:
    """Refuse two dumps that do not describe the same texts (and, with one tokenizer, the same tokens).

    Raises:
        InputError: Different datasets, different tokenizers without ``cross_tokenizer``, or with one
            tokenizer different text prefixes or token ids; the message names both files.
    """
    both = f"attn_dump_large={large_name} and attn_dump_small={small_name}"
    if Path(large_name).resolve() == Path(small_name).resolve() or (
            large.metadata.get("model") == small.metadata.get("model")
            and large.metadata.get("data_sha256") == small.metadata.get("data_sha256")):
        raise InputError(f"{both} are the same model's scores: their difference is 0 everywhere; give the larger "
                         "and the smaller model's dumps")
    for key, what in (("aggregate", "aggregate"), ("layers_requested", "layers"), ("dtype", "dtype"),
                      ("text_prefix", "text_prefix"), ("quant", "quant")):
        a, b = large.metadata.get(key), small.metadata.get(key)
        if a is not None and b is not None and a != b:
            raise InputError(f"{both} were extracted with different {what} ({a} vs {b}); extract both with the same "
                             f"{what}")
    if large.metadata.get("dataset_sha256") != small.metadata.get("dataset_sha256"):
        raise InputError(
            f"{both} come from different datasets ({large.metadata.get('dataset')!r} vs {small.metadata.get('dataset')!r}); "
            "run save_attention.py on the same dataset for both models"
        )
    if large.n_texts != small.n_texts:
        raise InputError(f"{both} hold {large.n_texts} and {small.n_texts} texts; extract both without max_texts")
    if not same_tokenizer(large, small):
        if not cross_tokenizer:
            raise InputError(
                f"{both} were made with different tokenizers ({large.metadata.get('tokenizer')!r} vs "
                f"{small.metadata.get('tokenizer')!r}); extract both with models of one family, or add "
                "cross_tokenizer=true to contrast them word by word"
            )
        if "word" in (large.metadata.get("unit"), small.metadata.get("unit")):
            raise InputError(f"{both}: a word-level contrast cannot be contrasted again; use two save_attention dumps")
        return  # different tokenizers: aligned through words (see elusive.text.align)
    if not (np.array_equal(large.offsets, small.offsets) and np.array_equal(large.input_ids, small.input_ids)):
        raise InputError(f"{both} hold different token ids; extract both with the same tokenizer and text_prefix")


def check_order(large: AttentionDump, small: AttentionDump, large_name: str, small_name: str) -> None:
    """Refuse a "large" dump whose model is the smaller one (the two dumps swapped); warn when it cannot be told.

    Larger means more parameters, counted from the safetensors headers of the models' folders the dumps name
    (when both are still on this machine); else more layers, which a dump records when it averaged all of them
    (``layers=null``). Equal sizes, or neither known, give a warning: nothing here can tell which is larger.

    Raises:
        InputError: ``attn_dump_large`` names the smaller model; the message says to swap the two.
    """
    both = f"attn_dump_large={large_name} and attn_dump_small={small_name}"
    swap = f"swap them: attn_dump_large={small_name} attn_dump_small={large_name}"
    sizes = [parameter_count(dump.metadata.get("model", "")) for dump in (large, small)]
    what = "parameters"
    if None in sizes:
        sizes, what = [layer_count(dump) for dump in (large, small)], "layers"
    if None in sizes:
        log.warning("%s: cannot tell which model is larger (the models are not on this machine and the dumps did not "
                    "average every layer); make sure attn_dump_large is the larger model's", both)
        return
    if sizes[0] < sizes[1]:
        raise InputError(f"{both}: the \"large\" model has fewer {what} than the small one ({sizes[0]:,} vs "
                         f"{sizes[1]:,}), so large − small would be reversed; {swap}")
    if sizes[0] == sizes[1]:
        log.warning("%s: both models have %s %s; the contrast is meant to be larger − smaller", both,
                    f"{sizes[0]:,}", what)


def layer_count(dump: AttentionDump) -> int | None:
    """The number of layers of the dump's model when it averaged all of them (``layers=null``), else None."""
    try:
        if json.loads(dump.metadata.get("layers_requested", "null")) is not None:
            return None
        layers = json.loads(dump.metadata.get("layers", "null"))
    except ValueError:
        return None
    return len(layers) if isinstance(layers, list) and layers else None


def parameter_count(model: str) -> int | None:
    """The number of parameters in ``model``'s safetensors files (read from their headers only), or None when the
    model is not on this machine or not in safetensors."""
    from safetensors import safe_open

    from elusive.core.identity import model_files

    if not model:
        return None
    try:
        _, weights = model_files(model)
        files = [w for w in weights if w.suffix == ".safetensors"]
        if not files:
            return None
        total = 0
        for path in files:
            with safe_open(str(path), framework="numpy") as handle:
                for name in handle.keys():
                    total += int(np.prod(handle.get_slice(name).get_shape(), dtype=np.int64))
        return total
    except (OSError, ValueError, RuntimeError):
        return None


def check_not_constant(scores: np.ndarray, offsets: np.ndarray, both: str) -> None:
    """Refuse a difference that is constant within every text (0 everywhere for two dumps of one model, even
    stored under two paths): stage 3 would rank every token by ties, i.e. by position, under the name of a
    contrast.

    Raises:
        InputError: Naming both dumps and ``augment_type=position`` (the honest name for that ranking).
    """
    lengths = np.diff(offsets)
    starts = offsets[:-1][lengths > 0]
    if len(scores) == 0:
        return
    spread = np.maximum.reduceat(scores, starts) - np.minimum.reduceat(scores, starts)
    if not spread.any():
        what = "constant within every text" if scores.any() else "0 everywhere: the two dumps hold the same scores"
        raise InputError(f"{both}: their difference is {what} (one model under two paths?), so stage 3 would rank "
                         "tokens by position alone; give the larger and the smaller model's dumps (a ranking by "
                         "position is augment_type=position)")


def contrast_attention(cfg: ContrastAttentionConfig) -> Path:
    """Run stage 2: write ``{cfg.attn_diff}.safetensors`` with ``large − small`` per text and token.

    With one tokenizer the difference is taken token by token. With two different tokenizers (same
    dataset; only with ``cross_tokenizer``, as mixing tokenizers is usually a mistake), both dumps are
    projected onto the words of each text (see :mod:`elusive.text.align`) and the difference is stored per
    word (metadata ``unit=word``); data_augmentation maps it onto the tokens of whatever tokenizer it uses.

    Args:
        cfg: The two dumps, the output and ``cross_tokenizer`` (:class:`elusive.core.config.ContrastAttentionConfig`).

    Returns:
        The path written.
    """
    check(cfg)
    attn_dump_large, attn_dump_small, attn_diff = Path(cfg.attn_dump_large), Path(cfg.attn_dump_small), Path(cfg.attn_diff)
    cross_tokenizer = cfg.cross_tokenizer
    check_outputs("contrast_attention", [Output("attn_diff", cfg.attn_diff, dump_path(attn_diff))],
                  {"attn_dump_large": dump_path(attn_dump_large), "attn_dump_small": dump_path(attn_dump_small)})
    large = AttentionDump.load(attn_dump_large, "attn_dump_large")
    small = AttentionDump.load(attn_dump_small, "attn_dump_small")
    check_compatible(large, small, str(attn_dump_large), str(attn_dump_small), cross_tokenizer)
    check_order(large, small, str(attn_dump_large), str(attn_dump_small))
    if not same_tokenizer(large, small):
        log.info("the two dumps use different tokenizers: contrasting them word by word through character offsets")
        return save_word_diff(large, small, attn_dump_large, attn_dump_small, attn_diff)
    metadata = {
        **{k: v for k, v in large.metadata.items() if k not in ("format",)},
        "kind": "attention_diff",
        "large": record_path(dump_path(attn_dump_large)),
        "small": record_path(dump_path(attn_dump_small)),
        "model": json.dumps({"large": large.metadata.get("model"), "small": small.metadata.get("model")}),
        "aggregate": large.metadata.get("aggregate", ""),  # the same in both (checked)
        "layers": json.dumps({"large": large.metadata.get("layers"), "small": small.metadata.get("layers")}),
        "dtype": large.metadata.get("dtype", ""),
    }
    extra = {}
    if "token_field" in large.extra and "token_field" in small.extra:
        extra["token_field"] = large.extra["token_field"]
    focus_keys = ("focus_offsets", "focus_text", "focus_query", "focus_field")
    if all(k in large.extra and k in small.extra for k in ("focus_rows", *focus_keys)):
        if all(np.array_equal(large.extra[k], small.extra[k]) for k in focus_keys):
            extra.update({k: large.extra[k] for k in focus_keys})
            extra["focus_rows"] = (large.extra["focus_rows"] - small.extra["focus_rows"]).astype(np.float32)
    scores = (large.scores - small.scores).astype(np.float32)
    check_not_constant(scores, large.offsets,
                       f"attn_dump_large={attn_dump_large} and attn_dump_small={attn_dump_small}")
    diff = AttentionDump(
        scores=scores,
        offsets=large.offsets,
        input_ids=large.input_ids,
        char_spans=large.char_spans,
        ranked=large.ranked & small.ranked,
        metadata=metadata,
        extra=extra,
    )
    path = diff.save(attn_diff)
    log.info("wrote %s: %d texts, %d tokens (mean |diff| %.3g)", path, diff.n_texts, len(diff.scores), float(np.abs(diff.scores).mean()))
    return path


def save_word_diff(large: AttentionDump, small: AttentionDump, large_name: Path, small_name: Path, attn_diff: Path) -> Path:
    """Contrast two dumps of different tokenizers word by word and save a word-level dump."""
    dataset = large.metadata.get("dataset", "")
    if not Path(dataset).is_file() or sha256_file(dataset) != large.metadata.get("dataset_sha256"):
        raise InputError(
            f"attn_dump_large={large_name}: aligning two tokenizers needs the texts, but its dataset {dataset} is missing "
            "or has changed; re-extract both dumps from the current file"
        )
    texts = load_texts(dataset, "dataset")
    scores, spans, offsets = [], [], [0]
    for i in range(large.n_texts):
        words = word_spans(texts[i])
        per_model = []
        for dump in (large, small):
            sl = dump.text_slice(i)
            per_model.append(project(dump.scores[sl], dump.char_spans[sl], words, dump.ranked[sl]))
        scores.append(per_model[0] - per_model[1])
        spans.append(words)
        offsets.append(offsets[-1] + len(words))
    n = offsets[-1]
    if n:
        check_not_constant(np.concatenate(scores).astype(np.float32), np.asarray(offsets, dtype=np.int64),
                           f"attn_dump_large={large_name} and attn_dump_small={small_name}")
    metadata = {
        "kind": "attention_diff",
        "unit": "word",
        "dataset": large.metadata.get("dataset", ""),
        "dataset_sha256": large.metadata.get("dataset_sha256", ""),
        "n_texts": str(large.n_texts),
        "tokenizer": json.dumps({"large": large.metadata.get("tokenizer"), "small": small.metadata.get("tokenizer")}),
        "vocab_sha256": "",
        "text_prefix": json.dumps(""),
        "large": record_path(dump_path(large_name)),
        "small": record_path(dump_path(small_name)),
        "model": json.dumps({"large": large.metadata.get("model"), "small": small.metadata.get("model")}),
        "aggregate": large.metadata.get("aggregate", ""),
    }
    diff = AttentionDump(
        scores=np.concatenate(scores).astype(np.float32) if n else np.zeros(0, np.float32),
        offsets=np.asarray(offsets, dtype=np.int64),
        input_ids=np.full(n, -1, dtype=np.int64),
        char_spans=np.concatenate(spans) if n else np.zeros((0, 2), np.int64),
        ranked=np.ones(n, dtype=bool),
        metadata=metadata,
    )
    path = diff.save(attn_diff)
    log.info("wrote %s: %d texts, %d words (word-level contrast of two tokenizers)", path, diff.n_texts, n)
    return path
