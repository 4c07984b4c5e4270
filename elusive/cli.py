"""What the five thin top-level scripts share: path resolution, seeding and error reporting."""

from __future__ import annotations

import importlib.abc
import importlib.util
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
    """Seed Python, NumPy and torch so a rerun with the same seed gives the same outputs.

    torch is seeded now if it is already imported, else as soon as it is (:class:`_SeedTorchOnImport`): a
    stage that never uses torch (stage 3 with a dump) does not pay ~1.5 s to import it just to seed it.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SeedTorchOnImport)]
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    else:
        sys.meta_path.insert(0, _SeedTorchOnImport(seed))


class _SeedTorchOnImport(importlib.abc.MetaPathFinder):
    """Import hook that calls ``torch.manual_seed(seed)`` right after ``torch`` is first imported, then leaves."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def find_spec(self, name, path, target=None):  # noqa: D102 (importlib protocol)
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # what the import would have found without this hook
        if spec is None or spec.loader is None:
            return spec
        execute, seed = spec.loader.exec_module, self.seed

        def exec_module(module) -> None:
            execute(module)
            module.manual_seed(seed)

        spec.loader.exec_module = exec_module
        return spec


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
