"""Stage 1: save the attention each token receives, averaged over heads and layers.

    python save_attention.py model=models/qwen2.5-coder-0.5b dataset=data/biography.csv save_name=out/attn_small
    python save_attention.py model=models/qwen2.5-coder-1.5b dataset=data/biography.csv save_name=out/attn_large
    the released code's arithmetic (for a faithful replay of its ranking): ... aggregate=released
    several GPUs: accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes 8 save_attention.py ...

`python save_attention.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script, seed_everything
from elusive.core.config import SaveAttentionConfig


@script("save_attention")
def main(cfg: SaveAttentionConfig) -> None:
    from elusive.attention.stage import save_attention  # imported here: --help and config errors need no torch

    seed_everything(cfg.seed)
    path = save_attention(cfg)
    if path is not None:  # None: a helper process of a multi-process run
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
