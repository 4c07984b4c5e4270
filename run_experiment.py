"""Run one table row of the paper end to end (all five stages), from an experiment preset.

    python run_experiment.py experiment=cpu_tiny method=attention_diff
    python run_experiment.py -m experiment=table2_llama3_8b method=plain,random,attention,attention_diff,shuffled seed=0,1,2
    check every input without loading a model: python run_experiment.py experiment=cpu_study dry_run=true

`python run_experiment.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script, seed_everything
from elusive.core.config import RunExperimentConfig


@script("run_experiment")
def main(cfg: RunExperimentConfig) -> None:
    from elusive.evaluation.stage import markdown_table
    from elusive.experiment import run_experiment  # imported here: --help and config errors need no torch

    seed_everything(cfg.seed)
    results = run_experiment(cfg)
    for mode, table in (results or {}).items():
        print(f"## {mode}\n{markdown_table(table)}")


if __name__ == "__main__":
    main()
