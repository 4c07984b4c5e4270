"""Stages 1 and 2: the attention each token receives, and the difference between a large and a small model.

* :mod:`~elusive.attention.scores` — the score maths and batched scoring (no n × n weights kept).
* :mod:`~elusive.attention.kernel` — the blocked attention registered with transformers.
* :mod:`~elusive.attention.released` — the released code's score, replayed with its arithmetic.
* :mod:`~elusive.attention.focus` — the token just before each field, and which field each token is in.
* :mod:`~elusive.attention.stage` — stage 1 (``save_attention.py``).
* :mod:`~elusive.attention.contrast` — stage 2 (``contrast_attention.py``).
* :mod:`~elusive.attention.dump` — the attention dump file both stages write and stage 3 reads.
"""
