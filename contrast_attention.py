"""Stage 2: contrast two attention dumps (large − small) of the same texts.

    python contrast_attention.py attn_dump_large=out/attn_large attn_dump_small=out/attn_small attn_diff=out/attn_diff

`python contrast_attention.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import ContrastAttentionConfig


@script("contrast_attention")
def main(cfg: ContrastAttentionConfig) -> None:
    from elusive.attention.contrast import contrast_attention  # imported here: --help and config errors need no torch

    print(f"wrote {contrast_attention(cfg)}")


if __name__ == "__main__":
    main()
