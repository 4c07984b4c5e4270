"""Stage 3: token dropout guided by a ranking (attention, its contrast, or a control), ``data_augmentation.py``.

* :mod:`~elusive.augment.stage` — rankings, the drop schedule p(r) and the stage.
* :mod:`~elusive.augment.inputs` — the texts, tokens and scores stage 3 reads, checked.
* :mod:`~elusive.augment.engine` — the compiled loops that write the augmented rows.
"""
