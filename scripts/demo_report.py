"""Write and print the demo's results: ``out/demo/summary.md`` (EM / F1 per field per method, with the date and the
machine), then the top-10 analysis and the list of files written. With ``--record DIR`` it also copies what a reader
needs to check the table (the summary, each method's results, predictions and evaluation record, its loss curve,
and the biographies) to DIR, which `make demo` sets to ``results/demo`` (committed; the README's table comes from it).

    python scripts/demo_report.py out/demo plain random attention_diff released shuffled position
    python scripts/demo_report.py --record results/demo out/demo plain random attention_diff released shuffled position
"""

import datetime
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elusive.core.cli import fail  # noqa: E402
from elusive.core.errors import InputError  # noqa: E402
from elusive.core.files import write_text_atomic  # noqa: E402
from elusive.core.outputs import Output, check_outputs  # noqa: E402


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


RECORD = ["summary.md", "bio.csv", "eval/{m}/results.json", "eval/{m}/predictions.jsonl", "eval/{m}/eval_meta.json",
          "lora_{m}/loss.csv", "lora_{m}/train_meta.json"]


def record(out: Path, methods: list[str], dest: Path) -> None:
    """Copy the small files behind the summary to ``dest`` (never the adapters or the attention dumps)."""
    names = sorted({pattern.format(m=m) for pattern in RECORD for m in methods})
    for name in names:
        source = out / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, source.read_text())
    print(f"\nRecord for the README (scripts/readme_tables.py): {dest}/")


def main(out: Path, methods: list[str], dest: Path | None = None) -> None:
    if dest is not None:  # the project's output rule: not the demo's folder, inside it or around it; writable
        check_outputs("demo_report", [Output("--record", dest, dest, folder=True)], {"demo folder": out})
    table = summary(out, methods)
    write_text_atomic(out / "summary.md", table + "\n")
    if dest is not None:
        record(out, methods, dest)
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
    args = sys.argv[1:]
    dest = None
    if args[:1] == ["--record"]:
        dest, args = Path(args[1]), args[2:]
    try:
        main(Path(args[0]), args[1:], dest)
    except InputError as err:
        fail(err)  # one line "error: ..." and exit status 2, as every script
