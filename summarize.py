"""Summarise evaluation runs into the paper's table layout, mean ± std over seeds.

    python summarize.py runs=[out/experiments/table2_gemma2_2b] output=out/table2_gemma2_2b
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from elusive.cli import require, resolve_path, run
from elusive.summary import summarize


@hydra.main(version_base="1.3", config_path="conf", config_name="summarize")
def main(cfg: DictConfig) -> None:
    require(cfg)
    runs = OmegaConf.to_object(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    print(run(summarize, cfg, runs=[resolve_path(r) for r in runs], output=resolve_path(cfg.output)))


if __name__ == "__main__":
    main()
