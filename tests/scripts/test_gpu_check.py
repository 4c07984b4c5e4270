"""scripts/gpu_check.py (``make gpu-check``) keeps working: its tiny-model run on the CPU, and how it reports."""

from __future__ import annotations

import json

import pytest
from helpers.run import ROOT
from helpers.script_modules import load_script

gpu_check = load_script("gpu_check")


def test_the_tiny_check_runs_on_the_cpu_and_says_what_it_could_not_check(tmp_path, capsys):
    status = gpu_check.main(["--tiny-only", "--device", "cpu", "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    rows = {r["check"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert status == 0, out
    assert out.startswith("| check | status | result |\n|---|---|---|\n")
    assert sum(line.startswith("|") for line in out.splitlines()) == 2 + len(rows)  # one table, a line per check
    assert all(r["status"] == "PASS" or r["status"].startswith("SKIPPED (") for r in rows.values()), out
    passed = {name for name, r in rows.items() if r["status"] == "PASS"}
    assert {"bitsandbytes 8bit kernels (cpu)", "bitsandbytes 4bit kernels (cpu)", "LoRA epoch, 8-bit, tiny llama",
            "LoRA epoch, no quant, float32, tiny llama", "evaluation merged vs unmerged, float32, tiny llama",
            "evaluation batch 1 vs 8, float32, tiny llama", "stage 1 blocked vs eager, float32, tiny gemma2",
            "stage 1 blocked vs eager, bfloat16, tiny gemma2", "8-bit generation, tiny gemma2"} <= passed
    assert rows["LoRA epoch with bf16 autocast"]["status"] == "SKIPPED (bf16 autocast is used on CUDA only)"
    assert rows["two GPUs: LoRA weights, released scores, n_gpu"]["status"].startswith("SKIPPED (fewer than 2 GPUs")
    train = rows["LoRA epoch, 8-bit, tiny llama"]["result"]
    assert "effective batch 4, 3 steps" in train and "bf16 autocast False" in train  # 12 texts, batch 4
    assert "0 of 20 predictions differ" in rows["evaluation batch 1 vs 8, float32, tiny llama"]["result"]
    assert "keeps the adapter merged" in rows["evaluation merged vs unmerged, float32, tiny llama"]["result"]
    assert not any("Qwen" in name for name in rows)  # --tiny-only: no converted model


def test_a_failing_check_is_a_fail_row_and_exit_status_1(tmp_path, monkeypatch, capsys):
    checker = gpu_check.Checker("cpu", tmp_path, tiny_only=True)
    checker.run("divides", lambda: (1 / 0, ""))
    checker.run("wrong", lambda: (False, "3 of 20 differ"))
    checker.skip("cuda", "no GPU")
    assert [(r.status, r.result.split(" (")[0]) for r in checker.rows] == [
        ("FAIL", "ZeroDivisionError: division by zero"), ("FAIL", "3 of 20 differ"), ("SKIPPED (no GPU)", "")]
    monkeypatch.setattr(gpu_check, "run_checks", lambda c: checker.rows)
    assert gpu_check.main(["--device", "cpu"]) == 1
    assert "3 checks on cpu: 0 passed, 2 failed, 1 skipped" in capsys.readouterr().out


def test_make_and_readme_name_the_check():
    assert "gpu-check:" in (ROOT / "Makefile").read_text() and "scripts/gpu_check.py" in (ROOT / "Makefile").read_text()
    assert "make gpu-check" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("gpus", [8, 2])
def test_the_route_spreads_the_8bit_70b(gpus):
    memory = gpu_check.route_memory(gpu_check.LLAMA3_70B, gpus=gpus)
    total = memory["weights_8bit_gb"] + memory["lora_state_gb"]
    assert memory["multi_8bit_per_gpu_gb"] == pytest.approx(total / gpus)
    assert memory["multi_8bit_per_gpu_gb"] < 80 * 0.6  # fits 80 GB GPUs with room for activations
    assert total > 80  # but not one GPU per process (DDP)
