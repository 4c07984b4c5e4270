"""The typed configs: one schema per script, every key with help, presets only with known keys, bad values refused.

Layers: rules by hand (:func:`elusive.core.config.check`), the schemas composed by Hydra, the presets, then the
command line as a user types it (one ``error:`` line, exit status 2, nothing written).
"""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest
from helpers.run import ROOT, run_in_process, run_script
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from elusive.core.cli import check_command_line, to_settings
from elusive.core.config import (
    SCHEMAS,
    AttentionSettings,
    DataAugmentationConfig,
    EvaluateSettings,
    PlotKeepProbabilityConfig,
    RunExperimentConfig,
    TrainConfig,
    TrainSettings,
    check,
    help_text,
    known_keys,
    settings_fields,
)
from elusive.core.errors import InputError

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


# --- the schema ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_script_has_a_schema_every_key_has_help_and_help_lists_it(name):
    assert (ROOT / f"{name}.py").is_file()
    keys = known_keys(SCHEMAS[name])
    assert keys
    for key, f in keys.items():
        assert len(f.metadata.get("help", "")) >= 10, key
    listed = "\n".join(help_text(SCHEMAS[name]))
    leaves = [k for k, f in keys.items() if not dataclasses.is_dataclass(f.default_factory()
                                                                          if f.default_factory is not dataclasses.MISSING
                                                                          else None)]
    for key in leaves:
        assert f"  {key} (" in listed, key


def test_every_script_file_is_thin_and_uses_its_schema():
    for name in SCHEMAS:
        source = (ROOT / f"{name}.py").read_text()
        assert f'@script("{name}")' in source
        assert len(source.splitlines()) <= 40, name


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_hydra_composes_every_schema_and_the_defaults_are_valid(name):
    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name=name, node=SCHEMAS[name])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name)
    required = [k for k in known_keys(SCHEMAS[name]) if OmegaConf.is_missing(cfg, k)]
    for key in required:  # fill the required keys, then every default must pass its rule
        OmegaConf.update(cfg, key, [] if key in ("runs", "predictions") else "x")
    check(OmegaConf.to_object(cfg))


def test_rules_by_hand():
    ok = DataAugmentationConfig(model="m", save_name="s")
    check(ok)
    for change, message in [
        ({"alpha": 1.5}, "alpha=1.5: must be in [0, 1] (the largest drop probability)"),
        ({"alpha": -0.0001}, "alpha=-0.0001: must be in [0, 1]"),
        ({"beta": -1.0}, "beta=-1.0: must be >= 0"),
        ({"beta": float("nan")}, "beta=nan: must be a finite number"),
        ({"multiply": 0}, "multiply=0: must be a whole number in [1, 1000]"),
        ({"multiply": 10**9}, "multiply=1000000000: must be a whole number in [1, 1000]"),
        ({"augment_type": "dropout"}, "augment_type=dropout: unknown; use one of random, attention, attention_diff, "
                                      "shuffled, position"),
        ({"seed": -1}, "seed=-1: must be in [0, 4294967295] (an integer seed)"),
        ({"seed": 2**70}, "seed=1180591620717411303424: must be in [0, 4294967295]"),
        ({"model": "???"}, "missing required key(s) model"),
    ]:
        with pytest.raises(InputError) as err:
            check(dataclasses.replace(ok, **change))
        assert str(err.value).startswith(message), str(err.value)
    check(dataclasses.replace(ok, alpha=0.0, beta=0.0, multiply=1000, seed=2**32 - 1))  # the edges are allowed
    with pytest.raises(InputError, match=r"^train.learning_rate=inf: must be a finite number"):
        check(RunExperimentConfig(model="m", train=dataclasses.replace(TrainConfig(model="m", dataset="d",
                                                                                   model_dir="o"), learning_rate=float("inf"))))


def test_rules_of_devices_layers_modes_loggers_rows_and_names_by_hand():
    """Keys once checked only when a stage reached them (or never) are checked with the rest, before any work."""
    run = RunExperimentConfig(model="m")
    train = TrainConfig(model="m", dataset="d", model_dir="o")
    keep = PlotKeepProbabilityConfig(model="m", dataset="d", output="o")
    for config, change, message in [
        (run, {"device": "gpu"}, "device=gpu: unknown device; use auto, cpu, cuda, cuda:N or multi"),
        (run, {"device": "cuda:x"}, "device=cuda:x: unknown device"),
        (run, {"layers": []}, "layers=[]: must be a non-empty list of layer indices"),
        (run, {"layers": [0.5]}, "layers=[0.5]: must be a non-empty list of layer indices"),
        (run, {"modes": ["qa", "qa"]}, "modes=['qa', 'qa']: must be a non-empty list of distinct modes (qa, "
                                       "completion)"),
        (run, {"modes": ["qa", "cloze"]}, "modes=['qa', 'cloze']: must be a non-empty list of distinct modes"),
        (run, {"name": "a/../b"}, "name=a/../b: must be one folder name"),
        (run, {"name": ""}, "name=: must be one folder name"),
        (run, {"name": ".hidden"}, "name=.hidden: must be one folder name"),
        (run, {"multiply": 0}, "multiply=0: must be a whole number in [1, 1000]"),
        (train, {"report_to": ["tensorbored"]}, "report_to=['tensorbored']: must be a list of Trainer loggers"),
        (train, {"device": "tpu"}, "device=tpu: unknown device"),
        (keep, {"rows": "abc"}, "rows=abc: must be a row number or a non-empty list of them"),
        (keep, {"rows": [1, -2]}, "rows=[1, -2]: must be a row number or a non-empty list of them"),
        (keep, {"rows": []}, "rows=[]: must be a row number or a non-empty list of them"),
    ]:
        with pytest.raises(InputError) as err:
            check(dataclasses.replace(config, **change))
        assert str(err.value).startswith(message), str(err.value)
    for change in ({"device": "cuda:1"}, {"device": "multi"}, {"layers": [0, -1]}, {"modes": ["completion", "qa"]},
                   {"name": "study_2.v1-b"}):
        check(dataclasses.replace(run, **change))  # accepted
    check(dataclasses.replace(train, report_to=[]))
    check(dataclasses.replace(keep, rows=5))


# Every setting of a group, changed from its default to another valid value: what run_experiment must hand on.
TRAIN_CHANGED = dict(epochs=3.0, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-3, warmup_ratio=0.2,
                     warmup_passes=1.0, lr_schedule="constant", save_at_passes=[1, 2], max_grad_norm=0.5,
                     max_length=64, lora_r=4, lora_alpha=8.0, lora_dropout=0.1, quant="8bit", dtype="float32",
                     logging_steps=3, group_by_length=True, report_to=[], save_total_limit=2)
EVALUATE_CHANGED = dict(fewshot_data=str(ROOT / "data" / "biography_fewshot.csv"), prompts=str(ROOT / "data" / "prompts.csv"),
                        shots=2, max_new_tokens=4, batch_size=3, max_people=2, dtype="float32", quant="4bit",
                        shared_shots=True, bootstrap_resamples=500)
ATTENTION_CHANGED = dict(batch_size=3, dtype="float32", quant="8bit", max_length=500, device="cpu")


def test_run_experiment_hands_every_stage_setting_to_its_stage(small_model, tmp_path, monkeypatch):
    """One definition: run_experiment's train.*, evaluate.* and attention.* keys reach train.py's, evaluate.py's
    and save_attention.py's configs, each with the value given (every key changed from its default at once)."""
    import elusive.attention.stage
    from elusive import experiment
    from elusive.training import stage as training

    for group, changed in ((TrainSettings, TRAIN_CHANGED), (EvaluateSettings, EVALUATE_CHANGED),
                           (AttentionSettings, ATTENTION_CHANGED)):
        assert set(changed) == {f.name for f in settings_fields(group)}, group  # a new key needs a value here
        defaults = group()
        assert all(getattr(defaults, k) != v for k, v in changed.items()), group
    cfg = RunExperimentConfig(
        name="t", method="plain", model=str(small_model), dataset=str(ROOT / "data" / "biography.csv"), n_texts=3,
        out_root=str(tmp_path / "exp"), device="auto", train=TrainSettings(**TRAIN_CHANGED),
        evaluate=EvaluateSettings(**EVALUATE_CHANGED), attention=AttentionSettings(**ATTENTION_CHANGED))
    seen = {}

    class Handed(Exception):
        pass

    def capture(name):
        def stage(stage_cfg):
            seen[name] = stage_cfg
            raise Handed

        return stage

    monkeypatch.setattr(training, "train", capture("train"))
    with pytest.raises(Handed):
        experiment.run_experiment(cfg)
    monkeypatch.setattr(elusive.attention.stage, "save_attention", capture("attention"))
    with pytest.raises(Handed):
        experiment.ensure_dump(str(small_model), ROOT / "data" / "biography.csv", tmp_path / "exp", cfg, "received")
    seen["evaluate"] = experiment.eval_config(cfg, ROOT / "data" / "biography.csv", tmp_path / "run", tmp_path / "lora", "qa")
    for name, changed in (("train", TRAIN_CHANGED), ("evaluate", EVALUATE_CHANGED), ("attention", ATTENTION_CHANGED)):
        assert {k: getattr(seen[name], k) for k in changed} == changed, name
    assert seen["train"].device == "auto" and seen["attention"].device == "cpu"  # attention.device wins for stage 1
    assert {"train.learning_rate", "evaluate.shots", "attention.dtype"} <= set(known_keys(RunExperimentConfig))


# --- presets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_known_keys_and_valid_values(preset):
    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name="run_experiment", node=RunExperimentConfig)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="run_experiment", overrides=[f"experiment={preset}"])
    if OmegaConf.is_missing(cfg, "dataset"):  # Table 3 presets: the Wikipedia file is the user's
        cfg.dataset = "data/wiki_sample.json"
    settings = to_settings(cfg, RunExperimentConfig)
    assert settings.name == preset and settings.model
    for method, params in settings.method_params.items():
        check(dataclasses.replace(settings, method=method, alpha=params.get("alpha"), beta=params.get("beta")))
    lines = (ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and "run_experiment.py" in lines[2]
    for group, option in _preset_groups(preset).items():  # each group it selects exists
        assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), (preset, group, option)


GROUP_FILES = sorted(str(p.relative_to(ROOT / "conf")) for group in ("pair", "recipe")
                     for p in (ROOT / "conf" / group).glob("*.yaml"))


def _compose_preset(overrides: list[str]) -> RunExperimentConfig:
    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name="run_experiment", node=RunExperimentConfig)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="run_experiment", overrides=overrides)
    if OmegaConf.is_missing(cfg, "dataset"):  # Table 3 presets: the Wikipedia file is the user's
        cfg.dataset = "data/wiki_sample.json"
    return to_settings(cfg, RunExperimentConfig)


def _leaves(node, prefix: str = "") -> dict:
    """``{dotted.key: value}`` of every leaf of a plain nested dict (lists are leaves)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _preset_groups(preset: str) -> dict[str, str]:
    """``{group: option}`` a preset selects with ``override /group: option`` in its defaults list."""
    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml"))
    groups = {}
    for entry in raw.get("defaults", []):
        (key, option), = entry.items()
        assert key.startswith("override /"), (preset, entry)
        groups[key.removeprefix("override /")] = option
    return groups


@pytest.mark.parametrize("group_file", GROUP_FILES)
def test_every_group_file_opens_with_what_it_is_and_a_command_and_comments_every_key(group_file):
    lines = (ROOT / "conf" / group_file).read_text().splitlines()
    assert lines[0] == "# @package _global_"
    head = [line for line in lines[1:] if line.startswith("#")][:8]
    assert any(line.startswith("#   python run_experiment.py") for line in head), group_file
    keys = 0
    for line in lines:
        code = line.split("#", 1)[0]
        if code.strip() and not code.rstrip().endswith(":"):  # a value, not a parent mapping
            keys += 1
            assert "#" in line, f"{group_file}: {line!r} has no comment"
    assert keys > 0


@pytest.mark.parametrize("group_file", GROUP_FILES)
def test_what_a_group_sets_arrives_in_every_preset_that_selects_it(group_file):
    group, option = group_file.removesuffix(".yaml").split("/")
    users = [p for p in PRESETS if _preset_groups(p).get(group) == option]
    assert users, f"no preset selects {group}={option}"
    settings = _leaves(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / group_file)))
    assert settings
    for preset in users:
        own = _leaves(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml")))
        composed = OmegaConf.structured(_compose_preset([f"experiment={preset}"]))
        for key, value in settings.items():
            if key in own:  # the preset sets it itself: its own value wins
                assert OmegaConf.select(composed, key) == own[key], (preset, key)
                continue
            got = OmegaConf.select(composed, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == value, f"{preset}: {key}={got!r}, but {group_file} sets {value!r}"


def test_a_group_chosen_on_the_command_line_replaces_the_presets(tmp_path):
    llama = _compose_preset(["experiment=table2_gemma2_2b", "pair=llama3"])
    assert (llama.small_model, llama.large_model, llama.text_prefix, llama.attention.quant) == \
        ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B", "Text: ", "8bit")
    assert llama.model == "google/gemma-2-2b"  # the preset's own keys stay
    bare = _compose_preset(["pair=gemma2", "recipe=paper", "model=google/gemma-2-2b"])  # no preset at all
    assert (bare.large_model, bare.train.quant, bare.train.epochs, bare.multiply) == \
        ("google/gemma-2-9b", "8bit", 30, 10)
    check_command_line(RunExperimentConfig, ["pair=llama3", "recipe=cpu", "model=m"])  # groups pass the early check
    listed = run_script("run_experiment.py", "--help", cwd=tmp_path).stdout
    assert "  pair=<name>: conf/pair/<name>.yaml (gemma2, llama3, qwen_coder)" in listed


def _commands(text: str) -> list[dict[str, str]]:
    """The ``key=value`` words of every ``python run_experiment.py ... experiment=<one preset>`` line."""
    found = []
    for line in text.splitlines():
        if "run_experiment.py" not in line:
            continue
        words = dict(w.strip("'\"").split("=", 1) for w in line.split("run_experiment.py", 1)[1].split() if "=" in w)
        if re.fullmatch(r"[a-z0-9_]+", words.get("experiment", "")):  # one preset (not a list, not <preset>)
            found.append(words)
    return found


def test_the_readme_runs_each_preset_as_the_preset_says():
    """Where the README runs a preset with a dataset or methods, the preset's own command names the same."""
    checked = 0
    for words in _commands((ROOT / "README.md").read_text()):
        preset = ROOT / "conf" / "experiment" / f"{words['experiment']}.yaml"
        assert preset.is_file(), words["experiment"]
        (own,) = [c for c in _commands(preset.read_text()) if c["experiment"] == words["experiment"]][:1]
        for key in ("dataset", "method"):
            if key in words:
                checked += 1
                assert own.get(key) == words[key], (words["experiment"], key, own.get(key), words[key])
    assert checked


def test_a_preset_with_an_unknown_key_is_refused(tmp_path):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nname: typo\nmodel: m\nalpah: 0.5\n")
    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name="run_experiment", node=RunExperimentConfig)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(Exception, match="alpah"):
            compose(config_name="run_experiment", overrides=["experiment=typo"])


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["alpah=0.5"], "alpah=0.5: unknown key; did you mean alpha? --help lists the keys"),
    (["+alpah=0.5"], "alpah=0.5: unknown key; did you mean alpha?"),
    (["alpha=0.7x"], "alpha=0.7x: must be a number;"),
    (["multiply=ten"], "multiply=ten: must be an integer;"),
    (["multiply=1e9"], "multiply=1e9: must be an integer;"),
    (["-m", "alpha=0.5,1.5"], "alpha=1.5: must be in [0, 1]"),
    (["beta=nan"], "beta=nan: must be a finite number"),
    (["seed=-1"], "seed=-1: must be in [0, 4294967295]"),
    (["+alpha=0.5"], "+alpha=0.5: alpha is already a key; write alpha=0.5 without +"),
])
def test_command_line_checked_against_the_schema(argv, message):
    with pytest.raises(InputError) as err:
        check_command_line(DataAugmentationConfig, argv)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["lr=1e-4"], "lr=1e-4: unknown key (the released code's name for learning_rate); use learning_rate=1e-4"),
    (["max_epochs=20"], "max_epochs=20: unknown key (the released code's name for epochs); use epochs=20"),
    (["batch_size=2.5"], "batch_size=2.5: must be an integer;"),
    (["learning_rate=inf"], "learning_rate=inf: must be a finite number"),
    (["epochs=inf"], "epochs=inf: must be a finite number"),
    (["report_to=wandb"], "report_to=wandb: must be a list like [1,2]"),
])
def test_train_command_line(argv, message):
    with pytest.raises(InputError) as err:
        check_command_line(TrainConfig, argv)
    assert str(err.value).startswith(message), str(err.value)


def test_hydra_options_groups_and_nested_keys_pass():
    check_command_line(RunExperimentConfig, ["-m", "experiment=cpu_tiny", "train.learning_rate=1e-3", "seed=0,1",
                                             "hydra.run.dir=x", "++method_params.random.alpha=0.6",
                                             "++method_params={position: {beta: 0.01}}"])
    for line in ("method_params.random.alpha=0.6", "method_params={random: {alpha: 0.6}}"):
        with pytest.raises(InputError, match=rf"^{re.escape(line)}: method_params is a dict, and Hydra adds to a "
                                             rf"dict only with \+\+; write \+\+{re.escape(line)}$"):
            check_command_line(RunExperimentConfig, [line])
    with pytest.raises(InputError, match=r"^train.lr=1e-3: unknown key \(the released code's name for "
                                         r"train.learning_rate\); use train.learning_rate=1e-3"):
        check_command_line(RunExperimentConfig, ["train.lr=1e-3"])


def _run(script: str, argv: list[str], capsys, tmp_path) -> tuple[int, str]:
    return run_in_process(script, [*argv, f"hydra.run.dir={tmp_path / 'h'}"], capsys)


@pytest.mark.parametrize("script, argv, message", [
    ("data_augmentation.py", ["alpha=abc", "model=m", "save_name={o}/aug"], "error: alpha=abc: must be a number;"),
    ("evaluate.py", ["shots=1.5", "model=m", "output_dir={o}/ev"], "error: shots=1.5: must be an integer;"),
    ("train.py", ["prompt_data=p.csv"], "error: prompt_data=p.csv: unknown key"),
    ("evaluate.py", ["+prompt_data=p.csv", "model=m", "output_dir={o}/ev"],
     "error: prompt_data=p.csv: unknown key (the released code's name for prompts); use prompts=p.csv"),
    ("train.py", ["model=m", "dataset=d", "model_dir={o}/lora", "seed=1180591620717411303424"],
     "error: seed=1180591620717411303424: must be in [0, 4294967295]"),
    ("save_attention.py", ["dataset=data/biography.csv"], "error: missing required key(s) model, save_name"),
])
def test_scripts_refuse_bad_values_in_one_line_with_status_2(script, argv, message, capsys, tmp_path):
    out = tmp_path / "missing"
    status, err = _run(script, [a.replace("{o}", str(out)) for a in argv], capsys, tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and errors[0].startswith(message), err[-2000:]
    assert "Traceback" not in err and not out.exists()


def test_help_is_fast_lists_keys_and_imports_no_torch(tmp_path):
    proc = run_script("train.py", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "  learning_rate (number, default 0.0005): peak AdamW learning rate" in proc.stdout
    probe = ("import runpy, sys; sys.argv = ['x', '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0] if False else %r, run_name='__main__')\n"
             "except SystemExit: pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)") % str(ROOT / "train.py")
    proc = subprocess_python(probe, tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def subprocess_python(code: str, cwd):
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
