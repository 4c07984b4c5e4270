"""Quantised LoRA training on the CPU: peak memory and step time of fp32 vs quant=8bit vs quant=4bit.

Each setting trains with ``elusive.training.stage.train`` (LoRA r=16, alpha 16, every linear layer but the LM head,
lr 5e-4, batch 4 biographies of data/biography.csv, 1 epoch of ``(warm-up + steps) × batch`` texts) in a fresh
subprocess, so memory one setting's allocator keeps cannot hide another's. Baseline = fp32, ours = the
quantised setting; ratios are ours ÷ baseline for memory (lower is better) and baseline ÷ ours for step time.

* step time: mean wall time of the optimizer steps after the warm-up steps (Trainer callbacks
  ``on_step_begin`` → ``on_step_end``: forward, backward, clipping, optimizer).
* peak RSS, steps: the resident set high-water mark (``VmHWM``, reset by ``/proc/self/clear_refs`` when the
  first measured step begins) over the measured steps — what training needs resident.
* peak RSS, process: the high-water mark of the whole worker (loading, quantising, warm-up and steps).
* working set: the pages the measured steps touched (``Referenced`` in ``/proc/self/smaps_rollup`` after
  clearing the referenced bits with ``clear_refs`` when they begin), anonymous or file-backed. safetensors
  weights are memory-mapped: an fp32 model's weights are clean file pages, and loading with quant= reads
  every fp32 page to quantise it, so those pages count in RSS until the kernel needs the memory back (they
  are clean, so it can drop them without writing). The working set is what must stay resident to train.

quant=8bit/4bit also turn on gradient checkpointing (``prepare_model_for_kbit_training``, as on a GPU): the
info setting ``fp32+ckpt`` (fp32 with the same checkpointing) separates its cost from quantisation's. The
second model (``--large-model``, default the 1.5B) is run for a couple of steps per ``--large-settings`` to see
what fits in this machine's memory. A worker stops itself (and reports it) if the machine's available memory
falls under ``--guard`` GiB, so a setting that does not fit never takes the machine down with it.

    python bench/bench_quant.py                  # 0.5B: fp32, fp32+ckpt, 8bit, 4bit; 1.5B: fp32, 8bit
    python bench/bench_quant.py --tiny --steps 2 --warmup 1 --no-large
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/ is a folder of scripts, not installed: run as `python bench/<x>.py`, Python puts bench/ first on the path,
# and `bench.common` (shared by every bench) needs the project root. The package itself comes from the install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
import psutil

from bench.common import (
    MIB,
    ROOT,
    PeakMemory,
    Row,
    _read_hwm,
    add_model_args,
    fmt_mib,
    other_cpu_share,
    report,
    resolve_model,
    rss,
    run_worker,
    tiny_model,
)

SETTINGS = {"fp32": None, "fp32+ckpt": None, "8bit": "8bit", "4bit": "4bit"}
GIB = 1024 * MIB
DEFAULT_LARGE = "models/qwen2.5-coder-1.5b"


# --------------------------------------------------------------------------------------------------
# Worker: one setting in a fresh process
# --------------------------------------------------------------------------------------------------


def _memory_guard(limit: float, report_abort) -> None:
    """Stop the process when the machine's available memory falls under ``limit`` bytes."""

    def watch():
        while True:
            available = psutil.virtual_memory().available
            if available < limit:
                report_abort(f"available memory fell to {available / GIB:.1f} GiB (guard {limit / GIB:.1f} GiB)")
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _rollup(field: str) -> int:
    """A field of /proc/self/smaps_rollup, bytes."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _clear_referenced() -> None:
    """Clear the referenced bit of every page of this process: smaps' ``Referenced`` then counts the pages
    touched since (the working set), whether anonymous or mapped from a file."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("1")


def worker(args) -> None:
    """Train ``args.steps + args.warmup`` steps of setting ``args.worker``; print one JSON line of measurements."""
    import torch
    from transformers import TrainerCallback

    from elusive.training import stage as training

    started = time.perf_counter()
    vm = psutil.virtual_memory()
    others_used = vm.total - vm.available - rss()  # memory other processes held when this setting started

    def abort(reason: str) -> None:
        print(json.dumps({"aborted": reason, "elapsed": time.perf_counter() - started, "others_used": others_used}))
        sys.stdout.flush()
        os._exit(0)

    _memory_guard(args.guard * GIB, abort)
    measured: dict = {"step_times": [], "losses": []}
    mem = PeakMemory()

    class Measure(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kwargs):
            if state.global_step == args.warmup:  # the first measured step
                measured["before_steps"] = _read_hwm() or 0  # load + warm-up; the reset below forgets it
                measured["loaded_rss"] = rss()
                mem.__enter__()
                _clear_referenced()
            self.start = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step > args.warmup:
                measured["step_times"].append(time.perf_counter() - self.start)
            if state.global_step == args.warmup + args.steps:
                mem.__exit__(None, None, None)
                measured["working_set"] = _rollup("Referenced")
                measured["rss_anon"], measured["rss_file"] = _status_kib("RssAnon"), _status_kib("RssFile")

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                measured["losses"].append(float(logs["loss"]))

    class MeasuredTrainer(training.Trainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(Measure())

    training.Trainer = MeasuredTrainer
    if args.worker == "fp32+ckpt":  # the checkpointing quant= turns on, without quantisation
        wrap = training.get_peft_model

        def with_checkpointing(base, config):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
            return wrap(base, config)

        training.get_peft_model = with_checkpointing
    n_texts = args.batch_size * (args.warmup + args.steps)
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        dataset = Path(tmp) / "bios.csv"
        pd.read_csv(ROOT / "data" / "biography.csv").head(n_texts).to_csv(dataset, index=False)
        from elusive.core.config import TrainConfig

        training.train(TrainConfig(model=args.model, dataset=str(dataset), model_dir=str(Path(tmp) / "lora"), epochs=1,
                                   batch_size=args.batch_size, max_length=args.max_length,
                                   quant=SETTINGS[args.worker], device="cpu", dtype="float32", seed=0,
                                   logging_steps=1, report_to=[]))
    print(json.dumps({
        **measured,
        "peak_steps": mem.peak,
        "peak_process": max(measured.get("before_steps", 0), mem.peak, _read_hwm() or 0),
        "method": mem.method,
        "threads": torch.get_num_threads(),
        "others_used": others_used,
        "other_cpu_share": other_cpu_share()[1],
        "elapsed": time.perf_counter() - started,
    }))


# --------------------------------------------------------------------------------------------------
# Parent: run the settings, print the table
# --------------------------------------------------------------------------------------------------


def run_setting(model: str, setting: str, args, steps: int, warmup: int) -> dict:
    argv = ["--model", model, "--worker", setting, "--steps", str(steps), "--warmup", str(warmup),
            "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--guard", str(args.guard)]
    return run_worker(Path(__file__).resolve(), argv, timeout=4 * 3600)


def describe_run(name: str, setting: str, r: dict) -> str:
    if "aborted" in r:
        return f"{name} {setting}: ABORTED after {r['elapsed']:.0f} s — {r['aborted']}"
    times = ", ".join(f"{t:.2f}" for t in r["step_times"])
    return (f"{name} {setting}: steps {times} s; losses {', '.join(f'{x:.4f}' for x in r['losses'])}; "
            f"RSS at the first measured step {fmt_mib(r['loaded_rss'])}, at the end anon {fmt_mib(r['rss_anon'])} + "
            f"file-backed {fmt_mib(r['rss_file'])}; whole worker {r['elapsed']:.0f} s; other processes held "
            f"{r['others_used'] / GIB:.1f} GiB and used {100 * r['other_cpu_share']:.0f} % of the CPU meanwhile")


def compare_rows(name: str, base: dict, ours: dict, setting: str) -> list[Row]:
    if "aborted" in base or "aborted" in ours:
        cells = ["aborted" if "aborted" in r else fmt_mib(r["peak_process"]) for r in (base, ours)]
        return [Row(f"{name} {setting}: peak RSS, process", *cells, None, None)]
    rows = [
        Row(f"{name} {setting}: peak RSS, training steps", fmt_mib(base["peak_steps"]), fmt_mib(ours["peak_steps"]),
            ours["peak_steps"] / base["peak_steps"], None, higher_is_better=False),
        Row(f"{name} {setting}: peak RSS, process (load + steps)", fmt_mib(base["peak_process"]),
            fmt_mib(ours["peak_process"]), ours["peak_process"] / base["peak_process"], None, higher_is_better=False),
    ]
    rows.append(Row(f"{name} {setting}: memory touched by the steps (working set)", fmt_mib(base["working_set"]),
                    fmt_mib(ours["working_set"]), ours["working_set"] / base["working_set"], None,
                    higher_is_better=False))
    b, o = sum(base["step_times"]) / len(base["step_times"]), sum(ours["step_times"]) / len(ours["step_times"])
    rows.append(Row(f"{name} {setting}: s per step", f"{b:.2f} s", f"{o:.2f} s", b / o, None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, "also the --large-model run uses a (larger) tiny model")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="settings for --model (fp32 is the baseline and always runs)")
    parser.add_argument("--large-model", default=DEFAULT_LARGE, help="second, larger model (default: %(default)s)")
    parser.add_argument("--large-settings", nargs="+", default=["fp32", "8bit"], choices=list(SETTINGS))
    parser.add_argument("--no-large", action="store_true", help="skip the --large-model runs")
    parser.add_argument("--steps", type=int, default=4, help="measured optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="steps before measuring")
    parser.add_argument("--large-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--guard", type=float, default=1.5,
                        help="a worker stops when the machine's available memory falls under this many GiB")
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.steps < 1 or args.warmup < 1 or args.large_steps < 1:
        parser.error("--steps, --warmup and --large-steps must be >= 1 (the first step pays one-time costs)")
    model = resolve_model(args)
    runs = [("main", model, ["fp32", *[s for s in args.settings if s != "fp32"]], args.steps)]
    if not args.no_large:
        if args.tiny:
            large = tiny_model(layers=3, hidden=96)
        else:
            large = resolve_model(argparse.Namespace(tiny=False, model=args.large_model))
        runs.append(("large", large, ["fp32", *[s for s in args.large_settings if s != "fp32"]], args.large_steps))

    rows, notes, total = [], [], psutil.virtual_memory().total
    for kind, path, settings, steps in runs:
        name = Path(path).name if not args.tiny else f"tiny-{kind}"
        results = {s: run_setting(path, s, args, steps, args.warmup) for s in settings}
        for setting in settings[1:]:
            rows += compare_rows(name, results["fp32"], results[setting], setting)
        for setting in settings:
            notes.append(describe_run(name, setting, results[setting]))
            if kind == "large":
                r = results[setting]
                fits = "aborted (did not fit beside the other processes)" if "aborted" in r else (
                    f"peak {r['peak_process'] / GIB:.1f} GiB of this machine's {total / GIB:.0f} GiB: "
                    + ("fits" if r["peak_process"] < 24 * GIB else "does NOT fit") + " within 24 GiB")
                notes.append(f"{name} {setting}: {fits}")
    notes.append(
        f"LoRA r=16 all-linear, lr 5e-4, batch {args.batch_size} biographies (data/biography.csv, max_length "
        f"{args.max_length}), {args.warmup} warm-up step(s) then {args.steps} measured ({args.large_steps} for the "
        "large model); 8bit/4bit/fp32+ckpt with gradient checkpointing; 4bit = NF4 computing in float32; "
        "peak RSS by VmHWM (fresh process per setting)")
    report("Quantised LoRA training on the CPU (baseline = fp32, ours = the setting named)", rows, notes, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
