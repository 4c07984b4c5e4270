"""Hydra's basic sweeper, composing each *shape* of job once instead of every job twice.

Hydra's ``BasicSweeper`` composes every job's config before launching a batch (``validate_batch_is_legal``),
and its launcher composes every job again to run it. Composing is ~0.08 s a job on 2 cores — more than stage 3
itself on the paper's 100 biographies — so a 9-setting sweep of alpha and beta paid 18 compositions
(bench/bench_startup.py). Here jobs that differ only in *plain values* (``alpha=0.5`` vs ``alpha=0.7``: a new
scalar for a key the config already holds as a scalar) share a shape; the first job of a shape is composed
as Hydra does, and each other job is that config with its own values applied by Hydra's own override
function, ``hydra.overrides.task`` and ``hydra.job.override_dirname`` set as Hydra sets them. Anything else —
config groups (``+experiment=...``), ``hydra.*`` keys, ``+key``/``~key``, dict or list values — is part of
the shape, so a job that changes it is composed from scratch. Validation, batching, launching and outputs
are the basic sweeper's; tests/test_sweeper.py checks every job's config against Hydra's own composition.

Before the first job runs, every job is composed as the launcher will compose it (its number, id and
``hydra.runtime.output_dir`` set, so ``${hydra:runtime.output_dir}`` resolves as in the job) and handed to the
script's ``check_sweep`` (:func:`elusive.core.sweeps.check_sweep`): a job with a bad value or path, or two jobs
writing one file, stop the sweep before anything is written.

No ``from __future__ import annotations``: Hydra's plugin scan executes this module before registering it in
``sys.modules``, where ``dataclasses`` would look string annotations up.
"""

import copy
import dataclasses
import os
from typing import Any, Optional

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, ValueNode, open_dict, read_write


@dataclasses.dataclass
class ElusiveSweeperConf:
    _target_: str = "hydra_plugins.elusive_sweeper.elusive_sweeper.ElusiveSweeper"
    max_batch_size: Optional[int] = None  # jobs per batch (None: all at once), as in the basic sweeper
    params: Optional[dict[str, str]] = None  # sweep parameters from the config, as in the basic sweeper


ConfigStore.instance().store(group="hydra/sweeper", name="elusive", node=ElusiveSweeperConf, provider="elusive")


class ElusiveSweeper(BasicSweeper):
    """``BasicSweeper`` whose validation and launcher compose through :class:`ShapeCachingLoader`."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        loader = ShapeCachingLoader(hydra_context.config_loader)
        self.task_function = task_function
        super().setup(hydra_context=dataclasses.replace(hydra_context, config_loader=loader),
                      task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        check = getattr(self.task_function, "check_sweep", None)
        if check is not None:
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            overrides = parser.parse_overrides([*self._parse_config(), *arguments])
            jobs = [list(job) for batch in self.split_arguments(overrides, None) for job in batch]
            check(jobs, lambda i: self.job_config(i, jobs[i]))
        return super().sweep(arguments)

    def job_config(self, idx: int, overrides: list[str]) -> DictConfig:
        """Job ``idx``'s task config as the basic launcher and ``run_job`` make it (HydraConfig set to the job's)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        output_dir = os.path.join(str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                                  str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(cfg)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        return task_cfg


class ShapeCachingLoader:
    """A config loader whose ``load_sweep_config`` composes one job per shape and derives the others.

    Every other attribute is the wrapped loader's. The configs it returns are fresh copies (the launcher
    writes the job number into them).
    """

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._parser = OverridesParser.create()
        self._first: dict[tuple[str, ...], DictConfig] = {}  # shape → its first job's composed config
        self._jobs: dict[tuple[str, ...], DictConfig] = {}  # a job's overrides → its config

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        return getattr(self._loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        job = tuple(sweep_overrides)
        if job not in self._jobs:
            self._jobs[job] = self._compose(master_config, list(sweep_overrides))
        return copy.deepcopy(self._jobs[job])

    def _compose(self, master: DictConfig, overrides: list[str]) -> DictConfig:
        parsed = self._parser.parse_overrides(overrides)
        plain = [_is_plain(o, master) for o in parsed]
        shape = tuple(o.key_or_group if p else o.input_line for o, p in zip(parsed, plain))
        if shape not in self._first:
            self._first[shape] = self._loader.load_sweep_config(master, overrides)
            return self._first[shape]
        cfg = copy.deepcopy(self._first[shape])
        ConfigLoaderImpl._apply_overrides_to_config([o for o, p in zip(parsed, plain) if p], cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            naming = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=naming.kv_sep, item_sep=naming.item_sep, exclude_keys=naming.exclude_keys)
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return cfg


def _is_plain(override: Override, master: DictConfig) -> bool:
    """A new scalar for a key the config holds as a scalar (not a group, not Hydra's own, not +/~)."""
    if override.type != OverrideType.CHANGE or override.is_hydra_override() or override.package is not None:
        return False
    if isinstance(override.value(), (dict, list)):
        return False
    parent, _, leaf = override.key_or_group.rpartition(".")
    node = OmegaConf.select(master, parent, throw_on_missing=False) if parent else master
    return isinstance(node, DictConfig) and leaf in node.keys() and isinstance(node._get_node(leaf), ValueNode)

