#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic "game -> real" benchmark
# (version 2, docs/benchmark.md), on CPU.
#   generate -> train source-only, baseline, rccr (small backbone) -> export the RCCR teacher
#   -> rccr-infer on target val with scoring -> the same teacher quantised to int8 and scored
#   on the same images -> per-class target mIoU table for the three modes
#   -> overview.png: 3 target val images, ground truth and the three modes' predictions.
# Scale with DEMO_ITERATIONS, DEMO_COUNT (images per domain), DEMO_SIZE (WxH), DEMO_CROP,
# DEMO_BACKBONE, DEMO_DEVICE, DEMO_OUT. Defaults finish in well under 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo}
ITERS=${DEMO_ITERATIONS:-800}
# The paper's lr (2.5e-4) fine-tunes an ImageNet backbone; the demo's small backbone starts
# from scratch and needs a larger one.
LR=${DEMO_LR:-0.01}
COUNT=${DEMO_COUNT:-200}
SIZE=${DEMO_SIZE:-512x256}
CROP=${DEMO_CROP:-256}
BACKBONE=${DEMO_BACKBONE:-small}
DEVICE=${DEMO_DEVICE:-cpu}
SEED=${DEMO_SEED:-0}

# Bold headings only on a terminal, and never with NO_COLOR set.
if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi
start=$SECONDS

step "build (release)"
cargo build --release --workspace
BIN=target/release

mkdir -p "$OUT"
step "generate the synthetic benchmark into $OUT/data"
"$BIN/rccr-train" synth --out "$OUT/data" --seed "$SEED" --count "$COUNT" --size "$SIZE" >"$OUT/synth.json"
echo "wrote $OUT/data (report: $OUT/synth.json)"

# Each mode's recipe (docs/training.md, "Recipes"): the paper's settings, the crop, rate and
# iterations of this demo given as flags over the file.
recipe() { case $1 in baseline) echo configs/dacs.toml;; rccr) echo configs/rccr-paper.toml;; esac; }
for mode in source-only baseline rccr; do
  config=$(recipe "$mode")
  step "train $mode ($BACKBONE, $ITERS iterations, $DEVICE${config:+, recipe $config})"
  rm -rf "$OUT/runs/$mode"
  "$BIN/rccr-train" train ${config:+--config "$config"} --mode "$mode" \
    --source "gta5:$OUT/data/gta5" --target "cityscapes:$OUT/data/cityscapes" \
    --out "$OUT/runs/$mode" --backbone "$BACKBONE" --iterations "$ITERS" \
    --source-size "$SIZE" --target-size "$SIZE" --val-size "$SIZE" --crop "$CROP" --batch-size 2 --lr "$LR" \
    --device "$DEVICE" --seed "$SEED" --val-every "$ITERS" --save-every "$ITERS"
done

step "export the RCCR teacher to ONNX (verified against libtorch)"
ckpt=$(ls "$OUT/runs/rccr/checkpoints/"iter_*.safetensors | sort | tail -n 1)
"$BIN/rccr-export" --checkpoint "$ckpt" --out "$OUT/rccr.onnx" --verify

step "rccr-infer on target val (ONNX Runtime), colour predictions in $OUT/predictions"
"$BIN/rccr-infer" --model "$OUT/rccr.onnx" --images "$OUT/data/cityscapes/leftImg8bit/val" \
  --labels "$OUT/data/cityscapes/gtFine/val" --input-size "$SIZE" --out "$OUT/predictions" \
  --json "$OUT/rccr-infer.json"

step "int8: the RCCR teacher quantised (calibrated on target train images), scored on the same val images"
"$BIN/rccr-export" --checkpoint "$ckpt" --out "$OUT/rccr-int8.onnx" --int8 \
  --calibration-images "$OUT/data/cityscapes/leftImg8bit/train" --calibration-size "$SIZE"
"$BIN/rccr-infer" --model "$OUT/rccr-int8.onnx" --images "$OUT/data/cityscapes/leftImg8bit/val" \
  --labels "$OUT/data/cityscapes/gtFine/val" --input-size "$SIZE" --out "$OUT/predictions-int8" \
  --json "$OUT/rccr-infer-int8.json" --quiet >/dev/null
python3 - "$OUT" <<'PY' | tee "$OUT/int8.md"
import json, sys
miou = lambda f: 100 * json.load(open(f"{sys.argv[1]}/{f}"))["miou"]
fp32, int8 = miou("rccr-infer.json"), miou("rccr-infer-int8.json")
print(f"RCCR teacher on target val (rccr-infer): fp32 {fp32:.2f}, int8 {int8:.2f} mIoU (int8 - fp32: {int8 - fp32:+.2f})")
PY

step "target mIoU per class (teacher, Cityscapes-layout val)"
python3 scripts/demo_table.py "$OUT/runs" source-only baseline:configs/dacs.toml rccr:configs/rccr-paper.toml | tee "$OUT/table.md"

step "overview picture: 3 target val images, ground truth, source-only / baseline / RCCR"
rm -rf "$OUT/overview"
mkdir -p "$OUT/overview/images"
# (The whole list is read first: `| head` would end `sort` with SIGPIPE under pipefail.)
mapfile -t val_images < <(find "$OUT/data/cityscapes/leftImg8bit/val" -name '*_leftImg8bit.png' | sort)
for img in "${val_images[@]:0:3}"; do
  city=$(basename "$(dirname "$img")")
  mkdir -p "$OUT/overview/images/$city"
  cp "$img" "$OUT/overview/images/$city/"
done
for mode in source-only baseline; do
  ckpt=$(ls "$OUT/runs/$mode/checkpoints/"iter_*.safetensors | sort | tail -n 1)
  "$BIN/rccr-export" --checkpoint "$ckpt" --out "$OUT/overview/$mode.onnx" >/dev/null
done
for mode in source-only baseline rccr; do
  model="$OUT/overview/$mode.onnx"
  [[ $mode == rccr ]] && model="$OUT/rccr.onnx"
  "$BIN/rccr-infer" --model "$model" --images "$OUT/overview/images" --input-size "$SIZE" \
    --out "$OUT/overview/$mode" --overlay --quiet >/dev/null
done
PYTHONPATH="$PWD/.deps/py${PYTHONPATH:+:$PYTHONPATH}" python3 scripts/demo_overview.py \
  --images "$OUT/overview/images" --labels "$OUT/data/cityscapes/gtFine/val" \
  --pred "source-only=$OUT/overview/source-only" --pred "baseline=$OUT/overview/baseline" \
  --pred "RCCR=$OUT/overview/rccr" --out "$OUT/overview.png"
mapfile -t overlays < <(find "$OUT/overview/rccr/overlay" -name '*.png' | sort)
cp "${overlays[0]}" "$OUT/overlay.png"
echo "wrote $OUT/overlay.png (rccr-infer --overlay, RCCR)"
echo
echo "demo finished in $((SECONDS - start)) s; predictions: $OUT/predictions, table: $OUT/table.md,"
echo "overview: $OUT/overview.png"
