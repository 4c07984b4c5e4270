"""Several processes, one result: save_attention, evaluate and train on 2 CPU processes (gloo), started by
torchrun or by accelerate launch with the shipped conf/accelerate files, give what a single process gives:
the same dump and predictions byte for byte, the same adapter within float tolerance. Also the shard
plumbing of :mod:`elusive.core.distributed` in one process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.run import DATA, ROOT, run_script
from helpers.stages import evaluate, save_attention
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from elusive.attention.scores import score_texts
from elusive.attention.stage import merge_shards
from elusive.core import distributed
from elusive.core.distributed import Share, gather_json, shard_dir
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.text.data import load_texts
from elusive.text.tokens import encode_many

ACCELERATE_CONFIGS = sorted((ROOT / "conf" / "accelerate").glob("*.yaml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: str, *overrides: str, hydra_dir: Path, config: str | None = None) -> subprocess.CompletedProcess:
    """Start ``script`` on 2 processes: ``torchrun --standalone --nproc_per_node 2`` (a free port, gloo on CPU),
    or with ``config``, ``accelerate launch --config_file conf/accelerate/<config>.yaml --num_processes 2``."""
    if config is None:
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / script)]
    else:
        args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "conf" / "accelerate" / f"{config}.yaml"),
                "--num_processes", "2", "--main_process_port", str(free_port()), str(ROOT / script)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    args += [*overrides, f"hydra.run.dir={hydra_dir}"]
    proc = subprocess.run(args, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@contextlib.contextmanager
def one_thread():
    """Run a single-process reference with 1 thread, as torchrun gives each of its processes
    (OMP_NUM_THREADS=1): on CPUs the thread count can change the last bits of float sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def wrote_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("wrote ")]


# --- in one process ---------------------------------------------------------------------------------------


def test_share_picks_round_robin_and_covers_everything_once():
    items = list(range(7))
    parts = [Share(rank, 3).pick(items) for rank in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert Share().pick(items) == items and Share().is_main and not Share(1, 3).is_main


def test_two_shares_of_scores_merge_into_the_single_process_result(small_model, bios, tmp_path):
    """Rank 1 then rank 0 in one process (the barrier is a no-op outside a launch): merged = unsplit."""
    tok = load_tokenizer(str(small_model))
    lm = AutoModelForCausalLM.from_pretrained(small_model, attn_implementation="eager").eval()
    encoded = encode_many(tok, load_texts(bios)[:7])
    focus = [[1, len(e.input_ids) - 1] for e in encoded]
    whole, whole_rows = score_texts(lm, encoded, [0, 1], batch_size=2, pad_token_id=tok.pad_token_id, focus=focus)
    out = tmp_path / "dump.safetensors"
    shares = [score_texts(lm, encoded, [0, 1], batch_size=2, pad_token_id=tok.pad_token_id, focus=focus, part=Share(r, 2))
              for r in (0, 1)]
    assert sum(s is not None for s in shares[0][0]) == 4 and sum(s is not None for s in shares[1][0]) == 3  # batches 0, 2 / 1, 3
    assert merge_shards(out, Share(1, 2), *shares[1]) is None
    assert (shard_dir(out) / "rank1-of-2.safetensors").is_file()
    merged, merged_rows = merge_shards(out, Share(0, 2), *shares[0])
    assert not shard_dir(out).exists()  # the main process removed the shards after reading them
    assert all(np.array_equal(a, b) for a, b in zip(merged, whole))
    assert all(len(a) == len(b) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b))
               for a, b in zip(merged_rows, whole_rows))


def test_a_missing_shard_is_a_clear_error(tmp_path):
    out = tmp_path / "eval" / "predictions.jsonl"
    with pytest.raises(InputError, match="rank1-of-2.json: a process's results are missing; with several nodes"):
        gather_json(out, Share(0, 2), {"index": [0]})


def test_launched_run_gives_each_process_its_device_and_refuses_multi(monkeypatch):
    assert distributed.process_device("multi") == "multi"  # one process: untouched
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched()
    with pytest.raises(InputError, match="device=multi: .* not accelerate launch/torchrun"):
        distributed.process_device("multi")
    expected = "cuda:1" if torch.cuda.is_available() else "auto"
    assert distributed.process_device("auto") == expected and distributed.process_device("cpu") == "cpu"


# --- torchrun, 2 processes vs 1 -----------------------------------------------------------------------------


def test_two_processes_write_the_single_process_attention_dump(small_model, bios, tmp_path):
    """12 texts in batches of 5: rank 0 scores batches 0 and 2, rank 1 batch 1; focus rows included."""
    with one_thread():
        one = save_attention(str(small_model), bios, tmp_path / "one", batch_size=5, focus=True, device="cpu")
    proc = launch(
        "save_attention.py", f"model={small_model}", f"dataset={bios}", f"save_name={tmp_path / 'two'}",
        "batch_size=5", "focus=true", hydra_dir=tmp_path / "h",
    )
    two = tmp_path / "two.safetensors"
    assert two.read_bytes() == one.read_bytes()
    assert len(load_file(str(two))["focus_rows"]) > 0
    assert wrote_lines(proc.stdout) == [f"wrote {two}"]  # the main process only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "one.safetensors", "two.safetensors"]  # no shards left


@pytest.mark.parametrize(("shared", "config"), [(False, None), (True, "ddp")])
def test_two_processes_write_the_single_process_predictions(small_model, bios, tmp_path, shared, config):
    settings = {"shots": 2, "max_new_tokens": 4, "batch_size": 3, "max_people": 6, "shared_shots": shared}
    common = {"fewshot_data": DATA / "biography_fewshot.csv", "prompts": DATA / "prompts.csv", "device": "cpu"}
    with one_thread():
        evaluate(str(small_model), bios, tmp_path / "one", **common, **settings)
    proc = launch(
        "evaluate.py", f"model={small_model}", f"eval_data={bios}", f"output_dir={tmp_path / 'two'}",
        *(f"{k}={str(v).lower()}" for k, v in settings.items()), hydra_dir=tmp_path / "h", config=config,
    )
    for name in ("predictions.jsonl", "results.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "one" / "predictions.jsonl").open()]
    assert len(predictions) == 30 and len(set(predictions)) > 10  # distinct answers: the order is checked
    assert json.loads((tmp_path / "two" / "eval_meta.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".elusive-evaluate", "eval_meta.json", "predictions.jsonl",
                                                                 "results.json"]  # the marker: this stage's folder
    assert len(wrote_lines(proc.stdout)) == 1


@pytest.fixture(scope="module")
def one_process_adapter(small_model, bios, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("one") / "lora"
    single = run_script("train.py", *train_args(small_model, bios), "batch_size=4", f"model_dir={model_dir}",
                        hydra_dir=model_dir.parent / "h")
    assert single.returncode == 0, single.stderr[-3000:]
    return model_dir


def train_args(model: Path, bios: Path) -> list[str]:
    return [f"model={model}", f"dataset={bios}", "epochs=1", "logging_steps=1"]


@pytest.mark.parametrize("config", [None, "fsdp"])
def test_two_processes_train_the_adapter_of_one_process_with_the_global_batch(
    small_model, bios, tmp_path, one_process_adapter, config
):
    """2 processes × 2 texts per step = 1 process × 4: same seed, same data order, same adapter (float tolerance).

    DDP under torchrun, and FSDP 2 from conf/accelerate/fsdp.yaml under accelerate launch.
    """
    proc = launch("train.py", *train_args(small_model, bios), "batch_size=2", f"model_dir={tmp_path / 'two'}",
                  hydra_dir=tmp_path / "h", config=config)
    one = load_file(str(one_process_adapter / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert one.keys() == two.keys()
    moved = [k for k in one if "lora_B" in k]
    assert moved and all(one[k].abs().max() > 1e-5 for k in moved)  # initialised at zero: training moved them
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    # 12 texts / (2 processes × 2) = 3 steps, with the same per-step losses (the same texts in each step)
    states = [json.loads((d / "checkpoint-3" / "trainer_state.json").read_text()) for d in (one_process_adapter, tmp_path / "two")]
    losses = [[h["loss"] for h in s["log_history"] if "loss" in h] for s in states]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert json.loads((tmp_path / "two" / "train_meta.json").read_text())["world_size"] == 2
    files = [p.name for p in (tmp_path / "two").rglob("*")]
    assert ".adapter.tmp" not in files and "training_args.bin" not in files
    assert wrote_lines(proc.stdout) == [f"wrote {tmp_path / 'two'}"]


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_configs_load_and_every_key_is_commented(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes > 1 and config.num_machines == 1 and not config.use_cpu
    lines = path.read_text().splitlines()
    keys = [line for line in lines if re.match(r"^ *[a-z_0-9]+:", line)]
    assert lines[0].startswith("# accelerate config") and "accelerate launch --config_file" in path.read_text()
    assert keys and all("#" in line for line in keys), [line for line in keys if "#" not in line]


def test_run_experiment_refuses_a_multi_process_launch(monkeypatch, tmp_path):
    from helpers.stages import run_experiment

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="run_experiment.py runs in one process; .* accelerate launch"):
        run_experiment(name="x", method="plain", model="m", dataset=DATA / "biography.csv", out_root=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written
