"""Files written whole or not at all, strict JSON, file hashes and the one file lock.

Every file a stage writes goes to a temporary name in its destination folder and is renamed into place only when
complete (:func:`atomic_path`), so a failed run never leaves a half-written artifact; temporary files of killed
runs on this host are removed by the next run. JSON is written with NaN and infinity refused
(:func:`strict_json`), so every record parses anywhere.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name carries the writer's pid and host (``.<name>.<pid>-<host>.<random>.tmp``): one left by a
    killed run is deleted by the next write to the same path once its pid is no longer running (here).

    Args:
        path: The final destination. Its parent folder is created if needed (and removed again, with every
            folder created for it, if the block fails and they are still empty: a failed run leaves no trace).

    Yields:
        A temporary file path in the same folder (so the final rename is atomic).
    """
    path = Path(path)
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_HOST}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    done = False
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
        done = True
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not done:
            for folder in created:  # innermost first; one another writer has filled stays
                try:
                    folder.rmdir()
                except OSError:
                    break


_HOST = hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:6]


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` for ``path`` whose writer (on this host) has died."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-{_HOST}\.[^.]+\.tmp$")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        found = pattern.match(candidate.name)
        if found and not pid_alive(int(found.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def pid_alive(pid: int) -> bool:
    """True if a process with this pid runs on this machine (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def strict_json(value: object, indent: int | None = 2, **options) -> str:
    """``value`` as strict JSON (no NaN or Infinity, which other JSON readers refuse); every JSON the project
    writes goes through here.

    Raises:
        ValueError: ``value`` holds a non-finite number.
    """
    return json.dumps(value, indent=indent, allow_nan=False, **options)


def write_json_atomic(path: str | os.PathLike[str], value: object, indent: int | None = 2, **options) -> None:
    """Write ``value`` as strict JSON (:func:`strict_json`) and a newline to ``path`` atomically."""
    write_text_atomic(path, strict_json(value, indent, **options) + "\n")


def sha256_file(path: str | os.PathLike[str], start: int = 0) -> str:
    """Return the hex SHA-256 of a file's bytes (from byte ``start`` on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(start)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], blocking: bool = True) -> Iterator[int]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created, mode 0644 before the umask) while the block runs.

    The one lock of the project: numba's cache, a stage's output folder and the model conversion use it. The
    lock goes with its process, so a killed run leaves nothing stale. POSIX only, like the rest of the pipeline.

    Yields:
        The open file descriptor (a stage writes its marker through it).

    Raises:
        BlockingIOError: ``blocking=False`` and another process holds the lock.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    try:
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
