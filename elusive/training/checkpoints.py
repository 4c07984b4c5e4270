"""The Trainer's checkpoints and the kept passes of an epoch search, checked before a run resumes from them.

A checkpoint counts only once :class:`elusive.training.callbacks.MarkCheckpointComplete` has written its manifest;
resuming checks that the checkpoint belongs to the same run (data, settings) and the same number of epochs. Kept
passes (``train.save_at_passes``) live in ``model_dir/pass-<E>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from elusive.core.config import TrainConfig
from elusive.core.errors import InputError
from elusive.core.files import sha256_file


def checkpoint_folder(args: TrainingArguments, state) -> Path:
    """The ``checkpoint-N`` folder the Trainer has just saved (in a callback's ``on_save``)."""
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def checkpoint_step(folder: Path) -> int:
    """N of a ``checkpoint-N`` folder."""
    return int(folder.name.split("-")[-1])


RESUME_KEYS = ("batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio", "max_grad_norm",
               "max_length", "lora_r", "lora_alpha", "lora_dropout", "quant", "dtype", "seed", "group_by_length",
               "warmup_passes", "lr_schedule")
"""Settings a resumed run must share with its checkpoint (epochs may grow)."""


CHECKPOINT_MANIFEST = "checkpoint_complete.json"
"""Written into ``checkpoint-N`` last, listing every file with its size (``files``) and SHA-256 (``sha256``): a
checkpoint without it, or whose files differ from it, was cut short (e.g. the job was killed while saving) or
altered since, and is never resumed from. It also records the run's settings (``run``, base model and dataset
by content): ``resume=true`` refuses a checkpoint made with other data, settings or base weights."""


def is_complete_checkpoint(folder: Path) -> bool:
    """True when ``folder`` has its manifest and every file listed there, at the listed size and (in manifests
    that record it) with the listed SHA-256."""
    try:
        manifest = json.loads((folder / CHECKPOINT_MANIFEST).read_text())
        files, hashes = manifest["files"], manifest.get("sha256", {})
        if not all((folder / name).stat().st_size == size for name, size in files.items()):
            return False
        return all(sha256_file(folder / name) == digest for name, digest in hashes.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def checkpoints(model_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``model_dir``, by step."""
    found = [p for p in Path(model_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()]
    found = [p for p in found if p.is_dir()]
    return sorted(found, key=checkpoint_step)


def last_complete_checkpoint(model_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``model_dir`` (see :data:`CHECKPOINT_MANIFEST`), or None."""
    if not Path(model_dir).is_dir():
        return None
    return next((c for c in reversed(checkpoints(model_dir)) if is_complete_checkpoint(c)), None)


def check_same_run(checkpoint: Path, run: dict) -> None:
    """Refuse to resume from ``checkpoint`` if it was trained with other data or settings than ``run``.

    A resumed run continues the checkpoint's optimizer and schedule, so a changed dataset or hyper-parameter
    would silently give an adapter that matches neither setting. Checkpoints without recorded settings pass.
    """
    recorded = json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text()).get("run") or {}
    for key, now in run.items():
        if key in recorded and recorded[key] != now and not (key.startswith("base_") and None in (recorded[key], now)):
            raise InputError(
                f"resume=true: {checkpoint.name} was trained with {key}={recorded[key]}, this run has {key}={now}; "
                "resume with the same settings, or train into a new model_dir"
            )


def checkpoint_state(checkpoint: Path) -> dict:
    """The Trainer's ``trainer_state.json`` of a checkpoint ({} if unreadable)."""
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return {}


def check_resume_epochs(checkpoint: Path, epochs: float, cfg: TrainConfig | None = None) -> None:
    """Refuse to resume with fewer epochs than ``checkpoint`` has already trained, and with more epochs than its
    run was started for when the learning rate's schedule depends on the run's length.

    A linear decay (``lr_schedule=linear``) ends at the run's last step, and a ``warmup_ratio`` is a share of
    all steps: resumed with more epochs, the Trainer would continue the first run's steps on the longer run's
    schedule (a jump in the learning rate), and the adapter would follow neither. Epochs may grow with a
    schedule that does not depend on the length: ``lr_schedule=constant`` with ``warmup_passes`` (or no warmup).

    Raises:
        InputError: The adapter would be the checkpoint's, not one trained for ``epochs``, or would mix two
            schedules.
    """
    state = checkpoint_state(checkpoint)
    done, planned = state.get("epoch"), state.get("num_train_epochs")
    if isinstance(done, (int, float)) and epochs < done - 1e-6:
        raise InputError(
            f"resume=true epochs={epochs:g}: {checkpoint.name} has already trained {done:g} epochs; give epochs>="
            f"{done:g} to continue, or train into a new model_dir"
        )
    if cfg is None or not isinstance(planned, (int, float)) or abs(epochs - planned) < 1e-6:
        return
    fixed = cfg.lr_schedule == "constant" and (cfg.warmup_passes is not None or cfg.warmup_ratio == 0)
    if not fixed:
        raise InputError(
            f"resume=true epochs={epochs:g}: {checkpoint.name} belongs to a run of {planned:g} epochs whose learning "
            f"rate schedule (lr_schedule={cfg.lr_schedule}, warmup as a share of all steps) depends on its length, so "
            f"continuing to {epochs:g} would mix two schedules in one adapter; resume with epochs={planned:g}, train "
            "into a new model_dir, or use lr_schedule=constant with warmup_passes (a schedule that does not depend "
            "on the length)"
        )


def check_fresh_folder(model_dir: Path) -> None:
    """A run without ``resume`` starts in a folder without an earlier run's adapter or checkpoints: refused if
    it holds a complete ``checkpoint-N``, a kept ``pass-<E>`` or a final adapter (they would sit beside the new
    record, and evaluating them would record the new run's settings). Checkpoints a kill cut short (no
    :data:`CHECKPOINT_MANIFEST`) do not count: :func:`_fit` removes them, as ``resume=true`` does. Nothing
    complete is deleted.

    Raises:
        InputError: Naming what the folder holds and the two ways on.
    """
    if not Path(model_dir).is_dir():
        return
    done = [c.name for c in checkpoints(model_dir) if is_complete_checkpoint(c)]
    done += [p.name for p in Path(model_dir).glob(f"{PASS_PREFIX}*") if p.is_dir()]
    done += [n for n in ("adapter_config.json", "train_meta.json") if (Path(model_dir) / n).is_file()]
    if done:
        shown = ", ".join(sorted(done)[:4]) + (", ..." if len(done) > 4 else "")
        raise InputError(f"model_dir={model_dir}: holds an earlier run ({shown}); add resume=true to continue it, or "
                         "give a new or empty model_dir (nothing is deleted)")


PASS_PREFIX = "pass-"
"""``model_dir/pass-<E>``: the adapter kept after E passes (``save_at_passes``)."""


def pass_folder(model_dir: Path, passes: int) -> Path:
    """Where the adapter kept after ``passes`` passes lives."""
    return Path(model_dir) / f"{PASS_PREFIX}{passes}"


def kept_passes(model_dir: Path) -> list[Path]:
    """The complete ``pass-<E>`` folders of ``model_dir`` (with their ``train_meta.json``), by E."""
    found = [p for p in Path(model_dir).glob(f"{PASS_PREFIX}*") if p.name[len(PASS_PREFIX):].isdigit()
             and (p / "train_meta.json").is_file() and (p / "adapter_config.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PASS_PREFIX):]))
