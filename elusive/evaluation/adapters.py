"""The adapter an evaluation scores: its folder and training record checked against the base, and loading both.

An adapter folder is what ``train.py`` writes (``adapter_config.json``, ``adapter_model.safetensors``,
``train_meta.json``) or one of its kept passes (``pass-<E>/``). Evaluating it checks first that the base model is
the one it was trained on (by content, :mod:`elusive.core.identity`), then loads base and adapter unmerged
unless the base is float32 (:func:`load_for_eval`), warning once when the evaluation's precision differs from
training's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from elusive.core.config import EvaluateConfig
from elusive.core.errors import InputError
from elusive.core.files import sha256_file
from elusive.core.identity import base_identity, mismatch
from elusive.core.models import load_model, load_tokenizer

log = logging.getLogger(__name__)


def check_adapter_folder(model_dir: str | Path | None) -> None:
    """Refuse a ``model_dir`` that holds no LoRA adapter.

    Raises:
        InputError: No ``adapter_config.json`` in it.
    """
    if model_dir is not None and not (Path(model_dir) / "adapter_config.json").is_file():
        raise InputError(
            f"model_dir={model_dir}: no adapter_config.json; give a train.py output or a checkpoint-N folder, or model_dir=null"
        )


def check_adapter_base(cfg: EvaluateConfig) -> None:
    """Refuse a ``model_dir`` without an adapter, or one trained on another base model than ``model=`` (its
    ``train_meta.json`` records the base's config and weights by SHA-256, :mod:`elusive.core.identity`); an adapter
    without that record passes.

    Raises:
        InputError: Naming both models and what differs.
    """
    check_adapter_folder(cfg.model_dir)
    recorded = training_meta(None if cfg.model_dir is None else Path(cfg.model_dir))
    if not recorded or not (recorded.get("base_config_sha256") or recorded.get("base_weights_sha256")):
        return
    recorded_hashes = {"config_sha256": recorded.get("base_config_sha256"),
                       "weights_sha256": recorded.get("base_weights_sha256")}
    what = mismatch(recorded_hashes, base_identity(cfg.model))
    if what is not None:
        raise InputError(
            f"model_dir={cfg.model_dir}: was trained on base model {recorded.get('base_model')}, and the SHA-256 of its "
            f"{what} differs from model={cfg.model}'s; evaluate the adapter with the base model it was trained on"
        )


def training_meta(model_dir: Path | None) -> dict | None:
    """What the evaluated adapter is: train.py's ``train_meta.json`` of an adapter folder (the final adapter, or a
    kept ``pass-<E>``), or for a ``checkpoint-N`` the checkpoint's own state.

    A checkpoint has no ``train_meta.json``; the one beside it describes the final adapter (other epochs and
    step, or, in a folder a later run trained into, another run). Its record is made from what it holds
    itself: the Trainer's ``trainer_state.json`` (epoch, step, the run's planned epochs and the last logged
    loss and learning rate) and the run settings in its ``checkpoint_complete.json`` (base model and dataset
    by content, seed, hyper-parameters), plus its adapter's SHA-256.
    """
    if model_dir is None:
        return None
    folder = Path(model_dir)
    if (folder / "train_meta.json").is_file():
        try:
            return json.loads((folder / "train_meta.json").read_text())
        except ValueError:
            return None
    if not folder.name.startswith("checkpoint-"):
        return None
    from elusive.training.checkpoints import CHECKPOINT_MANIFEST, checkpoint_state

    state = checkpoint_state(folder)
    try:
        run = json.loads((folder / CHECKPOINT_MANIFEST).read_text()).get("run") or {}
    except (OSError, ValueError, AttributeError):
        run = {}
    logged = [h for h in state.get("log_history", []) if "loss" in h]
    adapter = folder / "adapter_model.safetensors"
    return {
        "checkpoint": folder.name,
        **run,  # base_model, base_config_sha256, base_weights_sha256, dataset_sha256, seed, learning_rate, ...
        "epochs": state.get("epoch"),  # what this checkpoint was trained for
        "passes": state.get("epoch"),
        "global_step": state.get("global_step"),
        "run_epochs": state.get("num_train_epochs"),  # what its run was planned for
        "final_train_loss": logged[-1]["loss"] if logged else None,
        "last_learning_rate": logged[-1].get("learning_rate") if logged else None,
        "adapter_sha256": sha256_file(adapter) if adapter.is_file() else None,
    }





def load_for_eval(model: str, model_dir: Path | None, device: str, dtype: str, quant: str | None):
    """Load the base model, apply the LoRA adapter from ``model_dir`` (if any), and the tokenizer.

    The adapter is merged into the base weights only when they are float32 and not quantised (the same function,
    faster generation). Merged into bf16 weights of std 0.02, a LoRA update is rounded to bf16's step there
    (~6e-5 to 1.2e-4): updates of std 3e-5 / 1e-4 / 3e-4 come out with relative errors of 71 / 33 / 11 %
    (tests/scripts/test_gpu_paths.py); into 8-/4-bit weights they would be rounded to the quantisation grid. So there the
    LoRA path stays separate, as in training. A warning names both settings when the adapter was trained with
    another quant or dtype (:func:`warn_precision_mismatch`).
    """
    from elusive.evaluation.adapters import check_adapter_folder

    check_adapter_folder(model_dir)
    tokenizer = load_tokenizer(model, padding_side="left")
    lm = load_model(model, device=device, dtype=dtype, quant=quant)
    if model_dir is not None:
        from peft import PeftModel

        warn_precision_mismatch(model_dir, quant, str(lm.dtype).removeprefix("torch."))
        exact = quant is None and lm.dtype == torch.float32
        lm = PeftModel.from_pretrained(lm, str(model_dir))
        if exact:
            lm = lm.merge_and_unload()
        lm.eval()
    return lm, tokenizer


def warn_precision_mismatch(model_dir: Path, quant: str | None, dtype: str) -> bool:
    """Log one warning when the adapter in ``model_dir`` was trained with another quantisation or dtype of the base
    weights than this evaluation's (its ``train_meta.json``: ``settings.quant``, and the dtype the weights were
    loaded in, ``compute.dtype``, else ``settings.dtype`` unless ``auto``). An adapter learns a correction to the
    weights it was trained on; applied to differently rounded ones it is evaluated on another model.

    Returns:
        True when it warned.
    """
    from elusive.evaluation.adapters import training_meta

    meta = training_meta(Path(model_dir)) or {}
    settings = meta.get("settings") or {}
    if "quant" not in settings:  # no training record (an adapter from elsewhere): nothing to compare
        return False
    trained_dtype = (meta.get("compute") or {}).get("dtype") or settings.get("dtype")
    differs = settings["quant"] != quant or trained_dtype not in (None, "auto", dtype)
    if differs:
        log.warning("model_dir=%s was trained with quant=%s dtype=%s, and is evaluated with quant=%s dtype=%s: the "
                    "adapter corrects other base weights than these; evaluate with the training's quant and dtype",
                    model_dir, settings["quant"] or "null", trained_dtype, quant or "null", dtype)
    return differs
