"""Write and print the demo's results: ``out/demo/summary.md`` (EM / F1 per field per method, with the date and the
machine), then the top-10 analysis and the list of files written.

    python scripts/demo_report.py out/demo plain random attention_diff released shuffled position
"""

import datetime
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elusive.artifacts import write_text_atomic  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(out: Path, methods: list[str]) -> str:
    """One row per method: exact match / F1 per field in percent (each with its 95 % interval in the CSV)."""
    rows, fields = [], None
    for method in methods:
        results = json.loads((out / "eval" / method / "results.json").read_text())
        fields = fields or list(results)
        cells = [f"{100 * results[f]['exact_match']:.0f} / {100 * results[f]['f1']:.0f}" for f in fields]
        em = sum(results[f]["exact_match"] for f in fields) / len(fields)
        f1 = sum(results[f]["f1"] for f in fields) / len(fields)
        rows.append(f"| {method} | " + " | ".join(cells) + f" | {100 * em:.1f} / {100 * f1:.1f} |")
    n = json.loads((out / "eval" / methods[0] / "results.json").read_text())[fields[0]]["n"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"`make demo` on {when}, {cpu_name()} ({os.cpu_count()} cores); {n} people, so one question is "
            f"{100 / n:.0f} points per field: exact match / F1 in %, QA 5-shot.", "",
            "| method | " + " | ".join(fields) + " | mean EM / F1 |", "|---|" + "---:|" * (len(fields) + 1)]
    return "\n".join(head + rows)


def main(out: Path, methods: list[str]) -> None:
    table = summary(out, methods)
    write_text_atomic(out / "summary.md", table + "\n")
    print("\n## Closed-book 5-shot QA after LoRA training\n")
    print(table)
    for name in ("top10_diff", "top10_large", "top10_small"):
        path = out / "analysis" / f"{name}.md"
        if path.exists():
            print("\n" + path.read_text())
    print("\nWritten:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and "hydra" not in p.parts and "checkpoint-" not in str(p)):
        if path.suffix in {".csv", ".safetensors", ".json", ".jsonl", ".png", ".md"} and "runs" not in path.parts:
            print(f"  {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
