"""What every stage shares: settings and their checks, the command line, errors, where a stage may write, atomic
files, provenance, model loading and identity, several processes, and the user's cache.

* :mod:`~elusive.core.config` — every key of every script: type, default, help and rule, defined once.
* :mod:`~elusive.core.cli` — composing a script's config (Hydra), ``--help`` and one-line errors.
* :mod:`~elusive.core.errors` — :class:`~elusive.core.errors.InputError`, the one exception for bad input.
* :mod:`~elusive.core.outputs` — the rule for every output path, checked before any work.
* :mod:`~elusive.core.files` — atomic writes, strict JSON and file hashes.
* :mod:`~elusive.core.sweeps` — a ``-m`` sweep checked whole before its first job.
* :mod:`~elusive.core.models` — loading models and tokenizers (hub id, folder, ``.gguf``; dtype, quant, device).
* :mod:`~elusive.core.identity` — what a base model is, by the hashes of its files.
* :mod:`~elusive.core.distributed` — several processes, one result.
* :mod:`~elusive.core.provenance` — library versions, code commit and machine, recorded beside results.
* :mod:`~elusive.core.cache` — the user's private cache folder.
"""
