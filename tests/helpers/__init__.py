"""What tests share beyond fixtures: tiny random models and tokenizers (:mod:`helpers.tiny`), brute-force
references (:mod:`helpers.reference`), the stages as plain calls (:mod:`helpers.stages`) and running the
top-level scripts (:mod:`helpers.run`). ``tests/`` is on ``sys.path`` (pytest puts the conftest's folder there),
so a test imports ``from helpers.tiny import ...``."""
