"""Figure 4: each token's keep probability 1 − p(r) under one augmentation, as HTML, PNG and CSV.

    python plot_keep_probability.py augment_type=attention_diff alpha=0.7 beta=0.05 attn_weights=out/attn_diff \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv rows=[0,1,2] output=out/fig4_keep
    python plot_keep_probability.py augment_type=shuffled alpha=0.7 beta=0.05 seed=0 multiply=10 \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv rows=[0] output=out/fig4_shuffled
"""

import hydra
from omegaconf import DictConfig, ListConfig

from elusive.cli import require, resolve_path, run
from elusive.figures import keep_probability


@hydra.main(version_base="1.3", config_path="conf", config_name="plot_keep_probability")
def main(cfg: DictConfig) -> None:
    require(cfg)
    rows = list(cfg.rows) if isinstance(cfg.rows, ListConfig) else cfg.rows
    paths = run(
        keep_probability,
        cfg,
        augment_type=cfg.augment_type,
        alpha=float(cfg.alpha),
        beta=float(cfg.beta),
        model=cfg.model,
        dataset=resolve_path(cfg.dataset),
        output=resolve_path(cfg.output),
        rows=rows,
        attn_weights=resolve_path(cfg.attn_weights),
        seed=cfg.seed,
        multiply=cfg.multiply,
        text_prefix=cfg.text_prefix,
    )
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
