"""The user's private cache folder: numba's compiled stage-3 loops and tokenizer records.

Where: ``$ELUSIVE_CACHE`` if set, else ``$XDG_CACHE_HOME/elusive``, else ``~/.cache/elusive``. The folder and
its sub-folders are created with mode 0700 and used only if they belong to the current user and no one else
may write to them; otherwise nothing is cached (everything still works, only slower: numba compiles in
every process, stage 3 loads transformers' tokenizer).

Why a cache the project writes itself is acceptable although its files are read back:

* numba's cache (``numba/``) holds pickles (its index and the compiled code's environment); the project's
  rule is "no pickle" because unpickling runs code chosen by whoever wrote the file. Here the writer is this
  user's own processes and the folder is private to the user (0700, checked on every use), so whoever could
  plant a file there could as well edit the user's Python files or ``site-packages``: reading it grants
  nothing new. Files from others (a shared model folder, a download) are never read this way. numba writes
  every file to a temporary name and renames it into place, so concurrent processes (a Hydra multirun, two
  shells) each see either no file or a complete one; tests run two processes at once on an empty cache.
* Tokenizer records (``tokenizers/``, :mod:`elusive.text.tokenizer_records`) are JSON, not pickles.

Delete the folder at any time; it is refilled on the next runs.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "ELUSIVE_CACHE"


def root() -> Path:
    """The cache folder (not created): ``$ELUSIVE_CACHE``, ``$XDG_CACHE_HOME/elusive`` or ``~/.cache/elusive``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "elusive"


def _private(path: Path) -> bool:
    """True if ``path`` is a real folder (not a link) of the current user that only they may write to."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    own = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISDIR(info.st_mode) and own and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_dir(name: str) -> Path | None:
    """``root()/name``, created 0700 if missing; None if it cannot be created or is not private to the user."""
    folder = root() / name
    try:
        for part in (root(), folder):
            if not part.exists():
                part.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(part, 0o700)  # mkdir's mode is masked by the umask
    except OSError as err:
        log.info("cache folder %s cannot be created (%s): not caching", folder, err)
        return None
    if not (_private(root()) and _private(folder)):
        log.warning("cache folder %s is not private to this user (owner or permissions): not caching; "
                    "chmod 700 it or set %s to a folder of your own", folder, ENV)
        return None
    return folder


def configure_numba() -> bool:
    """Point numba's cache at ``root()/numba`` unless the user chose one (``NUMBA_CACHE_DIR``).

    Must run before the functions to cache are decorated; also works when numba is already imported.

    Returns:
        Whether compiled functions should be cached (``cache=`` of ``numba.njit``).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True  # the user's choice
    folder = private_dir("numba")
    if folder is None:
        return False
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba read its settings when it was imported: set the one it reads at caching
        config.CACHE_DIR = str(folder)
    return True
