"""Shared fixtures (the helpers tests import live in tests/helpers/): tiny random models with tokenizers trained on the project's corpus, built once per session.

* ``small_model`` / ``large_model`` — Llama architecture, 2 vs 3 layers, one byte-level BPE tokenizer
  (no BOS, like Llama 3 / Qwen): the small/large pair for the contrast.
* ``gemma_model`` — Gemma 3 architecture with a SentencePiece-style Unigram tokenizer that adds BOS.
* ``word_model`` — Llama architecture with a word-level tokenizer.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from elusive.core import cache


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
from helpers.run import DATA, ROOT  # noqa: E402
from helpers.tiny import corpus, save_tiny, train_tokenizer  # noqa: E402


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
