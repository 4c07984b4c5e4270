"""What produced a result: library versions and the code's git commit, recorded beside evaluation results."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "numpy", "tokenizers", "safetensors")
ROOT = Path(__file__).resolve().parent.parent


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
