"""What transformers' tokenizer of a model folder hashes to, recorded so stage 3 can skip loading it.

Stage 3 with a dump whose ``tokens_sha256`` verifies takes the token arrays from the dump: it needs the
tokenizer only to check the dump against it (``vocab_sha256``, ``tokenizer_sha256``, ``tokens_sha256``), and
importing transformers and loading its tokenizer take ~4 s, most of a run on the paper's 100 biographies.

A *record* is a small JSON file in the user's private cache folder (:mod:`elusive.core.cache`, ``tokenizers/``),
written by :func:`elusive.core.models.load_tokenizer` whenever it loads a tokenizer from a local folder: the
tokenizer's :func:`~elusive.text.fingerprints.tokenizer_sha256` and :func:`~elusive.text.fingerprints.vocab_sha256` and its
``name_or_path``, filed under a :func:`fingerprint` of everything that decides what ``load_tokenizer`` returns
for that folder: the folder's absolute path, the name, size and bytes of every file in it except weights
(so ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``, ``config.json`` — which
transformers reads to choose the tokenizer class — and anything else), the versions of transformers and
tokenizers, the ``padding_side`` and :data:`RECIPE`. Loading is deterministic, so the same fingerprint means
transformers would build the same tokenizer again, with the recorded hashes: the record stands in for it
(:class:`TokenizerRecord`). Any change to the folder's files or the libraries changes the fingerprint, and
then stage 3 loads transformers as before (and records the new state).

Why not ``tokenizers.Tokenizer.from_file(<folder>/tokenizer.json)``: transformers may change the backend it
builds from that file (transformers 5 adds an NFC normaliser to Qwen2's, and rebuilds Llama's post-processor
from ``add_bos_token``), so the file alone does not show what transformers would give; and once the dump's
tokens are verified, no tokenizer is needed at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from elusive.core import cache
from elusive.core.files import write_json_atomic
from elusive.core.identity import WEIGHT_SUFFIXES
from elusive.text.fingerprints import tokenizer_sha256, vocab_sha256

log = logging.getLogger(__name__)

FORMAT = "elusive-tokenizer-record/1"
RECIPE = 1  # bump when elusive.core.models.load_tokenizer changes what it returns for the same files


@dataclass(frozen=True)
class TokenizerRecord:
    """Stands in for the transformers tokenizer of a model folder where only its identity is needed.

    :func:`elusive.text.fingerprints.vocab_sha256` and :func:`~elusive.text.fingerprints.tokenizer_sha256` return the recorded
    values for it. It cannot tokenise: use it only where the tokens come from a verified dump.
    """

    name_or_path: str
    recorded_tokenizer_sha256: str
    recorded_vocab_sha256: str


@functools.cache
def _version(package: str) -> str:
    """The installed version of ``package`` (per process: the modules already imported would not change)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


_FINGERPRINTS: dict[tuple, str] = {}  # this process's fingerprints, by the folder's files' os.stat


def fingerprint(model: str, padding_side: str = "right") -> str | None:
    """Hex SHA-256 of what decides ``load_tokenizer(model, padding_side)``; None unless ``model`` is a local folder.

    Remembered within the process while every file keeps its inode, size and modification time (a multirun
    calls stage 3 once per setting; hashing Qwen's 11 MB tokenizer.json each time would be ~30 ms a job).
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None  # a hub id (the hub may change) or a .gguf file (its tokenizer is rebuilt from the weights file)
    files = []
    for path in sorted(folder.iterdir()):
        if not path.name.endswith(WEIGHT_SUFFIXES) and path.is_file():
            info = path.stat()
            files.append((path, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    key = (str(folder.absolute()), padding_side, tuple(files))
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    head = {"format": FORMAT, "recipe": RECIPE, "folder": str(folder.absolute()), "padding_side": padding_side,
            "transformers": _version("transformers"), "tokenizers": _version("tokenizers")}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode("utf-8"))
    for path, *_ in files:
        data = path.read_bytes()
        digest.update(json.dumps([path.name, len(data)]).encode("utf-8"))
        digest.update(data)
    _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def _record_path(key: str) -> Path | None:
    folder = cache.private_dir("tokenizers")
    return None if folder is None else folder / f"{key}.json"


def remember(model: str, tokenizer, padding_side: str = "right") -> None:
    """Record ``tokenizer`` (just loaded by transformers from the folder ``model``) unless already recorded."""
    key = fingerprint(model, padding_side)
    path = None if key is None else _record_path(key)
    if path is None or path.is_file():
        return
    tokenizer_hash = tokenizer_sha256(tokenizer)
    if tokenizer_hash is None:
        return  # no Rust backend: nothing that a record could vouch for
    record = {"format": FORMAT, "fingerprint": key, "model": str(Path(model).expanduser().absolute()),
              "name_or_path": tokenizer.name_or_path, "tokenizer_sha256": tokenizer_hash,
              "vocab_sha256": vocab_sha256(tokenizer)}
    try:
        write_json_atomic(path, record, indent=1, sort_keys=True)
    except OSError as err:  # a full or read-only disk must not fail the stage that loaded the tokenizer
        log.info("could not record the tokenizer of %s in %s (%s)", model, path, err)
        return
    log.debug("recorded the tokenizer of %s in %s", model, path)


def recall(model: str, padding_side: str = "right") -> TokenizerRecord | None:
    """The record of ``load_tokenizer(model, padding_side)`` as the folder's files are now, or None."""
    key = fingerprint(model, padding_side)
    path = None if key is None else _record_path(key)
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT or record.get("fingerprint") != key:
            return None
        return TokenizerRecord(str(record["name_or_path"]), str(record["tokenizer_sha256"]),
                               str(record["vocab_sha256"]))
    except (OSError, ValueError, KeyError, AttributeError) as err:
        log.info("ignoring the unreadable tokenizer record %s (%s)", path, err)
        return None
