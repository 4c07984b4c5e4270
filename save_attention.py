"""Stage 1: save the attention each token receives, averaged over heads and layers.

    python save_attention.py model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/attn_small
    python save_attention.py model=models/qwen2.5-coder-1.5b dataset=data/biography.csv save_name=out/attn_large
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from elusive.attention import save_attention
from elusive.cli import require, resolve_path, run, seed_everything


@hydra.main(version_base="1.3", config_path="conf", config_name="save_attention")
def main(cfg: DictConfig) -> None:
    require(cfg)
    seed_everything(cfg.seed)
    path = run(
        save_attention,
        cfg,
        model=cfg.model,
        dataset=resolve_path(cfg.dataset),
        save_name=resolve_path(cfg.save_name),
        aggregate=cfg.aggregate,
        layers=OmegaConf.to_object(cfg.layers) if cfg.layers is not None else None,
        text_prefix=cfg.text_prefix,
        batch_size=cfg.batch_size,
        device=cfg.device,
        dtype=cfg.dtype,
        max_texts=cfg.max_texts,
        focus=cfg.focus,
        quant=cfg.quant,
    )
    if path is not None:  # None: a helper process of a multi-process run
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
