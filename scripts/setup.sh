#!/usr/bin/env bash
# Installs the pinned PyPI packages this project runs on into project-local,
# git-ignored folders under .deps/ (pip --target), only when missing or at
# another version. Idempotent: a second run does nothing.
#   GPU=1  installs onnxruntime-gpu instead of the CPU onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS="$PWD/.deps"
TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
CITYSCAPES_VERSION=2.3.0
TENSORBOARD_VERSION=2.21.0
PY=${PYTHON:-python3}

# install NAME DIR SPEC... : pip-install SPECs into DIR unless DIR/.stamp matches.
install() {
  local name=$1 dir=$2; shift 2
  local want="$*"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$want" ]]; then
    echo "setup: $name already installed ($want)"
    return
  fi
  echo "setup: installing $want into ${dir#$PWD/} ..."
  local start=$SECONDS
  rm -rf "$dir.tmp"
  "$PY" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --target "$dir.tmp" "$@"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  echo "$want" > "$dir/.stamp"
  echo "setup: $name installed in $((SECONDS - start)) s ($(du -sh "$dir" | cut -f1))"
}

mkdir -p "$DEPS"
install libtorch "$DEPS/torch" "torch==$TORCH_VERSION"
if [[ "${GPU:-0}" == 1 ]]; then
  install onnxruntime "$DEPS/ort" "onnxruntime-gpu==$ORT_VERSION"
else
  install onnxruntime "$DEPS/ort" "onnxruntime==$ORT_VERSION"
fi
# Header-only CUDA 13 packages (19 MB) that, with the torch wheel's own nvidia/ headers,
# let rccr-trainer compile c10d's NCCL backend (trainer/build.rs).
install cuda-headers "$DEPS/cuda-headers" "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85"
install python-tools "$DEPS/py" "onnx==$ONNX_VERSION" "cityscapesscripts==$CITYSCAPES_VERSION" \
  "tensorboard==$TENSORBOARD_VERSION"
# cityscapesscripts pulls in the obsolete `typing` backport, which shadows the standard
# library module on Python 3 and breaks every import: remove it.
rm -rf "$DEPS/py/typing.py" "$DEPS/py"/typing-*.dist-info "$DEPS/py/__pycache__/typing."*
