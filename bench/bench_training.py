"""Stage 4 benchmark: LoRA training, ours (elusive.training.stage.train) vs a plain HF Trainer run of the same config.

Both train the same LoRA (r=16, alpha=16, dropout 0, every linear layer but the LM head) with the same
hyper-parameters, seed, data order and texts (tags removed, EOS appended), one checkpoint per epoch.

Baseline: the plain Hugging Face recipe — tokenise, ``DataCollatorForLanguageModeling(mlm=False)`` (batches
padded to their longest text, pad positions masked from the loss), ``peft.get_peft_model``, ``Trainer``.

Ours: ``elusive.training.stage.train`` end to end (it also loads the model, writes TensorBoard logs and saves
the adapter).

Tokens/s counts real (non-pad) tokens over the training loop's wall time (``Trainer.train``). Both runs use
the same Trainer subclass that times the phases of the loop: batch fetch/collate, forward, backward
(``training_step`` minus forward), gradient clipping, optimizer step, logging and checkpoint saving.
Equivalence: the per-step training losses of the two runs must agree.

    python bench/bench_training.py                         # real model, 20 texts, batch 4: 5 steps
    python bench/bench_training.py --tiny --texts 16 --batch-size 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

# bench/ is a folder of scripts, not installed: run as `python bench/<x>.py`, Python puts bench/ first on the path,
# and `bench.common` (shared by every bench) needs the project root. The package itself comes from the install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from bench.common import Row, add_model_args, fmt_rate, report, resolve_model, timed

SPEED_TARGET = 1.0
PHASES = ("data", "forward", "backward", "clip", "optimizer", "log", "save")


class _OptimizerTimer(TrainerCallback):
    def __init__(self, phases):
        self.phases = phases
        self.start = 0.0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.phases["optimizer"] += time.perf_counter() - self.start


class TimedTrainer(Trainer):
    """A Trainer that records where the training loop's time goes (class attributes hold the last run)."""

    last_phases: ClassVar[dict[str, float]] = {}
    last_runtime: ClassVar[float] = 0.0
    last_losses: ClassVar[list[float]] = []
    last_positions: ClassVar[tuple[int, int]] = (0, 0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phases = defaultdict(float)
        self.positions = [0, 0]  # token positions fed (padded), of which real
        self.add_callback(_OptimizerTimer(self.phases))
        for quiet in (PrinterCallback, ProgressCallback):  # the loss lines would garble the table
            self.remove_callback(quiet)
        self._forward_start = 0.0
        self.model.register_forward_pre_hook(self._forward_begin)
        self.model.register_forward_hook(self._forward_end)

    def _forward_begin(self, *_):
        self._forward_start = time.perf_counter()

    def _forward_end(self, *_):
        self.phases["forward"] += time.perf_counter() - self._forward_start

    def _timed(self, phase, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.phases[phase] += time.perf_counter() - start

    def get_batch_samples(self, *args, **kwargs):
        return self._timed("data", super().get_batch_samples, *args, **kwargs)

    def training_step(self, model, inputs, *args, **kwargs):
        mask = inputs.get("attention_mask")
        if mask is not None:
            self.positions[0] += int(mask.numel())
            self.positions[1] += int(mask.sum())
        return self._timed("step", super().training_step, model, inputs, *args, **kwargs)

    def _clip_grad_norm(self, *args, **kwargs):
        return self._timed("clip", super()._clip_grad_norm, *args, **kwargs)

    def _save_checkpoint(self, *args, **kwargs):
        return self._timed("save", super()._save_checkpoint, *args, **kwargs)

    def log(self, *args, **kwargs):
        return self._timed("log", super().log, *args, **kwargs)

    def train(self, *args, **kwargs):
        start = time.perf_counter()
        result = super().train(*args, **kwargs)
        phases = dict(self.phases)
        phases["backward"] = phases.pop("step", 0.0) - phases.get("forward", 0.0)
        type(self).last_runtime = time.perf_counter() - start
        type(self).last_phases = phases
        type(self).last_losses = [h["loss"] for h in self.state.log_history if "loss" in h]
        type(self).last_positions = tuple(self.positions)
        return result


def make_dataset(n: int, folder: Path, seed: int = 0) -> Path:
    from elusive.text.biographies import biography_texts

    path = folder / "bios.csv"
    pd.DataFrame({"text": biography_texts(n, seed)}).to_csv(path, index=False, lineterminator="\n")
    return path


def hyper(args) -> dict:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 5e-4, "warmup_ratio": 0.1,
                "max_grad_norm": 1.0, "max_length": args.max_length, "seed": 0}


def run_ours(model: str, dataset: Path, out: Path, args, **extra) -> float:
    """``elusive.training.stage.train`` with the timing Trainer swapped in; returns the whole call's wall time."""
    from elusive.training import stage as training

    original = training.Trainer
    training.Trainer = TimedTrainer
    try:
        from elusive.core.config import TrainConfig

        cfg = TrainConfig(model=model, dataset=str(dataset), model_dir=str(out), logging_steps=1, device="cpu",
                          dtype="float32", **hyper(args), **extra)
        seconds, _ = timed(lambda: training.train(cfg))
    finally:
        training.Trainer = original
    return seconds


def run_baseline(model: str, dataset: Path, out: Path, args) -> float:
    """A plain HF Trainer + peft run of the same configuration."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, TrainingArguments

    from elusive.text.tags import strip_tags

    def run():
        h = hyper(args)
        tokenizer = AutoTokenizer.from_pretrained(model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        texts = [strip_tags(t) + tokenizer.eos_token for t in pd.read_csv(dataset, dtype=str)["text"]]
        enc = tokenizer(texts, truncation=True, max_length=h["max_length"])
        examples = [{"input_ids": ids} for ids in enc["input_ids"]]
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        torch.manual_seed(h["seed"])
        lm = get_peft_model(base, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             bias="none", task_type="CAUSAL_LM"))
        training_args = TrainingArguments(
            output_dir=str(out), num_train_epochs=h["epochs"], per_device_train_batch_size=h["batch_size"],
            learning_rate=h["learning_rate"], lr_scheduler_type="linear", warmup_steps=h["warmup_ratio"],
            max_grad_norm=h["max_grad_norm"], weight_decay=0.0, seed=h["seed"], data_seed=h["seed"],
            save_strategy="epoch", logging_steps=1, report_to="none", use_cpu=True, dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = TimedTrainer(model=lm, args=training_args, train_dataset=examples,
                               data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        trainer.train()

    seconds, _ = timed(run)
    return seconds


def real_tokens(model: str, dataset: Path, max_length: int) -> int:
    from elusive.core.models import load_tokenizer
    from elusive.text.tags import strip_tags

    tokenizer = load_tokenizer(model)
    texts = [strip_tags(t) + tokenizer.eos_token for t in pd.read_csv(dataset, dtype=str)["text"]]
    return sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])


def breakdown(phases: dict[str, float], runtime: float) -> str:
    parts = [f"{name} {phases.get(name, 0.0):.2f} s ({100 * phases.get(name, 0.0) / runtime:.0f} %)" for name in PHASES]
    other = runtime - sum(phases.get(name, 0.0) for name in PHASES)
    return ", ".join(parts + [f"other {other:.2f} s ({100 * other / runtime:.0f} %)"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--texts", type=int, default=20, help="biographies to train on")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--group-by-length", action="store_true",
                        help="also time ours with group_by_length=True (less padding; a different batch order)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each (order alternates: baseline first, then ours first, ...); the fastest loop counts")
    args = parser.parse_args(argv)
    model = resolve_model(args)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder = Path(tmp)
        dataset = make_dataset(args.texts, folder)
        tokens = real_tokens(model, dataset, args.max_length) * args.epochs
        # Warm-up: the first Trainer.train of a process pays seconds of one-time costs; pay them outside.
        warm_args = argparse.Namespace(**{**vars(args), "batch_size": 2, "max_length": 32, "epochs": 1})
        warm_dir = folder / "warm"
        warm_dir.mkdir()
        warm_data = make_dataset(2, warm_dir)
        run_baseline(model, warm_data, warm_dir / "baseline", warm_args)
        run_ours(model, warm_data, warm_dir / "ours", warm_args)
        runs = {"baseline": [], "ours": []}
        for k in range(max(1, args.repeat)):
            for name in (("baseline", "ours") if k % 2 == 0 else ("ours", "baseline")):
                run = run_baseline if name == "baseline" else run_ours
                total = run(model, dataset, folder / f"{name}{k}", args)
                runs[name].append((TimedTrainer.last_runtime, total, TimedTrainer.last_phases, TimedTrainer.last_losses,
                                   TimedTrainer.last_positions))
        if args.group_by_length:  # ours with length-grouped batches: less padding, another data order
            run_ours(model, dataset, folder / "grouped", args, group_by_length=True)
            grouped = (TimedTrainer.last_runtime, TimedTrainer.last_positions, TimedTrainer.last_losses)
        base_runtime, base_total, base_phases, base_losses, base_pos = min(runs["baseline"], key=lambda r: r[0])
        ours_runtime, ours_total, ours_phases, ours_losses, ours_pos = min(runs["ours"], key=lambda r: r[0])

    r_base, r_ours = tokens / base_runtime, tokens / ours_runtime
    rows = [Row(f"tokens/s in Trainer.train, {args.texts} texts, batch {args.batch_size}", fmt_rate(r_base, "tok/s"),
                fmt_rate(r_ours, "tok/s"), r_ours / r_base, SPEED_TARGET),
            Row("whole call (load, tokenise, train, save)", f"{base_total:.1f} s", f"{ours_total:.1f} s",
                base_total / ours_total, None)]
    if args.group_by_length:
        rows.append(Row("  ours with group_by_length=True (info)", fmt_rate(r_base, "tok/s"),
                        fmt_rate(tokens / grouped[0], "tok/s"), tokens / grouped[0] / r_base, None))
    same = len(base_losses) == len(ours_losses) and np.allclose(ours_losses, base_losses, rtol=1e-3, atol=1e-4)
    worst = max((abs(a - b) for a, b in zip(ours_losses, base_losses)), default=float("nan"))
    notes = [
        f"equivalence: {len(ours_losses)} step losses, max |ours − baseline| = {worst:.2e} → {'PASS' if same else 'FAIL'}",
        f"baseline loop {base_runtime:.2f} s: {breakdown(base_phases, base_runtime)}",
        f"ours loop {ours_runtime:.2f} s: {breakdown(ours_phases, ours_runtime)}",
        f"padding: baseline fed {base_pos[0]:,} positions ({base_pos[1]:,} real), ours {ours_pos[0]:,} ({ours_pos[1]:,} real)",
        *([(f"group_by_length=True fed {grouped[1][0]:,} positions ({grouped[1][1]:,} real), mean step loss "
           f"{np.mean(grouped[2]):.4f} vs {np.mean(ours_losses):.4f} (other batches, so not compared step by step)")]
          if args.group_by_length else []),
        f"ours outside the loop (load model/tokenizer, tokenise, LoRA wrap, save adapter): {ours_total - ours_runtime:.2f} s",
        (f"{tokens:,.0f} real tokens; model {model}, fp32, LoRA r=16 all-linear, lr 5e-4, epochs {args.epochs:g}; "
        f"loop times per run: baseline {', '.join(f'{r[0]:.2f}' for r in runs['baseline'])} s, "
        f"ours {', '.join(f'{r[0]:.2f}' for r in runs['ours'])} s"),
    ]
    report("Stage 4 — LoRA training", rows, notes, args.json)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
