"""What a base model is, by content: the SHA-256 of its ``config.json`` and of its weight files.

train.py records both (in ``train_meta.json`` and each checkpoint's manifest); ``resume=true`` and evaluate.py
compare them with the ``model=`` at hand, so an adapter is never resumed on, or applied to, another base model
than the one it was trained on — even under the same path. A local folder, a ``.gguf`` file and a hub id that
is in the local Hugging Face cache can be identified; anything else gives ``None`` (nothing to compare).

Hashing weights reads every byte once (about a second per GB); the result is remembered in the user's cache
(:mod:`elusive.core.cache`, ``hashes/``) per file path, size, inode and modification time, so later runs only stat
the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from elusive.core import cache
from elusive.core.errors import InputError
from elusive.core.files import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".ot", ".npz")
"""Files of weights, of any framework: what a model's identity hashes, and what a tokenizer's fingerprint skips."""


def model_files(model: str) -> tuple[Path | None, list[Path]]:
    """The ``config.json`` and the weight files of ``model`` found on this machine (None, [] when unknown)."""
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return None, [path]
    if path.is_dir():
        folder = path
    else:
        from transformers.utils import cached_file

        try:  # the hub cache only: nothing is downloaded to identify a model
            found = cached_file(model, "config.json", local_files_only=True,
                                _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):
            return None, []
        if not found:
            return None, []
        folder = Path(found).parent
    config = folder / "config.json"
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return (config if config.is_file() else None), weights


def locate(model: str, key: str = "model") -> tuple[bool, str]:
    """Where ``model`` would be loaded from, found without downloading anything: ``(found, what to say)``.

    A local folder or file; else a hub id in the local Hugging Face cache (its ``config.json``); else the
    hub is asked whether the id exists (metadata only, 10 s at most). ``found`` is False when the hub could
    not be reached (offline, no network): the run will then need to download the model.

    Raises:
        InputError: The hub answers that there is no such model (or it is private).
    """
    path = Path(model).expanduser()
    if path.exists():
        return True, f"{key}={model}: the local {'file' if path.is_file() else 'folder'} {path.resolve()}"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return True, f"{key}={model}: in the local Hugging Face cache ({Path(cached).parent})"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(model, timeout=10)
    except GatedRepoError:
        return True, f"{key}={model}: on the hub, gated: accept its licence there and log in (hf auth login) to download it"
    except RepositoryNotFoundError as err:
        raise InputError(f"{key}={model}: no such model on the Hugging Face hub (or a private one) and no such local "
                         "path; fix the id or the path") from err
    except Exception as err:  # offline mode, no network, a proxy: the hub's client raises many types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return False, (f"{key}={model}: could not be resolved: not a local path, not in the local Hugging Face cache, "
                       f"and the hub could not be reached ({reason}); the run will have to download it")
    return True, f"{key}={model}: on the hub (revision {info.sha}), not downloaded yet"


def base_identity(model: str) -> dict[str, str | None]:
    """``{"config_sha256": ..., "weights_sha256": ...}`` of ``model`` (None for what cannot be found here).

    ``weights_sha256`` hashes the names and SHA-256s of every weight file in the model folder, in order.
    """
    config, weights = model_files(model)
    weights_hash = None
    if weights:
        digest = hashlib.sha256()
        for path in weights:
            digest.update(f"{path.name}\0{cached_sha256(path)}\n".encode("utf-8"))
        weights_hash = digest.hexdigest()
    return {"config_sha256": None if config is None else sha256_file(config), "weights_sha256": weights_hash}


def cached_sha256(path: Path) -> str:
    """SHA-256 of a (large) file, remembered per path, size, inode and modification time."""
    real = Path(os.path.realpath(path))
    info = real.stat()
    key = hashlib.sha256(f"{real}\0{info.st_size}\0{info.st_ino}\0{info.st_mtime_ns}".encode("utf-8")).hexdigest()
    folder = cache.private_dir("hashes")
    entry = None if folder is None else folder / f"{key}.json"
    if entry is not None and entry.is_file():
        try:
            return json.loads(entry.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            pass
    value = sha256_file(real)
    if entry is not None:
        write_json_atomic(entry, {"path": str(real), "sha256": value}, indent=None)
    return value


def mismatch(recorded: dict | None, current: dict) -> str | None:
    """The first of config/weights whose recorded hash differs from the current one (both known), else None."""
    for key, what in (("config_sha256", "config.json"), ("weights_sha256", "weights")):
        a, b = (recorded or {}).get(key), current.get(key)
        if a and b and a != b:
            return what
    return None
