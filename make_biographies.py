"""Write the synthetic tagged biographies (one-column ``text`` CSV) that the training stages read.

Usage (from the project root):

    python make_biographies.py
    python make_biographies.py n_people=1000 seed=1 field_order=permuted output=data/biography_permuted.csv
    python make_biographies.py template=varied output=data/biography_varied.csv
"""

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from elusive.biographies import make_biographies
from elusive.cli import resolve_path, run


@hydra.main(version_base="1.3", config_path="conf", config_name="make_biographies")
def main(cfg: DictConfig) -> None:
    """Generate ``cfg.n_people`` biographies and write them to ``cfg.output``."""
    field_order = cfg.field_order
    if isinstance(field_order, ListConfig):
        field_order = OmegaConf.to_container(field_order)
    run(
        make_biographies,
        cfg,
        n_people=cfg.n_people,
        seed=cfg.seed,
        field_order=field_order,
        output=resolve_path(cfg.output),
        template=cfg.template,
    )


if __name__ == "__main__":
    main()
