"""Stage 5: closed-book 5-shot QA per field (or the completion probe), exact match and F1 with 95 % intervals.

    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora eval_data=data/biography.csv output_dir=out/eval
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora mode=completion output_dir=out/eval_completion  # eval_data: what out/lora learned
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=null eval_data=data/biography.csv output_dir=out/eval_base
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora every_pass=true output_dir=out/eval  # + pass-<E>/

`python evaluate.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script, seed_everything
from elusive.core.config import EvaluateConfig


@script("evaluate")
def main(cfg: EvaluateConfig) -> None:
    from elusive.evaluation.stage import evaluate, evaluate_passes, markdown_table  # here: --help needs no torch

    seed_everything(cfg.seed)
    results = evaluate_passes(cfg) if cfg.every_pass else evaluate(cfg)
    if results is not None:  # None: a helper process of a multi-process run
        print(markdown_table(results))
        print(f"wrote {cfg.output_dir}/results.json and predictions.jsonl")


if __name__ == "__main__":
    main()
