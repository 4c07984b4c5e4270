"""Figures 2-3: top-k tokens by attention (or attention difference) just before each field, with a positional control.

    python analyze_attention.py attn_dump=out/focus_diff output=out/fig3_top10_diff
    python analyze_attention.py attn_dump=out/focus_large output=out/fig2_top10_large k=10

`python analyze_attention.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import AnalyzeAttentionConfig


@script("analyze_attention")
def main(cfg: AnalyzeAttentionConfig) -> None:
    from elusive.reporting.analysis import analyze_attention  # imported here: --help and config errors need no torch

    print(analyze_attention(cfg))


if __name__ == "__main__":
    main()
