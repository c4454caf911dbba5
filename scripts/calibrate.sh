#!/usr/bin/env bash
# Calibration of the synthetic benchmark's defaults (docs/benchmark.md, "Calibration"):
# on a DEVELOPMENT draw (seed 9 by default, never reported), for each setting given, the
# study's ladder in small: a source-only warm-up from scratch (best on source val), then
# from it source-only, baseline and oracle (source-only on the target's labels) for
# CAL_ITERS iterations each; target val mIoU of each, the ratio source-only / oracle and
# the share of the gap the baseline recovers. Settings run side by side, one per core.
#
#   scripts/calibrate.sh OUT 'NAME=SYNTH_FLAGS' ['NAME=SYNTH_FLAGS' ...]
#   e.g. scripts/calibrate.sh cal 'default=' 'shift0.4=--shift 0.4' 'v1=--gap appearance'
# Env: CAL_BIN (folder with rccr-train), CAL_SEED (9), CAL_WARMUP_ITERS (2000),
#      CAL_ITERS (500), CAL_SIZE (256x128), CAL_CROP (128), CAL_LR (0.01), CAL_RUN_SEED (0),
#      CAL_WARM (a warm-up checkpoint to reuse: valid when the settings differ only in the
#      target, e.g. in --shift, since the source images are then the same bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1; shift
BIN=${CAL_BIN:-target/release}/rccr-train
SEED=${CAL_SEED:-9}
WARMUP=${CAL_WARMUP_ITERS:-2000}
ITERS=${CAL_ITERS:-500}
SIZE=${CAL_SIZE:-256x128}
CROP=${CAL_CROP:-128}
LR=${CAL_LR:-0.01}
RUN_SEED=${CAL_RUN_SEED:-0}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
COMMON=(--backbone small --source-size "$SIZE" --target-size "$SIZE" --val-size "$SIZE"
        --crop "$CROP" --batch-size 2 --lr "$LR" --device cpu --workers 1 --quiet
        --save-every 0 --keep-last 1)

# setting NAME FLAGS: the ladder for one generator setting, into OUT/NAME.
setting() {
  local name=$1 flags=$2 dir=$OUT/$1
  [[ -f $dir/result.json ]] && return 0
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$BIN" synth --out "$dir/data" --seed "$SEED" --size "$SIZE" $flags >/dev/null 2>"$dir/synth.log"
  local data=$dir/data init=${CAL_WARM:-}
  if [[ -z $init ]]; then
    rm -rf "$dir/warmup"
    "$BIN" train --mode source-only --source "gta5:$data/gta5" --val "gta5:$data/gta5-val" \
      --out "$dir/warmup" --iterations "$WARMUP" --seed 100 --val-every $((WARMUP / 4)) \
      "${COMMON[@]}" >"$dir/warmup.log" 2>&1
    local best
    best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['file'])" "$dir/warmup/checkpoints/index.json")
    init=$dir/warmup/checkpoints/$best
  fi
  for run in "source-only|--mode source-only --source gta5:$data/gta5" \
             "baseline|--mode baseline --source gta5:$data/gta5" \
             "oracle|--mode source-only --source cityscapes:$data/cityscapes"; do
    local rname=${run%%|*} rflags=${run#*|}
    rm -rf "$dir/$rname"
    # shellcheck disable=SC2086
    "$BIN" train $rflags --target "cityscapes:$data/cityscapes" --init-from "$init" \
      --out "$dir/$rname" --iterations "$ITERS" --seed "$RUN_SEED" --val-every "$ITERS" \
      --log-every 50 "${COMMON[@]}" >"$dir/$rname.log" 2>&1
  done
  python3 - "$dir" "$name" "$flags" <<'PY'
import json, sys
d, name, flags = sys.argv[1:4]
def last_val(run):
    rows = [json.loads(l) for l in open(f"{d}/{run}/metrics.jsonl")]
    return [r for r in rows if r.get("kind") == "val"][-1]["miou"]
so, base, orc = (100 * last_val(r) for r in ("source-only", "baseline", "oracle"))
json.dump({"setting": name, "synth_flags": flags, "source_only": so, "baseline": base,
           "oracle": orc, "source_only_over_oracle": so / orc,
           "baseline_recovers": (base - so) / (orc - so) if orc > so else None},
          open(f"{d}/result.json", "w"), indent=1)
PY
}
export -f setting
export CAL_WARM=${CAL_WARM:-}
export OUT BIN SEED WARMUP ITERS SIZE CROP LR RUN_SEED COMMON_STR="${COMMON[*]}"
printf '%s\n' "$@" | xargs -P 2 -I{} bash -c 'COMMON=($COMMON_STR); s="{}"; setting "${s%%=*}" "${s#*=}"'
python3 - "$OUT" <<'PY'
import glob, json, sys
rows = [json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + "/*/result.json"))]
print("| setting | synth flags | source-only | baseline | oracle | source-only / oracle | baseline recovers |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    rec = "n/a" if r["baseline_recovers"] is None else f"{r['baseline_recovers']:.2f}"
    print(f"| {r['setting']} | `{r['synth_flags']}` | {r['source_only']:.1f} | {r['baseline']:.1f} | "
          f"{r['oracle']:.1f} | {r['source_only_over_oracle']:.2f} | {rec} |")
json.dump(rows, open(sys.argv[1] + "/calibration.json", "w"), indent=1)
PY
