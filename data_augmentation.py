"""Stage 3: token-dropout augmentation ranked by attention difference (or attention, or at random).

    python data_augmentation.py augment_type=attention_diff alpha=0.7 beta=0.05 multiply=10 \
        attn_weights=out/attn_diff model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/bio_aug
    python data_augmentation.py augment_type=random alpha=0.7 multiply=10 \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/bio_random
"""

import hydra
from omegaconf import DictConfig

from elusive.augment import data_augmentation
from elusive.cli import require, resolve_path, run, seed_everything


@hydra.main(version_base="1.3", config_path="conf", config_name="data_augmentation")
def main(cfg: DictConfig) -> None:
    require(cfg)
    seed_everything(cfg.seed)
    path = run(
        data_augmentation,
        cfg,
        augment_type=cfg.augment_type,
        alpha=float(cfg.alpha),
        beta=float(cfg.beta),
        multiply=cfg.multiply,
        model=cfg.model,
        dataset=resolve_path(cfg.dataset),
        save_name=resolve_path(cfg.save_name),
        attn_weights=resolve_path(cfg.attn_weights),
        seed=cfg.seed,
        keep_original=cfg.keep_original,
        text_prefix=cfg.text_prefix,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
