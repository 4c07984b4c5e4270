"""The dependency lists agree, nothing the pipeline imports is missing from them, and the scripts and tests reach
the package through its install."""

from __future__ import annotations

import re
import tomllib

from helpers.run import ROOT


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, rest = re.split(r"[=<>!~;\s]", line, maxsplit=1)[0], line
            out[name.lower()] = re.sub(r"\s+", "", rest)
    return out


def test_requirements_and_pyproject_pin_the_same_packages():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"])
    assert {k: v.replace("'", '"') for k, v in declared.items()} == requirements
    tests = _pins((ROOT / "requirements-test.txt").read_text().splitlines())
    assert _pins(project["optional-dependencies"]["test"]) == tests
    assert "pytest" not in requirements and "psutil" not in requirements  # test/bench-only
    assert requirements["torch"] == "torch==2.13.0"


def test_every_third_party_import_of_the_package_is_declared():
    declared = set(_pins((ROOT / "requirements.txt").read_text().splitlines()))
    module_to_package = {"hydra": "hydra-core", "yaml": "omegaconf", "safetensors": "safetensors"}
    stdlib_and_own = {"elusive", "__future__"}
    imported = set()
    for path in (ROOT / "elusive").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from ([a-zA-Z_]\w*)[\w.]* import |import ([a-zA-Z_]\w*))", path.read_text(), re.M):
            imported.add(match.group(1) or match.group(2))
    import sys

    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in stdlib_and_own}
    missing = {m for m in third_party if module_to_package.get(m, m) not in declared}
    assert not missing, missing


def test_scripts_and_tests_reach_the_package_through_its_install_not_through_sys_path():
    """`make setup` installs the package, so no script or test edits ``sys.path`` for it; only bench/ (scripts, not
    installed, whose modules import each other as ``bench.<module>``) does, and says why beside it."""
    edit = re.compile(r"sys\.path(\.insert|\.append|\[:0\]\s*=)")
    files = [p for folder in ("scripts", "tests", "bench") for p in (ROOT / folder).rglob("*.py")] + list(ROOT.glob("*.py"))
    edits = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8").splitlines() for p in files}
    edits = {name: [i for i, line in enumerate(lines) if edit.search(line)] for name, lines in edits.items()}
    edits = {name: found for name, found in edits.items() if found}
    assert set(edits) == {"tests/scripts/test_bench.py", *(f"bench/{p.name}" for p in (ROOT / "bench").glob("bench_*.py"))}
    for name, found in edits.items():
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        for i in found:
            assert "not installed" in " ".join(lines[max(0, i - 2): i + 2]), f"{name}:{i + 1}: say why"
