"""Never destroy a user's input, never produce a silently wrong result.

The one-line errors of the scripts are rows of ``test_bad_inputs.py``; here are the guarantees a table row
cannot show: the output rule on its own (relative paths, symlinks, unwritable folders, folders a stage wrote
before), the lock of a folder held by another process and recovered when it dies, a training that diverges,
resuming with fewer epochs or another base model, checkpoint files altered after they were listed, temporary
files of killed writers, non-finite numbers in dumps and JSON, over-long texts, a stray ``.json`` beside a
dataset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.run import ROOT
from helpers.stages import train

from elusive.attention.dump import AttentionDump
from elusive.core import outputs
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, pid_alive, write_json_atomic, write_text_atomic
from elusive.core.identity import base_identity
from elusive.core.outputs import Output, check_outputs, claim_folder, marker_name, suffixed
from elusive.evaluation.questions import check_gold
from elusive.text.data import read_csv
from elusive.training.callbacks import MarkCheckpointComplete, StopOnNonFinite
from elusive.training.checkpoints import CHECKPOINT_MANIFEST, check_same_run, is_complete_checkpoint
from elusive.training.stage import augmentation_settings, tokenize_for_training

# --- class 1: the output rule ----------------------------------------------------------------------------


def test_an_output_may_not_be_inside_or_hold_an_input(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "bio.csv").write_text("text\nx\n")
    inputs = {"dataset": data / "bio.csv", "model": "Qwen/Qwen2.5-0.5B"}  # a hub id is not a path: skipped
    check_outputs("s", [Output("save_name", "x", tmp_path / "x.csv")], inputs)  # beside: fine
    with pytest.raises(InputError, match="which is the input dataset="):
        check_outputs("s", [Output("save_name", "v", data / "bio.csv")], inputs)
    with pytest.raises(InputError, match="lies inside the input dataset="):
        check_outputs("s", [Output("save_name", "v", data / "bio.csv" / "x")], inputs)
    with pytest.raises(InputError, match="contains the input dataset="):
        check_outputs("s", [Output("model_dir", "v", data, fills=True)], inputs)


def test_an_earlier_output_file_may_be_replaced_but_nothing_goes_under_a_file(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "fig1.csv").write_text("bin,em\n")  # a rerun of a figure replaces its own earlier files
    check_outputs("s", suffixed("output", figures / "fig1", (".csv", ".png")), {})
    with pytest.raises(InputError, match="fig1.csv is a file, so nothing can be written under it"):
        check_outputs("s", [Output("output", "v", figures / "fig1.csv" / "x.png")], {})


def test_paths_are_compared_after_resolving_relative_parts_and_symlinks(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "bio.csv").write_text("text\nx\n")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path / "real")
    with pytest.raises(InputError, match=f"would write {tmp_path}/real/bio.csv"):
        check_outputs("s", [Output("save_name", "../alias/./bio", tmp_path / "alias" / "." / "bio.csv")],
                      {"dataset": "bio.csv"})


def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # the tests may run as root, who can write anywhere
    with pytest.raises(InputError, match=f"the folder {tmp_path} is not writable"):
        check_outputs("s", [Output("save_name", "v", tmp_path / "new" / "x.csv")], {})


def test_a_folder_a_stage_fills_must_be_new_empty_or_its_own(tmp_path):
    out = Output("model_dir", "v", tmp_path / "lora", fills=True)
    check_outputs("train", [out], {})  # absent
    (tmp_path / "lora").mkdir()
    check_outputs("train", [out], {})  # empty
    (tmp_path / "lora" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds other files \(notes.txt\) and is not a train output"):
        check_outputs("train", [out], {})
    with pytest.raises(InputError, match="is not a evaluate output"):
        check_outputs("evaluate", [Output("output_dir", "v", tmp_path / "lora", fills=True)], {})
    (tmp_path / "lora" / marker_name("train")).write_text("")
    check_outputs("train", [out], {})  # marked by an earlier run
    (tmp_path / "lora" / marker_name("train")).unlink()
    (tmp_path / "lora" / "checkpoint-3").mkdir()
    (tmp_path / "lora" / "checkpoint-3" / CHECKPOINT_MANIFEST).write_text("{}")
    check_outputs("train", [out], {})  # written before markers existed: recognised by its own files


HOLD = """
import sys, time
from elusive.core.outputs import claim_folder
with claim_folder("model_dir", sys.argv[1], "train"):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_holder_releases_it(tmp_path):
    holder = _hold_lock(tmp_path / "lora")
    try:
        with pytest.raises(InputError, match=rf"model_dir={tmp_path}/lora: another train run \(pid {holder.pid} on "):
            with claim_folder("model_dir", tmp_path / "lora", "train"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claim_folder("model_dir", tmp_path / "lora", "train"):  # the killed run's lock went with it
        record = json.loads((tmp_path / "lora" / marker_name("train")).read_text())
        assert record["pid"] == os.getpid() and record["stage"] == "train"


def test_train_waits_for_no_one_and_survives_a_stray_sidecar(small_model, bios, tmp_path):
    """A second train.py into a locked model_dir is refused before anything is written into it; after the
    holder is killed the same command trains, and a ``bio.json`` that is not stage 3's record is ignored."""
    data = tmp_path / "bio.csv"
    data.write_bytes(bios.read_bytes())
    (tmp_path / "bio.json").write_text("{not json")
    model_dir = tmp_path / "lora"
    holder = _hold_lock(model_dir)
    try:
        with pytest.raises(InputError, match="another train run"):
            train(small_model, data, model_dir, epochs=1, batch_size=6, device="cpu", report_to=[])
        assert sorted(p.name for p in model_dir.iterdir()) == [marker_name("train")]
    finally:
        holder.kill()
        holder.wait()
    train(small_model, data, model_dir, epochs=1, batch_size=6, device="cpu", report_to=[])
    meta = json.loads((model_dir / "train_meta.json").read_text())
    hashes = base_identity(str(small_model))
    assert meta["augmentation"] is None
    assert meta["base_config_sha256"] == hashes["config_sha256"] and meta["base_weights_sha256"] == hashes["weights_sha256"]
    manifest = json.loads((model_dir / "checkpoint-2" / CHECKPOINT_MANIFEST).read_text())
    assert manifest["run"]["base_weights_sha256"] == hashes["weights_sha256"]
    assert set(manifest["sha256"]) == set(manifest["files"])


def test_augmentation_settings_ignore_a_sidecar_that_is_not_stage_3s(tmp_path):
    data = tmp_path / "bio.csv"
    data.write_text("text\nx\n")
    for stray in ("{not json", "[1, 2]", '{"csv_sha256": "other"}'):
        (tmp_path / "bio.json").write_text(stray)
        assert augmentation_settings(data, "abc") is None
    (tmp_path / "bio.json").write_text('{"csv_sha256": "abc", "alpha": 0.7}')
    assert augmentation_settings(data, "abc") == {"csv_sha256": "abc", "alpha": 0.7}


# --- class 2: non-finite numbers ----------------------------------------------------------------------------


def test_training_stops_when_it_diverges_and_writes_no_adapter(small_model, bios, tmp_path):
    """One step per pass (batch_size 12 = the 12 texts) and one pass of warm-up: step 1 runs at learning rate 0 and
    ends pass 1 (checkpoint-1, the initial weights), step 2 at 1e30 ends pass 2 (checkpoint-2, weights ~1e30 but
    finite), step 3 computes with them and diverges. Both checkpoints saved before it are complete and finite."""
    from safetensors.numpy import load_file

    model_dir = tmp_path / "lora"
    with pytest.raises(InputError, match=r"learning_rate=1e\+30: training diverged at step 3 \(epoch") as raised:
        train(small_model, bios, model_dir, epochs=4, batch_size=12, learning_rate=1e30, warmup_passes=1.0,
              lr_schedule="constant", logging_steps=1, device="cpu", report_to=[])
    assert "no adapter was written" in str(raised.value)
    assert not (model_dir / "adapter_model.safetensors").exists() and not (model_dir / "train_meta.json").exists()
    checkpoints = sorted(p.name for p in model_dir.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]
    for name in checkpoints:  # every checkpoint saved before the divergence is complete and finite
        assert is_complete_checkpoint(model_dir / name)
        weights = load_file(str(model_dir / name / "adapter_model.safetensors"))
        assert weights and all(np.isfinite(v).all() for v in weights.values())
    assert max(np.abs(v).max() for v in load_file(str(model_dir / "checkpoint-2" / "adapter_model.safetensors")).values()) > 1e20


def test_the_guard_checks_weights_after_each_step_and_the_logged_loss():
    import torch

    weight = torch.nn.Parameter(torch.ones(3))
    guard = StopOnNonFinite(1e-3)
    guard.on_train_begin(None, None, None, model=SimpleNamespace(named_parameters=lambda: [("lora_A", weight)]))
    state = SimpleNamespace(global_step=4, epoch=1.5)
    guard.on_step_end(None, state, None)
    guard.on_log(None, state, None, logs={"loss": 2.0, "grad_norm": 1.0})
    with pytest.raises(InputError, match=r"at step 4 \(epoch 1.50\): the grad norm is inf"):
        guard.on_log(None, state, None, logs={"loss": 2.0, "grad_norm": float("inf")})
    with torch.no_grad():
        weight[1] = float("nan")
    with pytest.raises(InputError, match="the LoRA weight lora_A is not finite"):
        guard.on_step_end(None, state, None)


def test_a_dump_with_nan_scores_is_never_written(tmp_path):
    dump = AttentionDump(scores=np.array([0.1, np.nan, 0.3], dtype=np.float32), offsets=np.array([0, 1, 3]),
                         input_ids=np.array([1, 2, 3]), char_spans=np.zeros((3, 2), dtype=np.int64),
                         ranked=np.ones(3, dtype=bool))
    with pytest.raises(InputError, match="text 1's scores are not finite"):
        dump.save(tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_json_is_written_strictly(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


# --- class 3: inputs read wrongly -------------------------------------------------------------------------


def test_every_csv_row_has_the_headers_fields(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text('text,note\n"Ann, a chemist",x\n\n"Bo",y\n')  # quoted commas and a blank line: fine
    assert read_csv(good, "dataset")["text"].tolist() == ["Ann, a chemist", "Bo"]
    short = tmp_path / "short.csv"
    short.write_text("text,note\nAnn,x\nBo\n")
    with pytest.raises(InputError, match=r"row 1 \(line 3\) has 1 fields, the header has 2; quote a text"):
        read_csv(short, "dataset")


def test_a_gold_answer_that_normalises_to_nothing_is_a_data_error():
    check_gold("Apple", "eval_data=x: row 0", "company")
    for empty in ("The", "an", "-", " . "):
        with pytest.raises(InputError, match="row 0: the company"):
            check_gold(empty, "eval_data=x: row 0", "company")


def test_training_refuses_a_text_longer_than_max_length_or_the_models_positions_and_never_cuts(small_model):
    """max_length means what it means in stage 1: the longest text allowed; nothing is cut."""
    from elusive.core.models import load_tokenizer

    tok = load_tokenizer(str(small_model))
    long, short = "Ann Lee was born in Oslo. " * 30, "Bo Li."
    n_long = len(tok(long)["input_ids"]) + 1  # with EOS
    examples = tokenize_for_training(tok, [short, long], max_length=n_long, model_limit=n_long)
    assert [len(e["input_ids"]) for e in examples] == [len(tok(short)["input_ids"]) + 1, n_long]
    assert examples[1]["input_ids"][-1] == tok.eos_token_id and examples[1]["labels"] == examples[1]["input_ids"]
    with pytest.raises(InputError, match=rf"dataset=d.csv: text 1 has {n_long} tokens \(EOS included\), more than "
                                         rf"max_length's limit of {n_long - 1}; split"):
        tokenize_for_training(tok, [short, long], max_length=n_long - 1, model_limit=4000, dataset="d.csv")
    with pytest.raises(InputError, match=rf"text 1 has {n_long} tokens \(EOS included\), more than the model's "
                                         r"limit of 20"):
        tokenize_for_training(tok, [short, long], max_length=4000, model_limit=20, dataset="d.csv")


# --- class 4: resuming ----------------------------------------------------------------------------------------


def test_resume_with_fewer_epochs_is_refused_and_a_resumed_adapter_says_what_it_is(small_model, bios, tmp_path):
    model_dir = tmp_path / "lora"
    settings = dict(batch_size=6, device="cpu", report_to=[], logging_steps=1)
    train(small_model, bios, model_dir, epochs=2, **settings)
    with pytest.raises(InputError, match=r"resume=true epochs=1: checkpoint-4 has already trained 2 epochs; give "
                                         r"epochs>=2"):
        train(small_model, bios, model_dir, epochs=1, resume=True, **settings)
    train(small_model, bios, model_dir, epochs=2, resume=True, **settings)  # nothing left to train
    meta = json.loads((model_dir / "train_meta.json").read_text())
    assert meta["epochs"] == 2 and meta["global_step"] == 4
    assert meta["resumed_from"] == {"checkpoint": "checkpoint-4", "epoch": 2.0, "global_step": 4}
    assert meta["final_train_loss"] > 0 and meta["train_loss_mean"] is None  # not the 0 of a run with no steps


def test_resume_refuses_other_base_weights_under_the_same_path(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    run = {"base_model": "/m/small", "base_weights_sha256": "aa", "seed": 0}
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": {}, "run": run}))
    check_same_run(folder, dict(run))
    check_same_run(folder, {**run, "base_weights_sha256": None})  # cannot be hashed here: nothing to compare
    with pytest.raises(InputError, match="was trained with base_weights_sha256=aa, this run has base_weights_sha256=bb"):
        check_same_run(folder, {**run, "base_weights_sha256": "bb"})


def test_a_checkpoint_file_altered_after_it_was_listed_is_not_complete(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "optimizer.pt").write_bytes(b"x" * 100)
    state = SimpleNamespace(is_world_process_zero=True, global_step=3)
    MarkCheckpointComplete().on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    assert is_complete_checkpoint(folder)
    (folder / "optimizer.pt").write_bytes(b"x" * 99 + b"y")  # same size, other bytes
    assert not is_complete_checkpoint(folder)


# --- class 5: leftovers of killed runs -------------------------------------------------------------------------


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid)
    target = tmp_path / "aug.csv"
    with atomic_path(target) as tmp:  # a live writer's name, as a killed one would have left it
        name = tmp.name
    leftover = tmp_path / name.replace(f".{os.getpid()}-", f".{dead.pid}-")
    leftover.write_text("half")
    alive = tmp_path / name.replace(".tmp", "x.tmp")  # this process: still writing
    alive.write_text("busy")
    other = tmp_path / f".aug.csv.{dead.pid}-ffffff.abc.tmp"  # another host's: its pid means nothing here
    other.write_text("theirs")
    legacy = tmp_path / ".aug.csv.q1w2e3.tmp"  # before temp names carried a pid: left alone
    legacy.write_text("old")
    write_text_atomic(target, "text\n")
    assert not leftover.exists() and alive.exists() and other.exists() and legacy.exists()
    assert target.read_text() == "text\n"


def test_the_lock_holder_is_named_even_when_its_record_is_unreadable(tmp_path):
    marker = tmp_path / marker_name("train")
    marker.write_text("")
    assert "not written its pid" in outputs._holder(marker)
