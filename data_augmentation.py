r"""Stage 3: token-dropout copies, the token of rank r dropped with p(r) = alpha·(1 − exp(−beta·r)).

    python data_augmentation.py augment_type=attention_diff alpha=0.7 beta=0.05 multiply=10 \
        attn_weights=out/attn_diff model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/bio_aug
    python data_augmentation.py augment_type=random alpha=0.7 multiply=10 \
        model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/bio_random
    sweep: python data_augmentation.py -m alpha=0.6,0.7 beta=0.01,0.05 'save_name=out/aug_a${alpha}_b${beta}' ...

`python data_augmentation.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script, seed_everything
from elusive.core.config import DataAugmentationConfig


@script("data_augmentation")
def main(cfg: DataAugmentationConfig) -> None:
    from elusive.augment.stage import data_augmentation  # imported here: --help and config errors need no torch

    seed_everything(cfg.seed)
    print(f"wrote {data_augmentation(cfg)}")


if __name__ == "__main__":
    main()
