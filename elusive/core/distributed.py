"""Several processes, one result: the little plumbing save_attention, evaluate and train share.

A run is *launched* when ``accelerate launch`` or ``torchrun`` set ``WORLD_SIZE`` > 1 in the environment.
Process control comes from accelerate's :class:`~accelerate.PartialState` (it starts the process group:
NCCL on GPUs, gloo on CPUs). It is built with ``cpu=True`` when CUDA is unavailable, because otherwise it
does not see CPU processes started by torchrun.

Results travel between processes through files, not ``torch.distributed`` objects (those are pickled):
each process writes its shard atomically into a hidden folder beside the output (:func:`shard_dir`), all
wait at a barrier, the main process merges the shards into the one artifact and removes the folder. With
several nodes the output must therefore be on a filesystem every node sees.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.numpy import load_file, save

from elusive.core.errors import InputError
from elusive.core.files import atomic_path, strict_json, write_text_atomic

T = TypeVar("T")
log = logging.getLogger(__name__)


def launched() -> bool:
    """True when this process is one of several started by ``accelerate launch`` or ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Share:
    """Which part of the work this process does: every ``world_size``-th item, starting at ``rank``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The process that merges the shards and writes the artifact."""
        return self.rank == 0

    def pick(self, items: list[T]) -> list[T]:
        """This process's items: ``items[rank::world_size]`` (round robin, so batch sizes stay balanced)."""
        return items[self.rank :: self.world_size]


SINGLE = Share()


def share() -> Share:
    """This process's :class:`Share`; starts the process group on the first call in a launched run."""
    if not launched():
        return SINGLE
    state = _state()
    return Share(state.process_index, state.num_processes)


def _state():
    from accelerate import PartialState  # local import: single-process runs never need it

    return PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if launched():
        _state().wait_for_everyone()


def sharded_training() -> bool:
    """True when ``accelerate launch`` set up FSDP or DeepSpeed: they place (and shard) the weights themselves."""
    return any(os.environ.get(key, "").lower() == "true" for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def process_device(device: str) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` in a launched run with GPUs.

    Raises:
        InputError: ``device=multi`` (one model spread over all GPUs) in a launched run.
    """
    if not launched():
        return device
    if device == "multi":
        raise InputError(
            "device=multi: spreads one model over every GPU of a single process; run the script with python, "
            "not accelerate launch/torchrun (or use device=auto for one GPU per process)"
        )
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def one_device(args, target: torch.device) -> None:
    """Make the HF Trainer of a run not launched for several processes train on one device: ``target``.

    Started with plain ``python`` where N GPUs are visible, the Trainer of transformers 5.23 trains on cuda:0 with
    ``n_gpu = N``: each step takes N × ``per_device_train_batch_size`` texts (spread by ``nn.DataParallel``, or,
    for a quantised model, which it does not wrap, all of them on one GPU), so N times fewer steps and a shorter
    warm-up than the settings say. Here the process keeps one GPU (``n_gpu = 1``, as the Trainer itself sets for a
    model spread over GPUs, ``device=multi``); several GPUs train data-parallel only when launched (accelerate
    launch, torchrun). For ``target`` ``cuda:N`` with N > 0 the Trainer's device (where it sends the batches) and
    accelerate's are set to ``target`` too: the Trainer picks cuda:0 whatever the model's device. Hand-written:
    ``TrainingArguments`` has no setting for either; call it right after building them, before the Trainer.

    Args:
        args: The run's ``TrainingArguments``.
        target: The device the model was loaded on (``cuda`` without an index for ``device=multi``).
    """
    if launched():
        return
    if args.n_gpu > 1:
        log.info("%d GPUs are visible but the run was not launched for several processes: training on one (use "
                 "accelerate launch to train data-parallel)", args.n_gpu)
        args._n_gpu = 1
    if target.type == "cuda" and target.index is not None and args.device != target:
        torch.cuda.set_device(target)
        args.__dict__["_setup_devices"] = target  # the cached property behind TrainingArguments.device
        if getattr(args, "distributed_state", None) is not None:
            args.distributed_state.device = target  # accelerate's process state: the Accelerator's device


def global_batch(args) -> int:
    """Texts per optimizer step over all processes: the per-device batch × the GPUs one process drives
    (``n_gpu``, 1 after :func:`one_device`) × processes × gradient accumulation steps."""
    return (args.per_device_train_batch_size * max(1, args.n_gpu) * args.world_size
            * args.gradient_accumulation_steps)


def shard_dir(output: Path) -> Path:
    """The hidden folder beside ``output`` where the processes of one run leave their shards."""
    output = Path(output)
    return output.parent / f".{output.name}.shards"


def shard_path(output: Path, part: Share, suffix: str) -> Path:
    """The shard file of process ``part.rank`` for ``output`` (``suffix`` e.g. ``.safetensors``)."""
    return shard_dir(output) / f"rank{part.rank}-of-{part.world_size}{suffix}"


def gather_arrays(output: Path, part: Share, arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
    """Collect every process's ``arrays`` on the main process (via safetensors shard files beside ``output``).

    Every process must call it. Returns the shards in rank order on the main process (and deletes the shard
    files, their contents now in memory), None on the others.
    """
    with atomic_path(shard_path(output, part, ".safetensors")) as tmp:
        tmp.write_bytes(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    barrier()
    if not part.is_main:
        return None
    shards = [load_file(str(p)) for p in shard_paths(output, part.world_size, ".safetensors")]
    remove_shards(output)
    return shards


def gather_json(output: Path, part: Share, payload: Any) -> list[Any] | None:
    """Like :func:`gather_arrays` for a JSON-serialisable ``payload`` (e.g. generated answers)."""
    write_text_atomic(shard_path(output, part, ".json"), strict_json(payload, indent=None, ensure_ascii=False))
    barrier()
    if not part.is_main:
        return None
    shards = [json.loads(p.read_text(encoding="utf-8")) for p in shard_paths(output, part.world_size, ".json")]
    remove_shards(output)
    return shards


def shard_paths(output: Path, world_size: int, suffix: str) -> list[Path]:
    """Every process's shard file, in rank order (after the barrier).

    Raises:
        InputError: A shard is missing (e.g. the nodes do not share the output folder).
    """
    paths = [shard_path(output, Share(rank, world_size), suffix) for rank in range(world_size)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"{missing[0]}: a process's results are missing; with several nodes the output must be on a "
            "filesystem all nodes share"
        )
    return paths


def remove_shards(output: Path) -> None:
    """Delete the shard folder of ``output`` (main process, once it has read the shards)."""
    shutil.rmtree(shard_dir(output), ignore_errors=True)
