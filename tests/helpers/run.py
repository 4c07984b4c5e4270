"""Running the project's top-level scripts from tests, as a user would (a subprocess) or in this process."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]  # the project root
DATA = ROOT / "data"


def run_script(script: str, *overrides: str, cwd: Path = ROOT, hydra_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, with Hydra overrides; its run folder goes to ``hydra_dir``."""
    args = [sys.executable, str(ROOT / script), *overrides]
    if hydra_dir is not None:
        args.append(f"hydra.run.dir={hydra_dir}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_in_process(script: str, overrides: list[str], capsys) -> tuple[int, str]:
    """Run the script as ``__main__`` with ``sys.argv`` set, as ``python script ...`` would; return status and stderr."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures logging for the run: restore it after
    status = 0
    with mock.patch.object(sys, "argv", [str(ROOT / script), *overrides]):
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exited:
            status = exited.code
        finally:
            GlobalHydra.instance().clear()
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return status, capsys.readouterr().err
