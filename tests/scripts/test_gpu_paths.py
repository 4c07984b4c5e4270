"""The CUDA, bf16, 8-bit and multi-GPU paths, on the CPU where they can be made to fail there.

Devices are faked where no GPU is present: a CPU tensor that reports ``cuda:1`` (:class:`OnSecondGpu`) together
with a ``torch.stack`` that refuses two devices as CUDA does; a Trainer that sees 8 GPUs (``n_gpu``); a CUDA
target for the bf16 decision. The ``cuda2`` tests run the same paths on two real GPUs and are skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from helpers.run import ROOT
from helpers.stages import contrast_attention, save_attention, train
from peft import PeftModel
from transformers import TrainingArguments

import elusive.experiment as experiment
import elusive.training.stage as training
from elusive.attention.released import score_released
from elusive.attention.scores import attention_modules
from elusive.core import distributed
from elusive.core.config import AttentionSettings, EvaluateSettings, RunExperimentConfig
from elusive.core.errors import InputError
from elusive.core.models import load_model, load_tokenizer, numerics
from elusive.evaluation.adapters import load_for_eval, warn_precision_mismatch
from elusive.text.data import load_texts
from elusive.text.tokens import encode_many

cuda2 = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
SETTINGS = {"batch_size": 4, "device": "cpu", "seed": 3, "logging_steps": 1, "report_to": []}  # 12 texts: 3 steps


class OnSecondGpu(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:1``; what torch computes from it says so too. ``.to()`` gives a
    plain tensor where asked."""

    @property
    def device(self):
        return torch.device("cuda", 1)

    def to(self, *args, **kwargs):
        return torch.Tensor.to(self.as_subclass(torch.Tensor), *args, **kwargs)


@pytest.fixture
def strict_stack(monkeypatch):
    """``torch.stack`` refusing tensors of two devices, as it does on GPUs."""
    real = torch.stack

    def stack(tensors, *args, **kwargs):
        devices = {str(t.device) for t in tensors}
        if len(devices) > 1:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found {sorted(devices)}")
        return real(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "stack", stack)


@pytest.fixture(scope="module")
def adapter(small_model, bios, tmp_path_factory) -> Path:
    """A LoRA adapter of the tiny Llama, trained 1 epoch in float32 on the CPU."""
    out = tmp_path_factory.mktemp("adapter") / "lora"
    train(small_model, bios, out, epochs=1, learning_rate=1e-2, **SETTINGS)
    return out


# --- 1. the non-finite check with LoRA weights on several GPUs ---------------------------------------------------


def _check(weights):
    check = training.StopOnNonFinite(5e-4)
    check.weights = weights
    state = transformers.TrainerState()
    state.global_step, state.epoch = 7, 1.0
    check.on_step_end(None, state, None)


def test_the_non_finite_check_takes_lora_weights_on_two_devices(strict_stack):
    here = torch.nn.Parameter(torch.ones(4, 2))
    there = torch.ones(2, 4).as_subclass(OnSecondGpu)
    _check([("a.lora_A", here), ("b.lora_B", there)])  # finite: passes (before the fix: "Expected all tensors ...")
    there[0, 1] = float("nan")
    with pytest.raises(InputError, match=r"training diverged at step 7 .*: the LoRA weight b\.lora_B is not finite"):
        _check([("a.lora_A", here), ("b.lora_B", there)])


@cuda2
def test_the_non_finite_check_on_two_real_gpus():
    weights = [("a", torch.ones(3, device="cuda:0")), ("b", torch.ones(3, device="cuda:1"))]
    _check(weights)
    weights[1][1][2] = float("inf")
    with pytest.raises(InputError, match="the LoRA weight b is not finite"):
        _check(weights)


# --- 2. one process trains on one GPU, and the effective batch is recorded ---------------------------------------


@pytest.fixture
def eight_gpus(monkeypatch):
    """TrainingArguments as in a process started with plain python where 8 GPUs are visible: ``n_gpu = 8``."""
    real = TrainingArguments._setup_devices.func

    def setup(self):
        device = real(self)
        self._n_gpu = 8
        return device

    fake = functools.cached_property(setup)
    fake.__set_name__(TrainingArguments, "_setup_devices")
    monkeypatch.setattr(TrainingArguments, "_setup_devices", fake)


def test_a_run_not_launched_trains_on_one_gpu_with_the_batch_it_was_given(eight_gpus, small_model, bios, tmp_path):
    assert TrainingArguments(output_dir=str(tmp_path), use_cpu=True).n_gpu == 8  # the fake works
    out = train(small_model, bios, tmp_path / "lora", epochs=2, **SETTINGS)
    meta = json.loads((out / "train_meta.json").read_text())
    # 12 texts, 4 per step: 3 steps per epoch (the Trainer's own view would give 1 step of 32 per epoch)
    assert meta["global_step"] == 6
    assert meta["compute"] == {"device": "cpu", "n_gpu": 1, "bf16_autocast": False, "dtype": "float32",
                               "effective_batch_size": 4}


def test_one_device_keeps_one_gpu_and_the_global_batch_counts_everything(eight_gpus, tmp_path, monkeypatch):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4,
                             gradient_accumulation_steps=3)
    assert args.train_batch_size == 32 and distributed.global_batch(args) == 96  # what plain python would train with
    distributed.one_device(args, torch.device("cpu"))
    assert args.n_gpu == 1 and args.train_batch_size == 4 and distributed.global_batch(args) == 12
    launched = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.one_device(launched, torch.device("cpu"))  # launched runs are the launcher's: untouched
    assert launched.n_gpu == 8


def test_cuda_n_in_one_process_moves_the_trainers_device_there(tmp_path, monkeypatch):
    """device=cuda:3: the Trainer would send the batches to cuda:0 (with an 8-bit model on cuda:3)."""
    from accelerate.state import AcceleratorState

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    try:
        distributed.one_device(args, torch.device("cuda", 3))
        assert args.device == torch.device("cuda", 3) and args.distributed_state.device == torch.device("cuda", 3)
        assert chosen == [torch.device("cuda", 3)]
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


@cuda2
def test_plain_python_on_two_gpus_trains_on_one_and_cuda_1_in_8bit(small_model, bios, tmp_path):
    meta = json.loads((train(small_model, bios, tmp_path / "a", epochs=1, **{**SETTINGS, "device": "auto"})
                       / "train_meta.json").read_text())
    assert meta["compute"]["n_gpu"] == 1 and meta["compute"]["effective_batch_size"] == 4 and meta["global_step"] == 3
    out = train(small_model, bios, tmp_path / "b", epochs=1, quant="8bit", **{**SETTINGS, "device": "cuda:1"})
    assert json.loads((out / "train_meta.json").read_text())["global_step"] == 3


# --- 3. aggregate=released with the layers' attention on several GPUs ---------------------------------------------


def test_released_scores_stack_layers_from_two_devices(small_model, bios, strict_stack):
    tok = load_tokenizer(str(small_model))
    encoded = encode_many(tok, load_texts(bios)[:3])
    lm = load_model(str(small_model), device="cpu", dtype="bfloat16", attn_implementation="eager")
    # before the first forward: transformers records the attentions with hooks of its own, added then
    attention_modules(lm)[1].register_forward_hook(lambda mod, inputs, out: (out[0], out[1].as_subclass(OnSecondGpu)))
    got, _ = score_released(lm, encoded, [0, 1])  # layer 1's weights "on cuda:1"
    plain = load_model(str(small_model), device="cpu", dtype="bfloat16", attn_implementation="eager")
    expected, _ = score_released(plain, encoded, [0, 1])
    assert all((a == b).all() for a, b in zip(got, expected))


@cuda2
def test_released_scores_with_the_model_over_two_real_gpus(small_model, bios):
    tok = load_tokenizer(str(small_model))
    encoded = encode_many(tok, load_texts(bios)[:3])
    one = load_model(str(small_model), device="cuda:0", dtype="bfloat16", attn_implementation="eager")
    expected, _ = score_released(one, encoded, [0, 1])
    spread = transformers.AutoModelForCausalLM.from_pretrained(
        small_model, dtype=torch.bfloat16, attn_implementation="eager",
        device_map={"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1,
                    "model.rotary_emb": 1, "lm_head": 1}).eval()
    got, _ = score_released(spread, encoded, [0, 1])
    assert all((a == b).all() for a, b in zip(got, expected))


# --- 4. the README's Figure 2-3 recipe passes the contrast's check ------------------------------------------------


def readme_dump_commands() -> list[dict[str, str]]:
    """The key=value overrides of the README's ``save_attention.py`` commands for Figures 2-3."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith("python save_attention.py") and "focus=true" in line]
    return [{k: v[1:-1] if len(v) > 1 and v[0] == v[-1] == '"' else v  # Hydra's quotes around "Text: "
             for k, v in (arg.split("=", 1) for arg in shlex.split(line)[2:])} for line in lines]


def test_the_figure_recipe_extracts_both_dumps_as_the_contrast_requires(small_model, large_model, bios, tmp_path):
    large, small = readme_dump_commands()
    assert "70B" in large["model"] and "8B" in small["model"]
    paths = []
    for command, model in ((large, large_model), (small, small_model)):  # the tiny pair in place of the Llamas
        same = {k: v for k, v in command.items() if k in ("quant", "text_prefix", "dtype", "layers", "aggregate")}
        paths.append(save_attention(model, bios, tmp_path / Path(command["save_name"]).name, device="cpu",
                                    focus=True, **same))
    out = contrast_attention(paths[0], paths[1], tmp_path / "diff")  # refused before: quant 8bit vs null
    assert out.is_file()


# --- 6. bf16 autocast is decided from the dtype setting, also for a quantised base -------------------------------


def test_quantised_training_on_cuda_uses_bf16_autocast(small_model, bios, tmp_path, monkeypatch):
    """A CUDA target with the model on the CPU: the Trainer's bf16 flag is recorded, then the run trains on the CPU."""
    seen = {}
    real = training.TrainingArguments

    def arguments(**kwargs):
        seen.update(kwargs)
        return real(**{**kwargs, "use_cpu": True, "bf16": False, "ddp_backend": None})

    monkeypatch.setattr(training, "TrainingArguments", arguments)
    monkeypatch.setattr(training, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(training, "check_quant", lambda quant, device: None)
    out = train(small_model, bios, tmp_path / "lora", epochs=1, quant="8bit", dtype="bfloat16", **SETTINGS)
    assert seen["bf16"] is True  # base.dtype was float32 after prepare_model_for_kbit_training: no autocast before
    assert json.loads((out / "train_meta.json").read_text())["compute"]["bf16_autocast"] is True
    seen.clear()
    train(small_model, bios, tmp_path / "fp32", epochs=1, dtype="float32", **SETTINGS)
    assert seen["bf16"] is False


# --- 7. evaluation keeps the adapter unmerged unless the base is float32; mismatches are named ---------------------


def test_merging_a_small_update_into_bf16_weights_rounds_it_away():
    """The arithmetic behind the rule: weights of std 0.02, LoRA updates of std 3e-5 / 1e-4 / 3e-4."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 1024, generator=g) * 0.02
    for std, low, high in ((3e-5, 0.6, 0.8), (1e-4, 0.25, 0.4), (3e-4, 0.08, 0.15)):
        update = torch.randn(1024, 1024, generator=g) * std
        bf16 = (weight.bfloat16() + update.bfloat16()).float() - weight.bfloat16().float()
        fp32 = (weight + update) - weight
        assert low < float((bf16 - update).norm() / update.norm()) < high
        assert float((fp32 - update).norm() / update.norm()) < 1e-2


def test_a_bf16_base_keeps_the_adapter_unmerged_and_a_float32_one_merges(small_model, adapter):
    lm, tok = load_for_eval(str(small_model), adapter, "cpu", "bfloat16", None)
    assert isinstance(lm, PeftModel) and lm.base_model.model.dtype == torch.bfloat16
    unmerged = PeftModel.from_pretrained(load_model(str(small_model), device="cpu", dtype="bfloat16"), str(adapter))
    ids = tok(["Ann Lee was born in"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm(ids).logits, unmerged.eval()(ids).logits)
    merged, _ = load_for_eval(str(small_model), adapter, "cpu", "float32", None)
    assert not isinstance(merged, PeftModel) and merged.dtype == torch.float32


def test_evaluating_with_another_quant_or_dtype_than_training_warns_once(adapter, tmp_path, caplog):
    folder = tmp_path / "lora4"
    shutil.copytree(adapter, folder)
    meta = json.loads((folder / "train_meta.json").read_text())
    meta["settings"].update(quant="4bit", dtype="bfloat16")
    meta["compute"]["dtype"] = "bfloat16"
    (folder / "train_meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="elusive.evaluation.generation"):
        assert warn_precision_mismatch(folder, None, "float32")
        assert not warn_precision_mismatch(folder, "4bit", "bfloat16")
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(rf"model_dir={re.escape(str(folder))} was trained with quant=4bit dtype=bfloat16, and is "
                        r"evaluated with quant=null dtype=float32: .*; evaluate with the training's quant and dtype",
                        line)
    assert not warn_precision_mismatch(adapter, None, "float32")  # as trained: silent
    (adapter.parent / "bare").mkdir(exist_ok=True)
    assert not warn_precision_mismatch(adapter.parent / "bare", "8bit", "float32")  # no record: nothing to compare


# --- 8, 10. presets: the 8B trains on one GPU, the 70B dump on all; a checkpoint limit ----------------------------


PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("table*.yaml"))


def _preset(name: str) -> RunExperimentConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from elusive.core.cli import to_settings

    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name="run_experiment", node=RunExperimentConfig)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="run_experiment", overrides=[f"experiment={name}", "dataset=data/biography.csv"])
    GlobalHydra.instance().clear()
    return to_settings(cfg, RunExperimentConfig)


@pytest.mark.parametrize("name", PRESETS)
def test_table_presets_place_each_stage_and_keep_few_checkpoints(name):
    cfg = _preset(name)
    assert cfg.train.save_total_limit == 2
    # the paper's epoch search from one run: passes 10-30 kept, each an E-epoch run (constant rate after warm-up)
    assert (cfg.train.epochs, cfg.train.save_at_passes, cfg.train.lr_schedule, cfg.train.warmup_passes) == \
        (30, [10, 15, 20, 25, 30], "constant", 1)
    assert "Selection rule (elusive/reporting/selection.py)" in (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    if "llama3_70b" in name:  # the 8-bit 70B over all GPUs, in every stage
        assert cfg.device == "multi" and cfg.attention.device is None and cfg.train.quant == "8bit"
    elif "llama3_8b" in name:  # the 8B on one GPU; the contrast's 70B dump over all
        assert cfg.device == "auto" and cfg.attention.device == "multi"
    else:
        assert cfg.device == "auto" and cfg.attention.device is None
    if "llama3" in name:
        assert cfg.attention.quant == "8bit"  # both dumps of the pair: contrast refuses mixed quant


@pytest.mark.parametrize("preset, method, row", [
    ("table2_gemma2_2b", "attention_diff", "| | **by attention diff** | 0.6? |"),
    ("table2_llama3_70b", "attention", "| | by attention | 0.7? |"),
    ("table3_llama3_70b", "attention", "(0.7?, 0.005) | **0.212"),
    ("table3_llama3_70b", "attention_diff", "**0.212 / 0.308** (0.7?, 0.005)"),
])
def test_cells_the_paper_leaves_blank_are_marked_uncertain(preset, method, row):
    line = next(line for line in (ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text().splitlines()
                if line.startswith(f"  {method}: "))
    assert "uncertain cell (docs/paper_settings.md)" in line
    assert row in (ROOT / "docs" / "paper_settings.md").read_text()


def test_the_attention_stage_gets_its_own_device(small_model, large_model, tmp_path, monkeypatch):
    import elusive.attention.stage
    seen = []

    def save(cfg):
        seen.append(cfg.device)
        raise InputError("stop here")

    monkeypatch.setattr(elusive.attention.stage, "save_attention", save)
    cfg = RunExperimentConfig(name="t", method="attention", model=str(small_model),
                              dataset=str(ROOT / "data" / "biography.csv"),
                              n_texts=3, out_root=str(tmp_path), device="cpu",
                              attention=AttentionSettings(device="auto"))
    for config in (cfg, dataclasses.replace(cfg, attention=AttentionSettings())):
        with pytest.raises(InputError, match="stop here"):
            experiment.run_experiment(config)
    assert seen == ["auto", "cpu"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("changes, message", [
    ({"device": "multi"}, r"^device=multi: needs CUDA GPUs; use device=cpu or device=auto$"),
    ({"attention": AttentionSettings(device="cuda:1")},
     r"^attention.device=cuda:1: CUDA is not available on this machine; use device=cpu or device=auto$"),
])
def test_a_gpu_device_without_gpus_is_refused_before_anything_is_written(small_model, tmp_path, changes, message):
    cfg = RunExperimentConfig(name="t", method="attention", model=str(small_model), out_root=str(tmp_path / "out"),
                              dataset=str(ROOT / "data" / "biography.csv"), n_texts=3, device="cpu",
                              evaluate=EvaluateSettings(fewshot_data=str(ROOT / "data" / "biography_fewshot.csv"),
                                                        prompts=str(ROOT / "data" / "prompts.csv")))
    with pytest.raises(InputError, match=message):
        experiment.run_experiment(dataclasses.replace(cfg, **changes))
    assert not (tmp_path / "out").exists()


# --- 9. result identity: device, dtype and batch sizes decide the keys off the CPU in float32 -----------------------


def test_numerics_are_none_only_on_the_cpu_in_float32(monkeypatch):
    assert numerics("cpu", "auto") is None and numerics("cpu", "float32") is None
    assert numerics("cpu", "bfloat16") == {"device": "cpu", "devices": 1, "dtype": "bfloat16"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert numerics("multi", "auto") == {"device": "cuda", "devices": 8, "dtype": "bfloat16"}
    assert numerics("cuda:3", "float32") == {"device": "cuda", "devices": 1, "dtype": "float32"}


def _cpu_run(small_model, tmp_path, **changes) -> RunExperimentConfig:
    return RunExperimentConfig(name="t", method="attention", model=str(small_model), out_root=str(tmp_path),
                               dataset=str(ROOT / "data" / "biography.csv"), device="cpu", **changes)


def test_gpu_run_keys_hold_device_and_batch_sizes_cpu_keys_stay(small_model, tmp_path, monkeypatch):
    data = ROOT / "data" / "biography.csv"
    cpu = _cpu_run(small_model, tmp_path)
    other_batch = dataclasses.replace(cpu, evaluate=EvaluateSettings(batch_size=1))
    assert experiment.run_settings(cpu, data) == experiment.run_settings(other_batch, data)  # CPU fp32: same run
    # extraction's batch size moves the scores by ~1e-8 even on the CPU (other padding): another run
    other_extraction = dataclasses.replace(cpu, attention=AttentionSettings(batch_size=1))
    assert experiment.run_settings(cpu, data) != experiment.run_settings(other_extraction, data)
    assert "numerics" not in experiment.run_settings(cpu, data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = dataclasses.replace(cpu, device="auto", attention=AttentionSettings(device="multi"))
    settings = experiment.run_settings(gpu, data)
    assert settings["numerics"] == {
        "train": {"device": "cuda", "devices": 1, "dtype": "bfloat16", "batch_size": 8},
        "evaluate": {"device": "cuda", "devices": 1, "dtype": "bfloat16", "batch_size": 8},
        "attention": {"device": "cuda", "devices": 8, "dtype": "bfloat16", "batch_size": 8}}
    smaller = dataclasses.replace(gpu, evaluate=EvaluateSettings(batch_size=1))
    other = experiment.run_settings(smaller, data)
    assert experiment.run_folder(tmp_path, settings) != experiment.run_folder(tmp_path, other)


def test_the_committed_cpu_study_keeps_its_run_keys():
    """The CPU study's run folders (results/cpu_study) are found again by the same settings."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from elusive.core.cli import to_settings

    recorded = json.loads(next((ROOT / "results" / "cpu_study" / "attention_diff").glob("*/run.json")).read_text())
    GlobalHydra.instance().clear()
    ConfigStore.instance().store(name="run_experiment", node=RunExperimentConfig)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        composed = compose(config_name="run_experiment", overrides=["experiment=cpu_study", "method=attention_diff"])
        cfg = to_settings(composed, RunExperimentConfig)
    GlobalHydra.instance().clear()
    assert experiment.numerics_key(cfg, True) is None and "numerics" not in recorded["settings"]
    assert set(recorded["settings"]["attention"]) == set(dataclasses.asdict(cfg.attention)) - {"batch_size", "device"}


# --- 11. straight onto the GPU ------------------------------------------------------------------------------------


def test_a_model_for_a_gpu_is_loaded_onto_it_not_moved_there(small_model, monkeypatch):
    calls = {}

    class Loaded(torch.nn.Module):
        def to(self, *args, **kwargs):
            raise AssertionError("loaded on the CPU, then moved")

    def from_pretrained(name, **kwargs):
        calls.update(kwargs)
        return Loaded()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_model(str(small_model), device="cuda:1", dtype="bfloat16")
    assert calls["device_map"] == {"": 1} and calls["dtype"] == torch.bfloat16
    load_model(str(small_model), device="cuda", dtype="float32")
    assert calls["device_map"] == {"": 0}


# --- 5. the 70B route's memory ------------------------------------------------------------------------------------


def test_the_70b_memory_arithmetic_by_hand():
    from helpers.script_modules import load_script

    gpu_check = load_script("gpu_check")
    LLAMA3_70B, route_memory = gpu_check.LLAMA3_70B, gpu_check.route_memory

    memory = route_memory(LLAMA3_70B)
    # per layer: q, o 8192², k, v 8192 × 1024, gate/up/down 8192 × 28672; 80 layers; embeddings, head 128256 × 8192
    linear = 80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    assert memory["parameters"] == linear + 2 * 128256 * 8192 + (2 * 80 + 1) * 8192
    assert memory["weights_8bit_gb"] == pytest.approx((linear + 4 * (2 * 128256 * 8192 + 161 * 8192)) / 1e9)
    assert 76 < memory["weights_8bit_gb"] < 78  # ~77 GB (docs/scaling_out.md): int8 linears, embeddings and head in fp32
    assert memory["lora_parameters"] == 80 * 16 * (2 * (8192 + 8192) + 2 * (8192 + 1024) + 3 * (8192 + 28672))
    assert memory["weights_bf16_gb"] == pytest.approx(2 * memory["parameters"] / 1e9)
