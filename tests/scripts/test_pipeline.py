"""The five scripts in sequence, as a user runs them, with Hydra overrides; every artifact checked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from helpers.run import ROOT, run_script
from peft import PeftModel
from transformers import AutoModelForCausalLM

from elusive.attention.dump import AttentionDump
from elusive.reporting.summary import collect
from elusive.text.data import load_texts


def test_five_stages_chain_from_the_command_line(small_model, large_model, bios, tmp_path):
    out = tmp_path / "out"

    def ok(script, *overrides):
        proc = run_script(f"{script}.py", *overrides, cwd=tmp_path, hydra_dir=tmp_path / "hydra" / script)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    # relative paths resolve against the directory the command is run from (tmp_path here)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bio.csv").write_bytes(bios.read_bytes())
    ok("save_attention", f"model={small_model}", "dataset=data/bio.csv", "save_name=out/attn_small")
    ok("save_attention", f"model={large_model}", "dataset=data/bio.csv", "save_name=out/attn_large")
    ok("contrast_attention", "attn_dump_large=out/attn_large", "attn_dump_small=out/attn_small", "attn_diff=out/attn_diff")
    ok("data_augmentation", "augment_type=attention_diff", "alpha=0.7", "beta=0.05", "multiply=2",
       "attn_weights=out/attn_diff", f"model={small_model}", "dataset=data/bio.csv", "save_name=out/bio_aug", "seed=0")
    ok("train", f"model={small_model}", "dataset=out/bio_aug.csv", "model_dir=out/lora", "epochs=1", "batch_size=4")
    proc = ok("evaluate", f"model={small_model}", "model_dir=out/lora", "eval_data=data/bio.csv", "output_dir=out/eval",
              "max_people=2", f"fewshot_data={ROOT / 'data/biography_fewshot.csv'}", f"prompts={ROOT / 'data/prompts.csv'}")

    texts = load_texts(bios)
    small, large = AttentionDump.load(out / "attn_small"), AttentionDump.load(out / "attn_large")
    diff = AttentionDump.load(out / "attn_diff")
    assert small.n_texts == large.n_texts == diff.n_texts == len(texts)
    np.testing.assert_allclose(diff.scores, large.scores - small.scores)
    aug = pd.read_csv(out / "bio_aug.csv", keep_default_na=False)
    assert len(aug) == 3 * len(texts) and set(aug["copy"]) == {0, 1, 2}
    assert (out / "lora" / "adapter_config.json").is_file() and (out / "lora" / "checkpoint-9").is_dir()
    base = AutoModelForCausalLM.from_pretrained(small_model)
    PeftModel.from_pretrained(base, str(out / "lora"))  # the final adapter loads
    results = json.loads((out / "eval" / "results.json").read_text())
    assert list(results) == ["date", "city", "university", "major", "company"]
    assert all(0 <= r["exact_match"] <= 1 and 0 <= r["f1"] <= 1 and r["n"] == 2 for r in results.values())
    assert len((out / "eval" / "predictions.jsonl").read_text().splitlines()) == 10
    assert "| company |" in proc.stdout
    # provenance: augmentation settings → train_meta.json → eval_meta.json → the summary's columns
    settings = json.loads((out / "bio_aug.json").read_text())
    assert settings["augment_type"] == "attention_diff" and settings["alpha"] == 0.7 and settings["multiply"] == 2
    row = collect([out / "eval"]).iloc[0]
    assert (row["method"], row["alpha"], row["beta"], row["multiply"], row["seed"]) == ("attention_diff", 0.7, 0.05, 2, 0)


def test_missing_required_key_is_one_line_and_exit_2(tmp_path):
    proc = run_script("save_attention.py", "dataset=data/biography.csv", hydra_dir=tmp_path / "h")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: missing required key(s) model, save_name")


def test_bad_value_exits_2_and_writes_nothing(small_model, bios, tmp_path):
    proc = run_script("data_augmentation.py", "augment_type=random", "alpha=1.5", f"model={small_model}",
                      f"dataset={bios}", f"save_name={tmp_path / 'aug'}", hydra_dir=tmp_path / "h")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: alpha=1.5: must be in [0, 1]")
    assert not (tmp_path / "aug.csv").exists()
