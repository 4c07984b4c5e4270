"""A ``-m`` sweep checked whole before its first job runs: every job's settings and paths, and no two jobs
writing one output.

Hydra's basic sweeper runs the jobs; :class:`SweepCheck`, a Hydra callback every script registers for a ``-m``
run (``hydra.callbacks.sweep_check``, added by :mod:`elusive.core.cli`), checks them first, through Hydra's public
APIs only: at ``on_multirun_start`` it lists the jobs as the basic sweeper will (:func:`sweep_jobs`: the
sweep parameters of ``hydra.sweeper.params``, then the command line's, expanded by Hydra's override parser
into their cartesian product), composes each job's config as the launcher will (:func:`job_config`, with
``hydra.compose``) and hands them to :func:`check_sweep`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from elusive.core.cli import fail, to_settings
from elusive.core.config import SCHEMAS, settings_fields
from elusive.core.errors import InputError
from elusive.core.outputs import PathsChecked, paths_only

log = logging.getLogger(__name__)

try:  # Hydra is always installed with this project; the import is kept out of the way of the functions below
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class SweepCheck(Callback):
    """Hydra callback: before the first job of a ``-m`` sweep, :func:`check_sweep` on every job (see the module
    docstring). Only for the script that registered its task (:data:`elusive.core.cli.TASKS`) and Hydra's basic
    sweeper (another sweeper chooses its jobs while it runs)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.check(config)
        except Exception:  # Hydra would turn it into a warning and run the sweep unchecked: stop instead
            log.exception("the sweep check failed before the first job")
            raise SystemExit(1) from None

    def check(self, config: DictConfig) -> None:
        """Check every job of the multirun whose master config is ``config`` (exits with status 2 on bad input)."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import HydraException

        from elusive.core.cli import TASKS

        name = str(OmegaConf.select(config, "hydra.job.config_name"))
        if name not in TASKS or name not in SCHEMAS:
            return
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        if not sweeper.endswith(".BasicSweeper"):
            log.warning("sweep check skipped: hydra.sweeper is %s, whose jobs are not known before they run", sweeper)
            return
        params = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}
        task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        try:
            jobs = sweep_jobs(params, task, GlobalHydra.instance().config_loader())
        except HydraException as err:  # Hydra cannot expand it: its sweeper stops the same way, and says why
            log.debug("sweep check: the overrides do not expand (%s); Hydra's sweeper reports it", err)
            return
        before = HydraConfig.instance().cfg
        try:
            check_sweep(SCHEMAS[name], TASKS[name], jobs, lambda i: job_config(config, i, jobs[i]))
        finally:
            HydraConfig.instance().cfg = before  # each job sets its own when it runs


def sweep_jobs(params: dict[str, Any], overrides: list[str], config_loader: Any = None) -> list[list[str]]:
    """Every job of a basic-sweeper sweep, in the order it runs them: each job's overrides (``key=value``).

    Args:
        params: ``hydra.sweeper.params`` (a preset's sweep, e.g. ``{"method": "plain,attention_diff"}``).
        overrides: The command line's overrides (``hydra.overrides.task``); a key given in both takes the command
            line's values, at the place of the preset's.
        config_loader: Hydra's config loader (for sweeps over config groups such as ``glob(*)``), or None.

    Raises:
        hydra.errors.HydraException: An override Hydra cannot read, or a sweep that is not a list of values.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(
        [f"{key}={value}" for key, value in params.items()] + list(overrides))
    choices: dict[str, list[str]] = {}  # key → its values as key=value, in the order keys first appear
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(f"{override.input_line}: a range or interval, not a list of values")
    return [list(job) for job in itertools.product(*choices.values())]


def job_config(master: DictConfig, idx: int, overrides: list[str]) -> DictConfig:
    """Job ``idx``'s task config as Hydra's launcher composes it for the job (Hydra's job number, id and output
    folder set, so ``${hydra:job.num}`` and ``${hydra:runtime.output_dir}`` resolve as in the job).

    Raises:
        InputError: Hydra cannot compose it (e.g. a preset that does not exist).
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    hydra_overrides = OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False)
    try:
        cfg = compose(config_name=str(master.hydra.job.config_name), overrides=[*hydra_overrides, *overrides],
                      return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        reason = str(err).splitlines()[0]
        named = [o for o in overrides if "=" in o and o.split("=", 1)[1] and o.split("=", 1)[1] in reason]
        raise InputError(f"{named[0] if named else ' '.join(overrides)}: Hydra cannot compose this job ({reason}); "
                         "fix the value (--help lists the keys and the config groups' files)") from None
    OmegaConf.copy_cache(from_config=master, to_config=cfg)  # ${now:...} in the sweep's folder: the same times
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
        cfg.hydra.job.num = idx
    HydraConfig.instance().set_config(cfg)
    output_dir = os.path.join(str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                              str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(cfg)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check_sweep(schema: type, task: Callable[[Any], Any], jobs: list[list[str]],
                load: Callable[[int], DictConfig]) -> None:
    """Check every job of a ``-m`` sweep before the first one runs.

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
