"""Killed jobs: SIGKILL save_attention.py and train.py mid-run (real subprocesses, tiny models).

Afterwards nothing at the final artifact path is partial, and ``train resume=true`` ends with the adapter an
uninterrupted run with the same seed gives — also when the last checkpoint was itself cut short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers.run import DATA, ROOT
from helpers.stages import train
from safetensors.torch import load_file

from elusive.core.errors import InputError
from elusive.training.callbacks import MarkCheckpointComplete
from elusive.training.checkpoints import (
    CHECKPOINT_MANIFEST,
    check_same_run,
    is_complete_checkpoint,
    last_complete_checkpoint,
)

STEPS_PER_EPOCH = 3  # 12 texts, batch_size 4
EPOCHS = 10  # the run is still going (~0.3 s per epoch, checkpoint included) when epoch 2's checkpoint is complete


def _start(script: str, *overrides: str, folder: Path) -> subprocess.Popen:
    """Start a script as a user would; its stderr goes to ``folder/stderr.txt`` (a file: a pipe could fill up)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TQDM_DISABLE", None)  # save_attention's progress bar is the sign that scoring has started
    args = [sys.executable, str(ROOT / script), *overrides, f"hydra.run.dir={folder / 'hydra'}"]
    with open(folder / "stderr.txt", "wb") as stderr:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _wait_for(condition, proc: subprocess.Popen, folder: Path, timeout: float = 300) -> None:
    """Poll ``condition`` (a point in the run) while the process lives; this waits, it does not time anything."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended early: {(folder / 'stderr.txt').read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.01)


def test_killed_save_attention_leaves_no_dump(small_model, tmp_path):
    dataset = tmp_path / "bios.csv"
    pd.read_csv(DATA / "biography.csv").to_csv(dataset, index=False)  # 300 texts, one per batch: seconds of scoring
    save_name = tmp_path / "out" / "attn"
    proc = _start("save_attention.py", f"model={small_model}", f"dataset={dataset}", f"save_name={save_name}",
                  "batch_size=1", "device=cpu", folder=tmp_path)
    _wait_for(lambda: b"attention:" in (tmp_path / "stderr.txt").read_bytes(), proc, tmp_path)
    _kill(proc)
    assert not Path(str(save_name) + ".safetensors").exists()


def _adapter(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "adapter_model.safetensors"))


def test_killed_train_resumes_to_the_uninterrupted_adapter(small_model, bios, tmp_path):
    settings = {"epochs": EPOCHS, "batch_size": 4, "device": "cpu", "seed": 3, "logging_steps": 1}
    model_dir = tmp_path / "lora"
    proc = _start("train.py", f"model={small_model}", f"dataset={bios}", f"model_dir={model_dir}", f"epochs={EPOCHS}",
                  "batch_size=4", "device=cpu", "seed=3", "logging_steps=1", folder=tmp_path)
    second = model_dir / f"checkpoint-{2 * STEPS_PER_EPOCH}"
    _wait_for(lambda: (second / CHECKPOINT_MANIFEST).is_file(), proc, tmp_path)
    _kill(proc)
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_meta.json"):
        assert not (model_dir / name).exists()  # the final adapter is only written at the end

    # a kill while saving leaves a checkpoint without some files: simulate it on the last complete one
    last = last_complete_checkpoint(model_dir)
    assert last is not None and int(last.name.split("-")[1]) >= 2 * STEPS_PER_EPOCH
    (last / "optimizer.pt").unlink()
    assert not is_complete_checkpoint(last)
    previous = last_complete_checkpoint(model_dir)
    assert previous is not None and previous != last

    with pytest.raises(InputError, match=rf"^resume=true: {previous.name} was trained with learning_rate=0.0005, this run "
                       r"has learning_rate=0.001; resume with the same settings, or train into a new model_dir$"):
        train(str(small_model), bios, model_dir, resume=True, **{**settings, "learning_rate": 1e-3})
    assert last.exists()  # refused before touching anything

    train(str(small_model), bios, model_dir, resume=True, **settings)
    assert not last.exists() or is_complete_checkpoint(last)  # the partial one was removed and saved again
    reference = tmp_path / "reference"
    train(str(small_model), bios, reference, **settings)
    resumed, uninterrupted = _adapter(model_dir), _adapter(reference)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key])
    assert any(v.abs().max() > 0 for k, v in resumed.items() if "lora_B" in k)  # training really moved it


def test_a_checkpoint_is_complete_only_with_all_its_listed_files(tmp_path):
    for step in (3, 6):
        folder = tmp_path / f"checkpoint-{step}"
        (folder / "sub").mkdir(parents=True)
        (folder / "optimizer.pt").write_bytes(b"x" * 100)
        (folder / "sub" / "adapter.safetensors").write_bytes(b"y" * 10)
        state = SimpleNamespace(is_world_process_zero=True, global_step=step)
        MarkCheckpointComplete().on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    (tmp_path / "checkpoint-9").mkdir()  # a save that never finished: no manifest
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    (tmp_path / "checkpoint-6" / "optimizer.pt").write_bytes(b"x" * 50)  # truncated by a kill
    assert not is_complete_checkpoint(tmp_path / "checkpoint-6")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    (tmp_path / "checkpoint-3" / "sub" / "adapter.safetensors").unlink()
    assert last_complete_checkpoint(tmp_path) is None


def test_resume_is_refused_when_data_or_settings_changed(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    run = {"dataset_sha256": "ab12", "learning_rate": 0.0005, "seed": 0}
    state = SimpleNamespace(is_world_process_zero=True, global_step=4)
    MarkCheckpointComplete(run).on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    check_same_run(folder, dict(run))  # the same run: accepted
    with pytest.raises(InputError, match=r"^resume=true: checkpoint-4 was trained with dataset_sha256=ab12, this run has "
                                         r"dataset_sha256=cd34; resume with the same settings"):
        check_same_run(folder, {**run, "dataset_sha256": "cd34"})
    with pytest.raises(InputError, match="was trained with seed=0, this run has seed=1"):
        check_same_run(folder, {**run, "seed": 1})
    (folder / CHECKPOINT_MANIFEST).write_text('{"files": {}}')  # written before settings were recorded
    check_same_run(folder, {**run, "seed": 1})
