#!/usr/bin/env bash
# `make demo`: the whole method on real pretrained models (Qwen2.5-Coder 0.5B and 1.5B) on a CPU.
# Sizes are environment variables: DEMO_PEOPLE, DEMO_MULTIPLY, DEMO_EPOCHS, DEMO_LR, DEMO_OUT (out/demo) and
# DEMO_METHODS ("plain random attention_diff released shuffled position"). It ends by writing out/demo/summary.md
# and copying it with the predictions behind it to DEMO_RECORD (results/demo, committed; empty: no copy).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-out/demo}
N=${DEMO_PEOPLE:-10}
MULT=${DEMO_MULTIPLY:-3}
EPOCHS=${DEMO_EPOCHS:-6}
LR=${DEMO_LR:-1e-3}
METHODS=${DEMO_METHODS:-plain random attention_diff released shuffled position}
RECORD=${DEMO_RECORD-results/demo}
SMALL=models/qwen2.5-coder-0.5b
LARGE=models/qwen2.5-coder-1.5b
export TQDM_DISABLE=1
h() { echo "hydra.run.dir=$OUT/hydra/$1"; }
step() { echo; echo "== [$(date +%T)] $*"; }
T0=$(date +%s)

step "0. $N synthetic biographies"
$PY make_biographies.py n_people="$N" seed=1 output="$OUT/bio.csv" overwrite=true "$(h bio)"

step "1. attention each token receives (text_prefix 'Text: ' as in the paper; focus rows for the analysis)"
for size in small large; do
  model=$SMALL; [ "$size" = large ] && model=$LARGE
  $PY save_attention.py model="$model" dataset="$OUT/bio.csv" save_name="$OUT/attn_$size" \
      text_prefix='"Text: "' focus=true batch_size=4 "$(h "attn_$size")"
done

step "2. contrast: large − small"
$PY contrast_attention.py attn_dump_large="$OUT/attn_large" attn_dump_small="$OUT/attn_small" \
    attn_diff="$OUT/attn_diff" "$(h contrast)"

if [[ " $METHODS " == *" released "* ]]; then
  step "1+2 again with the released code's arithmetic (bf16, rows summed, no prefix): its ranking, replayed"
  for size in small large; do
    model=$SMALL; [ "$size" = large ] && model=$LARGE
    $PY save_attention.py model="$model" dataset="$OUT/bio.csv" save_name="$OUT/released_$size" \
        aggregate=released "$(h "released_$size")"
  done
  $PY contrast_attention.py attn_dump_large="$OUT/released_large" attn_dump_small="$OUT/released_small" \
      attn_diff="$OUT/released_diff" "$(h released_contrast)"
fi

step "3. augmentation: $MULT copies per biography (plain = $MULT unchanged copies, so every method trains the same steps)"
for method in $METHODS; do
  case $method in
    plain) args="augment_type=random alpha=0.0" ;;
    random) args="augment_type=random alpha=0.7" ;;
    attention_diff) args="augment_type=attention_diff alpha=0.7 beta=0.05 attn_weights=$OUT/attn_diff" ;;
    attention) args="augment_type=attention alpha=0.7 beta=0.05 attn_weights=$OUT/attn_small" ;;
    released) args="augment_type=attention_diff alpha=0.7 beta=0.05 attn_weights=$OUT/released_diff" ;;
    shuffled) args="augment_type=shuffled alpha=0.7 beta=0.05" ;;
    position) args="augment_type=position alpha=0.7 beta=0.05" ;;
    *) echo "unknown method $method" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  $PY data_augmentation.py $args multiply="$MULT" model=$SMALL dataset="$OUT/bio.csv" \
      save_name="$OUT/aug_$method" seed=0 "$(h "aug_$method")"
done

for method in $METHODS; do
  step "4. LoRA training of the 0.5B on aug_$method ($EPOCHS epochs, lr $LR)"
  $PY train.py model=$SMALL dataset="$OUT/aug_$method.csv" model_dir="$OUT/lora_$method" epochs="$EPOCHS" \
      batch_size=8 learning_rate="$LR" logging_steps=5 seed=0 "$(h "train_$method")"
  step "5. closed-book 5-shot QA: $method"
  $PY evaluate.py model=$SMALL model_dir="$OUT/lora_$method" eval_data="$OUT/bio.csv" \
      output_dir="$OUT/eval/$method" batch_size=10 "$(h "eval_$method")"
done

step "top-10 tokens at the word before each field (attention difference, and each model alone)"
$PY analyze_attention.py attn_dump="$OUT/attn_diff" output="$OUT/analysis/top10_diff" "$(h an_diff)" > /dev/null
$PY analyze_attention.py attn_dump="$OUT/attn_large" output="$OUT/analysis/top10_large" "$(h an_large)" > /dev/null
$PY analyze_attention.py attn_dump="$OUT/attn_small" output="$OUT/analysis/top10_small" "$(h an_small)" > /dev/null

# shellcheck disable=SC2086
$PY scripts/demo_report.py ${RECORD:+--record "$RECORD"} "$OUT" $METHODS
echo
echo "demo wall time: $(( $(date +%s) - T0 )) s"
