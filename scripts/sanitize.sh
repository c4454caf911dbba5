#!/usr/bin/env bash
# The C ABI under sanitizers (docs/hardening.md, "Sanitizers"): librccr_infer built with
# the nightly toolchain's -Zsanitizer (std rebuilt with -Zbuild-std, so every Rust frame
# is instrumented) and the C example (infer/examples/c/segment.c) plus the multi-threaded
# stress program (infer/examples/c/stress.c) built with gcc's -fsanitize, run under
#   address: AddressSanitizer + LeakSanitizer (out-of-bounds, use-after-free, leaks);
#   thread:  ThreadSanitizer (data races, lock-order inversions).
# ONNX Runtime is a prebuilt, uninstrumented library: reports inside its own frames are
# suppressed (the suppression files written below name only libonnxruntime), ours are not.
# Needs: rustup nightly with rust-src, gcc.
#   scripts/sanitize.sh [address|thread ...]     (default: both)
#   STRESS="HANDLES THREADS ITERATIONS" (default "3 3 12")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KINDS=("$@")
[[ ${#KINDS[@]} == 0 ]] && KINDS=(address thread)
read -r HANDLES PER ITER <<<"${STRESS:-3 3 12}"
TRIPLE=x86_64-unknown-linux-gnu
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rccr-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PY="env PYTHONPATH=$ROOT/.deps/py python3"

$PY infer/tests/support/make_model.py "$WORK/m.onnx" --outputs labels,logits
# Two PPM frames of palette colours for the C example.
python3 - "$WORK" <<'PY'
import sys
for name, (w, h, rgb) in {"a.ppm": (64, 32, (128, 64, 128)), "b.ppm": (50, 30, (220, 20, 60))}.items():
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h) + bytes(rgb) * (w * h))
PY

printf 'leak:libonnxruntime.so\n' >"$WORK/lsan.supp"
printf 'race:libonnxruntime.so\nmutex:libonnxruntime.so\nmutex:__run_exit_handlers\ncalled_from_lib:libonnxruntime.so\n' >"$WORK/tsan.supp"

for kind in "${KINDS[@]}"; do
    case $kind in
    address) cflag=address ;;
    thread) cflag=thread ;;
    *) echo "sanitize: unknown sanitizer $kind (address or thread)" >&2; exit 2 ;;
    esac
    target="target/sanitize/$kind"
    echo "sanitize: building librccr_infer with -Zsanitizer=$kind (nightly, -Zbuild-std) into $target"
    RUSTFLAGS="-Zsanitizer=$kind -Cdebuginfo=1" CARGO_TARGET_DIR=$target \
        cargo +nightly build --release -Zbuild-std --target $TRIPLE -p rccr-infer --example rccr_infer \
        2>"$WORK/build-$kind.log" || { tail -30 "$WORK/build-$kind.log"; exit 1; }
    lib="$ROOT/$target/$TRIPLE/release/examples"
    extra=()
    if [[ $kind == thread ]]; then
        # rustc's LLVM emits __tsan_mem{cpy,set,move}, which gcc 12's libtsan lacks: plain
        # forwards to the C functions, which libtsan intercepts (and so checks).
        cat >"$WORK/tsan_mem.c" <<'C'
#include <string.h>
void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }
void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }
C
        extra=("$WORK/tsan_mem.c" -rdynamic)
    fi
    for prog in segment stress; do
        gcc -O1 -g -fno-omit-frame-pointer -fsanitize=$cflag -Wall -Wextra -std=c11 \
            -Iinfer/include "infer/examples/c/$prog.c" "${extra[@]}" -o "$WORK/$prog-$kind" \
            -L"$lib" -lrccr_infer -Wl,-rpath,"$lib" -lpthread
    done
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1"
    export LSAN_OPTIONS="suppressions=$WORK/lsan.supp:print_suppressions=0"
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$WORK/tsan.supp:print_suppressions=0"
    echo "sanitize: $kind: segment.c"
    mkdir -p "$WORK/out-$kind"
    "$WORK/segment-$kind" --provider cpu --threads 1 "$WORK/m.onnx" "$WORK/out-$kind" \
        "$WORK/a.ppm" "$WORK/b.ppm" 2>&1 | tee "$WORK/segment-$kind.log"
    # The example's own checks: one output per frame.
    [[ -s "$WORK/out-$kind/a.pgm" && -s "$WORK/out-$kind/b.pgm" ]]
    echo "sanitize: $kind: stress.c ($HANDLES handles x $PER threads x $ITER iterations)"
    "$WORK/stress-$kind" "$WORK/m.onnx" "$HANDLES" "$PER" "$ITER" 2>&1 | tee "$WORK/stress-$kind.log"
    if grep -q "Sanitizer" "$WORK/segment-$kind.log" "$WORK/stress-$kind.log"; then
        echo "sanitize: $kind: the sanitizer reported an error (above)" >&2
        exit 1
    fi
    echo "sanitize: $kind: clean"
done
echo "sanitize: passed (${KINDS[*]})"
