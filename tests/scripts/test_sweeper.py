"""The project's Hydra sweeper: every job's config is Hydra's own, composed once per shape, and -m selects it."""

import itertools
from pathlib import Path

import pytest
from helpers.run import ROOT, run_script
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobRuntime
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from elusive.core.cli import with_project_sweeper
from elusive.core.config import SCHEMAS
from hydra_plugins.elusive_sweeper.elusive_sweeper import ShapeCachingLoader


class CountingLoader:
    """Hydra's config loader, counting the jobs it composes."""

    def __init__(self, loader):
        self.loader, self.composed = loader, 0

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        return self.loader.load_sweep_config(master_config, sweep_overrides)


def _hydra(script: str, *master_overrides: str):
    """Hydra's loader for ``script`` and the multirun master config of ``master_overrides``."""
    JobRuntime().set("name", script)
    ConfigStore.instance().store(name=script, node=SCHEMAS[script])
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    master = loader.load_configuration(script, overrides=list(master_overrides), run_mode=RunMode.MULTIRUN)
    return loader, master


def _jobs(**sweeps: list[str]) -> list[list[str]]:
    keys = list(sweeps)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*sweeps.values())]


@pytest.mark.parametrize("script, sweeps, shapes", [
    # plain values only (one of them an interpolation): one composition for the whole sweep
    ("data_augmentation", dict(model=["m"], save_name=["out/a${alpha}_b${beta}"], alpha=["0.5", "0.6", "0.7"],
                              beta=["0.01", "0.05"], seed=["0", "3"]), 1),
    # a config group changes the shape: one composition per preset
    ("run_experiment", dict(experiment=["cpu_tiny", "cpu_qwen"], model=["m"], method=["plain", "position"],
                            alpha=["0.5", "0.7"]), 2),
    # ++key and dict values are not plain (a dict merged over another job's dict would differ): one composition
    # per distinct dict, alpha still plain
    ("run_experiment", {"model": ["m"], "++method_params": ["{random:{alpha:0.1}}", "{random:{beta:0.2}}"],
                        "alpha": ["0.5", "0.7"]}, 2),
    ("run_experiment", {"model": ["m"], "++method_params.random.alpha": ["0.1", "0.2"]}, 2),
])
def test_every_job_config_is_hydras_own_composed_once_per_shape(script, sweeps, shapes):
    loader, master = _hydra(script, "hydra/sweeper=elusive", "hydra.job.config.override_dirname.exclude_keys=[seed]")
    counting = CountingLoader(loader)
    ours = ShapeCachingLoader(counting)
    jobs = _jobs(**sweeps)
    for overrides in jobs:
        expected = OmegaConf.to_container(loader.load_sweep_config(master, overrides), resolve=False)
        got = ours.load_sweep_config(master, overrides)
        assert OmegaConf.to_container(got, resolve=False) == expected, overrides
        got.hydra.job.num = 99  # the launcher writes into the config it gets: the next copy is clean
        assert ours.load_sweep_config(master, overrides).hydra.job.get("num") != 99
    assert counting.composed == shapes
    last = OmegaConf.to_container(ours.load_sweep_config(master, jobs[-1]), resolve=False)
    dirname = last["hydra"]["job"]["override_dirname"]
    assert "seed=" not in dirname and dirname == ",".join(sorted(o for o in jobs[-1] if not o.startswith("seed=")))


def test_a_value_of_the_wrong_type_is_refused_even_when_its_shape_was_composed():
    loader, master = _hydra("data_augmentation", "hydra/sweeper=elusive")
    ours = ShapeCachingLoader(loader)
    ours.load_sweep_config(master, ["model=m", "seed=1"])
    with pytest.raises(ConfigCompositionException, match="seed=abc"):
        ours.load_sweep_config(master, ["model=m", "seed=abc"])
    with pytest.raises(ConfigCompositionException):  # not a key: Hydra's own error, as without the cache
        ours.load_sweep_config(master, ["model=m", "sed=1"])


@pytest.mark.parametrize("argv, added", [
    (["-m", "alpha=0.5,0.7"], True),
    (["--multirun", "alpha=0.5,0.7"], True),
    (["alpha=0.5"], False),  # a single run has no sweeper
    (["-m", "alpha=0.5,0.7", "hydra/sweeper=basic"], False),  # the user's choice stays
])
def test_a_multirun_gets_the_project_sweeper_unless_one_is_named(argv, added):
    assert with_project_sweeper(argv) == (argv + ["hydra/sweeper=elusive"] if added else argv)


def _sweep(sweeper: str, small_model: Path, bios: Path, folder: Path) -> Path:
    proc = run_script("data_augmentation.py", "-m", "augment_type=random", "alpha=0.3,0.6", "seed=1,2",
                      "multiply=2", f"model={small_model}", f"dataset={bios}",
                      f"save_name={folder}/aug_a${{alpha}}_s${{seed}}", f"hydra.sweep.dir={folder}/sweep",
                      *([f"hydra/sweeper={sweeper}"] if sweeper == "basic" else []))  # elusive: what -m picks
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def test_a_sweep_writes_what_hydras_basic_sweeper_writes(small_model, bios, tmp_path):
    ours = _sweep("elusive", small_model, bios, tmp_path / "ours")
    basic = _sweep("basic", small_model, bios, tmp_path / "basic")
    outputs = sorted(p.name for p in ours.glob("aug_*.csv"))
    assert outputs == ["aug_a0.3_s1.csv", "aug_a0.3_s2.csv", "aug_a0.6_s1.csv", "aug_a0.6_s2.csv"]
    for name in outputs:
        assert (ours / name).read_bytes() == (basic / name).read_bytes()
    for job in range(4):
        for record in ("config.yaml", "overrides.yaml"):
            mine = (ours / "sweep" / str(job) / ".hydra" / record).read_text()
            assert mine == (basic / "sweep" / str(job) / ".hydra" / record).read_text().replace(str(basic), str(ours))
    assert "hydra/sweeper=elusive" in (ours / "sweep" / "multirun.yaml").read_text()


def test_runtime_folders_resolve_per_job_in_the_check_and_in_the_jobs(small_model, bios, tmp_path):
    """``${hydra:runtime.output_dir}`` differs per job, so the check before the first job sees no shared output
    (the refusals are rows of test_bad_inputs.py), and each job writes into its own folder."""
    proc = run_script("data_augmentation.py", "-m", "augment_type=random", "alpha=0.3,0.6", "multiply=1",
                      f"model={small_model}", f"dataset={bios}", "save_name=${hydra:runtime.output_dir}/aug",
                      f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [len((tmp_path / "sweep" / str(job) / "aug.csv").read_text().splitlines()) for job in (0, 1)] == [25, 25]
