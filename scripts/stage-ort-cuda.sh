#!/usr/bin/env bash
# Stages ONNX Runtime's CUDA execution provider (and any extra files: a model, test
# images) onto a GPU host that has the CUDA 13 / cuDNN 9 libraries in a Python venv
# (site-packages/nvidia/*/lib) but no onnxruntime-gpu, no network, and takes at most
# 64 MiB of files per command. The files are packed into one xz archive, split into
# chunks under 60 MiB, carried in back-to-back commands while the host stays warm
# (ignored folders such as target/ persist between them), checked and reassembled there.
#
#   scripts/stage-ort-cuda.sh pack [--wheel onnxruntime_gpu-1.31.1-*.whl] [FILE|DIR ...]
#       (build machine) extract libonnxruntime.so.1.31.1, libonnxruntime_providers_shared.so
#       and libonnxruntime_providers_cuda.so from the onnxruntime-gpu wheel (downloaded
#       with pip when --wheel is not given), add the extra FILEs / DIRs under extra/, and
#       write $STAGE/chunk-NN plus $STAGE/manifest; prints the chunk paths to carry.
#   scripts/stage-ort-cuda.sh receive
#       (GPU host, after each carrying command) verify the chunks present against the
#       manifest; say which are still missing.
#   scripts/stage-ort-cuda.sh assemble
#       (GPU host) all chunks present and intact -> $STAGE/ort/ (libraries) and
#       $STAGE/ort/extra/ (extra files), every file's sha256 checked. Idempotent.
#   scripts/stage-ort-cuda.sh env
#       (GPU host) print `export ORT_DYLIB_PATH=... LD_LIBRARY_PATH=...` pointing the
#       loader at the staged ONNX Runtime and the venv's nvidia/*/lib folders, after
#       checking (ldd) that the CUDA provider finds every library it needs.
#
# Environment: STAGE (default target/gpu-stage), CHUNK_MB (default 55), ORT_VERSION
# (default 1.31.1), PYTHON (a python; the GPU host's venv python to find nvidia/*),
# NVIDIA_LIB_ROOT (a site-packages/nvidia folder, skipping the search).
# Exit status: 0 done; 1 an error, with a message naming the file and the fix; 3 from
# `receive` when chunks are still missing (carry them and run it again).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${STAGE:-target/gpu-stage}
CHUNK_MB=${CHUNK_MB:-55}
ORT_VERSION=${ORT_VERSION:-1.31.1}
LIBS=("libonnxruntime.so.$ORT_VERSION" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so)
# What libonnxruntime_providers_cuda.so (onnxruntime-gpu 1.31.1, CUDA 13 build) loads.
NEEDED=(libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcurand.so.10 libcudnn.so.9)

die() {
    echo "stage-ort-cuda: error: $*" >&2
    exit 1
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

py() {
    local p
    for p in "${PYTHON:-}" /opt/torch/.venv/bin/python3 python3 python; do
        [ -n "$p" ] && command -v "$p" >/dev/null 2>&1 && { echo "$p"; return 0; }
    done
    return 1
}

# fetch_wheel DIR: the onnxruntime-gpu wheel, downloaded with pip into DIR.
fetch_wheel() {
    local dir=$1 python
    python=$(py) || die "no python3 to download onnxruntime-gpu==$ORT_VERSION; pass --wheel FILE"
    mkdir -p "$dir"
    echo "== downloading onnxruntime-gpu==$ORT_VERSION (about 255 MB) into $dir" >&2
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" \
        "onnxruntime-gpu==$ORT_VERSION" >&2 ||
        die "pip could not download onnxruntime-gpu==$ORT_VERSION; download the wheel elsewhere and pass --wheel FILE"
    ls "$dir"/onnxruntime_gpu-"$ORT_VERSION"-*.whl | head -n1
}

cmd_pack() {
    local wheel="" extras=()
    while [ $# -gt 0 ]; do
        case $1 in
        --wheel) wheel=${2:?--wheel needs a file}; shift 2 ;;
        *) extras+=("$1"); shift ;;
        esac
    done
    [ -n "$wheel" ] || wheel=$(fetch_wheel "$STAGE/wheel")
    [ -f "$wheel" ] || die "wheel $wheel does not exist"
    local work="$STAGE/pack"
    rm -rf "$work" "$STAGE"/chunk-* "$STAGE/manifest"
    mkdir -p "$work/ort/extra"
    local lib python
    python=$(py) || die "no python3 to unpack $wheel"
    for lib in "${LIBS[@]}"; do
        "$python" - "$wheel" "onnxruntime/capi/$lib" "$work/ort/$lib" <<'PY' ||
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
            die "$wheel has no onnxruntime/capi/$lib: is it onnxruntime-gpu $ORT_VERSION for Linux x86_64?"
    done
    local e
    for e in "${extras[@]}"; do
        [ -e "$e" ] || die "extra file $e does not exist"
        cp -r "$e" "$work/ort/extra/"
    done
    (cd "$work/ort" && find . -type f ! -name files.sha256 -print0 | sort -z | xargs -0 sha256sum) >"$work/ort/files.sha256"
    echo "== compressing $(du -sh "$work/ort" | cut -f1) (xz)" >&2
    tar -C "$work" -cf - ort | xz -6 -T0 >"$work/ort.tar.xz"
    split -b "${CHUNK_MB}M" -d -a 2 "$work/ort.tar.xz" "$STAGE/chunk-"
    {
        echo "archive $(sha "$work/ort.tar.xz") $(stat -c %s "$work/ort.tar.xz")"
        for c in "$STAGE"/chunk-*; do echo "chunk $(basename "$c") $(sha "$c")"; done
    } >"$STAGE/manifest"
    rm -rf "$work"
    local n
    n=$(grep -c '^chunk ' "$STAGE/manifest")
    echo "== $n chunks of at most $CHUNK_MB MiB; carry, one command each (with $STAGE/manifest):"
    for c in "$STAGE"/chunk-*; do echo "   $c ($(du -h "$c" | cut -f1))"; done
}

manifest() {
    [ -f "$STAGE/manifest" ] ||
        die "$STAGE/manifest is missing: carry it (made by \`scripts/stage-ort-cuda.sh pack\` on the build machine) with every chunk"
    cat "$STAGE/manifest"
}

# check_chunks: prints the missing chunk names; dies on a corrupt one.
check_chunks() {
    local kind name want
    while read -r kind name want _; do
        [ "$kind" = chunk ] || continue
        if [ ! -f "$STAGE/$name" ]; then
            echo "$name"
        elif [ "$(sha "$STAGE/$name")" != "$want" ]; then
            die "$STAGE/$name is corrupt (sha256 differs from the manifest): carry it again"
        fi
    done < <(manifest)
}

cmd_receive() {
    local missing total
    missing=$(check_chunks)
    total=$(manifest | grep -c '^chunk ')
    if [ -n "$missing" ]; then
        echo "stage-ort-cuda: $((total - $(echo "$missing" | wc -l))) of $total chunks here; still to carry:" >&2
        echo "$missing" | sed "s|^|   $STAGE/|" >&2
        exit 3
    fi
    echo "== all $total chunks here and intact: run \`scripts/stage-ort-cuda.sh assemble\`"
}

cmd_assemble() {
    if [ -f "$STAGE/ort/.assembled" ] && (cd "$STAGE/ort" && sha256sum --quiet -c files.sha256) 2>/dev/null; then
        echo "== already assembled in $STAGE/ort"
        return 0
    fi
    local missing
    missing=$(check_chunks)
    [ -z "$missing" ] || die "chunk(s) missing: $(echo $missing): carry $STAGE/<chunk> in a command each, then assemble again"
    local want size
    read -r _ want size < <(manifest | grep '^archive ')
    rm -rf "$STAGE/ort" "$STAGE/ort.tar.xz"
    cat "$STAGE"/chunk-* >"$STAGE/ort.tar.xz"
    [ "$(sha "$STAGE/ort.tar.xz")" = "$want" ] ||
        die "the reassembled archive does not match the manifest ($size bytes expected): chunks from another pack? pack again and carry all chunks"
    if command -v xz >/dev/null 2>&1; then
        xz -dc "$STAGE/ort.tar.xz" | tar -C "$STAGE" -xf -
    else
        local python
        python=$(py) || die "neither xz nor python3 here to unpack $STAGE/ort.tar.xz"
        "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
            "$STAGE/ort.tar.xz" "$STAGE"
    fi
    rm -f "$STAGE/ort.tar.xz"
    (cd "$STAGE/ort" && sha256sum --quiet -c files.sha256) ||
        die "unpacked files in $STAGE/ort do not match their checksums: the host's disk? assemble again"
    touch "$STAGE/ort/.assembled"
    echo "== assembled $STAGE/ort ($(du -sh "$STAGE/ort" | cut -f1))"
}

# nvidia_root: the site-packages/nvidia folder of the host's CUDA wheels.
nvidia_root() {
    if [ -n "${NVIDIA_LIB_ROOT:-}" ]; then
        [ -d "$NVIDIA_LIB_ROOT" ] || die "NVIDIA_LIB_ROOT=$NVIDIA_LIB_ROOT is not a folder"
        echo "$NVIDIA_LIB_ROOT"
        return
    fi
    local python dir
    if python=$(py) && dir=$("$python" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null); then
        echo "$dir"
        return
    fi
    for dir in /opt/torch/.venv/lib/python3*/site-packages/nvidia /usr/local/lib/python3*/dist-packages/nvidia; do
        [ -d "$dir" ] && { echo "$dir"; return; }
    done
    die "no site-packages/nvidia folder (the CUDA 13 wheels that come with PyTorch) found; set NVIDIA_LIB_ROOT or PYTHON to the venv's python"
}

cmd_env() {
    [ -f "$STAGE/ort/.assembled" ] || die "$STAGE/ort is not assembled: run \`scripts/stage-ort-cuda.sh assemble\` first"
    local root dirs="" d lib
    root=$(nvidia_root)
    for d in "$root"/*/lib; do [ -d "$d" ] && dirs="$dirs${dirs:+:}$(cd "$d" && pwd)"; done
    [ -n "$dirs" ] || die "$root has no */lib folders"
    local ort
    ort=$(cd "$STAGE/ort" && pwd)
    for lib in "${NEEDED[@]}"; do
        compgen -G "$root/*/lib/$lib" >/dev/null ||
            die "$lib is not in $root/*/lib: the CUDA provider needs ${NEEDED[*]} (CUDA 13, cuDNN 9)"
    done
    local deps missing
    deps=$(LD_LIBRARY_PATH="$ort:$dirs" ldd "$ort/libonnxruntime_providers_cuda.so" 2>&1) ||
        die "ldd cannot read $ort/libonnxruntime_providers_cuda.so ($deps): pack it again from the onnxruntime-gpu wheel"
    missing=$(echo "$deps" | awk '/not found/ {print $1}' | tr '\n' ' ')
    [ -z "$missing" ] || die "libonnxruntime_providers_cuda.so still misses: $missing(looked in $ort and $root/*/lib)"
    echo "export ORT_DYLIB_PATH=$ort/libonnxruntime.so.$ORT_VERSION"
    echo "export LD_LIBRARY_PATH=$ort:$dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
}

case ${1:-} in
pack) shift; cmd_pack "$@" ;;
receive) cmd_receive ;;
assemble) cmd_assemble ;;
env) cmd_env ;;
*)
    sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
