"""A ``-m`` sweep checked whole before its first job runs: every job's settings and paths, and no two jobs
writing one output (called by the project's sweeper, ``hydra_plugins/elusive_sweeper``, through the script's
task; :mod:`elusive.core.cli`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from elusive.core.cli import fail, to_settings
from elusive.core.config import settings_fields
from elusive.core.errors import InputError
from elusive.core.outputs import PathsChecked, paths_only


def check_sweep(schema: type, task: Callable[[Any], Any], jobs: list[list[str]],
                load: Callable[[int], DictConfig]) -> None:
    """Check every job of a ``-m`` sweep before the first one runs (called by the project's sweeper).

    Each job's config is composed (``load(i)``, interpolations such as ``${alpha}`` or
    ``${hydra:runtime.output_dir}`` resolved as in the job), checked against every rule, and its stage is run up
    to its output checks (:func:`elusive.core.outputs.paths_only`: inputs against outputs, writable locations, and
    whatever the stage reads before that). Then no two jobs may write the same file or fill the same folder:
    the last job's would silently replace the others'.

    Raises:
        SystemExit: Status 2 after one ``error:`` line naming the key, the job(s) and the fix.
    """
    writers: dict[Path, tuple[int, str]] = {}  # each file or filled folder → the first job writing it, its key=value
    swept = {line.split("=", 1)[0] for job in jobs for line in job if any(line not in other for other in jobs)}

    def shown(i: int) -> str:  # the job's swept values: what tells it from the others
        return f"{i} ({' '.join(o for o in jobs[i] if o.split('=', 1)[0] in swept) or 'the only job'})"

    for i, overrides in enumerate(jobs):
        job = f"sweep job {shown(i)}"
        try:
            settings = to_settings(load(i), schema)
            if not any(getattr(settings, f.name) is not None for f in settings_fields(schema)
                       if f.metadata.get("output")):
                continue  # writes nothing (summarize without output): nothing to check
            with paths_only() as planned:
                try:
                    task(settings)
                except PathsChecked:
                    pass
        except InputError as err:
            fail(f"{err} [{job}]")
        for out, path in planned:
            if out.folder and not out.fills:
                continue  # a root many runs share (run_experiment's out_root: each run in its own keyed folder)
            if path in writers:
                first, setting = writers[path]
                key = _swept_key(jobs[first], overrides)
                hint = f"; make it differ per job, e.g. {out.key}={out.value}_${{{key}}}" if key else ""
                fail(f"{setting}: sweep jobs {shown(first)} and {shown(i)} would both write {path}, and only the "
                     f"last would remain{hint}")
            writers[path] = (i, f"{out.key}={out.value}")


def _swept_key(a: list[str], b: list[str]) -> str | None:
    """A key whose value differs between two jobs' overrides (the first such), to put into an output path."""
    for x, y in zip(a, b):
        if x != y:
            return x.split("=", 1)[0].lstrip("+~")
    return None
