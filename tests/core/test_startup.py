"""Start-up: light imports, numba's cache shared by concurrent processes, stage 3 without transformers
through a tokenizer record (same bytes as with transformers), """

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.run import ROOT  # noqa: E402
from helpers.stages import data_augmentation, save_attention
from tokenizers import Tokenizer

from elusive.attention.dump import AttentionDump
from elusive.augment import inputs as ranking_inputs
from elusive.core import cache
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.text import tokenizer_records
from elusive.text.fingerprints import tokenizer_sha256

LIGHT_MODULES = ["elusive.augment.stage", "elusive.augment.inputs", "elusive.attention.contrast", "elusive.reporting.summary",
                 "elusive.reporting.analysis", "elusive.text.data", "elusive.text.tags", "elusive.text.tokens", "elusive.text.align", "elusive.evaluation.metrics", "elusive.attention.dump",
                 "elusive.core.models", "elusive.text.tokenizer_records", "elusive.core.cache", "elusive.core.cli"]


def python(code: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_importing_a_light_module_imports_neither_torch_nor_transformers(module):
    proc = python(f"import importlib, sys; importlib.import_module({module!r}); "
                  "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_a_cache_folder_others_may_write_to_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "c"))
    folder = cache.private_dir("numba")
    assert folder == tmp_path / "c" / "numba" and (folder.stat().st_mode & 0o777) == 0o700
    os.chmod(folder, 0o775)
    assert cache.private_dir("numba") is None


# Two processes fill an empty numba cache at once, meeting the compiled functions' signatures (uint8 vs
# uint16 code points) in opposite orders; a third then loads everything from the cache.
ENGINE_RUN = """
import json, sys
import numpy as np
from elusive.augment import engine as e
order = sys.argv[1:]
out = {}
for text in order:
    codes = e.codes_of(text)
    n = len(text)
    spans = np.array([[0, 3], [4, n]])
    ts = np.array([0, n])
    e.ranks_by_group(np.array([0.5, 0.25], np.float32), np.array([0, 2]))
    cand, cs = e.candidates(np.ones(n, bool), ts, np.array([0, 2]), spans, np.ones(2, bool))
    rc, rs = e.drop_rows(codes, ts, spans[cand], cs, np.array([1.0, 0.0]), np.zeros(4), np.array([0, 2]), 2, True)
    rows = e.Rows(rc, rs, np.zeros(3, np.int64), np.arange(3))
    out[text] = [rows.strings(), bytes(e.csv_lines(rows)).decode()]
hits = sum(sum(k.stats.cache_hits.values()) for k in (e._ranks_within, e._candidates, e._drop_rows, e._csv_rows))
misses = sum(sum(k.stats.cache_misses.values()) for k in (e._ranks_within, e._candidates, e._drop_rows, e._csv_rows))
print(json.dumps({"out": out, "hits": hits, "misses": misses, "cache": e.numba.config.CACHE_DIR}))
"""


def test_two_processes_fill_the_numba_cache_at_once_and_a_third_loads_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(ELUSIVE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    texts = ["abc defgh", "abc d\u0101fgh"]  # one-byte and two-byte code points: two signatures per function

    def start(order):
        return subprocess.Popen([sys.executable, "-c", ENGINE_RUN, *order], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = [start(texts), start(texts[::-1])]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    third = start(texts)
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-2000:]
    loaded = json.loads(out)
    expected = {"abc defgh": [["abc defgh", "defgh", "defgh"], "abc defgh,0,0\ndefgh,0,1\ndefgh,0,2\n"],
                "abc d\u0101fgh": [["abc d\u0101fgh", "d\u0101fgh", "d\u0101fgh"],
                                   "abc d\u0101fgh,0,0\nd\u0101fgh,0,1\nd\u0101fgh,0,2\n"]}
    assert [r["out"] for r in results] == [expected, expected] and loaded["out"] == expected
    assert loaded["cache"] == str(tmp_path / "cache" / "numba")
    assert loaded["misses"] == 0 and loaded["hits"] == 6  # 4 functions, 2 of them with 2 signatures
    assert (tmp_path / "cache" / "numba").stat().st_mode & 0o777 == 0o700


# --------------------------------------------------------------------------------------------------
# Stage 3 through a tokenizer record
# --------------------------------------------------------------------------------------------------


def _folder(src: Path, dst: Path, **config) -> Path:
    """A copy of the model folder ``src`` with ``config`` merged into its tokenizer_config.json."""
    shutil.copytree(src, dst)
    path = dst / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return dst


def _forbid_transformers(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loaded the tokenizer with transformers although a record could stand in for it")

    monkeypatch.setattr(ranking_inputs, "load_tokenizer", refuse)


# "file": tokenizer.json is what transformers' backend is; "rebuilt": transformers builds another backend from
# it (its Qwen2Tokenizer class adds a normaliser and replaces the pre-tokeniser, as for the real Qwen models)
@pytest.mark.parametrize("variant", ["file", "rebuilt"])
def test_a_recorded_tokenizer_gives_the_bytes_transformers_gives_without_loading_it(
        variant, small_model, bios, tmp_path, monkeypatch):
    folder = _folder(small_model, tmp_path / "model", **({"tokenizer_class": "Qwen2Tokenizer"} if variant == "rebuilt" else {}))
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    dump = save_attention(str(folder), bios, tmp_path / "attn", device="cpu")  # loads and records the tokenizer
    recorded = AttentionDump.load(dump).metadata["tokenizer_sha256"]
    assert recorded == tokenizer_sha256(load_tokenizer(str(folder)))
    from_file = Tokenizer.from_file(str(folder / "tokenizer.json")).to_str()
    assert (tokenizer_sha256_of_backend(from_file) == recorded) == (variant == "file")
    record = tokenizer_records.recall(str(folder))
    assert record is not None and record.recorded_tokenizer_sha256 == recorded

    with monkeypatch.context() as patch:
        _forbid_transformers(patch)
        light = data_augmentation("attention", 0.7, 0.05, 3, str(folder), bios, tmp_path / "light", dump)
    monkeypatch.setenv(cache.ENV, str(tmp_path / "empty"))  # no record: stage 3 loads transformers, as before
    heavy = data_augmentation("attention", 0.7, 0.05, 3, str(folder), bios, tmp_path / "heavy", dump)
    assert light.read_bytes() == heavy.read_bytes()
    assert tokenizer_records.recall(str(folder)) == record  # recorded again by that load, in the new folder


def tokenizer_sha256_of_backend(serialised: str) -> str:
    import hashlib

    return hashlib.sha256(f"split_special_tokens=False\n{serialised}".encode()).hexdigest()


def test_an_edited_model_folder_is_not_vouched_for_by_its_old_record(small_model, gemma_model, bios, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    folder = _folder(gemma_model, tmp_path / "gemma")
    dump = save_attention(str(folder), bios, tmp_path / "attn", device="cpu")
    old = tokenizer_records.recall(str(folder))
    assert old is not None
    # transformers' LlamaTokenizer class rebuilds this Unigram tokenizer: other tokens for the same texts
    _folder(folder, tmp_path / "edited", tokenizer_class="LlamaTokenizer")
    shutil.rmtree(folder)
    (tmp_path / "edited").rename(folder)
    assert tokenizer_records.recall(str(folder)) is None  # the files changed: the record no longer applies
    with pytest.raises(InputError, match="tokenised differently"):  # as without records
        data_augmentation("attention", 0.7, 0.05, 2, str(folder), bios, tmp_path / "o", dump)

    # the same model under another path, or another model with this tokenizer: the record of that folder decides
    other = _folder(small_model, tmp_path / "small")
    load_tokenizer(str(other))
    assert tokenizer_records.recall(str(other)).recorded_tokenizer_sha256 != old.recorded_tokenizer_sha256
    with pytest.raises(InputError, match="was made with tokenizer"):  # another tokenizer's record: not used
        data_augmentation("attention", 0.7, 0.05, 2, str(other), bios, tmp_path / "o", dump)


def test_a_record_is_only_used_with_a_dump_whose_tokens_it_vouches_for(small_model, bios, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    folder = _folder(small_model, tmp_path / "model")
    dump = AttentionDump.load(save_attention(str(folder), bios, tmp_path / "attn", device="cpu"))
    assert ranking_inputs.recorded_tokenizer(dump, str(folder)) is not None
    for key in ("tokenizer_sha256", "tokens_sha256"):
        edited = AttentionDump(**{**dump.__dict__, "metadata": {k: v for k, v in dump.metadata.items() if k != key}})
        assert ranking_inputs.recorded_tokenizer(edited, str(folder)) is None
    other = AttentionDump(**{**dump.__dict__, "metadata": {**dump.metadata, "tokenizer_sha256": "0" * 64}})
    assert ranking_inputs.recorded_tokenizer(other, str(folder)) is None
    # token arrays edited after the hashes were written: the record matches, tokens_sha256 does not, so stage 3
    # falls back to transformers and refuses the dump naming the text, as before
    dump.input_ids[dump.offsets[1]] += 1
    dump.save(tmp_path / "bad")
    with pytest.raises(InputError, match="text 1 was tokenised differently"):
        data_augmentation("attention", 0.7, 0.05, 2, str(folder), bios, tmp_path / "o", tmp_path / "bad")


def test_the_stage_3_script_with_a_recorded_tokenizer_loads_neither_torch_nor_transformers(small_model, bios,
                                                                                           tmp_path):
    folder = _folder(small_model, tmp_path / "model")
    env = {"ELUSIVE_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    proc = python("from elusive.attention.stage import save_attention; from elusive.core.config import SaveAttentionConfig; "
                  f"save_attention(SaveAttentionConfig(model={str(folder)!r}, dataset={str(bios)!r}, "
                  f"save_name={str(tmp_path / 'attn')!r}, device='cpu'))", env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    argv = ["data_augmentation.py", "augment_type=attention", "multiply=2", f"model={folder}", f"dataset={bios}",
            f"attn_weights={tmp_path / 'attn'}", f"save_name={tmp_path / 'aug'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = python(f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path('data_augmentation.py', run_name='__main__'); "
                  "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))", env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "aug.csv").is_file()
