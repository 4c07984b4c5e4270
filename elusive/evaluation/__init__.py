"""Stage 5: closed-book questions, greedy decoding, SQuAD exact match and F1, ``evaluate.py``.

* :mod:`~elusive.evaluation.questions` — prompts with gold answers (biography QA, completion, Wikipedia QA).
* :mod:`~elusive.evaluation.generation` — batched greedy generation stopped at the first newline.
* :mod:`~elusive.evaluation.adapters` — the adapter folder and its training record, checked; loading for eval.
* :mod:`~elusive.evaluation.metrics` — SQuAD v1.1 exact match and F1.
* :mod:`~elusive.evaluation.stage` — the stage and its files.
"""
