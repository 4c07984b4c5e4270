"""Rewrite a method sweep's report (summary, paired comparisons, optionally figures) from its committed runs.

    python scripts/study_report.py cpu_study --no-figures

The same report the preset's Hydra callback writes at the end of ``python run_experiment.py -m experiment=<preset>``,
without running anything: for a committed sweep whose runs are all done (e.g. to recompute it with newer statistics,
or on another machine). Runs are found by their settings' key, or by their recorded method and seed (elusive/reporting/report.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from elusive.core.cli import compose_settings
from elusive.core.config import METHODS
from elusive.core.errors import InputError
from elusive.reporting.report import study_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="experiment preset, e.g. cpu_study")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: the preset's sweep, else all)")
    parser.add_argument("--no-figures", action="store_true", help="leave figures/ as it is")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = compose_settings("run_experiment", [f"experiment={args.preset}"])
        print(f"wrote {study_report(cfg, args.methods or list(METHODS), draw=not args.no_figures)}")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
