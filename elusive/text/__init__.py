"""Texts and tokens: the datasets the stages read, field tags, tokenisation with character offsets, Wikipedia
paragraphs, the synthetic biographies, and aligning scores across tokenizers.

* :mod:`~elusive.text.data` — reading a tagged CSV or a Wikipedia QA file.
* :mod:`~elusive.text.tags` — inline field tags (``<company>...</company>``).
* :mod:`~elusive.text.tokens` — tokens with character offsets; which tokens may be dropped.
* :mod:`~elusive.text.fingerprints` — hashes that bind tokens to the tokenizer that made them.
* :mod:`~elusive.text.tokenizer_records` — recorded tokenizer hashes, so stage 3 can skip loading one.
* :mod:`~elusive.text.align` — scores of two tokenizers projected onto the same characters.
* :mod:`~elusive.text.wiki` — Wikipedia paragraphs with questions (Du & Cardie 2018).
* :mod:`~elusive.text.biographies` and :mod:`~elusive.text.pools` — seeded biographies and their word pools.
"""
