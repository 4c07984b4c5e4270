"""Results filed under the settings that made them: run and dump keys name models by content and
extraction's batch size; one run's training texts are never another's; a checkpoint evaluated says what it is;
a resumed run never mixes two learning-rate schedules; a fresh run never lands beside an old one; a killed
evaluation never leaves new predictions under old results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers.run import ROOT

from elusive.core.config import AttentionSettings, RunExperimentConfig, TrainConfig
from elusive.core.errors import InputError
from elusive.evaluation.adapters import training_meta
from elusive.evaluation.stage import write_folder
from elusive.experiment import model_identity, run_folder, run_settings, training_data
from elusive.training.checkpoints import CHECKPOINT_MANIFEST, check_fresh_folder, check_resume_epochs


def _cfg(tmp_path, **changes) -> RunExperimentConfig:
    return RunExperimentConfig(**{"name": "t", "method": "attention_diff", "model": "m", "small_model": "s",
                                  "large_model": "l", "dataset": str(ROOT / "data" / "biography.csv"), "n_texts": 4,
                                  "out_root": str(tmp_path / "exp"), **changes})


def test_runs_of_one_name_with_other_texts_each_keep_their_own_training_file(tmp_path):
    eight, six = _cfg(tmp_path, n_texts=8), _cfg(tmp_path, n_texts=6)
    root = tmp_path / "exp" / "t"
    a, b = training_data(eight, root), training_data(six, root)
    assert a != b and len(pd.read_csv(a)) == 8 and len(pd.read_csv(b)) == 6  # written at once, neither replaced
    assert a.name == f"data-{hashlib.sha256(a.read_bytes()).hexdigest()[:10]}.csv"
    assert training_data(eight, root) == a and len(pd.read_csv(a)) == 8


def test_a_model_is_keyed_by_its_content_not_its_path(small_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_model, copy)
    assert model_identity(str(copy)) == model_identity(str(small_model))  # the same model elsewhere: one key
    weights = next(copy.glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1  # new weights under the same path, config.json unchanged
    weights.write_bytes(bytes(raw))
    assert model_identity(str(copy)) != model_identity(str(small_model))
    assert model_identity(str(copy)).startswith("config:") and model_identity("org/not-here") == "org/not-here"
    data = tmp_path / "d.csv"
    pd.read_csv(ROOT / "data" / "biography.csv").head(3).to_csv(data, index=False)
    keys = [run_folder(tmp_path, run_settings(_cfg(tmp_path, model=str(m), small_model=str(m)), data)).name
            for m in (small_model, copy)]
    assert keys[0] != keys[1]  # the adapter, dumps and scores of the old weights are not reused


def test_extractions_batch_size_is_in_the_run_key(tmp_path):
    data = tmp_path / "d.csv"
    pd.read_csv(ROOT / "data" / "biography.csv").head(3).to_csv(data, index=False)
    keys = {run_folder(tmp_path, run_settings(_cfg(tmp_path, attention=AttentionSettings(batch_size=b)), data)).name
            for b in (1, 4, 8)}
    assert len(keys) == 3
    plain = {run_folder(tmp_path, run_settings(_cfg(tmp_path, method="plain", attention=AttentionSettings(batch_size=b)),
                                               data)).name for b in (1, 4)}
    assert len(plain) == 1  # no dump, no difference


def _checkpoint(folder: Path, epoch: float, step: int, planned: float, run: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({
        "epoch": epoch, "global_step": step, "num_train_epochs": planned,
        "log_history": [{"loss": 2.5, "learning_rate": 4e-4, "step": step - 1}, {"loss": 2.0, "learning_rate": 3e-4,
                                                                                 "step": step}]}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": {}, "run": run}))
    return folder


def test_an_evaluated_checkpoint_records_its_own_epochs_step_and_run(tmp_path):
    model_dir = tmp_path / "lora"
    checkpoint = _checkpoint(model_dir / "checkpoint-4", 1.0, 4, 3.0, {"seed": 7, "base_model": "m",
                                                                      "learning_rate": 5e-4})
    (model_dir / "train_meta.json").write_text(json.dumps({"epochs": 3.0, "global_step": 12, "seed": 1}))  # the final one
    meta = training_meta(checkpoint)
    assert meta["checkpoint"] == "checkpoint-4" and meta["epochs"] == 1.0 and meta["global_step"] == 4
    assert meta["seed"] == 7 and meta["run_epochs"] == 3.0 and meta["final_train_loss"] == 2.0
    assert meta["adapter_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert training_meta(model_dir)["global_step"] == 12  # the final adapter: its own record
    assert training_meta(tmp_path / "elsewhere") is None


def test_resuming_to_more_epochs_is_refused_when_the_schedule_depends_on_the_length(tmp_path):
    checkpoint = _checkpoint(tmp_path / "checkpoint-4", 2.0, 4, 2.0, {})
    linear = TrainConfig(model="m", dataset="d", model_dir="o", epochs=4)
    with pytest.raises(InputError, match=r"^resume=true epochs=4: checkpoint-4 belongs to a run of 2 epochs whose "
                                         r"learning rate schedule \(lr_schedule=linear"):
        check_resume_epochs(checkpoint, 4.0, linear)
    check_resume_epochs(checkpoint, 2.0, linear)  # the same length: one schedule
    for fixed in (dict(lr_schedule="constant", warmup_passes=1), dict(lr_schedule="constant", warmup_ratio=0.0)):
        check_resume_epochs(checkpoint, 4.0, dataclasses.replace(linear, **fixed))  # the schedule ignores the length
    with pytest.raises(InputError, match="warmup as a share"):  # constant, but warmup a share of all steps
        check_resume_epochs(checkpoint, 4.0, dataclasses.replace(linear, lr_schedule="constant"))


def test_a_fresh_run_into_a_folder_with_an_earlier_run_is_refused_and_nothing_deleted(tmp_path):
    model_dir = tmp_path / "lora"
    check_fresh_folder(model_dir)  # absent: fine
    (model_dir / "checkpoint-2").mkdir(parents=True)  # cut short by a kill: no manifest, does not count
    check_fresh_folder(model_dir)
    _checkpoint(model_dir / "checkpoint-4", 1.0, 4, 1.0, {})
    (model_dir / "checkpoint-4" / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": {"adapter_model.safetensors": 7}}))
    with pytest.raises(InputError, match=r"^model_dir=.*lora: holds an earlier run \(checkpoint-4\); add resume=true"):
        check_fresh_folder(model_dir)
    assert (model_dir / "checkpoint-4" / "adapter_model.safetensors").is_file()


def test_an_evaluation_folder_never_holds_new_predictions_under_old_results(tmp_path, monkeypatch):
    from elusive.core import files as artifacts
    from elusive.evaluation import stage as evaluation

    folder = tmp_path / "eval"
    old = [("predictions.jsonl", "old\n"), ("eval_meta.json", "{\"run\": \"old\"}\n"), ("results.json", "{\"em\": 1}\n")]
    write_folder(folder, old)
    real = artifacts.atomic_path
    written = []

    def killed_after_predictions(path):  # the process dies once the new predictions are in place
        if Path(path).name == "eval_meta.json":
            raise KeyboardInterrupt
        written.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(evaluation, "atomic_path", killed_after_predictions)
    with pytest.raises(KeyboardInterrupt):
        write_folder(folder, [("predictions.jsonl", "new\n"), ("eval_meta.json", "{}\n"), ("results.json", "{}\n")])
    assert written == ["predictions.jsonl"]
    assert sorted(p.name for p in folder.iterdir()) == ["predictions.jsonl"]  # no results.json: unfinished
    assert (folder / "predictions.jsonl").read_text() == "new\n"
