r"""Figure 4: each token's keep probability 1 − p(r) under one augmentation, as HTML, PNG and CSV.

    python plot_keep_probability.py augment_type=attention_diff alpha=0.7 beta=0.05 attn_weights=out/attn_diff \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv rows=[0,1,2] output=out/fig4_keep
    python plot_keep_probability.py augment_type=position alpha=0.7 beta=0.05 \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv rows=[0] output=out/fig4_position

`python plot_keep_probability.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import PlotKeepProbabilityConfig


@script("plot_keep_probability")
def main(cfg: PlotKeepProbabilityConfig) -> None:
    from elusive.reporting.figure_keep import keep_probability  # imported here: --help and config errors need no torch

    print("wrote " + ", ".join(map(str, keep_probability(cfg))))


if __name__ == "__main__":
    main()
