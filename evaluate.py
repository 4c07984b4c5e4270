"""Stage 5: closed-book 5-shot QA per field with exact match and F1.

    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=out/lora eval_data=data/biography.csv output_dir=out/eval
    python evaluate.py model=models/qwen2.5-coder-0.5b model_dir=null output_dir=out/eval_base
"""

import hydra
from omegaconf import DictConfig

from elusive.cli import require, resolve_path, run, seed_everything
from elusive.evaluation import evaluate, markdown_table


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    require(cfg)
    seed_everything(cfg.seed)
    results = run(
        evaluate,
        cfg,
        model=cfg.model,
        model_dir=resolve_path(cfg.model_dir),
        eval_data=resolve_path(cfg.eval_data),
        output_dir=resolve_path(cfg.output_dir),
        fewshot_data=resolve_path(cfg.fewshot_data),
        prompts=resolve_path(cfg.prompts),
        shots=cfg.shots,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        max_people=cfg.max_people,
        device=cfg.device,
        dtype=cfg.dtype,
        quant=cfg.quant,
        shared_shots=cfg.shared_shots,
    )
    if results is not None:  # None: a helper process of a multi-process run
        print(markdown_table(results))
        print(f"wrote {resolve_path(cfg.output_dir)}/results.json and predictions.jsonl")


if __name__ == "__main__":
    main()
