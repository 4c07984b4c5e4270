"""The scripts that put numbers into the README: the demo's record and the table blocks."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from helpers.run import ROOT  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_demo(out: Path, methods: list[str]) -> None:
    (out / "bio.csv").parent.mkdir(parents=True, exist_ok=True)
    (out / "bio.csv").write_text("name,company\nAda,Acme\n")
    for i, method in enumerate(methods):
        ev = out / "eval" / method
        ev.mkdir(parents=True)
        results = {"company": {"exact_match": 0.5 * i, "f1": 0.75 * i, "n": 2},
                   "city": {"exact_match": 0.0, "f1": 0.25, "n": 2}}
        (ev / "results.json").write_text(json.dumps(results))
        (ev / "predictions.jsonl").write_text(json.dumps({"person": 0, "prediction": method}) + "\n")
        (ev / "eval_meta.json").write_text("{}")
        lora = out / f"lora_{method}"
        lora.mkdir()
        (lora / "loss.csv").write_text("step,loss\n5,1.0\n")
        (lora / "train_meta.json").write_text("{}")
        (lora / "adapter_model.safetensors").write_bytes(b"weights")


def test_demo_record_copies_the_table_and_its_predictions_but_no_weights(tmp_path):
    demo_report = _load("demo_report")
    out, dest = tmp_path / "out", tmp_path / "results" / "demo"
    _fake_demo(out, ["plain", "random"])
    demo_report.main(out, ["plain", "random"], dest)
    table = (dest / "summary.md").read_text()
    assert table == (out / "summary.md").read_text()
    # company: plain 0/0, random 50/75; mean of the two fields for random: EM 25.0, F1 50.0
    assert "| plain | 0 / 0 | 0 / 25 | 0.0 / 12.5 |" in table
    assert "| random | 50 / 75 | 0 / 25 | 25.0 / 50.0 |" in table
    assert (dest / "eval" / "random" / "predictions.jsonl").read_text() == '{"person": 0, "prediction": "random"}\n'
    assert (dest / "lora_plain" / "loss.csv").is_file() and (dest / "bio.csv").is_file()
    assert not list(dest.rglob("*.safetensors"))


def test_demo_record_refuses_a_folder_inside_the_demo(tmp_path):
    from elusive.core.errors import InputError

    demo_report = _load("demo_report")
    out = tmp_path / "out"
    _fake_demo(out, ["plain"])
    with pytest.raises(InputError, match="--record"):
        demo_report.main(out, ["plain"], out / "record")
    assert not (out / "summary.md").exists()  # refused before anything is written


def test_readme_blocks_are_replaced_between_their_markers_only(tmp_path, monkeypatch):
    readme_tables = _load("readme_tables")
    source = tmp_path / "summary.md"
    source.write_text("header\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nsecond\n\n| c |\n|---|\n| 3 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- cpu_study:begin (x) -->\nold\n<!-- cpu_study:end -->\nafter\n")
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    monkeypatch.setattr(readme_tables, "SOURCES", {"cpu_study": (source, 1)})
    monkeypatch.setattr(sys, "argv", ["readme_tables.py"])
    readme_tables.main()
    text = readme.read_text()
    assert text.startswith("before\n<!-- cpu_study:begin (x) -->\nheader\n\n| a | b |")
    assert "| 1 | 2 |\n<!-- cpu_study:end -->\nafter\n" in text
    assert "old" not in text and "second" not in text
