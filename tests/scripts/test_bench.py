"""The benchmark scripts under bench/: they run on tiny models and print their tables; the extraction baseline
(the released code's method) gives the same scores as ours. No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a folder of scripts, not installed: its modules import each other as
    sys.path.insert(0, str(ROOT))  # bench.<module>, so the tests need the project root on the path to import them


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), "--tiny", *args], check=False, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("aggregate", ["received", "released"])
def test_baseline_extraction_and_ours_give_equal_scores_on_a_tiny_model(small_model, aggregate):
    from bench.bench_extraction import baseline_all, compare, load, make_token_ids, ours_all

    model, tokenizer = load(str(small_model))
    # different lengths in one batch: ours pads and masks, the baseline runs each text alone
    texts = make_token_ids(tokenizer, 40, 2) + make_token_ids(tokenizer, 25, 1, seed=1)
    ours = ours_all(model, tokenizer, texts, aggregate, batch_size=3)
    base = baseline_all(model, texts, aggregate)
    same, worst = compare(ours, base)
    assert [len(s) for s in ours] == [40, 40, 25]
    assert same, f"max difference {worst}"


def test_augmentation_baseline_keeps_the_same_tokens_as_ours(tmp_path, bpe_tokenizer):
    from bench.bench_augmentation import make_inputs, run_baseline, run_ours, same_tokens

    tok_dir = tmp_path / "tok"
    bpe_tokenizer.save_pretrained(tok_dir)
    from elusive.core.models import load_tokenizer

    tokenizer = load_tokenizer(str(tok_dir))
    dataset, dump = make_inputs(tokenizer, 30, tmp_path)
    ours = run_ours(tokenizer, str(tok_dir), dataset, dump, tmp_path / "ours", 0.7, 0.05, 3)
    base = run_baseline(tokenizer, dataset, dump, tmp_path / "base", 0.7, 0.05, 3)
    total, loose, _ = same_tokens(ours, base)
    assert total == 30 * 4 and loose == total


def test_startup_bench_runs_the_baseline_script_and_ours_as_processes_keeping_the_same_tokens(tmp_path, bpe_tokenizer):
    from bench.bench_augmentation import make_inputs, same_tokens
    from bench.bench_startup import ROOT as BENCH_ROOT
    from bench.bench_startup import run, top_level_scripts
    from elusive.core.models import load_tokenizer

    assert {"data_augmentation", "save_attention", "train"} <= set(top_level_scripts())
    tok_dir = tmp_path / "tok"
    bpe_tokenizer.save_pretrained(tok_dir)
    dataset, dump = make_inputs(load_tokenizer(str(tok_dir)), 12, tmp_path, kind="attention_diff")
    env = {**os.environ, "ELUSIVE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    assert run([sys.executable, str(BENCH_ROOT / "bench" / "baseline_augmentation.py"), "--model", str(tok_dir),
                "--dataset", str(dataset), "--dump", str(dump), "--out", str(tmp_path / "base"), "--multiply", "3"],
               env) > 0
    run([sys.executable, str(BENCH_ROOT / "data_augmentation.py"), "augment_type=attention_diff", "alpha=0.7",
         "beta=0.05", "multiply=3", f"attn_weights={dump}", f"model={tok_dir}", f"dataset={dataset}",
         f"save_name={tmp_path / 'ours'}", f"hydra.run.dir={tmp_path / 'run'}"], env)
    total, loose, _ = same_tokens(tmp_path / "ours.csv", tmp_path / "base.csv")
    assert total == 12 * 4 and loose == total


def test_peak_memory_sees_an_allocation_and_rows_judge_targets():
    from bench.common import MIB, PeakMemory, Row, format_table

    with PeakMemory() as mem:
        block = np.ones(64 * MIB // 8)
        block.sum()
        del block
    assert 60 * MIB <= mem.peak_above <= 200 * MIB
    rows = [Row("speed", "1", "2", 2.0, 1.5), Row("memory", "4", "2", 0.5, 0.25, higher_is_better=False),
            Row("info", "", "", None, None)]
    assert [r.status for r in rows] == ["PASS", "MISS", "info"]
    assert "| speed" in format_table(rows)
    near = Row("FLOP/s", "", "", 0.796, 0.80, unit="%")  # a miss by 0.4 points must not print as "80 %"
    assert near.status == "MISS" and near.cells()[3:5] == ["79.6 %", "≥ 80 %"]


SCRIPTS = {
    "bench_extraction.py": ["--lengths", "48", "96", "--texts", "2", "1"],
    "bench_augmentation.py": ["--sizes", "50", "100", "200", "--baseline-size", "100"],
    "bench_evaluation.py": ["--people", "1", "--max-new-tokens", "4"],
    "bench_training.py": ["--texts", "8", "--batch-size", "4", "--max-length", "64"],
    "bench_startup.py": ["--runs", "1", "--bios", "20", "--help-scripts", "data_augmentation"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_on_a_tiny_model_and_prints_its_table(script, tmp_path):
    out = tmp_path / "result.json"
    proc = run_bench(script, *SCRIPTS[script], "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| what" in proc.stdout and "| target" in proc.stdout
    assert "equivalence" in proc.stdout and "PASS" in proc.stdout.split("equivalence", 1)[1].splitlines()[0]
    assert out.is_file()


@pytest.mark.slow  # ~30-60 s: three fresh worker processes
def test_bench_quant_runs_every_setting_on_a_tiny_model(tmp_path):
    out = tmp_path / "quant.json"
    proc = run_bench("bench_quant.py", "--steps", "1", "--warmup", "1", "--settings", "8bit", "4bit", "--no-large",
                     "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {row["what"]: row for row in json.loads(out.read_text())["rows"]}
    for setting in ("8bit", "4bit"):
        for what in ("peak RSS, training steps", "peak RSS, process (load + steps)",
                     "memory touched by the steps (working set)", "s per step"):
            row = rows[f"tiny-main {setting}: {what}"]
            assert row["baseline"] and row["ours"] and row["ratio"].endswith("×")
    notes = json.loads(out.read_text())["notes"]
    assert sum(note.startswith(("tiny-main fp32: steps", "tiny-main 8bit: steps", "tiny-main 4bit: steps"))
               for note in notes) == 3
