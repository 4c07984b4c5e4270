r"""Compare two arms on the same questions, paired by person and training seed: Δ = b − a per field, pooled over all
fields (mean) and over a field set, with a person-bootstrap 95 % interval, a sign-flip p over people and the Δ of
each seed.

    python compare_runs.py a=out/experiments/cpu_study/plain/<run>/eval b=out/experiments/cpu_study/attention_diff/<run>/eval \
        output=out/compare/attention_diff_vs_plain
    python compare_runs.py a=[plain/s0/eval,plain/s1/eval] b=[diff/s0/eval,diff/s1/eval] fields=[university,company] \
        output=out/compare/diff_vs_plain_2seeds

`python compare_runs.py --help` lists every key with its type, default and meaning (elusive/core/config.py).
"""

from elusive.core.cli import script
from elusive.core.config import CompareRunsConfig


@script("compare_runs")
def main(cfg: CompareRunsConfig) -> None:
    from elusive.reporting.compare import compare_runs  # imported here: --help and config errors need no torch

    print(compare_runs(cfg))


if __name__ == "__main__":
    main()
