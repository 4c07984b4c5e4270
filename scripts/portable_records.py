"""Make the paths in a folder of result records relative to the project, so they read the same on every machine.

Usage (from the project root)::

    python scripts/portable_records.py results/cpu_study            # list what would change
    python scripts/portable_records.py results/cpu_study --in-place # rewrite the text records

Records written before the project named paths relative to its root (``elusive.core.provenance.record_path``) hold
the absolute paths of the machine that made them, e.g. ``/work/study/results/cpu_study/plain/...``. A path
is rewritten when it runs through a project checkout, recognised by one of the project's top-level folders
(``results/``, ``models/``, ``out/``, ``data/``, ``conf/``): everything before that folder is dropped
(``results/cpu_study/plain/...``). Only text records are touched (``.json``, ``.jsonl``, ``.csv``, ``.md``,
``.html``); nothing else in them changes, so every number stays as it was. Exits 2 with one line if the
folder does not exist. Maintenance, not research: hand-written because no library knows this layout.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TOP_FOLDERS = ("results", "models", "out", "data", "conf")
SUFFIXES = (".json", ".jsonl", ".csv", ".md", ".html")
# an absolute POSIX path (not a URL, not a fraction like 0/40): starts after a quote, space, bracket, = or
# backtick, runs through one of the project's top-level folders
ABSOLUTE = re.compile(r"(?<![\w:/.])/(?:[\w.+-]+/)+?(?=(?:" + "|".join(TOP_FOLDERS) + r")(?:/|\b))")


def portable(text: str) -> tuple[str, int]:
    """``text`` with every absolute path through a project checkout made relative; and how many."""
    return ABSOLUTE.subn("", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of records, e.g. results/cpu_study")
    parser.add_argument("--in-place", action="store_true", help="rewrite the files (default: only list them)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: folder={args.folder}: no such folder; give a folder of result records", file=sys.stderr)
        return 2
    total = 0
    for path in sorted(p for p in args.folder.rglob("*") if p.is_file() and p.suffix in SUFFIXES):
        text = path.read_text(encoding="utf-8")
        new, count = portable(text)
        if not count:
            continue
        total += count
        print(f"{path}: {count} path(s)")
        if args.in_place:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(path)
    print(f"{total} path(s) {'rewritten' if args.in_place else 'to rewrite'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
