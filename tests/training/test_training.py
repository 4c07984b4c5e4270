"""Stage 4: the LoRA configuration, training examples, the collator and the train.py script."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.run import run_script
from helpers.stages import train
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import elusive.training.stage as training
from elusive.core.config import TrainSettings
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.text.data import load_texts
from elusive.training.stage import lora_config, tokenize_for_training

# 12 texts, batch_size 4 -> 3 optimizer steps per epoch
STEPS_PER_EPOCH = 3


def _train(model: Path, bios: Path, model_dir: Path, *extra: str):
    return run_script(
        "train.py", f"model={model}", f"dataset={bios}", "batch_size=4", "logging_steps=1", f"model_dir={model_dir}",
        *extra, hydra_dir=model_dir.parent / f"hydra-{model_dir.name}-{len(extra)}",
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- in-process pieces ------------------------------------------------------------------------------------


def test_lora_targets_every_linear_except_lm_head(small_model):
    base = AutoModelForCausalLM.from_pretrained(small_model)
    linear = [name for name, m in base.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in linear and len(linear) == 1 + 2 * 7  # 4 attention + 3 MLP projections per layer
    defaults = TrainSettings()  # the paper's LoRA: r=16, alpha 16, no dropout (the defaults live in config only)
    config = lora_config(defaults.lora_r, defaults.lora_alpha, defaults.lora_dropout)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (16, 16, 0.0, "none")
    lm = get_peft_model(base, config)
    for name in linear:
        module = lm.base_model.model.get_submodule(name)
        if name == "lm_head":
            assert not hasattr(module, "lora_A") and not hasattr(module, "lora_B")
        else:
            assert hasattr(module, "lora_A") and hasattr(module, "lora_B"), name
            assert module.lora_A["default"].weight.shape == (16, module.in_features)
            assert module.lora_B["default"].weight.shape == (module.out_features, 16)
    embed = lm.base_model.model.get_submodule("model.embed_tokens")
    assert not hasattr(embed, "lora_A") and not hasattr(embed, "lora_embedding_A")
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)


@pytest.mark.parametrize("model", ["small_model", "gemma_model"])
def test_tokenize_for_training_appends_eos(model, request):
    tok = load_tokenizer(str(request.getfixturevalue(model)))
    texts = ["Ann Lee was born in Oslo.", "Bob Ray worked for Acme and then for the British Museum."]
    examples = tokenize_for_training(tok, texts, max_length=512)
    assert len(examples) == 2
    for text, ex in zip(texts, examples):
        plain = tok(text)["input_ids"]
        assert ex["input_ids"] == plain + [tok.eos_token_id]
        assert ex["labels"] == ex["input_ids"] and ex["labels"] is not ex["input_ids"]
        assert ex["attention_mask"] == [1] * len(ex["input_ids"])
        if tok.bos_token_id is not None and model == "gemma_model":
            assert ex["input_ids"][0] == tok.bos_token_id
    with pytest.raises(InputError, match="text 0 has .* more than max_length's limit of 5"):  # refused, never cut
        tokenize_for_training(tok, texts[1:], max_length=5)


class _Stop(Exception):
    pass


def test_collator_keeps_eos_label_when_pad_is_eos(small_model, bios, tmp_path, monkeypatch):
    model = tmp_path / "padeos"
    shutil.copytree(small_model, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(model)

    captured = {}

    class FakeTrainer:
        def __init__(self, **kwargs):
            captured.update(kwargs)
            raise _Stop

    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    with pytest.raises(_Stop):
        train(model, bios, tmp_path / "lora", epochs=1, batch_size=2, device="cpu")
    collator, examples = captured["data_collator"], captured["train_dataset"]
    tok = collator.tokenizer
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos and tok.padding_side == "right"
    assert len(examples) == len(load_texts(bios))
    short, long = sorted(examples[:4], key=lambda e: len(e["input_ids"]))[::3]
    n, m = len(short["input_ids"]), len(long["input_ids"])
    assert n < m
    batch = collator([short, long])
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    assert labels.shape == ids.shape == (2, m)
    assert labels[0, :n].tolist() == short["input_ids"] and labels[0, n - 1] == eos
    assert (labels[0, n:] == -100).all() and (ids[0, n:] == eos).all() and not mask[0, n:].any()
    assert mask[0, :n].all()
    assert labels[1].tolist() == long["input_ids"] and labels[1, -1] == eos


# --- train.py ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(small_model, bios, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("train") / "lora"
    proc = _train(small_model, bios, model_dir, "epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir


def test_train_script_writes_adapter_checkpoints_and_logs(trained):
    files = {p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file()}
    assert {"adapter_config.json", "adapter_model.safetensors", "train_meta.json"} <= files
    checkpoints = sorted(p.name for p in trained.glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{STEPS_PER_EPOCH}", f"checkpoint-{2 * STEPS_PER_EPOCH}"]  # one per epoch
    assert not [f for f in files if f.endswith("training_args.bin")]
    assert not [f for f in files if f.endswith(".tmp") or ".adapter.tmp" in f]
    for name in checkpoints:
        args = json.loads((trained / name / "training_args.json").read_text())
        assert args["num_train_epochs"] == 2 and args["per_device_train_batch_size"] == 4 and args["seed"] == 0
        assert (trained / name / "adapter_config.json").is_file()
    state = json.loads((trained / checkpoints[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2.0) and state["global_step"] == 2 * STEPS_PER_EPOCH
    meta = json.loads((trained / "train_meta.json").read_text())
    assert meta["n_texts"] == 12 and meta["epochs"] == 2 and meta["final_train_loss"] > 0
    adapter = json.loads((trained / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 16 and "lm_head" not in adapter["target_modules"]

    events = glob.glob(str(trained / "runs" / "**" / "events.out.tfevents.*"), recursive=True)
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(events[0])
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # logging_steps=1
    assert all(e.value > 0 for e in losses)


def test_trained_adapter_loads_and_moved(trained, small_model):
    tensors = load_file(str(trained / "adapter_model.safetensors"))
    b_weights = {k: v for k, v in tensors.items() if "lora_B" in k}
    assert len(b_weights) == 14 and len(tensors) == 28
    assert all(v.abs().max() > 0 for v in b_weights.values())  # initialised at zero, moved by training
    base = AutoModelForCausalLM.from_pretrained(small_model)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        before = base(ids).logits
    lm = PeftModel.from_pretrained(base, str(trained))
    loaded = {k: v for k, v in lm.state_dict().items() if "lora_" in k}
    key = next(k for k in tensors if "layers.0.self_attn.q_proj.lora_B" in k)
    assert torch.equal(loaded[key.replace(".weight", ".default.weight")], tensors[key])
    with torch.no_grad():
        after = lm(ids).logits
    assert not torch.allclose(before, after)


def test_same_seed_gives_identical_adapter(trained, small_model, bios, tmp_path):
    proc = _train(small_model, bios, tmp_path / "again", "epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = load_file(str(trained / "adapter_model.safetensors"))
    second = load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_continues_to_the_requested_epochs(small_model, bios, tmp_path):
    """Epochs grow on resume only with a schedule that does not depend on the run's length (a linear decay to
    the last step would be the first run's, then the longer run's)."""
    linear = tmp_path / "linear"
    assert _train(small_model, bios, linear, "epochs=1").returncode == 0
    proc = _train(small_model, bios, linear, "epochs=2", "resume=true")
    assert proc.returncode == 2 and _error_lines(proc.stderr)[0].startswith(
        f"error: resume=true epochs=2: checkpoint-{STEPS_PER_EPOCH} belongs to a run of 1 epochs")
    model_dir = tmp_path / "lora"
    fixed = ("lr_schedule=constant", "warmup_passes=0")
    proc = _train(small_model, bios, model_dir, "epochs=1", *fixed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_ckpt = model_dir / f"checkpoint-{STEPS_PER_EPOCH}"
    before = _sha(first_ckpt / "adapter_model.safetensors")
    proc = _train(small_model, bios, model_dir, "epochs=2", "resume=true", *fixed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha(first_ckpt / "adapter_model.safetensors") == before  # continued, not restarted
    state = json.loads((model_dir / f"checkpoint-{2 * STEPS_PER_EPOCH}" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2.0) and state["global_step"] == 2 * STEPS_PER_EPOCH
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert not list(model_dir.rglob("training_args.bin"))


def test_resume_without_checkpoint_exits_2(small_model, bios, tmp_path):
    model_dir = tmp_path / "fresh"
    model_dir.mkdir()
    proc = _train(small_model, bios, model_dir, "epochs=1", "resume=true")
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: resume=true") and str(model_dir) in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (model_dir / "adapter_config.json").exists()



def test_records_checkpoint_limit_and_reporting(small_model, bios, tmp_path):
    """final_train_loss is the last logged loss (loss.csv's last row), save_total_limit keeps the last
    checkpoints, report_to=[] writes no TensorBoard logs, and the settings are recorded."""
    out = tmp_path / "lora"
    train(small_model, bios, out, epochs=3, batch_size=6, device="cpu", logging_steps=1, save_total_limit=1,
          report_to=[])
    meta = json.loads((out / "train_meta.json").read_text())
    curve = (out / "loss.csv").read_text().splitlines()
    assert curve[0] == "step,epoch,loss,learning_rate,grad_norm" and len(curve) == 1 + 6  # 2 steps × 3 epochs
    assert float(curve[-1].split(",")[2]) == meta["final_train_loss"]
    losses = [float(line.split(",")[2]) for line in curve[1:]]
    assert meta["train_loss_mean"] == pytest.approx(sum(losses) / len(losses), rel=1e-3)
    assert meta["epochs"] == 3 and meta["global_step"] == 6 and meta["settings"]["save_total_limit"] == 1
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-6"]
    assert not (out / "runs").exists()


# --- the epoch search from one run: adapters kept at chosen passes ---------------------------------------


def test_steps_per_pass_counts_as_the_trainer_does():
    assert training.steps_per_pass(12, 4, 1, 1) == 3
    assert training.steps_per_pass(13, 4, 1, 1) == 4  # the last batch holds one text
    assert training.steps_per_pass(13, 4, 2, 1) == 2  # ceil(13 / 8) batches per process
    assert training.steps_per_pass(12, 4, 1, 2) == 2  # 3 batches, the last step accumulates one
    assert training.steps_per_pass(1, 8, 1, 4) == 1


def test_mean_token_loss_is_the_token_weighted_cross_entropy(small_model, bios):
    tokenizer = load_tokenizer(str(small_model))
    examples = tokenize_for_training(tokenizer, load_texts(bios)[:5], 512)
    lm = AutoModelForCausalLM.from_pretrained(small_model)
    from transformers import DataCollatorForSeq2Seq

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    total = count = 0
    for ex in examples:  # one text at a time, no padding: the reference
        ids = torch.tensor([ex["input_ids"]])
        with torch.no_grad():
            logits = lm(ids).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    lm.train()
    for batch_size in (1, 2, 5):  # padded batches: each token counts once, whatever the batch
        assert training.mean_token_loss(lm, examples, collator, batch_size) == pytest.approx(total / count, rel=1e-5)
    assert lm.training  # the mode is restored


@pytest.fixture(scope="module")
def searched(small_model, bios, tmp_path_factory):
    """One 3-pass run keeping passes 1 and 2, constant schedule after a warm-up of half a pass."""
    model_dir = tmp_path_factory.mktemp("search") / "lora"
    proc = _train(small_model, bios, model_dir, "epochs=3", "save_at_passes=[1,2]", "lr_schedule=constant",
                  "warmup_passes=0.5", "learning_rate=1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir


def test_kept_passes_have_their_adapter_and_record(searched):
    kept = training.kept_passes(searched)
    assert [p.name for p in kept] == ["pass-1", "pass-2"]
    losses = []
    for passes, folder in zip((1, 2), kept):
        meta = json.loads((folder / "train_meta.json").read_text())
        assert meta["passes"] == passes and meta["global_step"] == passes * STEPS_PER_EPOCH
        assert meta["adapter_sha256"] == _sha(folder / "adapter_model.safetensors")
        # the same weights as the Trainer's checkpoint of that epoch
        assert _sha(folder / "adapter_model.safetensors") == _sha(
            searched / f"checkpoint-{passes * STEPS_PER_EPOCH}" / "adapter_model.safetensors")
        assert meta["machine"]["cpu"] and meta["settings"]["lr_schedule"] == "constant"
        losses.append(meta["loss_originals"])
    final = json.loads((searched / "train_meta.json").read_text())
    losses.append(final["loss_originals"])
    assert final["kept_passes"] == {"pass-1": losses[0], "pass-2": losses[1]}
    assert losses[0] > losses[1] > losses[2] > 0  # training on these texts lowers their loss
    assert not list(searched.glob(".pass-*"))  # no temporary folder left


def test_constant_schedule_holds_the_peak_after_a_warm_up_in_passes(searched):
    rows = (searched / "loss.csv").read_text().splitlines()[1:]
    rates = [float(r.split(",")[3]) for r in rows]
    # warm-up of round(0.5 × 3) = 2 steps: 0, then half the peak, then the peak to the end
    assert rates == pytest.approx([0.0, 5e-4] + [1e-3] * (3 * STEPS_PER_EPOCH - 2))


def test_a_kept_pass_is_the_adapter_a_run_of_that_length_gives(searched, small_model, bios, tmp_path):
    proc = _train(small_model, bios, tmp_path / "two", "epochs=2", "save_at_passes=[1]", "lr_schedule=constant",
                  "warmup_passes=0.5", "learning_rate=1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha(tmp_path / "two" / "adapter_model.safetensors") == _sha(
        searched / "pass-2" / "adapter_model.safetensors")
    assert _sha(tmp_path / "two" / "pass-1" / "adapter_model.safetensors") == _sha(
        searched / "pass-1" / "adapter_model.safetensors")


def test_passes_beyond_the_epochs_are_refused(small_model, bios, tmp_path):
    proc = _train(small_model, bios, tmp_path / "lora", "epochs=2", "save_at_passes=[1,3]")
    assert proc.returncode == 2
    assert _error_lines(proc.stderr) == [
        "error: save_at_passes=[1, 3]: pass 3 lies beyond epochs=2; keep passes <= epochs, or set epochs=3"]
    assert not (tmp_path / "lora").exists()


@pytest.mark.parametrize("value", ["[2,1]", "[0,1]", "[1,1]"])
def test_save_at_passes_must_increase_from_one(small_model, bios, tmp_path, value):
    proc = _train(small_model, bios, tmp_path / "lora", "epochs=2", f"save_at_passes={value}")
    assert proc.returncode == 2
    assert _error_lines(proc.stderr)[0].endswith("must be increasing whole numbers >= 1, e.g. [4,8,12]")


def test_evaluate_every_pass_scores_each_kept_adapter(searched, small_model, bios, tmp_path):
    out = tmp_path / "eval"
    proc = run_script("evaluate.py", f"model={small_model}", f"model_dir={searched}", f"eval_data={bios}",
                      f"output_dir={out}", "every_pass=true", "max_people=2", "shots=1", "max_new_tokens=2",
                      "device=cpu", hydra_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder, adapter in ((out / "pass-1", searched / "pass-1"), (out / "pass-2", searched / "pass-2"),
                            (out, searched)):
        meta = json.loads((folder / "eval_meta.json").read_text())
        assert meta["adapter_sha256"] == _sha(adapter / "adapter_model.safetensors")
        assert json.loads((folder / "results.json").read_text())["company"]["n"] == 2
    assert json.loads((out / "pass-2" / "eval_meta.json").read_text())["training"]["passes"] == 2
    none = run_script("evaluate.py", f"model={small_model}", f"model_dir={searched / 'pass-1'}", f"eval_data={bios}",
                      f"output_dir={tmp_path / 'none'}", "every_pass=true", "device=cpu", hydra_dir=tmp_path / "h2")
    assert none.returncode == 2 and "holds no adapter kept at a pass" in none.stderr
    assert not (tmp_path / "none").exists()
