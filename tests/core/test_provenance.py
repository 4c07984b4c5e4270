"""The machine record every run writes: CPU model, the SIMD levels numpy and torch use, threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from numpy._core._multiarray_umath import __cpu_dispatch__

from elusive.core.provenance import machine, numpy_simd


def test_machine_names_the_cpu_simd_levels_and_threads():
    record = machine()
    assert isinstance(record["cpu"], str) and record["cpu"]
    assert record["numpy_simd"] in (*__cpu_dispatch__, "baseline")
    assert record["torch_cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "VSX", "SVE256")
    assert isinstance(record["torch_threads"], int) and record["torch_threads"] >= 1
    json.dumps(record, allow_nan=False)  # a plain JSON record


def test_numpy_simd_follows_what_numpy_was_told_to_use():
    # with every dispatch target turned off numpy runs its baseline code, and the record says so
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__)}
    out = subprocess.run([sys.executable, "-c", "from elusive.core.provenance import numpy_simd; print(numpy_simd())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "baseline"
    assert numpy_simd() in (*__cpu_dispatch__, "baseline")


def test_record_path_is_relative_inside_the_working_directory(tmp_path, monkeypatch):
    from elusive.core.provenance import record_path

    monkeypatch.chdir(tmp_path)
    assert record_path(tmp_path / "out" / "eval") == "out/eval"
    assert record_path("out/../data/bio.csv") == "data/bio.csv"
    assert record_path(tmp_path) == "."
    outside = tmp_path.parent / "elsewhere.csv"
    assert record_path(outside) == str(outside)  # outside the project: absolute, so it still says where
