"""quant=8bit / quant=4bit on the CPU (bitsandbytes' CPU kernels): stages 1, 4 and 5 on the tiny models, and
all five stages in one run_experiment command.

Measured on the ``small_model`` fixture (2 layers, hidden 32, initializer range 0.4, so its weights are far
larger than a real model's and quantisation errors are large) over the 12 biographies: per-token attention
scores against fp32 — 8-bit: correlation 0.9985, mean |difference| 2.3 % of the mean score; 4-bit (NF4):
correlation 0.75, 34 %. On Qwen2.5-Coder 0.5B (8 biographies) the same figures are 1.0000 / 0.5 % (8-bit) and
0.9997 / 2.8 % (4-bit). The tolerances below leave about a factor 2 to 3 on the tiny model's figures.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from helpers.run import run_script
from helpers.stages import evaluate, save_attention, train
from peft import PeftModel
from safetensors.torch import load_file

import elusive.core.models as models
import elusive.training.stage as training
from elusive.attention.dump import AttentionDump
from elusive.attention.scores import attention_modules, score_batch
from elusive.core.errors import InputError
from elusive.core.models import load_model, load_tokenizer
from elusive.evaluation.adapters import load_for_eval

QUANTS = ["8bit", "4bit"]
LAYER = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}
SETTINGS = {"batch_size": 4, "device": "cpu", "seed": 3, "logging_steps": 1}  # 12 texts: 3 steps per epoch
# (correlation with fp32 at least, mean |quantised - fp32| / mean fp32 score at most); see the module docstring
TOLERANCE = {"8bit": (0.99, 0.06), "4bit": (0.5, 0.7)}


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("quant", QUANTS)
def test_quantised_model_loads_on_the_cpu(small_model, quant):
    lm = load_model(str(small_model), device="cpu", quant=quant)
    quantised = [m for m in lm.modules() if isinstance(m, LAYER[quant])]
    assert len(quantised) == 2 * 7  # every projection of both layers; the LM head stays a plain Linear
    assert type(lm.lm_head) is torch.nn.Linear and lm.lm_head.weight.dtype == torch.float32
    assert {p.device.type for p in lm.parameters()} == {"cpu"}
    if quant == "4bit":
        assert quantised[0].compute_dtype == torch.float32  # dtype=auto is float32 on the CPU
        assert quantised[0].weight.quant_type == "nf4"
    else:
        assert quantised[0].weight.dtype == torch.int8


def test_the_8bit_cast_warning_is_logged_once(small_model, caplog):
    lm = load_model(str(small_model), device="cpu", quant="8bit")
    ids = torch.tensor([[5, 6, 7, 8]])
    (once,) = [f for f in logging.getLogger("bitsandbytes.autograd._functions").filters if isinstance(f, models._Once)]
    once.seen.clear()  # forget what earlier tests logged
    with caplog.at_level("WARNING", logger="bitsandbytes"):
        for _ in range(3):
            lm(ids)  # 3 forwards × 14 quantised layers, each logging the same cast warning
    cast = [r for r in caplog.records if "inputs will be cast" in r.getMessage()]
    assert len(cast) == 1


@pytest.mark.parametrize("quant", QUANTS)
def test_train_save_load_and_evaluate_with_a_quantised_base(small_model, bios, tmp_path, quant):
    model_dir = train(str(small_model), bios, tmp_path / "lora", epochs=1, quant=quant, **SETTINGS)
    saved = _adapter(model_dir)
    assert any(v.abs().max() > 0 for k, v in saved.items() if "lora_B" in k)  # training moved the adapter
    assert json.loads((model_dir / "train_meta.json").read_text())["final_train_loss"] > 0

    lm = PeftModel.from_pretrained(load_model(str(small_model), device="cpu", quant=quant), str(model_dir))
    proj = lm.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(proj.base_layer, LAYER[quant])
    key = next(k for k in saved if "layers.0.self_attn.q_proj.lora_A" in k)
    torch.testing.assert_close(proj.lora_A["default"].weight, saved[key], rtol=0, atol=0)

    evaluated, _ = load_for_eval(str(small_model), model_dir, "cpu", "auto", quant)
    assert isinstance(evaluated, PeftModel)  # not merged into the quantised weights
    results = evaluate(str(small_model), bios, tmp_path / "eval", model_dir=model_dir, max_people=2, device="cpu",
                       quant=quant, max_new_tokens=4)
    assert set(results) == {"date", "city", "university", "major", "company"}
    assert all(r["n"] == 2 for r in results.values())
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 10 and all(isinstance(p["prediction"], str) for p in predictions)


class _Crash(Exception):
    pass


class _CrashAfterFirstCheckpoint(training.MarkCheckpointComplete):
    """Stops the run with an exception right after the epoch-1 checkpoint is complete (a kill without a kill)."""

    def on_save(self, args, state, control, **kwargs):
        super().on_save(args, state, control, **kwargs)
        if state.global_step == 3:
            raise _Crash


@pytest.mark.parametrize("quant", QUANTS)
def test_resume_under_quantisation_gives_the_uninterrupted_adapter(small_model, bios, tmp_path, monkeypatch, quant):
    # bitsandbytes on the CPU is deterministic: the resumed adapter equals the uninterrupted one bit for bit
    reference = train(str(small_model), bios, tmp_path / "reference", epochs=2, quant=quant, **SETTINGS)
    with monkeypatch.context() as patch:
        patch.setattr(training, "MarkCheckpointComplete", _CrashAfterFirstCheckpoint)
        with pytest.raises(_Crash):
            train(str(small_model), bios, tmp_path / "resumed", epochs=2, quant=quant, **SETTINGS)
    assert not (tmp_path / "resumed" / "adapter_model.safetensors").exists()
    assert training.last_complete_checkpoint(tmp_path / "resumed").name == "checkpoint-3"
    train(str(small_model), bios, tmp_path / "resumed", epochs=2, quant=quant, resume=True, **SETTINGS)
    resumed, uninterrupted = _adapter(tmp_path / "resumed"), _adapter(reference)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


@pytest.fixture(scope="module")
def fp32_dump(small_model, bios, tmp_path_factory) -> AttentionDump:
    path = save_attention(str(small_model), bios, tmp_path_factory.mktemp("fp32") / "attn", device="cpu", batch_size=4)
    return AttentionDump.load(path)


@pytest.mark.parametrize("quant", QUANTS)
def test_save_attention_with_quant_is_close_to_fp32(small_model, bios, tmp_path, fp32_dump, quant):
    dump = AttentionDump.load(save_attention(str(small_model), bios, tmp_path / "attn", device="cpu", batch_size=4,
                                             quant=quant))
    ref = fp32_dump.scores
    assert np.isfinite(dump.scores).all() and dump.scores.shape == ref.shape
    assert np.array_equal(dump.input_ids, fp32_dump.input_ids)
    min_corr, max_error = TOLERANCE[quant]
    assert np.corrcoef(dump.scores, ref)[0, 1] >= min_corr
    assert np.abs(dump.scores - ref).mean() <= max_error * np.abs(ref).mean()
    assert not np.array_equal(dump.scores, ref)  # the quantised weights were really used
    # exact whatever the weights: every attention row sums to 1, so sum_j score_j * (n - j) = n for each text
    for t in range(dump.n_texts):
        scores = dump.scores[dump.offsets[t] : dump.offsets[t + 1]]
        n = len(scores)
        assert float(np.sum(scores * (n - np.arange(n)))) == pytest.approx(n, rel=1e-4)


@pytest.mark.parametrize("quant", QUANTS)
def test_blocked_attention_serves_a_quantised_model_like_the_hook(small_model, quant):
    lm = load_model(str(small_model), device="cpu", quant=quant, attn_implementation="eager")
    tokenizer = load_tokenizer(str(small_model))
    enc = tokenizer(["Ann Lee was born in Oslo on 2 May 1990.", "Bob Ray worked for Acme."], return_tensors="pt",
                    padding=True)
    assert len(attention_modules(lm)) == 2
    blocked, _ = score_batch(lm, enc.input_ids, enc.attention_mask, [0, 1], blocked=True)
    hooked, _ = score_batch(lm, enc.input_ids, enc.attention_mask, [0, 1], blocked=False)
    real = enc.attention_mask.bool()
    torch.testing.assert_close(blocked[real], hooked[real], rtol=1e-5, atol=1e-6)
    assert lm.config._attn_implementation == "eager"  # restored after the blocked pass


# --- bitsandbytes missing or unusable -----------------------------------------------------------------------


def test_missing_bitsandbytes_is_one_clear_error(small_model, bios, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    message = r"^quant=8bit: needs bitsandbytes \(pip install bitsandbytes==0\.50\.2\)$"
    with pytest.raises(InputError, match=message):
        load_model(str(small_model), device="cpu", quant="8bit")
    with pytest.raises(InputError, match=message):
        train(str(small_model), bios, tmp_path / "lora", epochs=1, quant="8bit", **SETTINGS)
    assert not (tmp_path / "lora").exists()  # refused before any work
    with pytest.raises(InputError, match=message.replace("8bit", "4bit")):
        save_attention(str(small_model), bios, tmp_path / "attn", device="cpu", quant="4bit")
    assert not (tmp_path / "attn.safetensors").exists()


def test_a_platform_bitsandbytes_cannot_run_on_is_named(small_model, monkeypatch):
    def no_kernel(self, x):
        raise NotImplementedError("no kernel for this CPU")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    models._run_tiny_layer.cache_clear()  # the check runs once per process and setting
    try:
        # the running torch's own version string (a CUDA build is not "+cpu")
        with pytest.raises(InputError, match=(r"^quant=4bit: bitsandbytes 0\.50\.2 cannot run on this platform \(Linux "
                                              rf".*, torch {re.escape(torch.__version__)}, device=cpu: no kernel for "
                                              r"this CPU\); use quant=null$")):
            load_model(str(small_model), device="cpu", quant="4bit")
    finally:
        models._run_tiny_layer.cache_clear()


def test_unknown_quant_is_refused(small_model):
    with pytest.raises(InputError, match=r"^quant=3bit: unknown; use null \(no quantisation\), 8bit or 4bit$"):
        load_model(str(small_model), device="cpu", quant="3bit")


def test_train_script_trains_a_4bit_adapter_on_the_cpu(small_model, bios, tmp_path):
    model_dir = tmp_path / "lora"
    proc = run_script("train.py", f"model={small_model}", f"dataset={bios}", f"model_dir={model_dir}", "epochs=1",
                      "batch_size=4", "quant=4bit", "device=cpu", hydra_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (model_dir / "adapter_config.json").is_file() and (model_dir / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("quant", QUANTS)
def test_one_run_of_the_five_stages_with_quantised_models_on_the_cpu(small_model, large_model, tmp_path, quant):
    """run_experiment: stages 1 (both models), 2, 3, 4 and 5 in one command, every model loaded in ``quant``."""
    proc = run_script(
        "run_experiment.py", "experiment=cpu_tiny", "method=attention_diff", f"model={small_model}",
        f"small_model={small_model}", f"large_model={large_model}", f"out_root={tmp_path / 'exp'}", "n_texts=4",
        f"attention.quant={quant}", f"train.quant={quant}", f"evaluate.quant={quant}", hydra_dir=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "exp" / "cpu_tiny"
    dumps = sorted(p.name for p in (root / "dumps").glob("*.safetensors"))
    assert len(dumps) == 3 and sum(name.startswith("diff-") for name in dumps) == 1  # two models and their contrast
    for name in dumps:
        if not name.startswith("diff-"):
            assert AttentionDump.load(root / "dumps" / name).metadata["quant"] == json.dumps(quant)
    (run,) = (root / "attention_diff").glob("a0.7_b0.05_s0-*")
    assert json.loads((run / "lora" / "adapter_config.json").read_text())["r"] == 16
    (results,) = run.glob("eval*/results.json")
    meta = json.loads((results.parent / "eval_meta.json").read_text())
    assert meta["quant"] == quant
    predictions = [json.loads(line) for line in (results.parent / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 * 5  # 4 people × 5 fields, each answered


# --- the same 4-bit path on every CPU ------------------------------------------------------------------------


def _narrow_4bit_layer() -> bnb.nn.Linear4bit:
    """A 4-bit layer narrower than bitsandbytes' AVX-512 BF16 repacking allows (out 16 % 32 != 0, in 32 < 64),
    in inference mode, with the flag bitsandbytes sets on such a CPU forced on: the AVX-512 BF16 machine's
    decision, reproduced on any CPU (the repacking that fails is plain torch, run before any kernel)."""
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(32, 16, bias=False, compute_dtype=torch.float32, quant_type="nf4").to("cpu").eval()
    layer.support_avx512bf16_for_cpu = True
    return layer


def test_narrow_4bit_layer_fails_on_the_avx512_bf16_path_without_the_fix():
    layer = _narrow_4bit_layer()
    with torch.no_grad(), pytest.raises((AssertionError, RuntimeError)):
        layer(torch.randn(3, 32))


def test_portable_path_serves_a_narrow_4bit_layer_like_the_dequantised_weights():
    layer = _narrow_4bit_layer()
    assert models.portable_4bit_on_cpu(layer) == 1
    assert models.portable_4bit_on_cpu(layer) == 0  # already portable
    x = torch.randn(3, 32)
    with torch.no_grad():
        out = layer(x)
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)  # float32 scales
    torch.testing.assert_close(out, x @ weight.T, rtol=1e-5, atol=1e-5)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)  # the weights were not repacked


def test_load_model_gives_every_4bit_layer_the_portable_path(small_model, monkeypatch):
    monkeypatch.setattr(bnb.nn.Linear4bit, "__init__", _flagging_init(bnb.nn.Linear4bit.__init__))
    lm = load_model(str(small_model), device="cpu", quant="4bit")  # as on an AVX-512 BF16 CPU: every flag set
    layers = [m for m in lm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and not any(m.support_avx512bf16_for_cpu for m in layers)
    with torch.no_grad():  # inference mode, hidden size 32: failed on such a CPU before
        assert torch.isfinite(lm(torch.tensor([[5, 6, 7, 8]])).logits).all()


def _flagging_init(init):
    def flagged(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.support_avx512bf16_for_cpu = True

    return flagged
