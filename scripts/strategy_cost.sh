#!/usr/bin/env bash
# The cost of each successors' switch per training iteration (docs/study.md, "Successors'
# strategies"): every arm of the study trains ITERS iterations from the same start, the
# arms interleaved, ROUNDS times, in this one run; per arm the median seconds per
# iteration after the first 5 (the warm-up of the allocator), the lowest over the rounds,
# and its ratio to the baseline's. One libtorch thread, one data worker.
#   scripts/strategy_cost.sh DATA OUT.json INIT
# DATA: a `rccr-train synth` folder; INIT: the model both networks start from.
# Env: STRATEGY_BIN (rccr-train), STRATEGY_ITERS (30), STRATEGY_ROUNDS (2), STRATEGY_SIZE
#      (256x128), STRATEGY_CROP (128), STRATEGY_LR (AdamW rate of the recipes, 2.4e-3),
#      STRATEGY_ROWS (the pseudo-label row flags of the recipes).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1 OUT=$2 INIT=$3
BIN=${STRATEGY_BIN:-target/release/rccr-train}
ITERS=${STRATEGY_ITERS:-30}
ROUNDS=${STRATEGY_ROUNDS:-2}
SIZE=${STRATEGY_SIZE:-256x128}
CROP=${STRATEGY_CROP:-128}
ADAM_LR=${STRATEGY_LR:-2.4e-3}
ROWS=${STRATEGY_ROWS:---pseudo-ignore-top 3 --pseudo-ignore-bottom 30}
export OMP_NUM_THREADS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ARMS=(
  "baseline|--mode baseline"
  "rcs|--mode baseline --rcs"
  "fd|--mode baseline --fd"
  "mic|--mode baseline --mic $ROWS"
  "rccr|--mode rccr"
  "recipe-mic|--config configs/mic.toml $ROWS --lr $ADAM_LR"
  "recipe-rccr-mic|--config configs/rccr-mic.toml $ROWS --lr $ADAM_LR"
)
for round in $(seq "$ROUNDS"); do
  for arm in "${ARMS[@]}"; do
    name=${arm%%|*} flags=${arm#*|}
    echo "round $round: $name"
    # shellcheck disable=SC2086
    "$BIN" train --source "gta5:$DATA/gta5" --target "cityscapes:$DATA/cityscapes" \
      --init-from "$INIT" --out "$TMP/$name-$round" --iterations "$ITERS" --seed 0 \
      --val-every 0 --save-every 0 --keep-last 1 --log-every 1 --backbone small \
      --source-size "$SIZE" --target-size "$SIZE" --val-size "$SIZE" --crop "$CROP" \
      --batch-size 2 --lr 0.01 --device cpu --workers 1 --quiet --val-limit 1 \
      --no-tensorboard $flags >"$TMP/$name-$round.log" 2>&1
  done
done
python3 - "$TMP" "$OUT" "$ROUNDS" "${ARMS[@]%%|*}" <<'PY'
import json, statistics, sys
tmp, out, rounds, arms = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def median_secs(d):
    rows = [json.loads(l) for l in open(f"{tmp}/{d}/metrics.jsonl")]
    secs = [r["seconds_per_iteration"] for r in rows if r.get("kind") == "train"][5:]
    return statistics.median(secs)
res = {a: min(median_secs(f"{a}-{r}") for r in range(1, rounds + 1)) for a in arms}
base = res["baseline"]
table = {a: {"seconds_per_iteration": s, "ratio_to_baseline": s / base} for a, s in res.items()}
json.dump(table, open(out, "w"), indent=1)
for a, v in table.items():
    print(f"{a:16s} {v['seconds_per_iteration']:.3f} s  x{v['ratio_to_baseline']:.2f}")
PY
