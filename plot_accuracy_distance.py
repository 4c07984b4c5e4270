"""Figure 1: closed-book accuracy (exact match, F1) against the distance in tokens from the name to the field.

    python plot_accuracy_distance.py predictions=out/eval/predictions.jsonl eval_data=data/biography.csv \
        model=models/qwen2.5-coder-0.5b output=out/fig1_distance
    python plot_accuracy_distance.py 'predictions=[out/eval_a,out/eval_b]' eval_data=data/bio_permuted.csv \
        model=models/qwen2.5-coder-0.5b output=out/fig1_permuted bin_size=5
"""

import hydra
from omegaconf import DictConfig, ListConfig

from elusive.cli import require, resolve_path, run
from elusive.figures import accuracy_distance


@hydra.main(version_base="1.3", config_path="conf", config_name="plot_accuracy_distance")
def main(cfg: DictConfig) -> None:
    require(cfg)
    predictions = list(cfg.predictions) if isinstance(cfg.predictions, ListConfig) else [cfg.predictions]
    markdown = run(
        accuracy_distance,
        cfg,
        predictions=[resolve_path(p) for p in predictions],
        eval_data=resolve_path(cfg.eval_data),
        model=cfg.model,
        output=resolve_path(cfg.output),
        bin_size=cfg.bin_size,
    )
    print(markdown)


if __name__ == "__main__":
    main()
