"""Summarise evaluation runs into the paper's table layout: mean ± std over seeds, or the 95 % interval of one seed.

    python summarize.py runs=[out/experiments/table2_gemma2_2b] output=out/table2_gemma2_2b

`python summarize.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import SummarizeConfig


@script("summarize")
def main(cfg: SummarizeConfig) -> None:
    from elusive.reporting.summary import summarize  # imported here: --help and config errors need no torch

    print(summarize(cfg))


if __name__ == "__main__":
    main()
