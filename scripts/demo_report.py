"""Print the demo's results: EM / F1 per field per method, the top-10 analysis, and what was written.

    python scripts/demo_report.py out/demo plain attention_diff random shuffled
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elusive.summary import aggregate, collect, to_markdown  # noqa: E402


def main(out: Path, methods: list[str]) -> None:
    frame = collect([out / "eval" / m for m in methods])
    frame["name"] = "demo"
    frame["method"] = [m if m else folder for m, folder in zip(frame["method"], methods)]  # older runs lack eval_meta
    print("\n## Closed-book 5-shot QA after LoRA training (exact match / F1, %)\n")
    print(to_markdown(aggregate(frame)))
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
