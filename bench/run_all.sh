#!/usr/bin/env bash
# Run every benchmark at small default sizes; each prints a table (baseline, ours, ratio, target, PASS/MISS).
#   bench/run_all.sh                       # real model (models/qwen2.5-coder-0.5b), a few minutes per bench
#   bench/run_all.sh --tiny                # tiny random model: about a minute in all, any machine
#   bench/run_all.sh --model models/gemma-3-270m
# Extra arguments go to every script. JSON copies of the tables go to $BENCH_OUT (default out/bench).
# Exit status: non-zero if a script fails (e.g. ours and the baseline disagree); MISS rows do not fail it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${BENCH_OUT:-out/bench}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1

tiny=0
for arg in "$@"; do [ "$arg" = "--tiny" ] && tiny=1; done
if [ "$tiny" = 1 ]; then
  extraction=(--lengths 128 256 --texts 2 1)
  augmentation=(--sizes 200 1000 5000 --baseline-size 1000)
  evaluation=(--people 2)
  training=(--texts 16 --batch-size 4)
  startup=(--runs 1)
  quant=(--steps 2 --warmup 1)
else
  extraction=(--lengths 512 1024 --texts 2 1 --repeat 2)
  augmentation=(--sizes 1000 10000 100000 --baseline-size 10000 --repeat 2)
  evaluation=(--people 8)   # 40 questions (the paper's evaluation has ~1,500; 10 are dominated by decoding)
  training=(--texts 20 --batch-size 4 --repeat 2 --group-by-length)
  startup=(--runs 3)        # whole processes on the paper's 100 biographies × 10 copies
  quant=()                  # 0.5B fp32 / 8bit / 4bit, and whether 8-bit lets the 1.5B train
fi

status=0
"$PY" bench/bench_extraction.py "${extraction[@]}" --json "$OUT/extraction.json" "$@" || status=1
"$PY" bench/bench_augmentation.py "${augmentation[@]}" --json "$OUT/augmentation.json" "$@" || status=1
"$PY" bench/bench_evaluation.py "${evaluation[@]}" --json "$OUT/evaluation.json" "$@" || status=1
"$PY" bench/bench_evaluation.py "${evaluation[@]}" --shared-shots --json "$OUT/evaluation_shared.json" "$@" || status=1
"$PY" bench/bench_training.py "${training[@]}" --json "$OUT/training.json" "$@" || status=1
"$PY" bench/bench_startup.py "${startup[@]}" --json "$OUT/startup.json" "$@" || status=1
"$PY" bench/bench_quant.py "${quant[@]}" --json "$OUT/quant.json" "$@" || status=1
exit $status
