"""What the five thin top-level scripts share: path resolution, seeding and error reporting."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from elusive.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """Resolve ``path`` against the directory the command was run from (Hydra may change the cwd)."""
    if path is None or str(path) == "":
        return None
    from hydra.utils import to_absolute_path  # local import: tests call this without Hydra running

    try:
        return Path(to_absolute_path(str(path)))
    except ValueError:  # Hydra not initialised (library use): resolve against the current directory
        return Path(path).absolute()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a rerun with the same seed gives the same outputs."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def require(cfg: DictConfig) -> None:
    """Exit with status 2 and a one-line message if a mandatory key (``???`` in the YAML) was not given."""
    missing = [key for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        hint = " ".join(f"{key}=<...>" for key in missing)
        print(f"error: missing required key(s) {', '.join(missing)}; add {hint} to the command line", file=sys.stderr)
        sys.exit(2)


def run(stage: Callable[..., T], cfg: DictConfig, **kwargs: Any) -> T:
    """Log the full config, call ``stage(**kwargs)``, and turn an :class:`InputError` into exit status 2.

    Args:
        stage: The library function that does the stage's work.
        cfg: The composed Hydra config, logged first so every run records its settings.
        **kwargs: Plain arguments for ``stage``.

    Returns:
        Whatever ``stage`` returns.
    """
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        return stage(**kwargs)
    except InputError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
