#!/usr/bin/env bash
# Fuzzes every reader of user files (docs/hardening.md, "Fuzzing"): the cargo-fuzz targets
# of fuzz/ (libFuzzer + AddressSanitizer, nightly toolchain), each for SECONDS, seeded from
# fuzz/seeds/<target> (committed; `fuzz/make_seeds.py` rewrites them). The corpus grows in
# fuzz/corpus/<target> and is reused by later runs; a crashing, leaking, hanging (over 10 s)
# or over-allocating (over 2.5 GiB) input is written to fuzz/artifacts/<target>/ and fails
# the run. Needs: rustup nightly, `cargo install cargo-fuzz`, and `make setup` (libtorch).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default 600 s each, all targets)
#   FUZZ_PARALLEL=2 scripts/fuzz.sh 600       (two targets at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-600}
shift || true
TARGETS=("$@")
ALL=(pth safetensors onnx_metadata image label config)
[[ ${#TARGETS[@]} == 0 ]] && TARGETS=("${ALL[@]}")
PARALLEL=${FUZZ_PARALLEL:-1}
mkdir -p fuzz/logs

cargo +nightly fuzz build -O

fuzz_one() {
    local t=$1
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2560 -max_len=65536 \
        -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1
    echo $? >"fuzz/logs/$t.rc"
}

status=0
running=0
for t in "${TARGETS[@]}"; do
    [[ -d fuzz/seeds/$t ]] || { echo "fuzz: unknown target $t (${ALL[*]})" >&2; exit 2; }
    echo "fuzz: $t for $SECONDS_EACH s (log: fuzz/logs/$t.log)"
    rm -f "fuzz/logs/$t.rc"
    (set +e; fuzz_one "$t") &
    running=$((running + 1))
    if ((running >= PARALLEL)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
for t in "${TARGETS[@]}"; do
    if [[ $(cat "fuzz/logs/$t.rc" 2>/dev/null) == 0 ]]; then r=ok; else r=FAILED; status=1; fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/logs/$t.log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -oE 'cov: [0-9]+' "fuzz/logs/$t.log" | tail -1 | grep -o '[0-9]*' || echo '?')
    echo "fuzz: $t: $r, $runs inputs run, coverage $cov edges, corpus $(ls "fuzz/corpus/$t" | wc -l) files"
    if [[ $r == FAILED ]]; then
        grep -m3 -E "panicked|ERROR: |SUMMARY" "fuzz/logs/$t.log" | sed 's/^/    /' || true
        ls "fuzz/artifacts/$t" | sed "s|^|    fuzz/artifacts/$t/|"
    fi
done
exit $status
