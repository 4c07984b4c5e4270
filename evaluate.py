"""Stage 5: closed-book 5-shot QA per field (or the completion probe), exact match and F1 with 95 % intervals.

    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora eval_data=data/biography.csv output_dir=out/eval
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora mode=completion output_dir=out/eval_completion
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=null output_dir=out/eval_base

`python evaluate.py --help` lists every key with its type, default and meaning (elusive/config.py).
"""

from elusive.cli import script, seed_everything
from elusive.config import EvaluateConfig


@script("evaluate")
def main(cfg: EvaluateConfig) -> None:
    from elusive.evaluation import evaluate, markdown_table  # imported here: --help and config errors need no torch

    seed_everything(cfg.seed)
    results = evaluate(cfg)
    if results is not None:  # None: a helper process of a multi-process run
        print(markdown_table(results))
        print(f"wrote {cfg.output_dir}/results.json and predictions.jsonl")


if __name__ == "__main__":
    main()
