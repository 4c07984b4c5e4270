r"""Stage 4: LoRA continual pretraining on the (augmented) biographies.

    python train.py model=models/qwen2.5-coder-0.5b dataset=out/bio_aug.csv model_dir=out/lora epochs=10
    accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes 8 train.py \
        model=meta-llama/Meta-Llama-3-8B quant=8bit dataset=out/bio_aug.csv model_dir=out/lora

`python train.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script, seed_everything
from elusive.core.config import TrainConfig


@script("train")
def main(cfg: TrainConfig) -> None:
    from elusive.training.stage import train  # imported here: --help and config errors need no torch

    seed_everything(cfg.seed)
    path = train(cfg)
    if path is not None:  # None: a helper process of a multi-process run
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
