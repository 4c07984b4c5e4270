"""A full disk and paths Hydra's grammar reads specially: one error line, or the path used as typed.

The refusals are rows of ``test_bad_inputs.py``; here is what a row cannot show: a write that fails for want of
space (simulated by making the write raise what Python, safetensors and torch raise on a full disk), the
folders such a failed write created removed again, and the forms that do work — a quoted path holding a
comma, ``=`` or ``[``, and ``${hydra:runtime.output_dir}`` in a path.
"""

from __future__ import annotations

import errno
import pathlib

import pandas as pd
import pytest
from helpers.run import run_in_process

from elusive.core.cli import disk_full
from elusive.core.files import atomic_path

NO_SPACE = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def test_save_attention_on_a_full_disk_is_one_line_and_leaves_nothing(small_model, bios, tmp_path, monkeypatch, capsys):
    real = pathlib.Path.write_bytes

    def full(self, data):
        if self.name.startswith(".attn.safetensors."):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    out = tmp_path / "new" / "attn"
    status, stderr = run_in_process("save_attention.py", [f"model={small_model}", f"dataset={bios}",
                                                          f"save_name={out}", "device=cpu",
                                                          f"hydra.run.dir={tmp_path / 'hydra'}"], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and "Traceback" not in stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: save_name={out}: no space left on the device writing "
                                                      f"{out.parent}/.attn.safetensors.")
    assert errors[0].endswith("; free space or give save_name a folder on another disk, then run again")
    assert not (tmp_path / "new").exists()  # the folder made for the dump went with the failed write


@pytest.mark.parametrize("where, error", [
    ("peft.peft_model.safe_save_file", "safetensors"),  # the adapter of checkpoint-N, written by safetensors (Rust)
    ("torch.save", "torch"),  # the optimizer state, written by torch's C++ writer
])
def test_train_on_a_full_disk_is_one_line_and_no_checkpoint_is_complete(where, error, small_model, bios, tmp_path,
                                                                        monkeypatch, capsys):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        if error == "safetensors":
            raise SafetensorError(NO_SPACE)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(where, full)
    model_dir = tmp_path / "lora"
    status, stderr = run_in_process("train.py", [f"model={small_model}", f"dataset={bios}", f"model_dir={model_dir}",
                                                 "device=cpu", "epochs=1", "batch_size=12", "report_to=[]",
                                                 f"hydra.run.dir={tmp_path / 'hydra'}"], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and "Traceback" not in stderr, stderr[-3000:]
    what = "no space left on the device" if error == "safetensors" else \
        "a write failed (torch: file write failed; is the disk full?)"
    assert errors == [f"error: model_dir={model_dir}: {what}; free space or give model_dir a folder on another disk, "
                      "then run again (resume=true continues from the last complete checkpoint)"]
    assert not list(model_dir.glob("checkpoint-*/checkpoint_complete.json"))  # resume would not trust the cut one
    assert not (model_dir / "adapter_config.json").exists() and not (model_dir / "train_meta.json").exists()


def test_only_a_full_disk_is_turned_into_an_error_line():
    settings = type("S", (), {})()  # no output keys: the message names none
    assert disk_full(ValueError("a bug"), settings) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied"), settings) is None
    chained = RuntimeError("saving failed")
    chained.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded", "/x/y")
    assert disk_full(chained, None) == ("output: no space left on the device writing /x/y; free space or write to "
                                        "another disk, then run again")


def test_a_failed_write_removes_the_folders_it_made_and_only_those(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "kept" / "a" / "b" / "file.csv") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not list((tmp_path / "kept").iterdir())
    with atomic_path(tmp_path / "kept" / "c" / "file.csv") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "kept" / "c" / "file.csv").read_text() == "x"


@pytest.mark.parametrize("name", ["a,b.csv", "a=b.csv", "a[1].csv", "x (1).csv"])
def test_a_quoted_path_with_a_comma_equals_or_bracket_is_used_as_typed(name, tmp_path, capsys):
    out = tmp_path / name
    status, stderr = run_in_process("make_biographies.py", [f"output='{out}'", "n_people=3",
                                                            f"hydra.run.dir={tmp_path / 'hydra'}"], capsys)
    assert status == 0, stderr[-2000:]
    assert len(pd.read_csv(out)) == 3 and [p.name for p in tmp_path.iterdir() if p.suffix == ".csv"] == [name]


def test_a_path_may_name_hydras_run_folder(small_model, bios, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, stderr = run_in_process("data_augmentation.py", [f"model={small_model}", f"dataset={bios}",
                                                             "save_name=${hydra:runtime.output_dir}/aug",
                                                             "augment_type=random", "multiply=1",
                                                             f"hydra.run.dir={run_dir}"], capsys)
    assert status == 0, stderr[-2000:]
    assert len(pd.read_csv(run_dir / "aug.csv")) == 24 and (run_dir / "aug.json").is_file()
