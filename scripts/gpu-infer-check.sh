#!/usr/bin/env bash
# GPU check of rccr-infer's CUDA execution provider (docs/deployment.md): on a GPU host, runs an
# exported ResNet-101 model with `--provider cuda` and `--provider cpu` on the same images
# with labels, and reports which provider ran, both mIoUs and the pixel agreement of the
# two predictions, then the CUDA latency at batch 1 and 4 (1024x512 input) with
# `rccr-infer bench`.
#
# Two places, one script (as scripts/gpu-check.sh):
#   - the build machine (cargo present): builds target/release/rccr-infer and stops
#     (exit 4: no GPU) unless a GPU is visible;
#   - the GPU host (no Rust, no network, CUDA 13 + cuDNN 9 in a Python venv, at most
#     64 MiB carried per command): ONNX Runtime's CUDA provider, the model and the images
#     arrive through scripts/stage-ort-cuda.sh (see docs/deployment.md, "GPU providers"):
#         here:  scripts/stage-ort-cuda.sh pack MODEL.onnx DATA_DIR
#         host:  one command per chunk, carrying target/gpu-stage/chunk-NN and
#                target/gpu-stage/manifest: scripts/stage-ort-cuda.sh receive
#         host:  carrying target/release/rccr-infer: scripts/gpu-infer-check.sh
#     DATA_DIR holds leftImg8bit/val and gtFine/val (e.g. `rccr-train synth` output's
#     cityscapes/ folder, or Cityscapes itself).
#
# Environment: RCCR_INFER (default target/release/rccr-infer), MODEL (default the .onnx
# staged under target/gpu-stage/ort/extra), DATA (default the staged folder holding
# leftImg8bit/val), OUT (reports; default target/gpu-infer-check), ITERATIONS (default 20),
# GPU_CHECK_SKIP_BUILD=1 (never build), NVIDIA_SMI (default nvidia-smi), STAGE (as in
# stage-ort-cuda.sh). MIOU_TOLERANCE (default 0.001, in mIoU fraction).
# Exit status: 0 CUDA ran and matched the CPU; 1 an error (message names the fix);
# 4 no GPU visible; 5 CUDA ran but its mIoU differs from the CPU's beyond the tolerance.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${RCCR_INFER:-target/release/rccr-infer}
STAGE=${STAGE:-target/gpu-stage}
REPORTS=${OUT:-target/gpu-infer-check}
ITERATIONS=${ITERATIONS:-20}
SMI=${NVIDIA_SMI:-nvidia-smi}
TOL=${MIOU_TOLERANCE:-0.001}
export STAGE

die() {
    echo "gpu-infer-check: error: $*" >&2
    exit 1
}

if command -v cargo >/dev/null 2>&1 && [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
    echo "== building $BIN"
    cargo build --release -p rccr-infer --bin rccr-infer
fi
[ -x "$BIN" ] || die "$BIN not found: build it with 'cargo build --release -p rccr-infer' where Rust is and carry it to the GPU host"

if ! command -v "$SMI" >/dev/null 2>&1 || ! "$SMI" -L >/dev/null 2>&1; then
    echo "gpu-infer-check: no NVIDIA GPU visible here ($SMI); $BIN is ready: stage ONNX Runtime's CUDA provider with scripts/stage-ort-cuda.sh and run this script on the GPU host" >&2
    exit 4
fi
echo "== GPU"
"$SMI" --query-gpu=name,memory.total,driver_version --format=csv,noheader

scripts/stage-ort-cuda.sh assemble
env_lines=$(scripts/stage-ort-cuda.sh env) || exit 1
eval "$env_lines"
echo "== ONNX Runtime: $ORT_DYLIB_PATH"

extra="$STAGE/ort/extra"
MODEL=${MODEL:-$(find "$extra" -maxdepth 1 -name '*.onnx' 2>/dev/null | sort | head -n1)}
[ -n "$MODEL" ] && [ -f "$MODEL" ] ||
    die "no model: stage one with 'scripts/stage-ort-cuda.sh pack MODEL.onnx DATA_DIR' or set MODEL"
if [ -z "${DATA:-}" ]; then
    DATA=$(find "$extra" -maxdepth 3 -type d -name leftImg8bit 2>/dev/null | head -n1)
    DATA=${DATA%/leftImg8bit}
fi
[ -n "$DATA" ] && [ -d "$DATA/leftImg8bit/val" ] && [ -d "$DATA/gtFine/val" ] ||
    die "no images with labels: DATA must hold leftImg8bit/val and gtFine/val (stage them with pack, or set DATA)"

PY=""
for p in python3 /opt/torch/.venv/bin/python3 python; do
    command -v "$p" >/dev/null 2>&1 && { PY=$p; break; }
done
[ -n "$PY" ] || die "no python3 to read the JSON reports"

mkdir -p "$REPORTS"
status=0
for provider in cuda cpu; do
    echo "== rccr-infer --provider $provider on $DATA/leftImg8bit/val"
    "$BIN" --model "$MODEL" --images "$DATA/leftImg8bit/val" --labels "$DATA/gtFine/val" \
        --provider "$provider" --out "$REPORTS/pred-$provider" --json "$REPORTS/$provider.json" --quiet ||
        die "rccr-infer --provider $provider failed (see above)"
done
ran=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["provider"])' "$REPORTS/cuda.json")
echo "== provider that ran: $ran"
[ "$ran" = cuda ] || die "--provider cuda ran on $ran"
echo "== CUDA vs CPU predictions (CPU's labelIds as the reference: pixel accuracy = agreement)"
"$BIN" score --pred "$REPORTS/pred-cuda/labelIds" --labels "$REPORTS/pred-cpu/labelIds" \
    --json "$REPORTS/agreement.json" --quiet | tail -n 2
verdict=$("$PY" - "$REPORTS/cuda.json" "$REPORTS/cpu.json" "$REPORTS/agreement.json" "$TOL" <<'PY'
import json, sys
cuda, cpu, agree = (json.load(open(p)) for p in sys.argv[1:4])
d = abs(cuda["miou"] - cpu["miou"])
print(f"mIoU cuda {100 * cuda['miou']:.4f} %, cpu {100 * cpu['miou']:.4f} %, |diff| {100 * d:.4f} points; "
      f"pixel agreement {100 * agree['pixel_accuracy']:.4f} %")
print("ok" if d <= float(sys.argv[4]) else "differ")
PY
)
echo "== $verdict" | head -n1
[ "$(echo "$verdict" | tail -n1)" = ok ] || status=5

for batch in 1 4; do
    echo "== latency, CUDA, batch $batch, 1024x512 input from 2048x1024 frames"
    "$BIN" bench --model "$MODEL" --provider cuda --batch-size "$batch" --input-size 1024x512 \
        --image-size 2048x1024 --iterations "$ITERATIONS" --warmup 5 \
        --json "$REPORTS/bench-cuda-b$batch.json" || die "rccr-infer bench (batch $batch) failed"
done
echo "== reports in $REPORTS"
[ $status = 0 ] || echo "gpu-infer-check: CUDA's mIoU differs from the CPU's by more than $TOL" >&2
exit $status
