"""Stage 4: LoRA continual pretraining on the (augmented) biographies.

    python train.py model=models/qwen2.5-coder-0.5b dataset=out/bio_aug.csv model_dir=out/lora epochs=10
    accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes 8 train.py model=meta-llama/Meta-Llama-3-8B quant=8bit dataset=out/bio_aug.csv model_dir=out/lora
"""

import hydra
from omegaconf import DictConfig

from elusive.cli import require, resolve_path, run, seed_everything
from elusive.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    require(cfg)
    seed_everything(cfg.seed)
    path = run(
        train,
        cfg,
        model=cfg.model,
        dataset=resolve_path(cfg.dataset),
        model_dir=resolve_path(cfg.model_dir),
        epochs=float(cfg.epochs),
        batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=float(cfg.learning_rate),
        warmup_ratio=float(cfg.warmup_ratio),
        max_grad_norm=float(cfg.max_grad_norm),
        max_length=cfg.max_length,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=float(cfg.lora_dropout),
        quant=cfg.quant,
        device=cfg.device,
        dtype=cfg.dtype,
        seed=cfg.seed,
        resume=cfg.resume,
        logging_steps=cfg.logging_steps,
        group_by_length=cfg.group_by_length,
    )
    if path is not None:  # None: a helper process of a multi-process run
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
