"""Stage 4: LoRA continual pretraining on (augmented) texts with the Hugging Face Trainer.

LoRA r=16, lora_alpha=16, dropout 0 on every linear projection except the LM head (peft's
``all-linear``; embeddings are not linear layers). AdamW, lr 5e-4, linear schedule with 10 % warmup,
gradient clipping at 1.0. Each text is trained on with its tags removed and EOS appended.

The epoch search from one run: ``save_at_passes=[4,8,12]`` keeps the adapter after those passes over the data in
``model_dir/pass-<E>/`` (:class:`KeepPasses`), each with its own ``train_meta.json``: the mean token loss on the
original texts (one forward pass), and the augmentation's drop statistics. With ``lr_schedule=constant`` and a
warm-up given in passes (``warmup_passes``), the learning rate up to pass E does not depend on the run's length,
so ``pass-<E>`` is the adapter an E-pass run gives (tested byte for byte).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from elusive import distributed
from elusive.artifacts import sha256_file, write_json_atomic, write_text_atomic
from elusive.config import TrainConfig, check
from elusive.data import training_texts
from elusive.errors import InputError
from elusive.identity import base_identity
from elusive.models import (check_quant, describe, load_model, load_tokenizer, max_positions, model_device,
                            resolve_device, resolve_dtype)
from elusive.outputs import Output, check_outputs, claim_folder
from elusive.provenance import code_version, machine, record_path

log = logging.getLogger(__name__)


def lora_config(r: int = 16, lora_alpha: int = 16, lora_dropout: float = 0.0) -> LoraConfig:
    """The only place the project builds a LoraConfig: every linear projection except the LM head."""
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules="all-linear",  # peft excludes the output layer (LM head); embeddings are not Linear
        bias="none",
        task_type="CAUSAL_LM",
    )


def tokenize_for_training(tokenizer, texts: list[str], max_length: int, model_limit: int | None = None,
                          dataset: str | os.PathLike[str] = "") -> list[dict[str, list[int]]]:
    """Tokenise each text and append EOS (kept even when the text is truncated to ``max_length`` tokens).

    Texts longer than ``max_length`` are truncated — the setting says so — with a warning that counts them. A
    text that would still be longer than the model's positions (``model_limit``, when ``max_length`` is set
    above it) is refused before any model is loaded. Labels are the input ids; padding is masked by the collator.

    Raises:
        InputError: No EOS token, ``max_length`` < 2, or a text beyond the model's positions.
    """
    if tokenizer.eos_token_id is None:
        raise InputError(f"model={tokenizer.name_or_path}: the tokenizer has no EOS token to end each text")
    if max_length < 2:
        raise InputError(f"max_length={max_length}: must be >= 2 (at least one token and EOS)")
    enc = tokenizer(texts, truncation=True, max_length=max_length - 1)
    full = tokenizer(texts, return_length=True)["length"] if texts else []
    cut = sum(n + 1 > max_length for n in full)
    if cut:
        log.warning("max_length=%d: %d of %d texts are longer and were truncated to their first %d tokens (+ EOS)",
                    max_length, cut, len(texts), max_length - 1)
    if model_limit is not None:
        for row, ids in enumerate(enc["input_ids"]):
            if len(ids) + 1 > model_limit:
                raise InputError(
                    f"dataset={dataset}: text {row} has {len(ids) + 1} tokens after truncation to max_length="
                    f"{max_length}, more than the model's limit of {model_limit} positions; set max_length<="
                    f"{model_limit}"
                )
    examples = []
    for ids in enc["input_ids"]:
        ids = [*ids, tokenizer.eos_token_id]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return examples


def checkpoint_folder(args: TrainingArguments, state) -> Path:
    """The ``checkpoint-N`` folder the Trainer has just saved (in a callback's ``on_save``)."""
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def checkpoint_step(folder: Path) -> int:
    """N of a ``checkpoint-N`` folder."""
    return int(folder.name.split("-")[-1])


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


RESUME_KEYS = ("batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio", "max_grad_norm",
               "max_length", "lora_r", "lora_alpha", "lora_dropout", "quant", "dtype", "seed", "group_by_length",
               "warmup_passes", "lr_schedule")
"""Settings a resumed run must share with its checkpoint (epochs may grow)."""

CHECKPOINT_MANIFEST = "checkpoint_complete.json"
"""Written into ``checkpoint-N`` last, listing every file with its size (``files``) and SHA-256 (``sha256``): a
checkpoint without it, or whose files differ from it, was cut short (e.g. the job was killed while saving) or
altered since, and is never resumed from. It also records the run's settings (``run``, base model and dataset
by content): ``resume=true`` refuses a checkpoint made with other data, settings or base weights."""


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


def train(cfg: TrainConfig) -> Path | None:
    """Run stage 4: train a LoRA adapter and save it in ``cfg.model_dir``.

    Checkpoints go to ``model_dir/checkpoint-<step>`` after every epoch; TensorBoard logs to
    ``model_dir/runs``. The final adapter (loadable with ``PeftModel.from_pretrained``) is written to
    ``model_dir`` itself, config last, so a directory with ``adapter_config.json`` holds a complete adapter.

    Launched on several processes (accelerate launch, torchrun), the Trainer runs data-parallel (or FSDP /
    DeepSpeed, as the accelerate config says): each step takes ``batch_size`` texts per process and the loss
    is the mean over the tokens of all of them, so N processes × ``batch_size`` train like one process with
    N × ``batch_size``.

    Args:
        cfg: The settings (:class:`elusive.config.TrainConfig` says what each one means).

    Returns:
        ``model_dir`` (None on the processes other than the main one of a multi-process run).

    Only one run at a time trains into a ``model_dir``: the main process holds a lock on it (its marker
    ``.elusive-train``, :func:`elusive.outputs.claim_folder`) from the first file written to the last.

    Raises:
        InputError: A setting, the dataset, the model or ``model_dir`` is unusable (before training starts), or
            the training diverged (:class:`StopOnNonFinite`).
    """
    check(cfg)
    model, dataset, model_dir, quant, resume = cfg.model, Path(cfg.dataset), Path(cfg.model_dir), cfg.quant, cfg.resume
    check_outputs("train", [Output("model_dir", cfg.model_dir, model_dir, fills=True)],
                  {"dataset": cfg.dataset, "model": model})
    device = distributed.process_device(cfg.device)
    target = resolve_device(device)
    check_quant(quant, target)  # before any work: bitsandbytes installed and able to run here
    sharded = distributed.sharded_training()
    if quant is not None and sharded:
        raise InputError(
            f"quant={quant}: not supported with FSDP/DeepSpeed here; use quant=null, or conf/accelerate/ddp.yaml "
            "for an 8-bit base model on every GPU"
        )
    last = last_complete_checkpoint(model_dir) if resume else None
    if resume and last is None:
        raise InputError(
            f"resume=true: no complete checkpoint-* folder in model_dir={model_dir}; train without resume first"
        )
    texts, originals = training_texts(dataset, "dataset")  # without the copies stage 3 emptied
    base_hashes = base_identity(model)
    run = {  # what a resumed run must share with its checkpoint (see check_same_run); epochs may grow
        "base_model": describe(model),
        "base_config_sha256": base_hashes["config_sha256"],
        "base_weights_sha256": base_hashes["weights_sha256"],
        "dataset_sha256": sha256_file(dataset),
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k in RESUME_KEYS},
        "world_size": distributed.share().world_size,
    }
    if resume:
        check_same_run(last, run)
        check_resume_epochs(last, cfg.epochs, cfg)
    else:
        check_fresh_folder(model_dir)
    if cfg.save_at_passes and max(cfg.save_at_passes) > cfg.epochs:
        raise InputError(
            f"save_at_passes={list(cfg.save_at_passes)}: pass {max(cfg.save_at_passes)} lies beyond epochs={cfg.epochs:g}; "
            f"keep passes <= epochs, or set epochs={max(cfg.save_at_passes)}"
        )
    augmentation = augmentation_settings(dataset, run["dataset_sha256"])
    tokenizer = load_tokenizer(model, padding_side="right")
    examples = tokenize_for_training(tokenizer, texts, cfg.max_length, max_positions(model), dataset)
    original_examples = examples if originals is None else [examples[i] for i in originals]
    main = distributed.share().is_main
    with claim_folder("model_dir", model_dir, "train") if main else contextlib.nullcontext():
        return _fit(cfg, model_dir, run, examples, original_examples, tokenizer, last, augmentation, len(texts))


def _fit(cfg: TrainConfig, model_dir: Path, run: dict, examples: list[dict], originals: list[dict], tokenizer,
         last: Path | None, augmentation: dict | None, n_texts: int) -> Path | None:
    """Train and save (the part of :func:`train` after every check, under the lock of ``model_dir``)."""
    model, dataset, quant, resume = cfg.model, Path(cfg.dataset), cfg.quant, cfg.resume
    device = distributed.process_device(cfg.device)
    target = resolve_device(device)
    sharded = distributed.sharded_training()

    if sharded:  # load on the CPU in the GPU's dtype; FSDP/DeepSpeed move (and shard) the weights
        base = load_model(model, device="cpu", dtype=str(resolve_dtype(cfg.dtype, target)).removeprefix("torch."))
    else:
        base = load_model(model, device=device, dtype=cfg.dtype, quant=quant)
    if quant is not None:
        base = prepare_model_for_kbit_training(base, gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are initialised randomly
    lm = get_peft_model(base, lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
    trainable, total = lm.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)

    # From the setting: prepare_model_for_kbit_training has upcast the non-quantised weights to float32 by now
    bf16 = target.type == "cuda" and resolve_dtype(cfg.dtype, target) == torch.bfloat16
    world_size = distributed.share().world_size
    if cfg.warmup_passes is None:
        warmup: float = cfg.warmup_ratio  # a float < 1 is a ratio of the total steps in transformers 5
    else:  # whole steps (an int >= 1 is a count; 0 is none), the same whatever the run's length
        warmup = round(cfg.warmup_passes * steps_per_pass(len(examples), cfg.batch_size, world_size,
                                                          cfg.gradient_accumulation_steps))
    args = TrainingArguments(
        output_dir=str(model_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup" if cfg.lr_schedule == "constant" else "linear",
        warmup_steps=warmup,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=0.0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="epoch",
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to=report_to(cfg.report_to),
        use_cpu=target.type == "cpu",
        ddp_backend="gloo" if target.type == "cpu" and distributed.launched() else None,  # None: NCCL on GPUs
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every step
        average_tokens_across_devices=True,  # the loss is the mean over the tokens of all processes' batches
        bf16=bf16,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (and stops the run), not averaged away
    )
    distributed.one_device(args, target)  # plain python on a node with several GPUs: still one GPU
    compute = {"device": target.type, "n_gpu": args.n_gpu, "bf16_autocast": bf16,  # what really ran
               "dtype": str(resolve_dtype(cfg.dtype, target)).removeprefix("torch."),
               "effective_batch_size": distributed.global_batch(args)}  # texts per optimizer step
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def record(passes: float, state, loss: float | None, adapter: Path | None) -> dict:
        record = adapter_record(cfg, run, n_texts, augmentation, state, passes, loss, adapter, last)
        return {**record, "compute": compute}

    keep = KeepPasses(model_dir, list(cfg.save_at_passes), originals, collator, cfg.batch_size, record)
    trainer = Trainer(
        model=lm,
        args=args,
        train_dataset=examples,
        data_collator=collator,
        callbacks=[StopOnNonFinite(cfg.learning_rate), NoPickleArgs(), MarkCheckpointComplete(run), keep],
    )
    if trainer.is_world_process_zero():
        for partial in checkpoints(model_dir):  # cut short by a kill: saved again when training reaches that step
            if not resume:  # a fresh run: only unfinished ones can be here (check_fresh_folder)
                log.warning("removing %s: an earlier run did not finish saving it", partial)
                shutil.rmtree(partial)
            elif checkpoint_step(partial) > checkpoint_step(last):
                log.warning("removing %s: it was not saved completely; resuming from %s", partial, last.name)
                shutil.rmtree(partial)
    trainer.train(resume_from_checkpoint=str(last) if resume else None)
    save_adapter(trainer, tokenizer, Path(model_dir))  # every process: FSDP/DeepSpeed gather the weights
    loss = mean_token_loss(trainer.model, originals, collator, cfg.batch_size)  # every process (sharded models)
    if not trainer.is_world_process_zero():  # several processes: only the main one writes files
        return None
    history = trainer.state.log_history  # restored from the checkpoint on resume: the adapter's whole history
    meta = record(trainer.state.epoch, trainer.state, loss, Path(model_dir) / "adapter_model.safetensors")
    meta["kept_passes"] = {p.name: json.loads((p / "train_meta.json").read_text())["loss_originals"]
                           for p in kept_passes(model_dir)}
    write_loss_curve(Path(model_dir) / "loss.csv", history)
    write_json_atomic(Path(model_dir) / "train_meta.json", meta)
    log.info("saved the LoRA adapter to %s", model_dir)
    return Path(model_dir)


def adapter_record(cfg: TrainConfig, run: dict, n_texts: int, augmentation: dict | None, state, passes: float,
                   loss_originals: float | None, adapter: Path | None, resumed: Path | None) -> dict:
    """``train_meta.json`` of an adapter (the final one, or one kept after ``passes`` passes): what it was trained
    on and how, where, and how far (epoch, step, the loss on the original texts then).

    Paths are named as :func:`elusive.provenance.record_path` names them (relative inside the project).
    """
    history = state.log_history
    losses = [h for h in history if "loss" in h and h.get("step", 0) <= state.global_step]
    rates = [h["learning_rate"] for h in losses if "learning_rate" in h]
    return {
        "base_model": run["base_model"],
        "base_config_sha256": run["base_config_sha256"],  # evaluate.py refuses another base model
        "base_weights_sha256": run["base_weights_sha256"],
        "dataset": record_path(cfg.dataset),
        "dataset_sha256": run["dataset_sha256"],
        "n_texts": n_texts,
        "epochs": passes,  # what the adapter was trained for (a resumed run may not add any)
        "passes": passes,  # passes over the training data: each original once per pass
        "global_step": state.global_step,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "seed": cfg.seed,
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("model", "dataset", "model_dir")},
        "world_size": run["world_size"],
        "augmentation": augmentation,
        "loss_originals": loss_originals,  # mean token loss on the original texts, eval mode, at this point
        "final_train_loss": losses[-1]["loss"] if losses else None,  # the last logged training loss
        "last_learning_rate": rates[-1] if rates else None,
        # the Trainer's mean covers only the steps of this call: the adapter's whole mean only without resume
        "train_loss_mean": None if resumed is not None else next(
            (h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
        "resumed_from": None if resumed is None else {"checkpoint": resumed.name, **{
            k: checkpoint_state(resumed).get(k) for k in ("epoch", "global_step")}},
        "adapter_sha256": None if adapter is None or not adapter.is_file() else sha256_file(adapter),
        "machine": machine(),
        "code": code_version(),
    }


def write_loss_curve(path: Path, history: list[dict]) -> None:
    """The logged training losses as CSV: step, epoch, loss, learning_rate, grad_norm (one row per log)."""
    rows = [h for h in history if "loss" in h]
    lines = ["step,epoch,loss,learning_rate,grad_norm"]
    for h in rows:
        lines.append(",".join("" if h.get(k) is None else repr(float(h[k])) if k != "step" else str(h[k])
                              for k in ("step", "epoch", "loss", "learning_rate", "grad_norm")))
    write_text_atomic(path, "\n".join(lines) + "\n")


def report_to(targets: list[str]) -> list[str]:
    """The Trainer's ``report_to``: ``[]`` and ``[none]`` mean no logging integration."""
    targets = [t for t in targets if t and t.lower() != "none"]
    return targets or ["none"]


def augmentation_settings(dataset: Path, dataset_sha256: str) -> dict | None:
    """The settings data_augmentation.py wrote beside ``dataset`` (``.json``), if they describe this file
    (whose SHA-256 is ``dataset_sha256``)."""
    sidecar = dataset.with_suffix(".json")
    if dataset.suffix != ".csv" or not sidecar.is_file():
        return None
    try:  # any other file of that name (a stray bio.json, a Wikipedia file) is not ours: ignored
        settings = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = None
    if not isinstance(settings, dict) or settings.get("csv_sha256") != dataset_sha256:
        log.info("%s does not describe %s (not data_augmentation.py's record of it): not recorded", sidecar, dataset)
        return None
    return settings


def save_adapter(trainer: Trainer, tokenizer, model_dir: Path) -> None:
    """Save the adapter into ``model_dir`` through a temporary folder, ``adapter_config.json`` moved last.

    Called by every process: ``Trainer.save_model`` gathers sharded weights (FSDP, DeepSpeed ZeRO-3) and
    writes only on the main process, which then moves the files into place.
    """
    tmp = model_dir / ".adapter.tmp"
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not main:
        return
    (tmp / "training_args.bin").unlink(missing_ok=True)  # pickled; train_meta.json records the settings
    tokenizer.save_pretrained(str(tmp))
    names = sorted(os.listdir(tmp), key=lambda n: n == "adapter_config.json")
    for name in names:
        os.replace(tmp / name, model_dir / name)
    tmp.rmdir()
