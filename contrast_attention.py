"""Stage 2: contrast two attention dumps (large − small) of the same texts.

    python contrast_attention.py attn_dump_large=out/attn_large attn_dump_small=out/attn_small attn_diff=out/attn_diff
"""

import hydra
from omegaconf import DictConfig

from elusive.cli import require, resolve_path, run
from elusive.contrast import contrast_attention


@hydra.main(version_base="1.3", config_path="conf", config_name="contrast_attention")
def main(cfg: DictConfig) -> None:
    require(cfg)
    path = run(
        contrast_attention,
        cfg,
        attn_dump_large=resolve_path(cfg.attn_dump_large),
        attn_dump_small=resolve_path(cfg.attn_dump_small),
        attn_diff=resolve_path(cfg.attn_diff),
        cross_tokenizer=cfg.cross_tokenizer,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
