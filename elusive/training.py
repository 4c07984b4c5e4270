"""Stage 4: LoRA continual pretraining on (augmented) texts with the Hugging Face Trainer.

LoRA r=16, lora_alpha=16, dropout 0 on every linear projection except the LM head (peft's
``all-linear``; embeddings are not linear layers). AdamW, lr 5e-4, linear schedule with 10 % warmup,
gradient clipping at 1.0. Each text is trained on with its tags removed and EOS appended.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from elusive import distributed
from elusive.artifacts import sha256_file, write_text_atomic
from elusive.data import load_texts
from elusive.errors import InputError
from elusive.models import check_quant, describe, load_model, load_tokenizer, resolve_device, resolve_dtype

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


def tokenize_for_training(tokenizer, texts: list[str], max_length: int) -> list[dict[str, list[int]]]:
    """Tokenise each text and append EOS (kept even when the text is truncated to ``max_length`` tokens).

    Labels are the input ids; padding is masked by the collator.
    """
    if tokenizer.eos_token_id is None:
        raise InputError(f"model={tokenizer.name_or_path}: the tokenizer has no EOS token to end each text")
    if max_length < 2:
        raise InputError(f"max_length={max_length}: must be >= 2 (at least one token and EOS)")
    enc = tokenizer(texts, truncation=True, max_length=max_length - 1)
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


CHECKPOINT_MANIFEST = "checkpoint_complete.json"
"""Written into ``checkpoint-N`` last, listing every file and its size: a checkpoint without it, or whose
files differ from it, was cut short (e.g. the job was killed while saving) and is never resumed from. It also
records the run's settings (``run``): ``resume=true`` refuses a checkpoint made with other data or settings."""


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
        files = {
            p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKPOINT_MANIFEST
        }
        write_text_atomic(folder / CHECKPOINT_MANIFEST, json.dumps({"files": files, "run": self.run}, indent=1) + "\n")


def is_complete_checkpoint(folder: Path) -> bool:
    """True when ``folder`` has its manifest and every file listed there, at the listed size."""
    try:
        files = json.loads((folder / CHECKPOINT_MANIFEST).read_text())["files"]
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError):
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
        if key in recorded and recorded[key] != now:
            raise InputError(
                f"resume=true: {checkpoint.name} was trained with {key}={recorded[key]}, this run has {key}={now}; "
                "resume with the same settings, or train into a new model_dir"
            )


def train(
    model: str,
    dataset: Path,
    model_dir: Path,
    epochs: float = 10,
    batch_size: int = 8,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 5e-4,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    max_length: int = 512,
    lora_r: int = 16,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    quant: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    resume: bool = False,
    logging_steps: int = 10,
    group_by_length: bool = False,
) -> Path | None:
    """Run stage 4: train a LoRA adapter and save it in ``model_dir``.

    Checkpoints go to ``model_dir/checkpoint-<step>`` after every epoch; TensorBoard logs to
    ``model_dir/runs``. The final adapter (loadable with ``PeftModel.from_pretrained``) is written to
    ``model_dir`` itself, config last, so a directory with ``adapter_config.json`` holds a complete adapter.

    Launched on several processes (accelerate launch, torchrun), the Trainer runs data-parallel (or FSDP /
    DeepSpeed, as the accelerate config says): each step takes ``batch_size`` texts per process and the loss
    is the mean over the tokens of all of them, so N processes × ``batch_size`` train like one process with
    N × ``batch_size``.

    Args:
        model: Base model (hub id, directory or .gguf).
        dataset: CSV with a ``text`` column (tags, if any, are removed), e.g. the output of stage 3.
        model_dir: Output directory.
        epochs: Training epochs.
        batch_size: Texts per device per step.
        gradient_accumulation_steps: Steps accumulated before each optimizer update.
        learning_rate: Peak AdamW learning rate.
        warmup_ratio: Fraction of steps with linear warmup.
        max_grad_norm: Gradient clipping norm.
        max_length: Texts are truncated to this many tokens.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA path.
        quant: None, ``8bit`` or ``4bit`` base weights (bitsandbytes, CUDA or CPU; gradient checkpointing on).
        device: ``auto``, ``cpu``, ``cuda`` or ``multi``; in a multi-process run ``auto`` is this process's GPU.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16`` of the frozen base weights.
        seed: Seed for LoRA initialisation and data order.
        resume: Continue from the last complete ``checkpoint-*`` in ``model_dir`` (incomplete ones, cut short
            by a kill while saving, are removed first).
        logging_steps: Log the loss every N steps.
        group_by_length: Batch texts of similar length together (less padding).

    Returns:
        ``model_dir`` (None on the processes other than the main one of a multi-process run).
    """
    if epochs <= 0:
        raise InputError(f"epochs={epochs}: must be > 0")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    if not 0 <= warmup_ratio < 1:
        raise InputError(f"warmup_ratio={warmup_ratio}: must be in [0, 1)")
    for key, value, bad, rule in (  # checked here: the Trainer and peft would stop with a traceback instead
        ("gradient_accumulation_steps", gradient_accumulation_steps, gradient_accumulation_steps < 1, ">= 1"),
        ("learning_rate", learning_rate, learning_rate <= 0, "> 0"),
        ("max_grad_norm", max_grad_norm, max_grad_norm < 0, ">= 0 (0 = no clipping)"),
        ("lora_r", lora_r, lora_r < 1, ">= 1"),
        ("lora_alpha", lora_alpha, lora_alpha <= 0, "> 0"),
        ("lora_dropout", lora_dropout, not 0 <= lora_dropout < 1, "in [0, 1)"),
        ("logging_steps", logging_steps, logging_steps < 1, ">= 1"),
    ):
        if bad:
            raise InputError(f"{key}={value}: must be {rule}")
    device = distributed.process_device(device)
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
    texts = load_texts(dataset, "dataset")
    run = {  # what a resumed run must share with its checkpoint (see check_same_run); epochs may grow
        "base_model": describe(model),
        "dataset_sha256": sha256_file(dataset),
        "batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "max_grad_norm": max_grad_norm,
        "max_length": max_length,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "quant": quant,
        "dtype": dtype,
        "seed": seed,
        "group_by_length": group_by_length,
        "world_size": distributed.share().world_size,
    }
    if resume:
        check_same_run(last, run)
    tokenizer = load_tokenizer(model, padding_side="right")
    examples = tokenize_for_training(tokenizer, texts, max_length)

    if sharded:  # load on the CPU in the GPU's dtype; FSDP/DeepSpeed move (and shard) the weights
        base = load_model(model, device="cpu", dtype=str(resolve_dtype(dtype, target)).removeprefix("torch."))
    else:
        base = load_model(model, device=device, dtype=dtype, quant=quant)
    if quant is not None:
        base = prepare_model_for_kbit_training(base, gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # LoRA's A matrices are initialised randomly
    lm = get_peft_model(base, lora_config(lora_r, lora_alpha, lora_dropout))
    trainable, total = lm.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)

    bf16 = target.type == "cuda" and base.dtype == torch.bfloat16
    args = TrainingArguments(
        output_dir=str(model_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        max_grad_norm=max_grad_norm,
        weight_decay=0.0,
        seed=seed,
        data_seed=seed,
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=logging_steps,
        report_to=["tensorboard"],
        use_cpu=target.type == "cpu",
        ddp_backend="gloo" if target.type == "cpu" and distributed.launched() else None,  # None: NCCL on GPUs
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every step
        average_tokens_across_devices=True,  # the loss is the mean over the tokens of all processes' batches
        bf16=bf16,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=lm,
        args=args,
        train_dataset=examples,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[NoPickleArgs(), MarkCheckpointComplete(run)],
    )
    if resume and trainer.is_world_process_zero():
        for partial in checkpoints(model_dir):  # cut short by a kill: saved again when training reaches that step
            if checkpoint_step(partial) > checkpoint_step(last):
                log.warning("removing %s: it was not saved completely; resuming from %s", partial, last.name)
                shutil.rmtree(partial)
    trainer.train(resume_from_checkpoint=str(last) if resume else None)
    save_adapter(trainer, tokenizer, Path(model_dir))  # every process: FSDP/DeepSpeed gather the weights
    if not trainer.is_world_process_zero():  # several processes: only the main one writes files
        return None
    meta = {
        "base_model": run["base_model"],
        "dataset": str(Path(dataset).absolute()),
        "dataset_sha256": run["dataset_sha256"],
        "n_texts": len(texts),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "world_size": trainer.args.world_size,
        "augmentation": augmentation_settings(Path(dataset), run["dataset_sha256"]),
        "final_train_loss": next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None),
    }
    write_text_atomic(Path(model_dir) / "train_meta.json", json.dumps(meta, indent=2) + "\n")
    log.info("saved the LoRA adapter to %s", model_dir)
    return Path(model_dir)


def augmentation_settings(dataset: Path, dataset_sha256: str) -> dict | None:
    """The settings data_augmentation.py wrote beside ``dataset`` (``.json``), if they describe this file
    (whose SHA-256 is ``dataset_sha256``)."""
    sidecar = dataset.with_suffix(".json")
    if dataset.suffix != ".csv" or not sidecar.is_file():
        return None
    settings = json.loads(sidecar.read_text())
    return settings if settings.get("csv_sha256") == dataset_sha256 else None


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
