"""Write the synthetic tagged biographies (one-column ``text`` CSV) that the training stages read.

    python make_biographies.py
    python make_biographies.py n_people=1000 seed=1 field_order=permuted output=data/biography_permuted.csv

`python make_biographies.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

import dataclasses

from elusive.core.cli import script
from elusive.core.config import MakeBiographiesConfig


@script("make_biographies")
def main(cfg: MakeBiographiesConfig) -> None:
    from elusive.text.biographies import make_biographies  # imported here: --help and config errors need no torch

    print(f"wrote {make_biographies(**dataclasses.asdict(cfg))}")


if __name__ == "__main__":
    main()
