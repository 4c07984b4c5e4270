"""What a researcher reads: uncertainty, paired comparisons, tables, the study analysis and the figures.

* :mod:`~elusive.reporting.stats` — intervals and tests at the level of the design (questions, people, seeds).
* :mod:`~elusive.reporting.compare` — two arms on the same questions (``compare_runs.py``).
* :mod:`~elusive.reporting.summary` — results into the paper's table layout (``summarize.py``).
* :mod:`~elusive.reporting.selection` — choosing a kept pass without looking at the reported questions.
* :mod:`~elusive.reporting.study` — a sweep analysed at the level of its design (``analyze_sweep.py``).
* :mod:`~elusive.reporting.report` — the report of a method sweep.
* :mod:`~elusive.reporting.analysis` — top tokens by attention before a field (``analyze_attention.py``).
* :mod:`~elusive.reporting.figure_distance`, :mod:`~elusive.reporting.figure_keep` — Figures 1 and 4.
"""
