r"""Compare two evaluations of the same questions, paired: differences b − a per field with a 95 % paired-bootstrap
interval and an exact McNemar p-value on exact match.

    python compare_runs.py a=out/experiments/cpu_study/plain/<run>/eval b=out/experiments/cpu_study/attention_diff/<run>/eval \
        output=out/compare/attention_diff_vs_plain

`python compare_runs.py --help` lists every key with its type, default and meaning (elusive/config.py).
"""

from elusive.cli import script
from elusive.config import CompareRunsConfig


@script("compare_runs")
def main(cfg: CompareRunsConfig) -> None:
    from elusive.compare import compare_runs  # imported here: --help and config errors need no torch

    print(compare_runs(cfg))


if __name__ == "__main__":
    main()
