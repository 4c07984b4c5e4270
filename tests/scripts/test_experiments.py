"""run_experiment: a preset as a multirun sweep, runs kept apart and skipped when done, dry runs; the summary."""

from __future__ import annotations

import dataclasses
import re
import json

import pandas as pd
import pytest
from helpers.run import ROOT, run_script
from helpers.stages import run_experiment, summarize

from elusive.core.config import EvaluateSettings, RunExperimentConfig, TrainSettings
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.evaluation import stage as evaluation
from elusive.reporting.summary import aggregate, collect, to_markdown
from elusive.training import stage as training


def _results(folder, em, f1, info=None):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "city": {"exact_match": em[0], "f1": f1[0], "n": 4},
        "company": {"exact_match": em[1], "f1": f1[1], "n": 4},
    }))
    if info is not None:
        (folder.parent / "run.json").write_text(json.dumps(info))


def test_summary_means_and_spreads_over_seeds_by_hand(tmp_path):
    base = {"name": "t2", "model": "m", "alpha": 0.7, "beta": 0.05, "multiply": 10}
    _results(tmp_path / "diff" / "s0" / "eval", [0.5, 0.25], [0.5, 0.5], {**base, "method": "attention_diff", "seed": 0})
    _results(tmp_path / "diff" / "s1" / "eval", [1.0, 0.75], [1.0, 0.5], {**base, "method": "attention_diff", "seed": 1})
    _results(tmp_path / "plain" / "s0" / "eval", [0.0, 0.0], [0.25, 0.0],
             {**base, "method": "plain", "alpha": None, "beta": None, "multiply": 0, "seed": 0})
    table = aggregate(collect([tmp_path]))
    assert table["method"].tolist() == ["plain", "attention_diff"]  # the paper's row order
    diff = table[table["method"] == "attention_diff"].iloc[0]
    assert diff["seeds"] == 2 and diff["city_em"] == 75.0 and diff["company_em"] == 50.0
    assert diff["city_em_std"] == 25.0  # population std of 50 and 100
    assert diff["mean_em"] == pytest.approx((75.0 + 50.0) / 2)
    markdown = summarize([tmp_path], tmp_path / "summary")
    assert "| t2 | m | attention_diff | 0.7 | 0.05 | 10 | 75.0 ± 25.0 |" in markdown
    assert pd.read_csv(tmp_path / "summary.csv")["seeds"].tolist() == [1, 2]
    runs = pd.read_csv(tmp_path / "summary_runs.csv")
    assert sorted(runs["seed"].tolist()) == [0, 0, 1] and set(runs["method"]) == {"plain", "attention_diff"}


def test_folders_without_run_json_are_labelled_by_path(tmp_path):
    _results(tmp_path / "eval_a", [1.0, 0.0], [1.0, 0.0])
    frame = collect([tmp_path])
    assert frame["name"].tolist() == [str(tmp_path / "eval_a")] and frame["mean_em"].tolist() == [50.0]
    assert "eval_a" in to_markdown(aggregate(frame))


def test_a_preset_runs_as_a_multirun_sweep_and_is_summarised(small_model, large_model, tmp_path):
    proc = run_script(
        "run_experiment.py", "-m", "experiment=cpu_tiny", f"model={small_model}", f"small_model={small_model}",
        f"large_model={large_model}", f"out_root={tmp_path / 'exp'}", "method=plain,attention_diff", "n_texts=4",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "exp" / "cpu_tiny"
    assert len(list((root / "dumps").glob("diff-large-received-*--small-received-*.safetensors"))) == 1
    (folder,) = (root / "attention_diff").glob("a0.7_b0.05_s0-*")
    run = json.loads((folder / "run.json").read_text())
    assert run["method"] == "attention_diff" and run["alpha"] == 0.7 and run["n_texts"] == 4
    proc = run_script("summarize.py", f"runs=[{root}]", f"output={tmp_path / 'table'}", hydra_dir=tmp_path / "h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "table.csv")
    assert table["method"].tolist() == ["plain", "attention_diff"] and (table["seeds"] == 1).all()


def test_bad_method_is_one_line_and_exit_2(tmp_path):
    proc = run_script("run_experiment.py", "experiment=cpu_tiny", "method=dropout", hydra_dir=tmp_path / "h", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: method=dropout: unknown")


# --- run_experiment: keyed folders, skips, dumps reused only for the same settings, dry runs -----------------


def _tiny(small_model, large_model, tmp_path, **changes):
    settings = dict(name="t", method="plain", model=str(small_model), small_model=str(small_model),
                    large_model=str(large_model), dataset=str(ROOT / "data" / "biography.csv"), n_texts=3,
                    out_root=str(tmp_path / "exp"), multiply=1, device="cpu",
                    train=TrainSettings(epochs=1, batch_size=3, logging_steps=1),
                    evaluate=EvaluateSettings(max_people=2, shots=1, max_new_tokens=2,
                                              fewshot_data=str(ROOT / "data" / "biography_fewshot.csv"),
                                              prompts=str(ROOT / "data" / "prompts.csv")))
    settings.update(changes)
    return RunExperimentConfig(**settings)


def test_layers_are_checked_against_every_scored_model_before_any_work(small_model, large_model, tmp_path):
    """The tiny pair has 2 (small) and 3 (large) layers: layer 2 exists only in the large model, -3 only there too."""
    for layers, key in (([2], "small_model"), ([-3], "small_model"), ([0, 3], "large_model")):
        cfg = _tiny(small_model, large_model, tmp_path, method="attention_diff", layers=layers, dry_run=True)
        with pytest.raises(InputError, match=re.escape(f"layers={layers}: layer {layers[-1]} does not exist in {key}=")
                           + rf".* \({2 if key == 'small_model' else 3} layers\); fix layers"):
            run_experiment(cfg)
    run_experiment(_tiny(small_model, large_model, tmp_path, method="attention_diff", layers=[0, -2], dry_run=True))
    assert not (tmp_path / "exp").exists()


def test_runs_are_kept_apart_by_every_setting_and_skipped_when_done(small_model, large_model, tmp_path, monkeypatch):
    a = _tiny(small_model, large_model, tmp_path)
    b = dataclasses.replace(a, train=dataclasses.replace(a.train, learning_rate=1e-3))
    run_experiment(a)
    run_experiment(b)
    folders = sorted((tmp_path / "exp" / "t" / "plain").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("c0_s0-") for f in folders)
    rates = sorted(json.loads((f / "run.json").read_text())["settings"]["train"]["learning_rate"] for f in folders)
    assert rates == [5e-4, 1e-3]
    for f in folders:
        assert (f / "lora" / "loss.csv").read_text().startswith("step,epoch,loss,learning_rate,grad_norm\n")

    def never(*args, **kwargs):
        raise AssertionError("a finished run was done again")

    monkeypatch.setattr(training, "train", never)
    monkeypatch.setattr(evaluation, "evaluate", never)
    (folder_a,) = [f for f in folders if json.loads((f / "run.json").read_text())["settings"]["train"]["learning_rate"]
                   == 5e-4]
    saved = {f: (f / "eval" / "results.json").read_text() for f in folders}
    for f in folders:  # mark each run's results, so that what comes back names the folder it was read from
        (f / "eval" / "results.json").write_text(json.dumps({**json.loads(saved[f]), "folder": f.name}))
    again = run_experiment(a)  # skipped, a's results read back (not b's, not computed again)
    assert again["qa"] == json.loads((folder_a / "eval" / "results.json").read_text())
    assert again["qa"]["folder"] == folder_a.name
    for f in folders:
        (f / "eval" / "results.json").write_text(saved[f])
    table = summarize([tmp_path / "exp" / "t"])
    assert "train.learning_rate" in table and table.count("| t |") == 2  # two settings, never averaged as seeds


def test_a_dump_is_reused_only_with_the_same_extraction_settings(small_model, large_model, tmp_path):
    cfg = _tiny(small_model, large_model, tmp_path, method="attention", modes=["qa"])
    run_experiment(cfg)
    run_experiment(dataclasses.replace(cfg, seed=1))  # same extraction: the dump is reused
    assert len(list((tmp_path / "exp" / "t" / "dumps").glob("*.safetensors"))) == 1
    run_experiment(dataclasses.replace(cfg, layers=[-1]))  # other layers: a dump of its own
    assert len(list((tmp_path / "exp" / "t" / "dumps").glob("*.safetensors"))) == 2


def test_dry_run_checks_every_input_without_a_model_and_a_real_run_checks_first(small_model, large_model, tmp_path,
                                                                                monkeypatch):
    import elusive.attention.stage
    def no_model(*args, **kwargs):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(elusive.attention.stage, "save_attention", no_model)
    cfg = _tiny(small_model, large_model, tmp_path, method="attention_diff", dry_run=True, modes=["qa", "completion"])
    assert run_experiment(cfg) is None and not (tmp_path / "exp").exists()
    bad = tmp_path / "prompts.csv"
    bad.write_text('field,prompt\ncity,"Where was he born?"\n')
    broken = dataclasses.replace(cfg, dry_run=False, evaluate=dataclasses.replace(cfg.evaluate, prompts=str(bad)))
    with pytest.raises(InputError, match=r"prompts=.*prompts.csv: the prompt for field 'city' has no \{name\}"):
        run_experiment(broken)  # found before any extraction (save_attention would raise AssertionError)
    with pytest.raises(InputError, match=r"^large_model=.*no-such: no such model folder"):
        run_experiment(dataclasses.replace(cfg, large_model=str(tmp_path / "no-such")))
    assert not (tmp_path / "exp").exists()


def test_the_study_report_collects_compares_and_draws(small_model, large_model, tmp_path):
    from elusive.reporting.report import study_report

    cfg = _tiny(small_model, large_model, tmp_path, modes=["qa", "completion"], plain_copies=1,
                method_params={"position": {"alpha": 0.7, "beta": 0.05}})
    for method in ("plain", "position", "random"):
        run_experiment(dataclasses.replace(cfg, method=method))
    summary = study_report(cfg, ["plain", "random", "position", "attention_diff"]).read_text()
    root = tmp_path / "exp" / "t"
    assert [line.split(" | ")[0] for line in summary.splitlines() if line.startswith("| ") and "method" not in line][:3] \
        == ["| plain", "| random", "| position"]  # attention_diff was not run: left out, not invented
    for mode, folder in (("qa", "eval"), ("completion", "eval_completion")):
        result = json.loads((root / "compare" / f"{mode}_random_vs_plain.json").read_text())
        (plain,) = (root / "plain").glob("*/" + folder + "/results.json")
        (random,) = (root / "random").glob("*/" + folder + "/results.json")
        a, b = json.loads(plain.read_text()), json.loads(random.read_text())
        for field in a:
            assert result[field]["diff_exact_match"] == pytest.approx(b[field]["exact_match"] - a[field]["exact_match"])
        # each pair once, against the baseline listed first (plain, random, shuffled, position)
        assert (root / "compare" / f"{mode}_position_vs_random.md").is_file()
        assert not (root / "compare" / f"{mode}_random_vs_position.md").exists()
        assert not (root / "compare" / f"{mode}_plain_vs_random.md").exists()
        assert (root / "figures" / f"fig1_{mode}.png").read_bytes().startswith(b"\x89PNG")
    assert (root / "figures" / "fig4_position.html").is_file()
    assert "two-sided sign-flip p over per-person differences" in (root / "compare" / "summary.md").read_text()
    frame = pd.read_csv(root / "summary.csv")
    assert set(frame["mode"]) == {"qa", "completion"} and len(frame) == 3 * 2 * 5


def test_every_kept_pass_is_evaluated_and_resumes_by_folder(small_model, large_model, tmp_path, monkeypatch):
    cfg = _tiny(small_model, large_model, tmp_path, modes=["qa", "completion"],
                train=TrainSettings(epochs=3, batch_size=3, logging_steps=1, save_at_passes=[1, 3],
                                    lr_schedule="constant", warmup_passes=0))
    run_experiment(cfg)
    (run,) = (tmp_path / "exp" / "t" / "plain").iterdir()
    for passes in (1, 3):
        for folder in ("eval", "eval_completion"):
            meta = json.loads((run / f"pass-{passes}" / folder / "eval_meta.json").read_text())
            adapter = run / "lora" / f"pass-{passes}" / "adapter_model.safetensors"
            assert meta["adapter_sha256"] == sha256_file(adapter)  # the kept pass answered, not the final one
            assert meta["training"]["passes"] == passes and meta["training"]["global_step"] == passes
            assert meta["model_dir"] == str(run / "lora" / f"pass-{passes}")  # outside the project: absolute
            assert meta["machine"]["cpu"]
    assert not (run / "eval").exists()  # the final adapter is pass 3: evaluated once
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["settings"]["train"]["save_at_passes"] == [1, 3]
    assert len(recorded["invocations"]) == 1 and recorded["invocations"][0]["machine"]["numpy_simd"]

    (run / "pass-1" / "eval_completion" / "results.json").unlink()  # as if killed before the last evaluation
    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda c: calls.append(c.output_dir) or {})
    monkeypatch.setattr(training, "train", lambda c: (_ for _ in ()).throw(AssertionError("trained again")))
    run_experiment(cfg)
    assert calls == [str(run / "pass-1" / "eval_completion")]
    assert len(json.loads((run / "run.json").read_text())["invocations"]) == 1  # same machine and code


def test_settings_added_later_leave_an_older_run_its_folder(small_model, large_model, tmp_path):
    from elusive.experiment import run_folder, run_settings, training_data

    cfg = _tiny(small_model, large_model, tmp_path)
    root = tmp_path / "exp" / "t"
    root.mkdir(parents=True)
    settings = run_settings(cfg, training_data(cfg, root))
    assert not {"save_at_passes", "lr_schedule", "warmup_passes"} & set(settings["train"])
    searched = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, save_at_passes=[1]))
    assert run_folder(root, run_settings(searched, training_data(cfg, root))) != run_folder(root, settings)


# --- make demo: a preset through run_experiment and its report ------------------------------------------------


def _make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target (tab-indented lines after ``target:``)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_demo_runs_its_preset_through_run_experiment_and_the_report(small_model, large_model, tmp_path):
    """`make demo` is one run_experiment sweep of a preset; here the same command on the tiny pair with small sizes:
    every method the preset sweeps runs, and its report names each of them and is printed at the end."""
    from omegaconf import OmegaConf

    (command,) = _make_recipe("demo")
    python, script, *args = command.split()
    assert python == "$(PY)" and script == "run_experiment.py" and args[0] == "-m", command
    preset = next(a.split("=", 1)[1] for a in args if a.startswith("experiment="))
    conf = OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml")
    methods = str(conf.hydra.sweeper.params.method).split(",")
    assert len(methods) == 6 and conf.hydra.callbacks.report._target_ == "elusive.reporting.report.StudyReport"
    proc = run_script(script, *args, f"model={small_model}", f"small_model={small_model}",
                      f"large_model={large_model}", f"out_root={tmp_path / 'results'}", "train.epochs=1",
                      "evaluate.max_people=2", "evaluate.max_new_tokens=2", f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert proc.returncode == 0, proc.stderr[-3000:]  # run from the project, as make does; writes only to tmp_path
    root = tmp_path / "results" / str(conf.name)
    summary = (root / "summary.md").read_text()
    headline = summary[: summary.index("\n\n", summary.index("| method"))]
    rows = [line for line in headline.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split(" | ")[0][2:] for row in rows] == methods and all("–" not in row for row in rows)
    assert headline in proc.stdout  # printed at the end, with where the rest is
    assert f"wrote {root / 'summary.md'}" in proc.stdout
    assert (root / "compare" / "qa_attention_diff_vs_plain.json").is_file()
    assert (root / "figures" / "fig1_qa.png").read_bytes().startswith(b"\x89PNG")
    # the README's demo block is copied from this report (scripts/readme_tables.py)
    from helpers.script_modules import load_script

    source, tables = load_script("readme_tables").SOURCES["demo"]
    assert source == ROOT / str(conf.out_root) / str(conf.name) / "summary.md" and tables == 1
