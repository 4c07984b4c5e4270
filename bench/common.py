"""Shared helpers of the benchmarks: timing, peak memory, result tables, tiny models, machine facts.

Peak memory is the process's resident set size (RSS) high-water mark *above* the RSS at the start of the
measured block (after the model is loaded). On Linux the kernel's own high-water mark (``VmHWM``) is reset
by writing ``5`` to ``/proc/self/clear_refs`` and read back afterwards, which is exact; where that is not
allowed, a thread samples RSS with psutil every millisecond (it can miss very short spikes). Memory benches
run each method in a fresh subprocess (see :func:`run_worker`) so memory the allocator keeps after one
method cannot hide the next method's allocations.
"""

from __future__ import annotations

import atexit
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TQDM_DISABLE", "1")  # the library's progress bars would garble the tables

import psutil

_START_CPU = (time.monotonic(), psutil.cpu_times())


def other_cpu_share() -> tuple[float, float]:
    """CPU-seconds other processes used since this process started, and that as a share of all cores' time.

    System-wide busy time minus this process's and its children's: a contention gauge for the result.
    """
    wall0, cpu0 = _START_CPU
    cpu1 = psutil.cpu_times()
    busy = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("user", "nice", "system", "irq", "softirq", "steal")
               if hasattr(cpu1, f))
    own = psutil.Process().cpu_times()
    mine = own.user + own.system + own.children_user + own.children_system
    other = max(0.0, busy - mine)
    return other, other / max(1e-9, (time.monotonic() - wall0) * (os.cpu_count() or 1))


def quiet() -> None:
    """Silence progress bars (the library's tqdm, transformers' loading bars); tables stay readable."""
    from functools import partialmethod

    import tqdm
    import transformers

    tqdm.std.tqdm.__init__ = partialmethod(tqdm.std.tqdm.__init__, disable=True)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


quiet()

DEFAULT_MODEL = "models/qwen2.5-coder-0.5b"
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; return (wall seconds, its result)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_of(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Run ``fn`` ``repeat`` times; return the fastest wall time and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        seconds, result = timed(fn)
        best = min(best, seconds)
    return best, result


def matmul_flops(size: int = 2048, repeat: int = 3) -> float:
    """fp32 FLOP/s of one ``size``³ matrix product with torch on this machine (best of ``repeat``)."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up (thread pool, caches)
    seconds, _ = best_of(lambda: torch.mm(a, b), repeat)
    return 2 * size**3 / seconds


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


def rss() -> int:
    """Current resident set size of this process, bytes."""
    return psutil.Process().memory_info().rss


def trim_heap() -> None:
    """Collect garbage and ask glibc to return free heap pages to the OS (no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _read_hwm() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class PeakMemory:
    """Context manager: ``peak_above`` = highest RSS inside the block minus RSS at its start, bytes.

    Example::

        with PeakMemory() as mem:
            work()
        print(mem.peak_above / MIB)
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.start = 0
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        trim_heap()
        self.start = rss()
        self.peak = self.start
        self._hwm = _reset_hwm()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        hwm = _read_hwm() if self._hwm else None
        self.method = "VmHWM" if hwm is not None else "psutil sampling"
        if hwm is not None:
            self.peak = max(self.peak, hwm)

    @property
    def peak_above(self) -> int:
        return max(0, self.peak - self.start)


def run_worker(script: Path, args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process; return the JSON object on its last stdout line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {script.name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table.

    ``ratio`` is always "how many times better ours is" in the target's sense: ours/baseline for rates,
    baseline/ours for times, ours/baseline for memory (lower is better there; ``higher_is_better=False``).
    """

    what: str
    baseline: str
    ours: str
    ratio: float | None
    target: float | None
    higher_is_better: bool = True
    unit: str = "×"

    @property
    def status(self) -> str:
        if self.ratio is None or self.target is None:
            return "info"
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "PASS" if ok else "MISS"

    def cells(self) -> list[str]:
        if self.unit == "%":
            ratio = "" if self.ratio is None else f"{100 * self.ratio:.1f} %"  # 79.6 %, not a MISS shown as 80 %
            target = "" if self.target is None else f"{'≥' if self.higher_is_better else '≤'} {100 * self.target:.0f} %"
        else:
            ratio = "" if self.ratio is None else f"{self.ratio:.2f}×"
            target = "" if self.target is None else f"{'≥' if self.higher_is_better else '≤'} {self.target:g}×"
        return [self.what, self.baseline, self.ours, ratio, target, self.status]


HEADER = ["what", "baseline", "ours", "ratio", "target", "status"]


def format_table(rows: Iterable[Row]) -> str:
    """A markdown table of ``rows`` (also readable as plain text)."""
    lines = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(line[k]) for line in lines) for k in range(len(HEADER))]
    out = []
    for i, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def report(title: str, rows: list[Row], notes: list[str], json_path: str | None = None) -> None:
    """Print the machine, the table and the notes; optionally also write them as JSON."""
    info = machine_info()
    other, share = other_cpu_share()
    info["other_cpu_seconds"], info["other_cpu_share"] = round(other, 1), round(share, 3)
    notes = [*notes, (f"contention: other processes used {other:.0f} CPU-seconds during this run "
             f"({100 * share:.0f} % of the machine){'; ratios are unreliable' if share > 0.1 else ''}")]
    print(f"\n## {title}")
    print(f"{info['date']} · {info['cpu']} · {info['cores']} cores · torch {info['torch']} "
          f"({info['threads']} threads) · transformers {info['transformers']} · load avg {info['load_average']:.2f}\n")
    print(format_table(rows))
    for note in notes:
        print(f"- {note}")
    if json_path:
        payload = {"title": title, "machine": info, "notes": notes,
                   "rows": [dict(zip(HEADER, row.cells())) for row in rows]}
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def fmt_rate(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def fmt_seconds(value: float) -> str:
    return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"


def fmt_mib(value: float) -> str:
    return f"{value / MIB:,.0f} MiB" if value >= 10 * MIB else f"{value / MIB:.2f} MiB"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def add_model_args(parser, tiny_help: str = "") -> None:
    """``--model`` / ``--tiny`` / ``--json`` shared by every bench script."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true",
                        help="build a tiny random Llama with a BPE tokenizer (tests/helpers/tiny.py) and use it: seconds, any machine"
                        + (f"; {tiny_help}" if tiny_help else ""))
    parser.add_argument("--json", default=None, help="also write the table and notes to this JSON file")


_TINY_DIRS: dict[tuple[int, int], Path] = {}


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


def tiny_model(layers: int = 2, hidden: int = 64, heads: int = 4) -> str:
    """Build (once per process) a tiny random Llama with a byte-level BPE tokenizer; return its directory."""
    key = (layers, hidden)
    if key not in _TINY_DIRS:
        tiny = tests_tiny()
        build_model, corpus, train_tokenizer = tiny.build_model, tiny.corpus, tiny.train_tokenizer

        data = ROOT / "data"
        tokenizer = train_tokenizer("bpe", corpus([data / "biography.csv", data / "biography_fewshot.csv", data / "prompts.csv"]))
        out = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        model = build_model("llama", tokenizer, layers=layers, hidden=hidden, heads=heads, seed=0)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        _TINY_DIRS[key] = out
    return str(_TINY_DIRS[key])


def resolve_model(args) -> str:
    """The model directory to use: a tiny one with ``--tiny``, else ``--model`` (must exist)."""
    if args.tiny:
        return tiny_model()
    path = Path(args.model)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    if not path.exists():
        sys.exit(f"--model {args.model}: no such directory; run `make models`, or use --tiny")
    return str(path)


def non_embedding_parameters(model) -> int:
    """Parameters the base model (no LM head) multiplies with: everything except the token embeddings."""
    base = model.base_model
    embed = base.get_input_embeddings()
    embed_ids = {id(p) for p in embed.parameters()}
    return sum(p.numel() for p in base.parameters() if id(p) not in embed_ids)
