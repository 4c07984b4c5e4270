"""The project's Hydra sweeper (``hydra/sweeper=elusive``; :mod:`elusive.cli` selects it for ``-m``)."""
