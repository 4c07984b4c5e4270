"""Top-k tokens by attention (or attention difference) just before each field, with a positional control.

    python analyze_attention.py attn_dump=out/focus_diff output=out/fig3_top10_diff
    python analyze_attention.py attn_dump=out/focus_large output=out/fig2_top10_large k=10
"""

import hydra
from omegaconf import DictConfig

from elusive.analysis import analyze_attention
from elusive.cli import require, resolve_path, run


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze_attention")
def main(cfg: DictConfig) -> None:
    require(cfg)
    markdown = run(
        analyze_attention, cfg, attn_dump=resolve_path(cfg.attn_dump), output=resolve_path(cfg.output), model=cfg.model, k=cfg.k
    )
    print(markdown)


if __name__ == "__main__":
    main()
