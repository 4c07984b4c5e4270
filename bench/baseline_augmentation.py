"""The released code's stage-3 method as a script of its own: the baseline of the start-up bench.

As the released script does: import transformers, load the tokenizer with ``AutoTokenizer``, then per text
tokenise; per copy and per token look the id up (``convert_ids_to_tokens``), draw the drop, and rebuild the
string token by token (``convert_tokens_to_string`` per kept token). Written here from the method's
description (not copied). Ranks come from the dump's per-token scores, and the random numbers are drawn in
the same order as ``elusive.augment.stage`` draws them, so both keep the same tokens (whitespace aside).
:func:`run_baseline` is also what ``bench_augmentation.py`` times in-process.

    python bench/baseline_augmentation.py --model models/qwen2.5-coder-0.5b --dataset bios.csv \\
        --dump attn.safetensors --out out/base --alpha 0.7 --beta 0.05 --multiply 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def run_baseline(tokenizer, dataset: Path, dump: Path, out: Path, alpha: float, beta: float, multiply: int,
                 seed: int = 0) -> Path:
    """The released method: per-token id→token lookups and string rebuilding, same drop decisions as ours."""
    from safetensors.numpy import load_file

    from elusive.text.tags import strip_tags
    from elusive.text.tokens import is_droppable

    texts = [strip_tags(t) for t in pd.read_csv(dataset, dtype=str, keep_default_na=False)["text"]]
    arrays = load_file(str(dump))
    scores_all, offsets = arrays["scores"], arrays["offsets"]
    special = set(tokenizer.all_special_ids)
    rng = np.random.default_rng(seed)
    rows = []
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        scores = scores_all[offsets[i] : offsets[i + 1]]
        cand = [k for k, t in enumerate(ids) if t not in special
                and is_droppable(tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(t)]))]
        order = np.argsort(-scores[cand], kind="stable")  # rank 0 = highest score
        ranks = np.empty(len(cand), dtype=np.int64)
        ranks[order] = np.arange(len(cand))
        p = alpha * (1.0 - np.exp(-beta * ranks.astype(np.float64)))
        drops = rng.random((multiply, len(cand))) < p[None, :]
        rows.append((text, i, 0))
        for copy in range(multiply):
            dropped = {cand[k] for k in np.flatnonzero(drops[copy])}
            new = ""
            for k, t in enumerate(ids):
                token = tokenizer.convert_ids_to_tokens(t)
                if k in dropped or t in special:
                    continue
                new += tokenizer.convert_tokens_to_string([token])
            rows.append((new.strip(), i, copy + 1))
    path = Path(str(out) + ".csv")
    pd.DataFrame(rows, columns=["text", "source_row", "copy"]).to_csv(path, index=False, lineterminator="\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="tokenizer folder (or hub id)")
    parser.add_argument("--dataset", required=True, type=Path, help="CSV with a text column (tagged biographies)")
    parser.add_argument("--dump", required=True, type=Path, help="attention dump (.safetensors) ranking the tokens")
    parser.add_argument("--out", required=True, type=Path, help="output path without .csv")
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--multiply", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    path = run_baseline(tokenizer, args.dataset, args.dump, args.out, args.alpha, args.beta, args.multiply, args.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
