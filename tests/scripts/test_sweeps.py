"""-m sweeps: Hydra's basic sweeper runs the jobs; the project's callback lists and composes every job as Hydra
will, before the first one runs, through Hydra's public APIs (the refusals themselves are rows of
test_bad_inputs.py)."""

from pathlib import Path

import pytest
from helpers.run import ROOT, run_in_process, run_script
from omegaconf import OmegaConf

from elusive.core import sweeps
from elusive.core.cli import SWEEP_CHECK, hydra_command_line, with_sweep_check
from elusive.core.sweeps import sweep_jobs


def test_sweep_jobs_are_the_cartesian_product_in_hydras_order_by_hand():
    # the preset's sweep first; the command line's value for the same key replaces it, in the preset's place
    jobs = sweep_jobs({"method": "plain,attention_diff"}, ["seed=0,1", "alpha=0.5", "method=plain,position"])
    assert jobs == [["method=plain", "seed=0", "alpha=0.5"], ["method=plain", "seed=1", "alpha=0.5"],
                    ["method=position", "seed=0", "alpha=0.5"], ["method=position", "seed=1", "alpha=0.5"]]
    # values as Hydra passes them to the job (a float is written out), ++ and quotes kept
    assert sweep_jobs({}, ["learning_rate=1e-3,2e-3", "++method_params.random.alpha=0.1", "name='a b'"]) == [
        ["learning_rate=0.001", "++method_params.random.alpha=0.1", "name='a b'"],
        ["learning_rate=0.002", "++method_params.random.alpha=0.1", "name='a b'"]]
    assert sweep_jobs({}, []) == [[]]  # -m without a sweep: one job


@pytest.mark.parametrize("argv, overrides, multirun", [
    (["-m", "alpha=0.5,0.7"], ["alpha=0.5,0.7"], True),
    (["alpha=0.5", "--multirun"], ["alpha=0.5"], True),
    (["--cfg", "job", "alpha=0.5"], ["alpha=0.5"], False),  # an option's value is not an override
    (["-c", "hydra", "-m", "-p", "hydra.job", "seed=1,2"], ["seed=1,2"], True),
    (["--info", "-m", "a=1"], ["a=1"], True),
    (["alpha=0.5"], ["alpha=0.5"], False),
])
def test_the_command_line_is_read_as_hydra_reads_it_and_a_multirun_gets_the_check(argv, overrides, multirun):
    assert hydra_command_line(argv) == (overrides, multirun)
    assert with_sweep_check(argv) == (argv + [SWEEP_CHECK] if multirun else argv)


def _recording(monkeypatch) -> list:
    """Record the jobs and the configs the check sees (unresolved), then check as usual."""
    seen = []
    check = sweeps.check_sweep

    def record(schema, task, jobs, load):
        seen.append((jobs, [OmegaConf.to_container(load(i), resolve=False) for i in range(len(jobs))]))
        check(schema, task, jobs, load)

    monkeypatch.setattr(sweeps, "check_sweep", record)
    return seen


def _jobs_as_run(sweep: Path) -> tuple[list, list]:
    """Each job's overrides and config as Hydra saved them (in job order)."""
    folders = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return ([OmegaConf.to_container(OmegaConf.load(f / ".hydra" / "overrides.yaml")) for f in folders],
            [OmegaConf.to_container(OmegaConf.load(f / ".hydra" / "config.yaml")) for f in folders])


def test_the_check_sees_every_job_with_the_overrides_and_config_hydra_runs_it_with(small_model, bios, tmp_path,
                                                                                  monkeypatch, capsys):
    seen = _recording(monkeypatch)
    status, err = run_in_process("data_augmentation.py", [
        "-m", "augment_type=random", "alpha=0.3,0.6", "seed=1,2", "multiply=1", f"model={small_model}",
        f"dataset={bios}", f"save_name={tmp_path}/aug_a${{alpha}}_j${{hydra:job.num}}",
        f"hydra.sweep.dir={tmp_path}/sweep"], capsys)
    assert status in (0, None), err[-3000:]
    ((jobs, configs),) = seen
    fixed = [f"multiply=1", f"model={small_model}", f"dataset={bios}",  # Hydra escapes ${...} in a value it passes on
             f"save_name={tmp_path}/aug_a$\\{{alpha\\}}_j$\\{{hydra\\:job.num\\}}"]
    assert jobs == [["augment_type=random", f"alpha={a}", f"seed={s}", *fixed] for a in ("0.3", "0.6") for s in "12"]
    assert _jobs_as_run(tmp_path / "sweep") == (jobs, configs)
    assert sorted(p.name for p in tmp_path.glob("aug_*.csv")) == [
        "aug_a0.3_j0.csv", "aug_a0.3_j1.csv", "aug_a0.6_j2.csv", "aug_a0.6_j3.csv"]
    recorded = OmegaConf.load(tmp_path / "sweep" / "multirun.yaml").hydra.overrides.hydra
    assert SWEEP_CHECK in recorded  # the callback is named in the sweep's own record


def test_the_check_composes_presets_groups_and_dicts_as_the_jobs_get_them(small_model, large_model, tmp_path,
                                                                        monkeypatch, capsys):
    seen = _recording(monkeypatch)
    status, err = run_in_process("run_experiment.py", [
        "-m", "experiment=cpu_tiny,cpu_qwen", "method=plain,position", "++method_params.random.alpha=0.1,0.2",
        f"model={small_model}", f"small_model={small_model}", f"large_model={large_model}", "dry_run=true",
        f"out_root={tmp_path}/exp", f"hydra.sweep.dir={tmp_path}/sweep"], capsys)
    assert status in (0, None), err[-3000:]
    ((jobs, configs),) = seen
    assert len(jobs) == 8 and jobs[0][:3] == ["experiment=cpu_tiny", "method=plain", "++method_params.random.alpha=0.1"]
    assert _jobs_as_run(tmp_path / "sweep") == (jobs, configs)
    assert configs[-1]["name"] == "cpu_qwen" and configs[-1]["method_params"]["random"] == {"alpha": 0.2}
    assert configs[-1]["text_prefix"] == "Text: "  # from the preset's pair (conf/pair/qwen_coder.yaml)
    assert not (tmp_path / "exp").exists()  # dry runs


def test_a_job_hydra_cannot_compose_stops_the_sweep_before_the_first_job(small_model, large_model, tmp_path, capsys):
    status, err = run_in_process("run_experiment.py", [
        "-m", "experiment=cpu_tiny,no_such_preset", f"model={small_model}", f"small_model={small_model}",
        f"large_model={large_model}", f"out_root={tmp_path}/exp", f"hydra.sweep.dir={tmp_path}/sweep"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1, err[-3000:]
    assert errors[0].startswith("error: experiment=no_such_preset: ") and "no_such_preset" in errors[0][30:]
    assert errors[0].endswith("[sweep job 1 (experiment=no_such_preset)]")
    assert not (tmp_path / "exp").exists() and not (tmp_path / "sweep").exists()


def test_a_sweep_writes_the_bytes_single_runs_write(small_model, bios, tmp_path):
    common = ["augment_type=random", "multiply=2", f"model={small_model}", f"dataset={bios}"]
    proc = run_script("data_augmentation.py", "-m", *common, "alpha=0.3,0.6", "seed=1,2",
                      f"save_name={tmp_path}/sweep_a${{alpha}}_s${{seed}}", f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for alpha, seed in (("0.3", "2"), ("0.6", "1")):
        one = run_script("data_augmentation.py", *common, f"alpha={alpha}", f"seed={seed}",
                         f"save_name={tmp_path}/one", hydra_dir=tmp_path / "runs" / f"{alpha}_{seed}")
        assert one.returncode == 0, one.stderr[-3000:]
        assert (tmp_path / f"sweep_a{alpha}_s{seed}.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
        (tmp_path / "one.csv").unlink()
        (tmp_path / "one.json").unlink()


def test_runtime_folders_resolve_per_job_in_the_check_and_in_the_jobs(small_model, bios, tmp_path):
    """``${hydra:runtime.output_dir}`` differs per job, so the check before the first job sees no shared output
    (the refusals are rows of test_bad_inputs.py), and each job writes into its own folder."""
    proc = run_script("data_augmentation.py", "-m", "augment_type=random", "alpha=0.3,0.6", "multiply=1",
                      f"model={small_model}", f"dataset={bios}", "save_name=${hydra:runtime.output_dir}/aug",
                      f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [len((tmp_path / "sweep" / str(job) / "aug.csv").read_text().splitlines()) for job in (0, 1)] == [25, 25]


def test_no_file_of_the_project_imports_hydras_internals():
    internal = "hydra." + "_internal"  # not written whole, so this file does not find itself
    files = [p for folder in ("elusive", "scripts", "tests", "bench") for p in (ROOT / folder).rglob("*.py")]
    files += list(ROOT.glob("*.py"))
    assert len(files) > 50
    assert [str(p.relative_to(ROOT)) for p in files if internal in p.read_text(encoding="utf-8")] == []
