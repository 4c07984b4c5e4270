"""The docs name only what a reader of the repository can open: no machine paths, no issue numbers, no lookups
in tools the reader does not have, and every file or folder of the project they name in backticks exists."""

from __future__ import annotations

import re

import pytest
from helpers.run import ROOT

DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"])
PROJECT_PATH = re.compile(r"`((?:elusive|tests|scripts|bench|conf|docs|data|results)/[A-Za-z0-9_./-]*)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_doc_names_no_machine_path_issue_number_or_private_lookup(doc):
    text = doc.read_text(encoding="utf-8")
    for pattern in (r"/work/", r"/home/", r"\.\./shared", r"\bissue \d+", r"\bissues? #\d+", r"read_file id",
                    r"search (tool|index)"):
        found = re.search(pattern, text, flags=re.IGNORECASE)
        assert found is None, f"{doc.name}: {text[max(0, found.start() - 60): found.end() + 60]!r}"


def test_every_project_path_a_doc_names_exists():
    named = {(doc.name, m.group(1)) for doc in DOCS for m in PROJECT_PATH.finditer(doc.read_text(encoding="utf-8"))}
    assert len(named) > 20  # the docs do name the project's files: this test reads them
    missing = sorted((doc, path) for doc, path in named if not (ROOT / path).exists())
    assert missing == [], f"paths named in the docs that do not exist: {missing}"
