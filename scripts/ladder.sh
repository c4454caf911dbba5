#!/usr/bin/env bash
# The issue-4 measurement: source-only, baseline (mean teacher + ClassMix), RCCR and a
# target-trained oracle, plus the paper's Table 3 component rungs, over several seeds, on
# the built-in synthetic benchmark; then a summary (mean and spread of target mIoU).
#
#   scripts/ladder.sh OUT_DIR            (defaults below; env overrides)
# Env: LADDER_BIN (folder with rccr-train), LADDER_DEVICE (cpu|cuda), LADDER_ITERS,
#      LADDER_SEEDS ("0 1 2"), LADDER_JOBS (parallel runs), LADDER_RUNGS (1: Table 3 rungs),
#      LADDER_LR, LADDER_CROP, LADDER_SIZE, LADDER_JOB_TIMEOUT (seconds per run).
# Results: OUT_DIR/results.jsonl (one line per finished run) and OUT_DIR/summary.md.
set -uo pipefail
OUT=${1:?usage: ladder.sh OUT_DIR}
BIN=${LADDER_BIN:-target/release}
DEVICE=${LADDER_DEVICE:-cpu}
ITERS=${LADDER_ITERS:-1500}
SEEDS=${LADDER_SEEDS:-0 1 2}
JOBS=${LADDER_JOBS:-1}
RUNGS=${LADDER_RUNGS:-1}
LR=${LADDER_LR:-0.01}
CROP=${LADDER_CROP:-256}
SIZE=${LADDER_SIZE:-512x256}
JOB_TIMEOUT=${LADDER_JOB_TIMEOUT:-100000}
ONLY=${LADDER_ONLY:-.}          # regex on the run name: which runs to do
RESULTS=${LADDER_RESULTS:-$OUT/results.jsonl}
DATA=$OUT/data
mkdir -p "$OUT/runs"
[[ -f $DATA/synth.json ]] || "$BIN/rccr-train" synth --out "$DATA" --seed 0 --size "$SIZE" >/dev/null

# name|mode|extra flags|source
jobs_for_seed() {
  local s=$1
  echo "source-only|source-only||gta5:$DATA/gta5|$s"
  echo "baseline|baseline||gta5:$DATA/gta5|$s"
  echo "rccr|rccr||gta5:$DATA/gta5|$s"
  echo "oracle|source-only||cityscapes:$DATA/cityscapes|$s"
}
rungs_for_seed() {
  local s=$1
  echo "+RWC|rccr|--no-ns-random --no-ns-category --no-ps --no-mb|gta5:$DATA/gta5|$s"
  echo "+NS(R)|rccr|--no-ns-category --no-ps --no-mb|gta5:$DATA/gta5|$s"
  echo "+NS(C)|rccr|--no-ps --no-mb|gta5:$DATA/gta5|$s"
  echo "+PS|rccr|--no-mb|gta5:$DATA/gta5|$s"
}

run_one() {
  IFS='|' read -r name mode flags source seed <<<"$1"
  local dir="$OUT/runs/$(echo "$name" | tr -c 'A-Za-z0-9\n-' '_')-s$seed"
  rm -rf "$dir"
  # shellcheck disable=SC2086
  timeout "$JOB_TIMEOUT" "$BIN/rccr-train" train --mode "$mode" $flags --source "$source" \
    --target "cityscapes:$DATA/cityscapes" --out "$dir" --backbone small --iterations "$ITERS" \
    --source-size "$SIZE" --target-size "$SIZE" --val-size "$SIZE" --crop "$CROP" --batch-size 2 \
    --lr "$LR" ${LADDER_EXTRA:-} --device "$DEVICE" --seed "$seed" --val-every $((ITERS / 3)) --save-every "$ITERS" \
    --workers 2 --quiet >"$dir.log" 2>&1
  local rc=$?
  local src_miou=null
  if [[ $name == source-only && $rc == 0 ]]; then
    src_miou=$("$BIN/rccr-train" eval --checkpoint "$(ls "$dir"/checkpoints/iter_*.safetensors | tail -n 1)" \
      --data "gta5:$DATA/gta5-val" --device "$DEVICE" --json "$dir.source-val.json" >/dev/null 2>&1 &&
      python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['scores']['miou'])" "$dir.source-val.json" || echo null)
  fi
  python3 - "$dir/metrics.jsonl" "$name" "$seed" "$rc" "$src_miou" >>"$RESULTS" <<'PY'
import json, sys
path, name, seed, rc, src = sys.argv[1:6]
vals = []
try:
    vals = [r for r in map(json.loads, open(path)) if r.get("kind") == "val"]
except OSError:
    pass
last = vals[-1] if vals else {}
print(json.dumps({"run": name, "seed": int(seed), "exit": int(rc), "iteration": last.get("iteration"),
                  "miou": last.get("miou"), "per_class_iou": last.get("per_class_iou"),
                  "curve": [[v["iteration"], v["miou"]] for v in vals],
                  "source_val_miou": None if src == "null" else float(src)}))
PY
}
export -f run_one
export OUT BIN DEVICE ITERS LR CROP SIZE DATA JOB_TIMEOUT RESULTS
: >"$RESULTS"
{
  for s in $SEEDS; do jobs_for_seed "$s"; done
  if [[ $RUNGS == 1 ]]; then for s in $SEEDS; do rungs_for_seed "$s"; done; fi
} | grep -E "^($ONLY)\|" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}
python3 "$(dirname "$0")/ladder_summary.py" "$RESULTS" | tee "$OUT/summary.md"
