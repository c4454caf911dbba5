#!/usr/bin/env bash
# Long-run soak of inference (docs/hardening.md, "Soak"): rccr-infer over COUNT generated
# images (default 10,000; sizes 8..96 x 8..64, PNG and JPEG, one in fifty corrupt) with its
# resident memory sampled, then the C ABI in one long-running process (infer/examples/c/
# stress.c: several handles and threads, handles opened and closed over and over) sampled
# the same way. Passes when every good image has an output whose train ids are right, every
# bad file is reported, and resident memory after warm-up (the first quarter of the
# samples) grows by at most SOAK_RSS_GROWTH_MIB (default 16) in both runs.
#   scripts/soak.sh [COUNT]          (first: make build, or cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
GROWTH=${SOAK_RSS_GROWTH_MIB:-16}
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rccr-soak.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PY="env PYTHONPATH=$ROOT/.deps/torch:$ROOT/.deps/py python3"

echo "soak: building (release)"
cargo build --release -p rccr-infer --bin rccr-infer --example rccr_infer >/dev/null 2>&1 ||
    cargo build --release -p rccr-infer --bin rccr-infer --example rccr_infer
gcc -O2 -Wall -Wextra -std=c11 -Iinfer/include infer/examples/c/stress.c -o "$WORK/stress" \
    -Ltarget/release/examples -lrccr_infer -Wl,-rpath,"$ROOT/target/release/examples" -lpthread
$PY infer/tests/support/make_model.py "$WORK/m.onnx" --outputs labels

echo "soak: generating $COUNT images"
$PY - "$WORK/images" "$COUNT" <<'PY'
import io, os, random, sys
from PIL import Image
sys.path.insert(0, "infer/tests/support")
from make_model import PALETTE
out, count = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
rng = random.Random(21)
bad = []
for i in range(count):
    k = i % len(PALETTE)
    w, h = rng.randint(8, 96), rng.randint(8, 64)
    jpeg = i % 7 == 3
    name = f"{i:05d}_{k:02d}.{'jpg' if jpeg else 'png'}"
    path = os.path.join(out, name)
    buf = io.BytesIO()
    Image.new("RGB", (w, h), tuple(PALETTE[k])).save(buf, format="JPEG" if jpeg else "PNG",
                                                     **({"quality": 100} if jpeg else {}))
    data = buf.getvalue()
    if i % 50 == 17:  # corrupt: truncated, random bytes, empty, a header only
        data = [data[: len(data) // 2], os.urandom(200), b"", data[:33]][(i // 50) % 4]
        bad.append(name)
    with open(path, "wb") as f:
        f.write(data)
with open(os.path.join(os.path.dirname(out), "bad.txt"), "w") as f:
    f.write("\n".join(bad) + "\n")
PY

# Samples VmRSS (KiB) of process $1 every 0.1 s into $2 until it exits.
sample_rss() {
    while [[ -r /proc/$1/status ]]; do
        awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null >>"$2" || true
        sleep 0.1
    done
}

# Checks the samples in $1 (label $2): growth after warm-up at most $GROWTH MiB.
check_rss() {
    python3 - "$1" "$2" "$GROWTH" <<'PY'
import sys
rss = [int(l) for l in open(sys.argv[1]) if l.strip()]
label, bound = sys.argv[2], float(sys.argv[3])
if len(rss) < 8:
    sys.exit(f"soak: {label}: only {len(rss)} RSS samples, run longer (more images)")
warm = rss[len(rss) // 4:]
growth = (max(warm) - warm[0]) / 1024
print(f"soak: {label}: {len(rss)} samples, RSS peak {max(rss) / 1024:.1f} MiB, after warm-up "
      f"{warm[0] / 1024:.1f} -> {warm[-1] / 1024:.1f} MiB (max {max(warm) / 1024:.1f}), "
      f"growth {growth:.1f} MiB (bound {bound} MiB)")
if growth > bound:
    sys.exit(f"soak: {label}: resident memory grew {growth:.1f} MiB after warm-up")
PY
}

echo "soak: rccr-infer over $COUNT images"
start=$(date +%s)
set +e
./target/release/rccr-infer --model "$WORK/m.onnx" --images "$WORK/images" --out "$WORK/out" \
    --json "$WORK/report.json" --input-size 64x32 --batch-size 4 --threads 1 --workers 1 \
    --provider cpu --quiet >"$WORK/cli.log" 2>&1 &
pid=$!
sample_rss $pid "$WORK/cli.rss" &
sampler=$!
wait $pid
rc=$?
wait $sampler
set -e
echo "soak: rccr-infer exited $rc after $(($(date +%s) - start)) s"
$PY - "$WORK" "$COUNT" <<'PY'
import json, os, sys
import numpy as np
from PIL import Image
work, count = sys.argv[1], int(sys.argv[2])
bad = set(open(os.path.join(work, "bad.txt")).read().split())
log = open(os.path.join(work, "cli.log")).read()
missing, wrong = [], []
for name in sorted(os.listdir(os.path.join(work, "images"))):
    stem, k = name.rsplit(".", 1)[0], int(name.split("_")[1].split(".")[0])
    out = os.path.join(work, "out", "trainIds", stem + ".png")
    if name in bad:
        if name not in log:
            missing.append(f"bad file {name} not reported")
        continue
    if not os.path.exists(out):
        missing.append(f"no output for {name}")
    elif not (np.asarray(Image.open(out)) == k).all():
        wrong.append(name)
print(f"soak: {count - len(bad)} outputs checked (each image's ids all equal its colour's "
      f"class), {len(bad)} bad files, {len(missing)} missing, {len(wrong)} wrong")
for m in (missing + wrong)[:10]:
    print("  ", m)
sys.exit(1 if missing or wrong else 0)
PY
check_rss "$WORK/cli.rss" "rccr-infer"

ITER=$((COUNT / 4))
echo "soak: C ABI, one process: 2 handles x 2 threads x $ITER iterations + 2 churn threads"
start=$(date +%s)
"$WORK/stress" "$WORK/m.onnx" 2 2 "$ITER" &
pid=$!
sample_rss $pid "$WORK/capi.rss" &
sampler=$!
set +e
wait $pid
rc=$?
set -e
wait $sampler
echo "soak: stress exited $rc after $(($(date +%s) - start)) s"
[[ $rc == 0 ]]
check_rss "$WORK/capi.rss" "C ABI"
echo "soak: passed"
