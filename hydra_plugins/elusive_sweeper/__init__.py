"""The project's Hydra sweeper (``hydra/sweeper=elusive``; :mod:`elusive.core.cli` selects it for ``-m``)."""
