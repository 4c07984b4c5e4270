"""What produced a result: library versions, the code's git commit and the machine, recorded beside results."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "numpy", "tokenizers", "safetensors")
ROOT = Path(__file__).resolve().parents[2]  # the project root


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide the numbers (None when one is not installed)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version() -> dict[str, str | bool] | None:
    """The git commit of this project and whether its tracked files have uncommitted changes, or None
    outside a git checkout (or without git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), or ``unknown``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def numpy_simd() -> str:
    """The best SIMD target numpy dispatches to on this CPU (e.g. ``AVX512_SKX``, ``X86_V3``), honouring
    ``NPY_DISABLE_CPU_FEATURES``; ``baseline`` when none of its dispatch targets is available."""
    try:  # numpy's own record of what it found on this CPU (numpy >= 2: numpy._core)
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # pragma: no cover - numpy 1.x
        return "unknown"
    usable = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]
    return usable[-1] if usable else "baseline"


def machine() -> dict[str, object]:
    """Where a result was computed: CPU model, the SIMD level torch and numpy use, threads, platform.

    The same seed gives the same bytes on one machine; on another CPU, torch, numpy and bitsandbytes may take
    other kernels, so every record says which machine produced it.
    """
    record: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy_simd": numpy_simd(),
    }
    try:
        import torch

        record["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            record["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # stages that only read files run without torch
        pass
    return record


def record_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a record names it: relative to the working directory (the project root, where every script
    runs) when it lies inside it, so records committed with a result read the same on every machine; else
    absolute. Symlinks are not resolved (the path the user gave is the one recorded)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return str(absolute)
