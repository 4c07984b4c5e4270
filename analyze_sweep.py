r"""Analyse a sweep of run_experiment runs at the level of its design: each arm's kept pass chosen on one fold of
people and reported on the other, every arm against a reference paired by person and seed, Holm over the primary
arms and BH q-values for the rest.

    python run_experiment.py -m experiment=table2_gemma2_2b method=plain,attention_diff,shuffled seed=0,1,2
    python analyze_sweep.py root=out/experiments/table2_gemma2_2b reference=plain primary=[attention_diff] \
        output=out/table2_gemma2_2b_analysis

`python analyze_sweep.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import AnalyzeSweepConfig


@script("analyze_sweep")
def main(cfg: AnalyzeSweepConfig) -> None:
    from elusive.reporting.study import analyze_sweep  # imported here: --help and config errors need no numpy work

    print(analyze_sweep(cfg))


if __name__ == "__main__":
    main()
