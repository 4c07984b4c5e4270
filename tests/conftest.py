"""Shared fixtures: tiny random models with tokenizers trained on the project's corpus, built once per session.

* ``small_model`` / ``large_model`` — Llama architecture, 2 vs 3 layers, one byte-level BPE tokenizer
  (no BOS, like Llama 3 / Qwen): the small/large pair for the contrast.
* ``gemma_model`` — Gemma 3 architecture with a SentencePiece-style Unigram tokenizer that adds BOS.
* ``word_model`` — Llama architecture with a word-level tokenizer.
"""

from __future__ import annotations

import atexit
import logging
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from elusive import cache


def _isolate_cache() -> None:
    """Tokenizer records go to a folder of this test session (records of temporary models would pile up in
    the user's cache); numba's compiled code stays in the user's cache, shared with other sessions and runs.
    Done before anything imports numba (subprocesses of the tests inherit both variables)."""
    if os.environ.get(cache.ENV):
        return
    numba_dir = cache.private_dir("numba")
    if numba_dir is not None:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_dir))
    session = tempfile.mkdtemp(prefix="elusive-test-cache-")
    atexit.register(shutil.rmtree, session, ignore_errors=True)
    os.environ[cache.ENV] = session


_isolate_cache()

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tiny import corpus, save_tiny, train_tokenizer  # noqa: E402 (tests/tiny.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    return corpus([DATA / "biography.csv", DATA / "biography_fewshot.csv", DATA / "prompts.csv"])


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus_texts):
    return train_tokenizer("bpe", corpus_texts)


@pytest.fixture(scope="session")
def small_model(tiny_dir, bpe_tokenizer) -> Path:
    return save_tiny(tiny_dir / "small", "llama", bpe_tokenizer, layers=2, hidden=32, seed=1)


@pytest.fixture(scope="session")
def large_model(tiny_dir, bpe_tokenizer) -> Path:
    return save_tiny(tiny_dir / "large", "llama", bpe_tokenizer, layers=3, hidden=48, seed=2)


@pytest.fixture(scope="session")
def gemma_model(tiny_dir, corpus_texts) -> Path:
    return save_tiny(tiny_dir / "gemma", "gemma3", train_tokenizer("unigram", corpus_texts), layers=2, seed=3)


@pytest.fixture(scope="session")
def word_model(tiny_dir, corpus_texts) -> Path:
    return save_tiny(tiny_dir / "word", "llama", train_tokenizer("wordlevel", corpus_texts), layers=2, seed=4)


@pytest.fixture(scope="session")
def bios(tiny_dir) -> Path:
    """The first 12 default biographies (tagged), a dataset small enough for every stage."""
    path = tiny_dir / "bios.csv"
    pd.read_csv(DATA / "biography.csv").head(12).to_csv(path, index=False)
    return path


def run_script(script: str, *overrides: str, cwd: Path = ROOT, hydra_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, with Hydra overrides; its run folder goes to ``hydra_dir``."""
    args = [sys.executable, str(ROOT / script), *overrides]
    if hydra_dir is not None:
        args.append(f"hydra.run.dir={hydra_dir}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_in_process(script: str, overrides: list[str], capsys) -> tuple[int, str]:
    """Run the script as ``__main__`` with ``sys.argv`` set, as ``python script ...`` would; return status and stderr."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures logging for the run: restore it after
    status = 0
    with mock.patch.object(sys, "argv", [str(ROOT / script), *overrides]):
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exited:
            status = exited.code
        finally:
            GlobalHydra.instance().clear()
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return status, capsys.readouterr().err
