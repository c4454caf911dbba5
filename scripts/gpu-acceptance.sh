#!/usr/bin/env bash
# The whole GPU acceptance of rccr in one run (docs/gpu-acceptance.md): on a GPU host
# without Rust or network (torch 2.11 + CUDA 13 in a Python venv), with the binaries built
# here carried along, it measures and checks, writing one JSON report:
#   - card, driver, CUDA, cuDNN, NCCL versions;
#   - rccr-train bench, ResNet-101 512x512 batch 2, bf16 and fp32, baseline and rccr, and
#     the PyTorch speed peer (scripts/peer/rccr_iteration.py) at the same settings: ms per
#     iteration, peak memory, the ratios; bf16 again with --channels-last;
#   - a 1-rank NCCL run (--dist-backend nccl --sync-bn) of a few iterations through
#     scripts/torchrun, and the bench's all-reduce share at world size 1;
#   - a short ResNet-101 bf16 training on synthetic data with validation and a checkpoint,
#     rccr-export of it (fp32 and fp16 weights), rccr-infer --provider cuda against
#     --provider cpu on the validation images (pixel agreement >= 99.9 %), rccr-infer
#     bench p50 / p99 at batch 1 and throughput at batch 8 for both models, and
#     --provider tensorrt (reported unavailable, with its reason, when TensorRT is absent);
#   - the goals: rccr bf16 <= 58 ms, >= 1.5x the peer, rccr / baseline <= 1.45.
#
#   scripts/gpu-acceptance.sh --dry-run   (here, no GPU; in `make test`) checks what can be
#       checked without a GPU: scripts and their syntax, the binaries, the options the run
#       uses against their --help, the libraries they need, the carry size of every device
#       call (64 MiB each), the JSON writer; prints the device calls to make.
#   scripts/gpu-acceptance.sh             (GPU host) the run; ONNX Runtime's CUDA provider
#       must have been staged by scripts/stage-ort-cuda.sh (pack here, one `receive` call
#       per chunk there), else the inference steps are reported unavailable.
#   scripts/gpu-acceptance.sh --rehearse  (here) the same steps on the CPU, small backbone,
#       tiny crops, fp32, Gloo for NCCL, the CPU provider for CUDA: checks the plumbing
#       (commands, files, the report) in about two minutes.
#
# Environment: OUT (where the report and log go; default target/gpu-acceptance), WORK
# (scratch; default target/gpu-acceptance-work), BUDGET_S (seconds for the whole run,
# default 540: steps that no longer fit are reported skipped), ITERATIONS / WARMUP (bench
# and peer, default 10 / 3), TRAIN_ITERATIONS (default 40), RCCR_BIN (default
# target/release), PYTHON (a python with torch).
# Exit status: 0 every step ran (goals are reported, not enforced); 1 a step failed or
# a dry-run check failed; 2 usage.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${RCCR_BIN:-target/release}
REPORTS=${OUT:-target/gpu-acceptance}
WORK_GIVEN=${WORK:-}
WORK=${WORK:-target/gpu-acceptance-work}
BUDGET_S=${BUDGET_S:-540}
ITERATIONS=${ITERATIONS:-10}
WARMUP=${WARMUP:-3}
TRAIN_ITERATIONS=${TRAIN_ITERATIONS:-40}
STAGE=${STAGE:-target/gpu-stage}
CARRY_LIMIT=$((64 * 1024 * 1024))
BINARIES=(rccr-train rccr-export rccr-infer)
SCRIPTS=(scripts/gpu-acceptance.sh scripts/gpu/env.sh scripts/gpu/report.py
    scripts/peer/rccr_iteration.py scripts/stage-ort-cuda.sh scripts/torchrun)
# The R101 settings every speed figure uses (the bench's, the paper's run's).
NET=(--backbone resnet101 --crop 512 --batch-size 2)
SIZE=1024x512
# What --rehearse replaces: the device, the fast precision, the collective backend and
# the inference provider.
DEVICE=cuda
FAST=bf16
DIST=nccl
PROVIDER=cuda
REHEARSE=0
rehearse() {
    REHEARSE=1
    DEVICE=cpu FAST=fp32 DIST=gloo PROVIDER=cpu
    NET=(--backbone small --crop 64 --batch-size 2)
    SIZE=128x64 ITERATIONS=2 WARMUP=1 TRAIN_ITERATIONS=4
    REPORTS=${OUT:-target/gpu-acceptance-rehearsal}
    WORK=${WORK_GIVEN:-target/gpu-acceptance-rehearsal-work}
}

die() {
    echo "gpu-acceptance: error: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ the run's steps
START=$(date +%s)
FAILED=0
UNAVAILABLE=100

elapsed() { echo $(($(date +%s) - START)); }

# run_step NAME TIMEOUT FUNCTION: runs FUNCTION (its JSON files go to $WORK/NAME) with a
# time limit, or skips it when the budget is spent; records the outcome in the report.
# FUNCTION returns $UNAVAILABLE when what it needs is absent (its note in $WORK/NAME/note).
run_step() {
    local name=$1 limit=$2 fn=$3 left t0 rc status dir="$WORK/$1"
    left=$((BUDGET_S - $(elapsed)))
    if [ "$left" -lt 15 ]; then
        echo "== $name: skipped (time budget of ${BUDGET_S}s spent)"
        "$PYR" scripts/gpu/report.py step "$REPORT" "$name" skipped --note "time budget spent"
        return 0
    fi
    [ "$limit" -le "$left" ] || limit=$left
    rm -rf "$dir" && mkdir -p "$dir"
    echo "== $name (at most ${limit}s; $(elapsed)s into the run)"
    t0=$(date +%s)
    STEP_DIR=$dir STEP_LIMIT=$limit "$fn"
    rc=$?
    case $rc in
    0) status=ok ;;
    "$UNAVAILABLE") status=unavailable ;;
    124 | 137) status=failed; echo "note: timed out after ${limit}s" >"$dir/note" ;;
    *) status=failed ;;
    esac
    [ "$status" = failed ] && FAILED=1
    local args=(--seconds "$(($(date +%s) - t0))")
    [ -f "$dir/note" ] && args+=(--note "$(head -c 600 "$dir/note")")
    for j in "$dir"/*.json; do [ -f "$j" ] && args+=(--json "$j"); done
    "$PYR" scripts/gpu/report.py step "$REPORT" "$name" "$status" "${args[@]}"
    echo "== $name: $status"
}

# t CMD...: CMD under the step's time limit (killed 10 s after it, with its children).
t() { timeout --kill-after=10 "$STEP_LIMIT" "$@"; }

step_versions() {
    nvidia-smi || true
    "$PY" scripts/gpu/report.py versions >"$STEP_DIR/versions.json" && cat "$STEP_DIR/versions.json"
}

# bench_step PRECISION [FLAGS...]: rccr-train bench, baseline and rccr.
bench_step() {
    local p=$1 tag
    shift
    tag=$(basename "$STEP_DIR")
    t "$BIN/rccr-train" bench "${NET[@]}" --device "$DEVICE" --mode rccr --precision "$p" \
        --iterations "$ITERATIONS" --warmup "$WARMUP" --json-out "$STEP_DIR/$tag.json" "$@"
}
step_bench_bf16() { bench_step "$FAST"; }
step_bench_fp32() { bench_step fp32; }
step_bench_bf16_cl() { bench_step "$FAST" --channels-last; }

# peer_step TAG PRECISION: the PyTorch peer, then its comparison with bench-TAG.
peer_step() {
    local tag=$1 p=$2
    t "$PY" scripts/peer/rccr_iteration.py "${NET[@]}" --device "$DEVICE" --precision "$p" \
        --iterations "$ITERATIONS" --warmup "$WARMUP" --json-out "$STEP_DIR/peer-$tag.json" || return $?
    local ours="$WORK/bench-$tag/bench-$tag.json"
    [ -f "$ours" ] || { echo "no rccr-train figures (bench-$tag) to compare with" >"$STEP_DIR/note"; return 0; }
    "$PYR" scripts/gpu/report.py compare "$ours" "$STEP_DIR/peer-$tag.json" >"$STEP_DIR/compare-$tag.json" &&
        cat "$STEP_DIR/compare-$tag.json"
}
step_peer_bf16() { peer_step bf16 "$FAST"; }
step_peer_fp32() { peer_step fp32 fp32; }

step_synth() {
    rm -rf "$DATA"
    t "$BIN/rccr-train" synth --out "$DATA" --count 4 --val-count 4 --size "$SIZE" >"$STEP_DIR/synth.json"
}

# train_args OUT ITERATIONS: a ResNet-101 bf16 rccr run on the synthetic data.
train_args() {
    echo --mode rccr --source "gta5:$DATA/gta5" --target "cityscapes:$DATA/cityscapes" \
        --out "$1" --iterations "$2" --val-every "$2" --save-every "$2" \
        --source-size "$SIZE" --target-size "$SIZE" --val-size "$SIZE" \
        "${NET[@]}" --precision "$FAST" --device "$DEVICE" --workers 8
}

# last_line FILE KIND OUT: the last metrics.jsonl record of KIND (train / val) as JSON.
last_line() { grep "\"kind\":\"$2\"" "$1" | tail -n 1 >"$3"; [ -s "$3" ]; }

step_nccl_train() {
    local run="$WORK/nccl-run"
    rm -rf "$run"
    # shellcheck disable=SC2046
    t scripts/torchrun --no-python --nproc-per-node 1 "$BIN/rccr-train" train \
        $(train_args "$run" 4) --val-limit 1 --dist-backend "$DIST" --sync-bn || return $?
    last_line "$run/metrics.jsonl" train "$STEP_DIR/nccl-train.json"
}

step_nccl_bench() {
    t scripts/torchrun --no-python --nproc-per-node 1 "$BIN/rccr-train" bench "${NET[@]}" \
        --device "$DEVICE" --mode rccr --precision "$FAST" --dist-backend "$DIST" \
        --iterations "$ITERATIONS" --warmup "$WARMUP" --json-out "$STEP_DIR/nccl-bench.json"
}

step_train() {
    rm -rf "$RUN"
    # shellcheck disable=SC2046
    t "$BIN/rccr-train" train $(train_args "$RUN" "$TRAIN_ITERATIONS") || return $?
    last_line "$RUN/metrics.jsonl" train "$STEP_DIR/train-last.json"
    last_line "$RUN/metrics.jsonl" val "$STEP_DIR/val-last.json"
    ls "$RUN"/checkpoints/iter_*.safetensors >/dev/null || { echo "no checkpoint written" >"$STEP_DIR/note"; return 1; }
}

step_export() {
    local ckpt
    ckpt=$(ls "$RUN"/checkpoints/iter_*.safetensors 2>/dev/null | sort | tail -n 1)
    [ -n "$ckpt" ] || { echo "no checkpoint (step train failed)" >"$STEP_DIR/note"; return 1; }
    t "$BIN/rccr-export" --checkpoint "$ckpt" --out "$WORK/model-fp32.onnx" --json >"$STEP_DIR/export-fp32.json" &&
        t "$BIN/rccr-export" --checkpoint "$ckpt" --out "$WORK/model-fp16.onnx" --fp16 --json >"$STEP_DIR/export-fp16.json"
}

# ONNX Runtime with the CUDA provider, staged by scripts/stage-ort-cuda.sh.
step_ort() {
    if [ "$REHEARSE" = 1 ]; then
        : >"$WORK/ort.env" # the CPU ONNX Runtime rccr-infer was built against
        return 0
    fi
    if [ ! -f "$STAGE/manifest" ]; then
        echo "ONNX Runtime's CUDA provider was not staged (scripts/stage-ort-cuda.sh pack here, receive there: docs/gpu-acceptance.md)" >"$STEP_DIR/note"
        return "$UNAVAILABLE"
    fi
    rm -f "$WORK/ort.env"
    t scripts/stage-ort-cuda.sh assemble || return $?
    scripts/stage-ort-cuda.sh env >"$WORK/ort.env.tmp" || return $?
    mv "$WORK/ort.env.tmp" "$WORK/ort.env" && cat "$WORK/ort.env"
}

ort_env() { [ -f "$WORK/ort.env" ] && . "$WORK/ort.env"; }

step_infer() {
    ort_env || { echo "no ONNX Runtime (step ort)" >"$STEP_DIR/note"; return "$UNAVAILABLE"; }
    local val="$DATA/cityscapes/leftImg8bit/val" labels="$DATA/cityscapes/gtFine/val" p
    for p in "$PROVIDER" cpu; do
        t "$BIN/rccr-infer" --model "$WORK/model-fp32.onnx" --images "$val" --labels "$labels" \
            --input-size "$SIZE" --provider "$p" --out "$WORK/pred-$p" --json "$STEP_DIR/infer-$p.json" --quiet || return $?
    done
    t "$BIN/rccr-infer" score --pred "$WORK/pred-$PROVIDER/labelIds" --labels "$WORK/pred-cpu/labelIds" \
        --json "$WORK/score.json" --quiet || return $?
    "$PYR" scripts/gpu/report.py agreement "$WORK/score.json" >"$STEP_DIR/agreement.json"
    cat "$STEP_DIR/agreement.json"
    "$PYR" - "$STEP_DIR" "$PROVIDER" <<'PY'
import json, sys
d, want = sys.argv[1], sys.argv[2]
ran = json.load(open(f"{d}/infer-{want}.json")).get("provider")
agree = json.load(open(f"{d}/agreement.json"))["pixel_agreement"]
print(f"provider that ran: {ran}; pixel agreement with the CPU provider: {100 * agree:.4f} %")
sys.exit(0 if ran == want and agree >= 0.999 else 1)
PY
}

step_infer_bench() {
    ort_env || { echo "no ONNX Runtime (step ort)" >"$STEP_DIR/note"; return "$UNAVAILABLE"; }
    local m b
    for m in fp32 fp16; do
        for b in 1 8; do
            t "$BIN/rccr-infer" bench --model "$WORK/model-$m.onnx" --provider "$PROVIDER" --batch-size "$b" \
                --input-size "$SIZE" --iterations 30 --warmup 5 --json "$STEP_DIR/bench-$m-b$b.json" || return $?
        done
    done
}

step_tensorrt() {
    ort_env || { echo "no ONNX Runtime (step ort)" >"$STEP_DIR/note"; return "$UNAVAILABLE"; }
    if t "$BIN/rccr-infer" bench --model "$WORK/model-fp32.onnx" --provider tensorrt --batch-size 1 \
        --input-size "$SIZE" --iterations 5 --warmup 2 --json "$STEP_DIR/bench-tensorrt.json" 2>"$WORK/trt.err"; then
        return 0
    fi
    cat "$WORK/trt.err"
    { echo -n "unavailable: "; grep -v '^\s*$' "$WORK/trt.err" | tail -n 2 | tr '\n' ' '; } >"$STEP_DIR/note"
    return "$UNAVAILABLE"
}

run_all() {
    [ -x "$BIN/rccr-train" ] || die "$BIN/rccr-train not found: build with 'cargo build --release --workspace' here and carry target/release/{rccr-train,rccr-export,rccr-infer}"
    [ "$REHEARSE" = 1 ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } ||
        die "no NVIDIA GPU visible (nvidia-smi): run this on the GPU host, or --dry-run / --rehearse here"
    DATA=$WORK/data
    RUN=$WORK/run
    . scripts/gpu/env.sh
    [ -n "$PY" ] || die "no python with torch found (set PYTHON)"
    PYR=$PY
    mkdir -p "$REPORTS" "$WORK"
    REPORT="$REPORTS/gpu-acceptance.json"
    "$PYR" scripts/gpu/report.py init "$REPORT" || die "cannot write $REPORT"
    echo "== torch $("$PY" -c 'import torch; print(torch.__version__)') at $TORCH_LIB; budget ${BUDGET_S}s"
    # Priority order: the bf16 speed figures, then the functional checks, then the rest.
    run_step versions 60 step_versions
    run_step bench-bf16 150 step_bench_bf16
    run_step peer-bf16 150 step_peer_bf16
    run_step synth 90 step_synth
    run_step nccl-train 120 step_nccl_train
    run_step nccl-bench 120 step_nccl_bench
    run_step train 150 step_train
    run_step export 120 step_export
    run_step ort 60 step_ort
    run_step infer-cuda-vs-cpu 150 step_infer
    run_step infer-bench 120 step_infer_bench
    run_step tensorrt 60 step_tensorrt
    run_step bench-fp32 150 step_bench_fp32
    run_step peer-fp32 150 step_peer_fp32
    run_step bench-bf16-cl 150 step_bench_bf16_cl
    "$PYR" scripts/gpu/report.py goals "$REPORT"
    echo "== report: $REPORT ($(elapsed)s in all)"
    return $FAILED
}

# run_all with its output also in $REPORTS/gpu-acceptance.log.
run_logged() {
    mkdir -p "$REPORTS" || die "cannot create $REPORTS"
    run_all 2>&1 | tee "$REPORTS/gpu-acceptance.log"
    return "${PIPESTATUS[0]}"
}

# ------------------------------------------------------------------ --dry-run
# The options the run passes, per command; each must appear in that command's --help.
OPTIONS=(
    "rccr-train bench:--backbone --crop --batch-size --device --mode --precision --iterations --warmup --json-out --channels-last --dist-backend"
    "rccr-train synth:--out --count --val-count --size"
    "rccr-train train:--mode --source --target --out --iterations --val-every --save-every --source-size --target-size --val-size --backbone --crop --batch-size --precision --device --workers --val-limit --dist-backend --sync-bn"
    "rccr-export:--checkpoint --out --json --fp16"
    "rccr-infer:--model --images --labels --input-size --provider --out --json --quiet"
    "rccr-infer score:--pred --labels --json --quiet"
    "rccr-infer bench:--model --provider --batch-size --input-size --iterations --warmup --json"
)

CHECKS=0
check() {
    local name=$1 status=$2 note=$3
    "$PYR" scripts/gpu/report.py step "$REPORT" "$name" "$status" --note "$note"
    printf '   %-24s %-8s %s\n' "$name" "$status" "$note"
    [ "$status" = failed ] && CHECKS=1
    return 0
}

dry_scripts() {
    local s bad=""
    for s in "${SCRIPTS[@]}"; do
        [ -x "$s" ] || bad="$bad $s(not executable)"
        case $s in
        *.py) PYTHONPYCACHEPREFIX="$WORK/pycache" "$PYR" -m py_compile "$s" 2>/dev/null || bad="$bad $s(syntax)" ;;
        *) bash -n "$s" 2>/dev/null || bad="$bad $s(syntax)" ;;
        esac
    done
    if [ -z "$bad" ]; then check scripts ok "${#SCRIPTS[@]} scripts present, executable, parse"; else check scripts failed "$bad"; fi
}

dry_binaries() {
    local b missing=""
    for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || missing="$missing $b"; done
    if [ -n "$missing" ]; then
        check binaries failed "missing in $BIN:$missing: build them with 'cargo build --release --workspace'"
        return 1
    fi
    check binaries ok "$(for b in "${BINARIES[@]}"; do printf '%s %s MiB; ' "$b" $(($(stat -c %s "$BIN/$b") / 1048576)); done)"
}

dry_options() {
    local entry cmd opts help o bad=""
    for entry in "${OPTIONS[@]}"; do
        cmd=${entry%%:*}
        opts=${entry#*:}
        # shellcheck disable=SC2086
        help=$("$BIN"/$cmd --help 2>&1) || { bad="$bad [$cmd --help fails]"; continue; }
        for o in $opts; do grep -qE -- "(^|[ ,])$o([ ,=<]|\$)" <<<"$help" || bad="$bad [$cmd $o]"; done
    done
    if [ -z "$bad" ]; then check options ok "every option the run uses is in its command's --help"; else check options failed "unknown:$bad"; fi
}

# The shared libraries the binaries load: in the torch wheel's lib folder (the GPU host's
# venv has the same PyPI torch 2.11 + CUDA 13 layout as .deps/torch), the system, or the
# NVIDIA driver (libcuda.so.1, present only on the GPU host).
dry_libraries() {
    local lib_dir=${TORCH_LIB:-.deps/torch/torch/lib} b lib missing="" cuda="" system
    system=$(ldconfig -p | awk 'NR > 1 {print $1}')
    for b in "${BINARIES[@]}"; do
        for lib in $(readelf -d "$BIN/$b" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
            [ "$lib" = libtorch_cuda.so ] && [ "$b" = rccr-train ] && cuda=yes
            [ -e "$lib_dir/$lib" ] || grep -qFx "$lib" <<<"$system" || [ "$lib" = libcuda.so.1 ] ||
                missing="$missing $b:$lib"
        done
    done
    if [ -n "$missing" ]; then
        check libraries failed "not found in $lib_dir or the system:$missing"
    elif [ -z "$cuda" ]; then
        check libraries failed "rccr-train does not link libtorch_cuda.so: built without CUDA/NCCL (make setup installs the CUDA headers; rebuild)"
    else
        check libraries ok "all found (torch wheel lib folder or system); rccr-train links libtorch_cuda.so (CUDA, NCCL)"
    fi
}

# Bytes of the working tree that travels with every device call: tracked and untracked
# files that git does not ignore.
tree_bytes() {
    git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

dry_carry() {
    local tree bins=0 b total chunks=() c
    tree=$(tree_bytes)
    for b in "${BINARIES[@]}"; do bins=$((bins + $(stat -c %s "$BIN/$b" 2>/dev/null || echo 0))); done
    total=$((tree + bins))
    local mib="tree $((tree / 1048576)) MiB + binaries $((bins / 1048576)) MiB = $((total / 1048576)) MiB of 64"
    if [ "$total" -gt "$CARRY_LIMIT" ]; then check carry-main failed "$mib"; else check carry-main ok "$mib"; fi
    if [ ! -f "$STAGE/manifest" ]; then
        check carry-ort pending "ONNX Runtime's CUDA provider not staged: run 'scripts/stage-ort-cuda.sh pack' before the GPU session"
        return 0
    fi
    local bad="" m
    m=$(stat -c %s "$STAGE/manifest")
    for c in "$STAGE"/chunk-*; do
        chunks+=("$c")
        [ $((tree + m + $(stat -c %s "$c"))) -le "$CARRY_LIMIT" ] || bad="$bad $c"
    done
    if [ -n "$bad" ]; then check carry-ort failed "over 64 MiB with the tree:$bad (pack with a smaller CHUNK_MB)"; else
        check carry-ort ok "${#chunks[@]} chunk call(s), each chunk + manifest + tree under 64 MiB"; fi
}

print_plan() {
    local c
    echo "== device calls, back to back (docs/gpu-acceptance.md):"
    for c in "$STAGE"/chunk-*; do
        [ -f "$c" ] && echo "   run carry=[$c, $STAGE/manifest] command='scripts/stage-ort-cuda.sh receive'"
    done
    echo "   run carry=[target/release/rccr-train, target/release/rccr-export, target/release/rccr-infer] timeout_s=600 command='scripts/gpu-acceptance.sh'"
}

dry_run() {
    PYR=${PYTHON:-python3}
    command -v "$PYR" >/dev/null 2>&1 || die "no python3 for the JSON report"
    mkdir -p "$REPORTS" "$WORK"
    REPORT="$REPORTS/dry-run.json"
    "$PYR" scripts/gpu/report.py init "$REPORT" || die "cannot write $REPORT"
    TORCH_LIB=""
    [ -d .deps/torch/torch/lib ] && TORCH_LIB=.deps/torch/torch/lib
    echo "== gpu-acceptance --dry-run"
    dry_scripts
    if dry_binaries; then
        dry_options
        dry_libraries
    fi
    dry_carry
    if out=$("$PYR" scripts/gpu/report.py selftest 2>&1); then
        check json-writer ok "report.py selftest: init, step, compare, agreement, goals"
    else
        check json-writer failed "report.py selftest: $out"
    fi
    print_plan
    echo "== dry-run report: $REPORT"
    return $CHECKS
}

case ${1:-} in
--dry-run) dry_run ;;
--rehearse) rehearse && run_logged ;;
"") run_logged ;;
-h | --help)
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    ;;
*)
    echo "usage: scripts/gpu-acceptance.sh [--dry-run | --rehearse]" >&2
    exit 2
    ;;
esac
