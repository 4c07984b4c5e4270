"""Committed results are portable: no absolute path of the machine that made them, no lock or temporary file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers.run import ROOT
from helpers.script_modules import load_script

portable_records = load_script("portable_records")
SUFFIXES, portable = portable_records.SUFFIXES, portable_records.portable

# a POSIX path from the root: after a quote, space, bracket, =, colon-space or backtick; not a URL or a fraction
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'`(\[=])(/(?:[\w.+-]+/)+[\w.+-]+)")


def committed_results() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True)
        return [ROOT / line for line in listed.stdout.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file under results/
        return [p for p in (ROOT / "results").rglob("*") if p.is_file()]


def test_no_committed_result_names_an_absolute_path():
    offenders = []
    for path in committed_results():
        if path.suffix not in SUFFIXES:
            continue
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            found = ABSOLUTE_PATH.search(line)
            if found:
                offenders.append(f"{path.relative_to(ROOT)}:{line_number}: {found.group(1)}")
    assert not offenders, "absolute paths in committed results:\n" + "\n".join(offenders[:20])


def test_no_lock_marker_or_temporary_file_is_committed():
    names = [p.relative_to(ROOT).as_posix() for p in committed_results()]
    assert not [n for n in names if re.search(r"(^|/)\.elusive-|\.tmp($|/)", n)]


@pytest.mark.parametrize("text, expected", [
    ('"/work/study/results/cpu_study/plain/x"', '"results/cpu_study/plain/x"'),
    ("a = `/srv/me/checkout/out/demo/eval`", "a = `out/demo/eval`"),
    ('"model": "/home/u/elusive/models/qwen2.5-coder-0.5b"', '"model": "models/qwen2.5-coder-0.5b"'),
    ("0/40 people; https://host/results/x; /tmp/pytest-1/results_x/y", None),  # nothing to rewrite
])
def test_portable_records_drops_the_machine_part_of_project_paths(text, expected):
    new, count = portable(text)
    assert (new, count) == ((text, 0) if expected is None else (expected, 1))
