"""Copy generated tables into README.md between their markers, so no number in the README is typed by hand.

    python scripts/readme_tables.py     # demo: results/cpu_qwen/summary.md (make demo's report)

A block is ``<!-- name:begin ... -->`` … ``<!-- name:end -->``; a source that does not exist leaves its block
as it is.
"""

import re
import sys
from pathlib import Path

from elusive.core.files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "demo": (ROOT / "results" / "cpu_qwen" / "summary.md", 1),  # make demo's report: its first table (headline)
}


def first_tables(text: str, count: int | None) -> str:
    """The text up to the end of its ``count``-th markdown table (all of it for None)."""
    if count is None:
        return text.strip()
    lines, seen, inside = text.splitlines(), 0, False
    for i, line in enumerate(lines):
        if line.startswith("|") and not inside:
            inside = True
        elif inside and not line.startswith("|"):
            inside, seen = False, seen + 1
            if seen == count:
                return "\n".join(lines[:i]).strip()
    return text.strip()


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    for name, (source, tables) in SOURCES.items():
        if not source.is_file():
            print(f"{name}: {source} not found, block left as it is")
            continue
        body = first_tables(source.read_text(), tables)
        pattern = re.compile(rf"(<!-- {name}:begin[^>]*-->\n)(.*?)(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            print(f"{name}: no block in README.md")
            return 1
        readme = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), readme)
        print(f"{name}: copied from {source.relative_to(ROOT)}")
    write_text_atomic(ROOT / "README.md", readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
