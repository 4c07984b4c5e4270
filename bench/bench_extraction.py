"""Stage 1 benchmark: attention extraction, ours (elusive.attention.scores.score_texts) vs the released code's method.

Baseline (the released code's method, re-written here): one text at a time (batch 1), the full causal LM
forward (LM head included) with ``output_attentions=True``, every layer's [1, H, n, n] attention kept,
``torch.stack``-ed into one [L, 1, H, n, n] tensor and averaged over layers and heads; the per-token score
is then taken from the averaged n×n matrix.

Ours: ``score_texts`` — base model only (no LM head), attention computed per block of 128 queries against
only the keys each block may see and reduced to [B, n] at once (``elusive.attention.kernel.BLOCKED``), texts batched
by length.

Measures tokens/s at each ``--lengths`` (``--texts`` texts each), peak RSS above the loaded model at
``--memory-length`` (each method in a fresh subprocess), and FLOP/s as a fraction of a 2048³ fp32 matmul
measured in the same run. FLOPs counted = 2 × non-embedding parameters of the base model × tokens + the
attention matmuls 4 × layers × n² × hidden (full n×n, as eager attention computes it). The LM head the
baseline also runs is *not* counted (it is not needed for the scores).

    python bench/bench_extraction.py                      # real model, 2 texts × 512 and 1 × 1,024 tokens
    python bench/bench_extraction.py --tiny --lengths 64 128 --texts 2 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# bench/ is a folder of scripts, not installed: run as `python bench/<x>.py`, Python puts bench/ first on the path,
# and `bench.common` (shared by every bench) needs the project root. The package itself comes from the install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.common import (
    MIB,
    PeakMemory,
    Row,
    add_model_args,
    fmt_mib,
    fmt_rate,
    matmul_flops,
    non_embedding_parameters,
    report,
    resolve_model,
    rss,
    run_worker,
    timed,
)

SPEED_TARGETS = {512: 1.3, 1024: 1.6}
MEMORY_TARGET = 0.25
FLOP_TARGET = 0.80


def make_token_ids(tokenizer, length: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` token-id lists of exactly ``length`` tokens, each from consecutive tag-free biographies."""
    from elusive.text.biographies import biography_texts
    from elusive.text.tags import strip_tags

    per_text = max(4, length // 20)  # a biography is >= ~50 tokens with real tokenizers; extend if short
    out = []
    start = 0
    while len(out) < count:
        n_people = per_text
        while True:
            bios = [strip_tags(t) for t in biography_texts(start + n_people, seed)[start:]]
            ids = tokenizer(" ".join(bios))["input_ids"]
            if len(ids) >= length:
                break
            n_people *= 2
        out.append(ids[:length])
        start += n_people
    return out


def load(model_dir: str):
    from elusive.core.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device="cpu", dtype="float32", attn_implementation="eager")
    return model, tokenizer


@torch.no_grad()
def baseline_scores(model, ids: list[int], aggregate: str = "received") -> np.ndarray:
    """The released code's method for one text (batch 1): full forward, all attentions stacked, then averaged."""
    out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    stacked = torch.stack(out.attentions)  # [L, 1, H, n, n]: every layer's attention, kept and copied
    mean = stacked.mean(dim=0).mean(dim=1)[0]  # [n, n], averaged over layers, then heads
    n = mean.shape[0]
    if aggregate == "received":  # mean over the query rows i >= j of column j
        return (mean.sum(dim=0) / torch.arange(n, 0, -1, dtype=mean.dtype)).numpy()
    return (mean.sum(dim=1) / torch.arange(1, n + 1, dtype=mean.dtype)).numpy()  # the released row sums


def baseline_all(model, texts: list[list[int]], aggregate: str = "received") -> list[np.ndarray]:
    return [baseline_scores(model, ids, aggregate) for ids in texts]


def ours_all(model, tokenizer, texts: list[list[int]], aggregate: str = "received", batch_size: int = 8) -> list[np.ndarray]:
    """Our stage 1 on pre-tokenised texts (``score_texts`` only reads ``input_ids``)."""
    from elusive.attention.scores import score_texts, select_layers
    from elusive.text.tokens import Encoded

    n_layers = model.config.get_text_config().num_hidden_layers
    encoded = [
        Encoded(input_ids=np.asarray(ids, dtype=np.int64), char_spans=np.full((len(ids), 2), -1, dtype=np.int64),
                ranked=np.ones(len(ids), dtype=bool))
        for ids in texts
    ]
    result = score_texts(model, encoded, select_layers(None, n_layers), aggregate, batch_size, tokenizer.pad_token_id)
    return result[0] if isinstance(result, tuple) else result  # newer versions also return focus rows


def compare(ours: list[np.ndarray], base: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-6) -> tuple[bool, float]:
    """(all close, largest absolute difference) between two lists of per-token scores."""
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, base))
    same = all(a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol) for a, b in zip(ours, base))
    return same, worst


def extraction_flops(model, length: int) -> float:
    """2 × non-embedding parameters × n + 4 × layers × n² × (heads × head_dim), for one text of n tokens."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * length**2 * config.num_attention_heads * head_dim
    return 2 * non_embedding_parameters(model) * length + attention


def breakdown(model, tokenizer, texts: list[list[int]], aggregate: str, batch_size: int) -> dict[str, float]:
    """One extra run of ours, timing where the time goes: attention projections (q/k/v/o), the attention
    core (QKᵀ, mask, softmax, ·V; with blocked attention also our reduction, done inside it), our per-layer
    reduction in the eager fallback's hook, the MLPs, and everything else."""
    import time

    from elusive.attention import scores as attention

    spent = {"attention projections": 0.0, "attention core": 0.0, "reduction (hook, eager fallback only)": 0.0,
             "MLP": 0.0}
    starts: dict[int, float] = {}
    handles = []

    def watch(module, key):
        def pre(mod, *_):
            starts[id(mod)] = time.perf_counter()

        def post(mod, *_):
            spent[key] += time.perf_counter() - starts[id(mod)]

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    for module in attention.attention_modules(model):
        watch(module, "attention core")  # minus projections and reduction, below
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if hasattr(module, name):
                watch(getattr(module, name), "attention projections")
    for name, module in model.named_modules():
        if name.endswith(".mlp"):
            watch(module, "MLP")
    original = attention.reduce_attention

    def timed_reduce(*a, **k):
        start = time.perf_counter()
        out = original(*a, **k)
        spent["reduction (hook, eager fallback only)"] += time.perf_counter() - start
        return out

    attention.reduce_attention = timed_reduce
    try:
        start = time.perf_counter()
        ours_all(model, tokenizer, texts, aggregate, batch_size)
        total = time.perf_counter() - start
    finally:
        attention.reduce_attention = original
        for handle in handles:
            handle.remove()
    # the attention module's post-hook runs before our reduction hook; projections are inside the module
    spent["attention core"] -= spent["attention projections"]
    spent["other (embedding, norms, residuals, overhead)"] = total - sum(spent.values())
    spent["total"] = total
    return spent


def worker(args) -> None:
    """Fresh process: load the model, then report the peak RSS above it during one extraction."""
    import json

    model, tokenizer = load(args.model)
    ids = make_token_ids(tokenizer, args.memory_length, 1)
    warm = make_token_ids(tokenizer, 16, 1)

    def run(texts):
        if args.worker == "ours":
            ours_all(model, tokenizer, texts, args.aggregate, args.batch_size)
        else:
            baseline_all(model, texts, args.aggregate)

    # Weights load memory-mapped: make every page resident first, so paging in weights (e.g. the LM head
    # only the baseline runs) is not counted as extraction memory; a short warm-up run pays one-time set-up.
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    run(warm)
    loaded = rss()
    with PeakMemory() as mem:
        run(ids)
    print(json.dumps({"peak_above": mem.peak_above, "model_rss": loaded, "method": mem.method}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024], help="text lengths in tokens")
    parser.add_argument("--texts", type=int, nargs="+", default=[2, 1], help="texts per length (one value or one per length)")
    parser.add_argument("--memory-length", type=int, default=None, help="length for the peak-memory row (default: the largest)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--batch-size", type=int, default=8, help="our batch size (texts per forward)")
    parser.add_argument("--aggregate", choices=["received", "released"], default="received")
    parser.add_argument("--repeat", type=int, default=1, help="timing repeats; the fastest counts")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                        help="skip the extra run of ours that times attention, reduction and MLPs")
    parser.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = resolve_model(args)
    if args.memory_length is None:
        args.memory_length = max(args.lengths)
    if args.worker:
        worker(args)
        return 0
    counts = args.texts * len(args.lengths) if len(args.texts) == 1 else args.texts
    if len(counts) != len(args.lengths):
        parser.error("--texts: give one count or one per --lengths value")

    model, tokenizer = load(args.model)
    warm = make_token_ids(tokenizer, 16, 1)
    baseline_all(model, warm, args.aggregate)
    ours_all(model, tokenizer, warm, args.aggregate, args.batch_size)

    rows, notes = [], []
    equal = []
    for length, count in zip(args.lengths, counts):
        texts = make_token_ids(tokenizer, length, count)
        tokens = length * count
        t_base = t_ours = float("inf")
        peak = matmul_flops()  # this VM's speed drifts: compare with matmuls measured around ours' runs
        for k in range(max(1, args.repeat)):  # alternate the order; the fastest run of each counts
            for name in (("baseline", "ours") if k % 2 == 0 else ("ours", "baseline")):
                if name == "baseline":
                    seconds, s_base = timed(lambda texts=texts: baseline_all(model, texts, args.aggregate))
                    t_base = min(t_base, seconds)
                else:
                    seconds, s_ours = timed(lambda texts=texts: ours_all(model, tokenizer, texts, args.aggregate, args.batch_size))
                    t_ours = min(t_ours, seconds)
                    peak = max(peak, matmul_flops())
        same, worst = compare(s_ours, s_base)
        equal.append(same)
        notes.append(f"{length} tokens × {count}: scores {'EQUAL' if same else 'DIFFERENT'} (max |ours − baseline| = {worst:.2e})")
        r_base, r_ours = tokens / t_base, tokens / t_ours
        rows.append(Row(f"tokens/s, {length}-token texts ×{count}", fmt_rate(r_base, "tok/s"), fmt_rate(r_ours, "tok/s"),
                        r_ours / r_base, SPEED_TARGETS.get(length)))
        flops = extraction_flops(model, length) * count
        rows.append(Row(f"FLOP/s ÷ fp32 matmul ({peak / 1e9:.0f} GFLOP/s), {length} tok",
                        f"{flops / t_base / 1e9:.1f} GFLOP/s", f"{flops / t_ours / 1e9:.1f} GFLOP/s",
                        flops / t_ours / peak, FLOP_TARGET, unit="%"))
    if args.breakdown:
        longest = max(args.lengths)
        texts = make_token_ids(tokenizer, longest, counts[args.lengths.index(longest)])
        spent = breakdown(model, tokenizer, texts, args.aggregate, args.batch_size)
        total = spent.pop("total")
        notes.append(f"ours at {longest} tokens, where the time goes ({total:.2f} s): "
                     + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in spent.items()))
    if not args.no_memory:
        script = Path(__file__).resolve()
        common = ["--model", args.model, "--memory-length", str(args.memory_length), "--batch-size", str(args.batch_size),
                  "--aggregate", args.aggregate]
        base = run_worker(script, [*common, "--worker", "baseline"])
        ours = run_worker(script, [*common, "--worker", "ours"])
        rows.append(Row(f"peak RSS above loaded model, {args.memory_length} tok", fmt_mib(base["peak_above"]),
                        fmt_mib(ours["peak_above"]), ours["peak_above"] / max(base["peak_above"], 1), MEMORY_TARGET,
                        higher_is_better=False))
        notes.append(f"memory: fresh process per method, loaded model RSS {base['model_rss'] / MIB:,.0f} MiB, "
                     f"peak by {ours['method']}")
    notes.append("matmul = best of 3 × 2048³ torch.mm, the fastest of the measurements before and after each run of "
                 "ours at that length (this machine's speed drifts); timings: fastest of --repeat, order alternating")
    config = model.config.get_text_config()
    notes.append(f"model {args.model}: {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
                 f"{non_embedding_parameters(model) / 1e6:.0f} M non-embedding parameters, fp32, eager attention; "
                 f"aggregate={args.aggregate}, ours batch_size={args.batch_size}")
    notes.append(f"equivalence: {'PASS' if all(equal) else 'FAIL'} (ours and baseline give the same scores)")
    report("Stage 1 — attention extraction", rows, notes, args.json)
    return 0 if all(equal) else 1


if __name__ == "__main__":
    sys.exit(main())
