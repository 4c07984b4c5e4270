r"""Figure 1: closed-book accuracy (exact match, F1) against the distance in tokens from the name to the field.

    python plot_accuracy_distance.py predictions=out/eval/predictions.jsonl eval_data=data/biography.csv \
        model=models/qwen2.5-coder-0.5b output=out/fig1_distance
    python plot_accuracy_distance.py 'predictions=[out/eval_a,out/eval_b]' eval_data=data/bio_permuted.csv \
        model=models/qwen2.5-coder-0.5b output=out/fig1_permuted bin_size=5

`python plot_accuracy_distance.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import PlotAccuracyDistanceConfig


@script("plot_accuracy_distance")
def main(cfg: PlotAccuracyDistanceConfig) -> None:
    from elusive.reporting.figure_distance import (
        accuracy_distance,  # imported here: --help and config errors need no torch
    )

    print(accuracy_distance(cfg))


if __name__ == "__main__":
    main()
