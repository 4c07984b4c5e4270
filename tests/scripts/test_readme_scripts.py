"""The script that puts numbers into the README: the table blocks copied from the reports."""

import sys

from helpers.script_modules import load_script


def test_readme_blocks_are_replaced_between_their_markers_only(tmp_path, monkeypatch):
    readme_tables = load_script("readme_tables")
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
