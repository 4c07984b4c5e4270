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
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from elusive.core import distributed
from elusive.core.config import TrainConfig, check
from elusive.core.errors import InputError
from elusive.core.files import sha256_file, write_json_atomic, write_text_atomic
from elusive.core.identity import base_identity
from elusive.core.models import (
    check_quant,
    describe,
    load_model,
    load_tokenizer,
    max_positions,
    resolve_device,
    resolve_dtype,
)
from elusive.core.outputs import Output, check_outputs, claim_folder
from elusive.core.provenance import code_version, machine, record_path
from elusive.text.data import training_texts
from elusive.training.callbacks import (
    KeepPasses,
    MarkCheckpointComplete,
    NoPickleArgs,
    StopOnNonFinite,
    mean_token_loss,
    steps_per_pass,
)
from elusive.training.checkpoints import (
    RESUME_KEYS,
    check_fresh_folder,
    check_resume_epochs,
    check_same_run,
    checkpoint_state,
    checkpoint_step,
    checkpoints,
    kept_passes,
    last_complete_checkpoint,
)

log = logging.getLogger(__name__)


def lora_config(r: int, lora_alpha: float, lora_dropout: float) -> LoraConfig:
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
    """Tokenise each text and append EOS; labels are the input ids (padding is masked by the collator).

    ``max_length`` means what it means in stage 1: the longest text allowed, in tokens (EOS included). A longer
    text is refused, never cut — a cut biography silently loses its last fields, the ones the study measures —
    and so is ``max_length`` above the model's positions (``model_limit``). Both before any model is loaded.

    Raises:
        InputError: No EOS token, ``max_length`` < 2 or above the model's positions, or a text too long.
    """
    if tokenizer.eos_token_id is None:
        raise InputError(f"model={tokenizer.name_or_path}: the tokenizer has no EOS token to end each text")
    if max_length < 2:
        raise InputError(f"max_length={max_length}: must be >= 2 (at least one token and EOS)")
    limit = max_length if model_limit is None else min(max_length, model_limit)
    enc = tokenizer(texts)
    for row, ids in enumerate(enc["input_ids"]):
        if len(ids) + 1 > limit:
            key = "max_length" if limit == max_length else "the model"
            raise InputError(
                f"dataset={dataset}: text {row} has {len(ids) + 1} tokens (EOS included), more than {key}'s limit of "
                f"{limit}; split the long texts into shorter ones"
                + (" (or raise max_length up to the model's limit)" if key == "max_length" and model_limit and
                   model_limit > max_length else "")
            )
    examples = []
    for ids in enc["input_ids"]:
        ids = [*ids, tokenizer.eos_token_id]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return examples


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
        cfg: The settings (:class:`elusive.core.config.TrainConfig` says what each one means).

    Returns:
        ``model_dir`` (None on the processes other than the main one of a multi-process run).

    Only one run at a time trains into a ``model_dir``: the main process holds a lock on it (its marker
    ``.elusive-train``, :func:`elusive.core.outputs.claim_folder`) from the first file written to the last.

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

    Paths are named as :func:`elusive.core.provenance.record_path` names them (relative inside the project).
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
