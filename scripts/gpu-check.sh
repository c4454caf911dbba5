#!/usr/bin/env bash
# GPU check of rccr-train (docs/speed.md): a short ResNet-101 RCCR benchmark at 512x512, batch 2,
# in fp32 and bf16, with the baseline (mean teacher + ClassMix) measured in the same
# process, printing ms/iteration, the per-phase split and peak memory.
#
# Two places, one script:
#   - where cargo exists (the CPU build machine): builds target/release/rccr-train, then
#     measures if a GPU is present, else stops after the build;
#   - on a GPU host without Rust or network (torch 2.11 + CUDA 13 in a Python venv):
#     uses the prebuilt target/release/rccr-train (carry it along) and points
#     LD_LIBRARY_PATH at that torch's lib folder (the binary's rpath names .deps/, which
#     is not shipped).
#
# Environment: ITERATIONS (timed, default 10), WARMUP (default 3), PYTHON (a python with
# torch), OUT (a folder for the JSON reports; default target/gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/rccr-train
ITERATIONS=${ITERATIONS:-10}
WARMUP=${WARMUP:-3}
REPORTS=${OUT:-target/gpu-check}

if command -v cargo >/dev/null 2>&1 && [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
    echo "== building $BIN"
    cargo build --release -p rccr-trainer
fi
if [ ! -x "$BIN" ]; then
    echo "error: $BIN not found; build it with 'cargo build --release -p rccr-trainer' on a" \
         "machine with Rust (this script does that) and carry it to the GPU host" >&2
    exit 1
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "== no NVIDIA GPU visible here: built $BIN; run this script again on the GPU host"
    exit 0
fi

# libtorch of the host's PyTorch (same version, 2.11, as the one the binary was built on).
torch_lib=""
for py in "${PYTHON:-}" /opt/torch/.venv/bin/python3 python3 python; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if dir=$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
        torch_lib=$dir
        echo "== torch: $("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') ($torch_lib)"
        break
    fi
done
if [ -z "$torch_lib" ]; then
    for dir in /opt/torch/.venv/lib/python3.*/site-packages/torch/lib; do
        [ -d "$dir" ] && torch_lib=$dir
    done
fi
if [ -n "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "warning: no PyTorch found; relying on the binary's rpath (.deps/torch)" >&2
fi

mkdir -p "$REPORTS"
echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== network"
"$BIN" describe --backbone resnet101 --num-classes 19

status=0
for precision in fp32 bf16; do
    echo "== bench resnet101 512x512 batch 2, $precision (baseline and rccr, $WARMUP warm-up + $ITERATIONS timed + $ITERATIONS profiled iterations each)"
    if ! "$BIN" bench --backbone resnet101 --crop 512 --batch-size 2 --device cuda \
        --mode rccr --precision "$precision" --iterations "$ITERATIONS" --warmup "$WARMUP" \
        --json-out "$REPORTS/bench-resnet101-512-b2-$precision.json"; then
        echo "error: the $precision benchmark failed" >&2
        status=1
    fi
done
echo "== JSON reports in $REPORTS"
exit $status
