"""The Trainer callbacks of stage 4: no pickled arguments, complete checkpoints, kept passes, stop on NaN."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback

from elusive.core import distributed
from elusive.core.errors import InputError
from elusive.core.files import sha256_file, write_json_atomic, write_text_atomic
from elusive.core.models import model_device
from elusive.training.checkpoints import CHECKPOINT_MANIFEST, checkpoint_folder, pass_folder

log = logging.getLogger(__name__)


class NoPickleArgs(TrainerCallback):
    """Replace the pickled ``training_args.bin`` the Trainer writes into each checkpoint by a JSON copy."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # only the main process writes checkpoints
            return
        folder = checkpoint_folder(args, state)
        pickled = folder / "training_args.bin"
        if pickled.exists():
            pickled.unlink()
            write_text_atomic(folder / "training_args.json", args.to_json_string())


class MarkCheckpointComplete(TrainerCallback):
    """Write :data:`CHECKPOINT_MANIFEST` once the Trainer (and :class:`NoPickleArgs`) finished a checkpoint.

    Hand-written because the Trainer writes ``checkpoint-N`` file by file in place and its
    ``get_last_checkpoint`` picks the highest number whether or not the folder is complete.
    """

    def __init__(self, run: dict | None = None):
        self.run = run or {}

    def on_save(self, args, state, control, **kwargs):
        distributed.barrier()  # with several processes, each has written its part (e.g. rng_state_<rank>.pth)
        if not state.is_world_process_zero:
            return
        folder = checkpoint_folder(args, state)
        paths = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKPOINT_MANIFEST]
        names = [p.relative_to(folder).as_posix() for p in paths]
        manifest = {"files": {n: p.stat().st_size for n, p in zip(names, paths)},
                    "sha256": {n: sha256_file(p) for n, p in zip(names, paths)}, "run": self.run}
        write_json_atomic(folder / CHECKPOINT_MANIFEST, manifest, indent=1)


def steps_per_pass(n_examples: int, batch_size: int, world_size: int, accumulation: int) -> int:
    """Optimizer steps in one pass over ``n_examples`` texts, as the Trainer counts them (its data loader has
    ``ceil(n / (batch_size × processes))`` batches, of which every ``accumulation`` make one step, the last
    possibly fewer)."""
    batches = math.ceil(n_examples / (batch_size * world_size))
    return max(math.ceil(batches / accumulation), 1)


def mean_token_loss(model, examples: list[dict], collator, batch_size: int) -> float:
    """The training objective on ``examples``: the mean next-token cross-entropy over all their tokens (EOS
    included, padding excluded), in eval mode and without gradients; the model's mode is restored after.

    Each token counts once, so the value does not depend on ``batch_size``; accumulated in float64.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = model_device(model)
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = collator(examples[start:start + batch_size])
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device)).logits
                labels = batch["labels"].to(logits.device)[:, 1:]
                losses = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                    reduction="none")
                total += float(losses.double().sum())
                count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


class KeepPasses(TrainerCallback):
    """Keep the adapter after each of ``passes`` passes in ``model_dir/pass-<E>/``, with its own record.

    Runs when the Trainer has saved (and :class:`MarkCheckpointComplete` certified) the epoch's ``checkpoint-N``:
    its adapter files are copied into a temporary folder with ``train_meta.json`` (``record(E, state, loss)``,
    where loss is :func:`mean_token_loss` on the original texts), which is then renamed into place, so a
    ``pass-<E>`` folder with a ``train_meta.json`` is complete. Every process computes the loss (a sharded model
    needs all of them for a forward pass); the main one writes.
    """

    def __init__(self, model_dir: Path, passes: list[int], originals: list[dict], collator, batch_size: int,
                 record):
        self.model_dir, self.passes, self.originals = Path(model_dir), set(passes), originals
        self.collator, self.batch_size, self.record = collator, batch_size, record

    def on_save(self, args, state, control, model=None, **kwargs):
        epoch = state.epoch or 0.0
        done = round(epoch)
        if abs(epoch - done) > 1e-6 or done not in self.passes:
            return
        loss = mean_token_loss(model, self.originals, self.collator, self.batch_size)
        if not state.is_world_process_zero:
            return
        checkpoint = checkpoint_folder(args, state)
        target = pass_folder(self.model_dir, done)
        tmp = self.model_dir / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(checkpoint / name, tmp / name)
        write_json_atomic(tmp / "train_meta.json", self.record(done, state, loss, tmp / "adapter_model.safetensors"))
        if target.exists():  # this run's own earlier copy (a resumed run passes the same epoch again)
            shutil.rmtree(target)
        os.replace(tmp, target)
        log.info("kept the adapter after %d passes in %s (loss on the originals %.4f)", done, target, loss)


class StopOnNonFinite(TrainerCallback):
    """Stop training with an :class:`InputError` the moment a trainable weight, or the logged loss or gradient
    norm, is NaN or infinite (a learning rate far too large, an overflow): checked after every optimizer step,
    before the Trainer logs or saves, so no checkpoint or adapter with such weights is ever written.

    The Trainer's ``logging_nan_inf_filter`` is turned off (:func:`train`), else it would log the mean of
    earlier losses in place of a NaN.
    """

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate
        self.weights: list[tuple[str, torch.Tensor]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def on_step_end(self, args, state, control, **kwargs):
        # One reduction per device (device=multi spreads the LoRA weights over GPUs, and tensors of two devices
        # cannot be stacked), then one host sync per device.
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for _, p in self.weights:
            by_device.setdefault(p.device, []).append(torch.isfinite(p).all())
        if not all(bool(torch.stack(flags).all()) for flags in by_device.values()):
            name = next(n for n, p in self.weights if not torch.isfinite(p).all())
            self.stop(state, f"the LoRA weight {name} is not finite")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self.stop(state, f"the {key.replace('_', ' ')} is {value}")

    def stop(self, state, what: str) -> None:
        raise InputError(
            f"learning_rate={self.learning_rate:g}: training diverged at step {state.global_step} (epoch "
            f"{state.epoch or 0:.2f}): {what}; no adapter was written — lower learning_rate (or set max_grad_norm>0)"
        )
