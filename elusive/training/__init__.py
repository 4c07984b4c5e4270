"""Stage 4: LoRA continual pretraining with the Hugging Face Trainer, ``train.py``.

* :mod:`~elusive.training.stage` — LoRA set-up, tokenising, the run and its record.
* :mod:`~elusive.training.checkpoints` — complete checkpoints, resume checks, kept passes.
* :mod:`~elusive.training.callbacks` — the Trainer callbacks (keep passes, stop on NaN, mark complete).
"""
