"""Where a stage may write: one rule for every file and folder a stage writes, checked before any work.

* **Never over an input.** An output path may not be, lie inside, or contain any of the stage's inputs
  (datasets, attention dumps, the model folder or ``.gguf`` file, an adapter), compared after resolving
  symlinks and relative paths. So ``data_augmentation.py dataset=d/bio.csv save_name=d/bio`` (which would
  replace the dataset) and ``train.py model=d/small model_dir=d/small`` (which would write an adapter into the
  base model) are refused, sidecars (``{save_name}.json``) included.
* **A place that can be written.** An output may not be an existing folder where a file goes (or a file
  where a folder goes), lie under an existing file, or lie in a folder the user cannot write.
* **A folder a stage fills** (``train.py model_dir=``, ``evaluate.py output_dir=``) must be absent, empty, or
  one this stage wrote before: recognised by its marker ``.elusive-<stage>`` (written when the stage starts;
  it is also the stage's lock, :func:`claim_folder`) or, for folders written before markers existed, by the
  stage's own files (:data:`OWN_FILES`).
* **Never over another stage's file.** An output file may not replace an existing file inside a folder another
  stage fills (so ``compare_runs.py a=<eval>/predictions.jsonl output=<eval>/results`` cannot replace
  evaluate's ``results.json``); a new file there is fine.

Each failure is one :class:`~elusive.core.errors.InputError` naming the key, the path and, for an overlap, the
input. :func:`check_outputs` only looks: nothing is created, so a refused run leaves no trace.

* **A sweep checks every job first.** Every stage calls :func:`check_outputs` before it loads a model or
  writes a byte. Under :func:`paths_only` it stops right there (:class:`PathsChecked`) and reports the outputs it
  would write, so ``-m`` sweeps run every job's checks, and compare their outputs, before the first job runs
  (:func:`elusive.core.sweeps.check_sweep`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from elusive.core.errors import InputError
from elusive.core.files import file_lock

OWN_FILES = {
    "train": ("train_meta.json", "adapter_config.json", "checkpoint-*/checkpoint_complete.json"),
    "evaluate": ("results.json", "eval_meta.json", "predictions.jsonl"),
}
"""Files by which a folder a stage wrote before markers existed is still recognised as its own."""


MODEL_KEYS = ("model", "small_model", "large_model")
"""Inputs that may be hub ids rather than paths (the others must exist)."""


@dataclass(frozen=True)
class Output:
    """One output of a stage: the config key and value that name it, and the file or folder written."""

    key: str
    value: str | os.PathLike[str]
    path: str | os.PathLike[str]
    folder: bool = False  # a folder (else a file)
    fills: bool = False  # a folder the stage fills: absent, empty or marked as the stage's own


def suffixed(key: str, value: str | os.PathLike[str], suffixes: Iterable[str]) -> list[Output]:
    """The files ``{value}{suffix}`` of an output given without suffix (``output=out/fig1`` → ``out/fig1.png``)."""
    return [Output(key, value, f"{value}{suffix}") for suffix in suffixes]


def marker_name(stage: str) -> str:
    """The marker (and lock) file a stage keeps in a folder it fills."""
    return f".elusive-{stage}"


def resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` absolute, with ``~`` expanded and every symlink of its existing part resolved.

    Raises:
        RuntimeError, OSError: A symlink on the way points back to itself (a loop).
    """
    return Path(path).expanduser().resolve(strict=False)


class PathsChecked(Exception):
    """Raised by :func:`check_outputs` under :func:`paths_only`, once the stage's outputs passed every check."""


_PLANNED: list[tuple[Output, Path]] | None = None  # under paths_only: the outputs checked, with their resolved paths


@contextlib.contextmanager
def paths_only() -> Iterator[list[tuple[Output, Path]]]:
    """Run a stage only up to its :func:`check_outputs` (which then raises :class:`PathsChecked`); yields the list
    that receives each output it would write, with its resolved path."""
    global _PLANNED
    outer, _PLANNED = _PLANNED, []
    try:
        yield _PLANNED
    finally:
        _PLANNED = outer


def local_input(value: str | os.PathLike[str] | None) -> Path | None:
    """The resolved path of an input that exists on disk (a hub id or a missing path gives None)."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    return resolved(path) if path.exists() else None


def check_outputs(stage: str, outputs: Iterable[Output], inputs: Mapping[str, object]) -> None:
    """Refuse outputs that would overwrite or sit among the inputs, or that cannot be written (see the module doc).

    Args:
        stage: The stage's name (``train``, ``evaluate``, ...): names the marker of a folder it fills.
        outputs: Every file and folder the stage will write.
        inputs: Config key → path (or a list of paths) of every input; values that do not exist on disk
            (hub ids, None) are skipped.

    Raises:
        InputError: ``key=value: what is wrong; the fix``, naming both paths for an overlap.
    """
    known = []
    for key, value in inputs.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            path = local_input(item) if isinstance(item, (str, os.PathLike)) else None
            if path is not None:
                known.append((key, path))
    planned = []
    for out in outputs:
        shown = f"{out.key}={out.value}"
        try:
            path = resolved(out.path)
        except (RuntimeError, OSError) as err:  # Python 3.11: RuntimeError("Symlink loop from ..."), later OSError
            raise InputError(f"{shown}: {out.path} goes through a symlink that leads back to itself (a loop); fix "
                             f"the link or choose another {out.key}") from err
        planned.append((out, path))
        for key, source in known:
            if path == source:
                raise InputError(f"{shown}: would write {path}, which is the input {key}={source}; choose another "
                                 f"{out.key}")
            if source in path.parents:
                raise InputError(f"{shown}: {path} lies inside the input {key}={source}; give {out.key} a path outside it")
            if path in source.parents:
                raise InputError(f"{shown}: {path} contains the input {key}={source}; give {out.key} a path that "
                                 "does not hold the inputs")
        check_location(shown, out.key, path, out.folder or out.fills)
        if out.fills:
            check_folder(shown, out.key, path, stage)
        elif not out.folder and path.is_file():
            check_not_anothers(shown, out.key, path, stage)
    if _PLANNED is not None:  # a sweep's check: the stage stops here, so its inputs are not read; they must exist
        for key, value in inputs.items():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if key not in MODEL_KEYS and isinstance(item, (str, os.PathLike)) and str(item) and \
                        not Path(item).expanduser().exists():
                    raise InputError(f"{key}={item}: no such file or folder; fix the path")
        _PLANNED.extend(planned)
        raise PathsChecked(stage)


def check_location(shown: str, key: str, path: Path, folder: bool) -> None:
    """Refuse a path of the wrong kind, under a file, or in a folder that cannot be written."""
    if path.exists() and folder and not path.is_dir():
        raise InputError(f"{shown}: {path} is a file, not a folder; give a folder path for {key}")
    if path.is_dir() and not folder:
        raise InputError(f"{shown}: {path} is a folder; give {key} a file path (outputs are files)")
    # the nearest existing folder the output goes into (an existing output file is replaced: its own folder)
    existing = path if path.is_dir() else next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise InputError(f"{shown}: {existing} is a file, so nothing can be written under it; fix the path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{shown}: the folder {existing} is not writable; choose a {key} in a folder you can write to")


def check_folder(shown: str, key: str, path: Path, stage: str) -> None:
    """A folder the stage fills: absent, empty, or marked as this stage's (see the module doc)."""
    if not path.is_dir() or is_own_folder(path, stage):
        return
    entries = sorted(p.name for p in path.iterdir())
    if entries:
        listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise InputError(f"{shown}: the folder holds other files ({listed}) and is not a {stage} output; give {key} "
                         "a new or empty folder")


def check_not_anothers(shown: str, key: str, path: Path, stage: str) -> None:
    """Refuse replacing the existing file ``path`` when a folder above it is filled by another stage."""
    for folder in path.parents:
        marked = {m.name[len(marker_name("")):] for m in folder.glob(marker_name("*")) if m.is_file()}
        if folder == path.parent:  # folders from before markers: recognised by their own files
            marked |= {s for s in OWN_FILES if is_own_folder(folder, s)}
        other = sorted(marked - {stage})
        if other:
            raise InputError(f"{shown}: would replace {path}, a file in {folder}, which {other[0]} fills; choose "
                             f"another {key} (outside that folder)")


def is_own_folder(path: Path, stage: str) -> bool:
    """True when ``path`` carries ``stage``'s marker or, from before markers, one of its own files."""
    if (path / marker_name(stage)).is_file():
        return True
    return any(next(path.glob(pattern), None) is not None for pattern in OWN_FILES.get(stage, ()))


@contextlib.contextmanager
def claim_folder(key: str, folder: str | os.PathLike[str], stage: str) -> Iterator[Path]:
    """Create ``folder``, mark it as ``stage``'s and hold an exclusive lock on it while the block runs.

    The lock is ``fcntl.flock`` on the marker file: a second run into the same folder is refused at once, and
    the lock of a killed run goes with its process (nothing stale to clean up). The marker records the pid,
    host and start time of the run holding it.

    Raises:
        InputError: Another run holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / marker_name(stage)
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(file_lock(marker, blocking=False))
        except BlockingIOError:
            raise InputError(f"{key}={folder}: another {stage} run ({_holder(marker)}) is writing into it; wait for "
                             f"it to finish or choose another {key}") from None
        record = {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        yield folder


def _holder(marker: Path) -> str:
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        return f"pid {record['pid']} on {record['host']}, started {record['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"
