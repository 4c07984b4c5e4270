"""Experiment presets compose, one preset runs end to end as a multirun sweep, and the summary is right."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import ROOT, run_script
from hydra import compose, initialize_config_dir

from elusive.summary import aggregate, collect, to_markdown
from stages import summarize

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_a_model_and_known_method(preset):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="run_experiment", overrides=[f"experiment={preset}"])
    assert cfg.name == preset and cfg.model and cfg.method in ("plain", "attention_diff")
    assert set(cfg.method_params) <= {"random", "attention", "attention_diff", "shuffled"}
    for params in cfg.method_params.values():
        assert 0 <= params.alpha <= 1 and params.get("beta", 0) >= 0
    if preset.startswith(("table2", "table3")):
        assert cfg.small_model != cfg.large_model and {"random", "attention", "attention_diff"} <= set(cfg.method_params)
    lines = (ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and "run_experiment.py" in lines[2]


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
    assert len(list((root / "attention").glob("diff-large-received-*--small-received-*.safetensors"))) == 1
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
