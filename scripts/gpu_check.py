"""The GPU check: run it once on a machine before a sweep there; offline (never run on a GPU here, so not timed).

    make gpu-check                                      # = python scripts/gpu_check.py (device auto: the GPU)
    python scripts/gpu_check.py --device cpu            # what a CPU can check; CUDA-only rows say SKIPPED
    python scripts/gpu_check.py --tiny-only --device cpu    # tiny models built on the spot only (seconds; the tests)

It runs the paths a paper-scale sweep takes — bitsandbytes kernels, short 8-bit and 16-bit LoRA epochs, evaluation
merged vs unmerged and at batch 1 vs 8, stage 1 blocked vs the model's own attention weights in float32 and bf16 on
Qwen2.5-Coder 0.5B and a tiny Gemma 2 (soft-capping, sliding window), 8-bit Gemma generation — on the converted
models under ``models/`` (``make models``) and on tiny models built here (tests/helpers/tiny.py), and prints one table:
PASS, FAIL or SKIPPED (why). Exit status 1 when a check failed. ``--json`` also writes the rows to a file.

Not research code (it lives outside the package); it calls the package's own stage functions.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from elusive.core.config import EvaluateConfig, TrainConfig
from elusive.core.models import check_quant, load_model, load_tokenizer, resolve_device

log = logging.getLogger("gpu_check")

ROOT = Path(__file__).resolve().parent.parent
QWEN = ROOT / "models" / "qwen2.5-coder-0.5b"
GEMMA = ROOT / "models" / "gemma-3-270m"
DATA = ROOT / "data"
LLAMA3_70B = {"layers": 80, "hidden": 8192, "intermediate": 28672, "heads": 64, "kv_heads": 8, "vocab": 128256}
"""Meta-Llama-3-70B's config.json (the sizes the memory arithmetic needs)."""


def tests_tiny() -> ModuleType:
    """tests/helpers/tiny.py, the test suite's tiny models and tokenizers (test fixtures, not in the package), from its file."""
    import importlib.util

    if "helpers.tiny" in sys.modules:  # under pytest it is imported already
        return sys.modules["helpers.tiny"]
    if "tests_tiny" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tests_tiny", ROOT / "tests" / "helpers" / "tiny.py")
        sys.modules["tests_tiny"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["tests_tiny"])
    return sys.modules["tests_tiny"]


@dataclasses.dataclass
class Row:
    check: str
    status: str  # PASS, FAIL or SKIPPED (reason)
    result: str = ""


# --------------------------------------------------------------------------------------------------
# Memory arithmetic of the 70B route (docs/scaling_out.md; computed, not measured)
# --------------------------------------------------------------------------------------------------


def route_memory(cfg: dict, lora_r: int = 16, gpus: int = 8) -> dict:
    """Bytes (in GB = 1e9) of a Llama-architecture model's weights in bf16 and in 8 bit as train.py holds them, and of
    its LoRA training state (r on every linear projection; fp32 weights, gradients and Adam's two moments).

    In 8 bit the linear projections take 1 byte per weight (bitsandbytes' per-row scales, < 0.1 %, left out); the
    embeddings, LM head and norms stay 16-bit on load, and ``prepare_model_for_kbit_training`` upcasts them to fp32.
    """
    h, i, layers = cfg["hidden"], cfg["intermediate"], cfg["layers"]
    kv = h // cfg["heads"] * cfg["kv_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q, k, v, o, gate, up, down
    linear = layers * sum(a * b for a, b in shapes)
    other = 2 * cfg["vocab"] * h + (2 * layers + 1) * h  # embeddings, LM head (untied), norms
    lora = layers * lora_r * sum(a + b for a, b in shapes)
    memory = {
        "parameters": linear + other,
        "weights_bf16_gb": 2 * (linear + other) / 1e9,
        "weights_8bit_gb": (linear + 4 * other) / 1e9,
        "inference_8bit_gb": (linear + 2 * other) / 1e9,  # stages 1 and 5: nothing upcast
        "lora_parameters": lora,
        "lora_state_gb": 16 * lora / 1e9,
    }
    memory["multi_8bit_per_gpu_gb"] = (memory["weights_8bit_gb"] + memory["lora_state_gb"]) / gpus
    memory["fsdp_bf16_per_gpu_gb"] = (memory["weights_bf16_gb"] + memory["lora_state_gb"]) / gpus
    memory["fsdp_host_ram_gb"] = gpus * memory["weights_bf16_gb"]  # every process loads the whole model first
    return memory


# --------------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------------


class Checker:
    """Runs the checks on one device and collects the table's rows."""

    def __init__(self, device: str, work: Path, tiny_only: bool):
        self.target = resolve_device(device)
        self.device = device if device != "auto" else str(self.target)
        self.cuda = self.target.type == "cuda"
        self.work, self.tiny_only = work, tiny_only
        self.rows: list[Row] = []

    def run(self, name: str, check: Callable[[], tuple[bool, str]]) -> None:
        """One row: PASS when ``check`` returns True, FAIL when it returns False or raises."""
        started = time.time()
        try:
            ok, result = check()
        except Exception as err:  # noqa: BLE001 - a failing check is a row of the table, not the end of the run
            log.debug("%s", traceback.format_exc())
            ok, result = False, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        self.rows.append(Row(name, "PASS" if ok else "FAIL", f"{result} ({time.time() - started:.0f} s)"))
        log.info("%s: %s", name, self.rows[-1].status)

    def skip(self, name: str, reason: str) -> None:
        self.rows.append(Row(name, f"SKIPPED ({reason})"))

    # --- models -------------------------------------------------------------------------------------

    def tiny_models(self) -> dict[str, Path]:
        """A tiny Llama (byte-level BPE, like Llama 3 and Qwen) and a tiny Gemma 2 (Unigram with BOS), saved here."""
        corpus, save_tiny, train_tokenizer = (getattr(tests_tiny(), name) for name in
                                              ("corpus", "save_tiny", "train_tokenizer"))
        texts = corpus([DATA / "biography.csv", DATA / "biography_fewshot.csv", DATA / "prompts.csv"])
        return {"tiny llama": save_tiny(self.work / "llama", "llama", train_tokenizer("bpe", texts), layers=2, seed=1),
                "tiny gemma2": save_tiny(self.work / "gemma2", "gemma2", train_tokenizer("unigram", texts), layers=2,
                                         seed=3)}

    def biographies(self, n: int, copies: int = 1) -> Path:
        """The first ``n`` biographies of data/biography.csv, each ``copies`` times, as a CSV here."""
        with open(DATA / "biography.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:n]
        path = self.work / f"bios_{n}x{copies}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows * copies)
        return path

    # --- 1. bitsandbytes ------------------------------------------------------------------------------

    def bitsandbytes(self, quant: str) -> tuple[bool, str]:
        check_quant(quant, self.target)
        return True, f"a {quant} 64×64 layer ran on {self.target}"

    # --- 2. a short LoRA epoch -------------------------------------------------------------------------

    def train(self, model: Path, quant: str | None, dtype: str, name: str, texts: int) -> tuple[bool, str]:
        from elusive.training.stage import train

        peak = _peak_start(self.cuda)
        out = train(TrainConfig(model=str(model), dataset=str(self.biographies(texts // 2, 2)), quant=quant,
                                model_dir=str(self.work / name), device=self.device, dtype=dtype, epochs=1,
                                batch_size=4, learning_rate=2e-3, logging_steps=1, report_to=[], seed=0))
        meta = json.loads((out / "train_meta.json").read_text())
        losses = [float(line.split(",")[2]) for line in (out / "loss.csv").read_text().splitlines()[1:]]
        compute = meta["compute"]
        finite = all(math.isfinite(x) for x in losses)
        falling = len(losses) >= 2 and sum(losses[-2:]) < sum(losses[:2])
        want_bf16 = self.cuda and compute["dtype"] == "bfloat16"
        ok = (finite and falling and compute["n_gpu"] <= 1 and compute["effective_batch_size"] == 4
              and compute["bf16_autocast"] == want_bf16)
        return ok, (f"bf16 autocast {compute['bf16_autocast']}, weights {compute['dtype']}, n_gpu {compute['n_gpu']}, "
                    f"effective batch {compute['effective_batch_size']}, {meta['global_step']} steps, loss "
                    f"{losses[0]:.3f} → {losses[-1]:.3f}, {_peak_text(self.cuda, peak)}")

    # --- 3. evaluation -----------------------------------------------------------------------------------

    def questions(self, model: Path, people: int, shots: int):
        from elusive.evaluation.stage import check_inputs

        return check_inputs(EvaluateConfig(model=str(model), output_dir=str(self.work / "unused"), shots=shots,
                                           eval_data=str(self.biographies(people)), max_new_tokens=6,
                                           fewshot_data=str(DATA / "biography_fewshot.csv"),
                                           prompts=str(DATA / "prompts.csv")))

    def merged_vs_unmerged(self, model: Path, adapter: Path, dtype: str, people: int, shots: int) -> tuple[bool, str]:
        """Which way evaluation applies the adapter (merged only into float32 weights), and how many predictions
        merging would change."""
        from peft import PeftModel

        from elusive.evaluation.adapters import load_for_eval
        from elusive.evaluation.generation import answer_questions

        questions = self.questions(model, people, shots)
        lm, tok = load_for_eval(str(model), adapter, self.device, dtype, None)
        kept = "unmerged" if isinstance(lm, PeftModel) else "merged"
        other = PeftModel.from_pretrained(load_model(str(model), device=self.device, dtype=dtype), str(adapter)).eval()
        if kept == "unmerged":
            other = other.merge_and_unload()
        a = answer_questions(lm, tok, questions, 6, 8, False)
        b = answer_questions(other, tok, questions, 6, 8, False)
        differ = sum(x != y for x, y in zip(a, b))
        base_dtype = (lm.base_model.model if kept == "unmerged" else lm).dtype
        expected = "merged" if base_dtype == torch.float32 else "unmerged"
        return kept == expected, (f"{base_dtype}: evaluation keeps the adapter {kept}; merged vs unmerged: {differ} of "
                                  f"{len(questions)} predictions differ")

    def batch_sizes(self, model: Path, adapter: Path, dtype: str, people: int, shots: int) -> tuple[bool, str]:
        from elusive.evaluation.adapters import load_for_eval
        from elusive.evaluation.generation import answer_questions

        questions = self.questions(model, people, shots)
        lm, tok = load_for_eval(str(model), adapter, self.device, dtype, None)
        one = answer_questions(lm, tok, questions, 6, 1, False)
        eight = answer_questions(lm, tok, questions, 6, 8, False)
        differ = sum(x != y for x, y in zip(one, eight))
        exact = not self.cuda and str(lm.dtype) == "torch.float32"
        # exact (CPU, fp32): none may differ; elsewhere the count is what the run keys allow for (a gross bound)
        ok = differ == 0 if exact else differ <= len(questions) // 4
        return ok, f"{dtype} ({lm.dtype}): batch 1 vs 8, {differ} of {len(questions)} predictions differ"

    # --- 4. stage 1 ---------------------------------------------------------------------------------------

    def attention(self, model: Path, dtype: str, texts: int) -> tuple[bool, str]:
        """Blocked attention vs the eager weights the model returns (forward hooks), one right-padded batch."""
        from elusive.attention.scores import score_batch
        from elusive.text.data import load_texts
        from elusive.text.tokens import encode_many

        tok = load_tokenizer(str(model))
        lm = load_model(str(model), device=self.device, dtype=dtype, attn_implementation="eager")
        encoded = encode_many(tok, load_texts(self.biographies(texts)))
        width = max(len(e.input_ids) for e in encoded)
        ids = torch.full((len(encoded), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, : len(e.input_ids)] = torch.from_numpy(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
        layers = list(range(lm.config.get_text_config().num_hidden_layers))
        ids, mask = ids.to(self.target), mask.to(self.target)
        peak = _peak_start(self.cuda)
        blocked, _ = score_batch(lm, ids, mask, layers, blocked=True)
        blocked_peak = _peak_bytes(self.cuda, peak)
        peak = _peak_start(self.cuda)
        eager, _ = score_batch(lm, ids, mask, layers, blocked=False)
        eager_peak = _peak_bytes(self.cuda, peak)
        real = mask.bool()
        scale = float(eager[real].abs().max())
        diff = float((blocked - eager)[real].abs().max()) / scale
        tolerance = 1e-5 if lm.dtype == torch.float32 else 5e-2
        text = (f"{lm.dtype}: largest difference blocked − eager {diff:.1e} of the largest score, "
                f"{len(encoded)} × {width} tokens")
        if self.cuda:
            text += f"; peak of the batch: blocked +{blocked_peak / 2**20:.0f} MiB, eager +{eager_peak / 2**20:.0f} MiB"
            intermediate = getattr(lm.config.get_text_config(), "intermediate_size", None)
            if "qwen" in str(model).lower() and intermediate:
                memory = route_memory(LLAMA3_70B)
                scaled = blocked_peak * LLAMA3_70B["intermediate"] / intermediate / 1e9
                text += (f"; 70B (computed): {memory['inference_8bit_gb']:.0f} GB of 8-bit weights + this batch × the "
                         f"MLP width ratio ≈ {scaled:.1f} GB")
        return diff <= tolerance, text

    # --- 5. 8-bit Gemma generation ----------------------------------------------------------------------

    def gemma_8bit(self, model: Path) -> tuple[bool, str]:
        tok = load_tokenizer(str(model), padding_side="left")
        lm = load_model(str(model), device=self.device, quant="8bit")
        prompts = ["Liam Thompson was born on", "He had a professional role at"]
        enc = tok(prompts, return_tensors="pt", padding=True).to(self.target)
        with torch.no_grad():
            logits = lm(**enc).logits
            out = lm.generate(**enc, max_new_tokens=6, do_sample=False, output_scores=True,
                              return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        finite = bool(torch.isfinite(logits[enc["attention_mask"].bool()]).all()) and all(
            bool(torch.isfinite(s).any(dim=-1).all()) and not bool(torch.isnan(s).any()) for s in out.scores)
        return finite, (f"logits and {len(out.scores)} generated steps free of NaN/inf ({lm.dtype} non-quantised "
                        "weights)")


def _peak_start(cuda: bool) -> int:
    """Start measuring a peak: the CUDA memory allocated now (0 on the CPU)."""
    if not cuda:
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_bytes(cuda: bool, start: int) -> int:
    """Peak CUDA memory allocated since :func:`_peak_start`, above what was allocated then (0 on the CPU)."""
    return torch.cuda.max_memory_allocated() - start if cuda else 0


def _peak_text(cuda: bool, start: int) -> str:
    return f"peak +{_peak_bytes(True, start) / 2**20:.0f} MiB" if cuda else "peak memory: CUDA only"


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_checks(checker: Checker) -> list[Row]:
    """Every check on ``checker``'s device: the converted Qwen/Gemma where present (not with --tiny-only), and tiny
    models built on the spot."""
    c = checker
    for quant in ("8bit", "4bit"):
        c.run(f"bitsandbytes {quant} kernels ({c.target.type})", lambda q=quant: c.bitsandbytes(q))
    tiny = c.tiny_models()
    real = not c.tiny_only and (QWEN / "config.json").is_file()
    if not c.tiny_only and not real:
        c.skip("Qwen2.5-Coder 0.5B checks", f"{QWEN.relative_to(ROOT)} not found: run make models-qwen")
    model = QWEN if real else tiny["tiny llama"]
    label = "Qwen 0.5B" if real else "tiny llama"
    texts, people, shots = (16, 4, 5) if real else (12, 4, 1)
    c.run(f"LoRA epoch, 8-bit, {label}", lambda: c.train(model, "8bit", "auto", "lora_8bit", texts))
    sixteen = "bfloat16" if c.cuda else "float32"
    c.run(f"LoRA epoch, no quant, {sixteen}, {label}", lambda: c.train(model, None, sixteen, "lora_16", texts))
    if not c.cuda:
        c.skip("LoRA epoch with bf16 autocast", "bf16 autocast is used on CUDA only")
    adapter = c.work / "lora_16"
    if (adapter / "adapter_config.json").is_file():
        for dtype in dict.fromkeys(["float32", sixteen]):
            c.run(f"evaluation merged vs unmerged, {dtype}, {label}",
                  lambda d=dtype: c.merged_vs_unmerged(model, adapter, d, people, shots))
        c.run(f"evaluation batch 1 vs 8, {sixteen}, {label}",
              lambda: c.batch_sizes(model, adapter, sixteen, people, shots))
    else:
        c.skip("evaluation checks", "no adapter: the unquantised LoRA epoch failed")
    for name, path in ([("Qwen 0.5B", QWEN)] if real else []) + [("tiny gemma2", tiny["tiny gemma2"])]:
        for dtype in ("float32", "bfloat16"):
            c.run(f"stage 1 blocked vs eager, {dtype}, {name}", lambda p=path, d=dtype: c.attention(p, d, 8))
    gemmas = [("tiny gemma2", tiny["tiny gemma2"])]
    if not c.tiny_only and (GEMMA / "config.json").is_file():
        gemmas.append(("Gemma 3 270M", GEMMA))
    for name, path in gemmas:
        c.run(f"8-bit generation, {name}", lambda p=path: c.gemma_8bit(p))
    if torch.cuda.device_count() < 2:
        c.skip("two GPUs: LoRA weights, released scores, n_gpu", "fewer than 2 GPUs (pytest tests/scripts/test_gpu_paths.py "
               "runs them where there are)")
    else:
        c.run("two GPUs: LoRA weights, released scores, n_gpu", two_gpu_tests)
    memory = route_memory(LLAMA3_70B)
    c.rows.append(Row("70B route memory (computed, not measured)", "PASS",
                      f"8-bit weights {memory['weights_8bit_gb']:.1f} GB + LoRA state "
                      f"{memory['lora_state_gb']:.1f} GB: "
                      f"device=multi over 8 GPUs ≈ {memory['multi_8bit_per_gpu_gb']:.1f} GB each"))
    return c.rows


def two_gpu_tests() -> tuple[bool, str]:
    """The ``cuda2`` tests of tests/scripts/test_gpu_paths.py (tensors and models on two real GPUs)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "two_real or two_gpus or two_real_gpus",
                           str(ROOT / "tests" / "test_gpu_paths.py")], cwd=ROOT, capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout.strip().splitlines() or ["no output"])[-1]


@contextlib.contextmanager
def stdout_to_stderr():
    """Everything the checks print goes to stderr, at the file-descriptor level (the tokenizer trainer writes
    from Rust), so stdout holds only the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def table(rows: list[Row]) -> str:
    """The rows as one markdown table."""
    lines = ["| check | status | result |", "|---|---|---|"]
    lines += [f"| {r.check} | {r.status} | {r.result} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cpu or cuda[:N]")
    parser.add_argument("--tiny-only", action="store_true", help="only tiny models built on the spot (seconds)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work, stdout_to_stderr():
        rows = run_checks(Checker(args.device, Path(work), args.tiny_only))
    print(table(rows))
    failed = sum(r.status == "FAIL" for r in rows)
    print(f"\n{len(rows)} checks on {args.device}: {sum(r.status == 'PASS' for r in rows)} passed, {failed} failed, "
          f"{sum(r.status.startswith('SKIPPED') for r in rows)} skipped ({time.time() - started:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
