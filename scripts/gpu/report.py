#!/usr/bin/env python3
"""The JSON report of scripts/gpu-acceptance.sh (docs/gpu-acceptance.md): one file that
each step adds its result to (written atomically, so a run cut short still leaves valid
JSON), the versions of the GPU stack, the comparison of `rccr-train bench` with the
PyTorch peer (scripts/peer/rccr_iteration.py; both write the same field names) and the
goals of the acceptance. Standard library only, except `versions` (torch).

  report.py init FILE                         start a report
  report.py step FILE NAME STATUS [--seconds S] [--json F]... [--note TEXT]
                                              record one step (STATUS ok | failed |
                                              skipped | unavailable); each --json F is
                                              read and stored under the step's data
  report.py versions                          card, driver, CUDA, cuDNN, NCCL (JSON)
  report.py compare BENCH PEER                ms/iteration of both, the ratios (JSON)
  report.py agreement SCORE                   pixel agreement of two label folders
  report.py goals FILE                        evaluate the goals, print the summary
  report.py selftest                          exercise the writer in a temporary folder
"""

import json
import os
import subprocess
import sys
import tempfile
import time

SCHEMA = "rccr-gpu-acceptance-v1"
# The acceptance goals (docs/gpu-acceptance.md): R101 512x512 batch 2, bf16, one H200.
GOAL_RCCR_BF16_MS = 58.0
GOAL_PEER_SPEEDUP = 1.5
GOAL_CONTRASTIVE_RATIO = 1.45
GOAL_AGREEMENT = 0.999


def load(path):
    with open(path) as f:
        return json.load(f)


def save(path, obj):
    """Writes `obj` to `path` atomically (temporary file, then rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".report-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def cmd_init(path):
    save(path, {"schema": SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": os.uname().nodename, "steps": {}})


def cmd_step(path, name, status, args):
    rep = load(path)
    entry = {"status": status}
    data = {}
    i = 0
    while i < len(args):
        flag, value = args[i], args[i + 1] if i + 1 < len(args) else None
        if value is None:
            sys.exit(f"report.py step: {flag} needs a value")
        if flag == "--seconds":
            entry["seconds"] = round(float(value), 1)
        elif flag == "--note":
            entry["note"] = value
        elif flag == "--json":
            key = os.path.splitext(os.path.basename(value))[0]
            try:
                data[key] = load(value)
            except (OSError, ValueError) as e:
                data[key] = {"unreadable": f"{value}: {e}"}
        else:
            sys.exit(f"report.py step: unknown option {flag}")
        i += 2
    if data:
        entry["data"] = data
    rep["steps"][name] = entry
    rep["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save(path, rep)


def smi(*query):
    try:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def cmd_versions():
    v = {"nvidia_smi": smi("--query-gpu=name,memory.total,driver_version")}
    try:
        import torch
        v["torch"] = torch.__version__
        v["cuda"] = torch.version.cuda
        v["cuda_available"] = torch.cuda.is_available()
        v["cudnn"] = torch.backends.cudnn.version()
        if torch.cuda.is_available():
            v["gpu"] = torch.cuda.get_device_name(0)
            v["capability"] = list(torch.cuda.get_device_capability(0))
            n = torch.cuda.nccl.version()
            v["nccl"] = ".".join(map(str, n)) if isinstance(n, (tuple, list)) else str(n)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        v["torch_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(v))


def mode(report, name):
    return next((m for m in report.get("modes", []) if m.get("mode") == name), None)


def cmd_compare(bench_path, peer_path):
    ours, peer = load(bench_path), load(peer_path)
    out = {"precision": ours.get("precision"), "modes": {}}
    for name in ("baseline", "rccr"):
        a, b = mode(ours, name), mode(peer, name)
        if not (a and b):
            continue
        out["modes"][name] = {
            "rccr_train_ms": a["ms_per_iteration"], "peer_ms": b["ms_per_iteration"],
            "rccr_train_median_ms": a["ms_median"], "peer_median_ms": b["ms_median"],
            "peer_over_rccr_train": b["ms_per_iteration"] / a["ms_per_iteration"],
            "rccr_train_peak_mib": a.get("peak_memory_mib"), "peer_peak_mib": b.get("peak_memory_mib"),
        }
    out["rccr_over_baseline"] = {"rccr_train": ours.get("rccr_over_baseline"),
                                 "peer": peer.get("rccr_over_baseline")}
    print(json.dumps(out))


def cmd_agreement(score_path):
    s = load(score_path)
    print(json.dumps({"pixel_agreement": s.get("pixel_accuracy")}))


def step_data(rep, step, key):
    return rep["steps"].get(step, {}).get("data", {}).get(key)


def goal(name, value, op, bound):
    ok = None if value is None else (value <= bound if op == "<=" else value >= bound)
    return {"goal": name, "value": value, "bound": f"{op} {bound}", "met": ok}


def figures(rep):
    """The headline numbers of the run, one line each, for docs/gpu-acceptance.md."""
    out = {}
    v = step_data(rep, "versions", "versions") or {}
    if v:
        out["stack"] = (f"{v.get('gpu')} / driver {str(v.get('nvidia_smi', '')).split(', ')[-1]} / "
                        f"torch {v.get('torch')} / CUDA {v.get('cuda')} / cuDNN {v.get('cudnn')} / NCCL {v.get('nccl')}")
    for tag in ("bf16", "fp32", "bf16-cl"):
        b = step_data(rep, f"bench-{tag}", f"bench-{tag}")
        if b:
            ms = {m["mode"]: m for m in b.get("modes", [])}
            out[f"rccr-train {tag} ms (baseline / rccr, peak MiB)"] = " / ".join(
                f"{ms[n]['ms_per_iteration']:.1f}" for n in ("baseline", "rccr") if n in ms
            ) + f" ({(ms.get('rccr') or {}).get('peak_memory_mib')})"
    for tag in ("bf16", "fp32"):
        c = step_data(rep, f"peer-{tag}", f"compare-{tag}")
        if c and "rccr" in c.get("modes", {}):
            m = c["modes"]["rccr"]
            out[f"peer {tag} rccr ms, peer / rccr-train"] = f"{m['peer_ms']:.1f}, {m['peer_over_rccr_train']:.2f}x"
    nb = step_data(rep, "nccl-bench", "nccl-bench")
    if nb:
        r = mode(nb, "rccr") or {}
        out["NCCL world size 1: all-reduce ms (share)"] = f"{r.get('allreduce_ms')} ({r.get('allreduce_share')})"
    for m in ("fp32", "fp16"):
        b1 = step_data(rep, "infer-bench", f"bench-{m}-b1")
        b8 = step_data(rep, "infer-bench", f"bench-{m}-b8")
        if b1 and b8:
            out[f"rccr-infer {m}: b1 p50 / p99 ms, b8 images/s"] = (
                f"{b1['total_ms']['p50']:.2f} / {b1['total_ms']['p99']:.2f}, {b8['images_per_second']:.1f}")
    return out


def cmd_goals(path):
    rep = load(path)
    bench = step_data(rep, "bench-bf16", "bench-bf16") or {}
    cmp_ = step_data(rep, "peer-bf16", "compare-bf16") or {}
    rccr = mode(bench, "rccr") or {}
    speed = cmp_.get("modes", {}).get("rccr", {}).get("peer_over_rccr_train")
    agree = (step_data(rep, "infer-cuda-vs-cpu", "agreement") or {}).get("pixel_agreement")
    goals = [
        goal("rccr bf16 ms/iteration (R101 512x512 b2)", rccr.get("ms_per_iteration"), "<=", GOAL_RCCR_BF16_MS),
        goal("PyTorch peer ms / rccr-train ms (bf16 rccr)", speed, ">=", GOAL_PEER_SPEEDUP),
        goal("rccr / baseline iteration (bf16)", bench.get("rccr_over_baseline"), "<=", GOAL_CONTRASTIVE_RATIO),
        goal("CUDA vs CPU provider pixel agreement", agree, ">=", GOAL_AGREEMENT),
    ]
    rep["goals"] = goals
    rep["figures"] = figures(rep)
    save(path, rep)
    print("== figures")
    for k, v in rep["figures"].items():
        print(f"   {k:<46} {v}")
    print("== goals")
    for g in goals:
        v = "n/a" if g["value"] is None else f"{g['value']:.4g}"
        met = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        print(f"   {g['goal']:<46} {v:>10} (goal {g['bound']}): {met}")
    print("== steps")
    for name, s in rep["steps"].items():
        print(f"   {name:<22} {s['status']:<12} {s.get('seconds', ''):>7} {s.get('note', '')}")


def cmd_selftest():
    """The writer round trip on made-up inputs: init, steps with JSON, compare, goals."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "r.json")
        cmd_init(p)
        ours = {"precision": "bf16", "rccr_over_baseline": 1.4,
                "modes": [{"mode": "baseline", "ms_per_iteration": 40.0, "ms_median": 40.0},
                          {"mode": "rccr", "ms_per_iteration": 56.0, "ms_median": 55.0}]}
        peer = dict(ours, modes=[{"mode": "rccr", "ms_per_iteration": 112.0, "ms_median": 110.0}])
        for name, obj in (("bench-bf16", ours), ("peer", peer), ("score", {"pixel_accuracy": 0.9995})):
            save(os.path.join(d, name + ".json"), obj)
        cmd_step(p, "bench-bf16", "ok", ["--seconds", "3.54", "--json", os.path.join(d, "bench-bf16.json")])
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cmd_compare(os.path.join(d, "bench-bf16.json"), os.path.join(d, "peer.json"))
        save(os.path.join(d, "compare-bf16.json"), json.loads(buf.getvalue()))
        cmd_step(p, "peer-bf16", "ok", ["--json", os.path.join(d, "compare-bf16.json")])
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cmd_agreement(os.path.join(d, "score.json"))
        save(os.path.join(d, "agreement.json"), json.loads(buf.getvalue()))
        cmd_step(p, "infer-cuda-vs-cpu", "ok", ["--json", os.path.join(d, "agreement.json")])
        cmd_step(p, "tensorrt", "unavailable", ["--note", "libnvinfer.so.10 not found"])
        with contextlib.redirect_stdout(io.StringIO()):
            cmd_goals(p)
        rep = load(p)
        met = [g["met"] for g in rep["goals"]]
        # 56 <= 58, 112 / 56 = 2.0 >= 1.5, 1.4 <= 1.45, 0.9995 >= 0.999: all met.
        assert met == [True, True, True, True], rep["goals"]
        assert rep["steps"]["bench-bf16"]["seconds"] == 3.5
        assert rep["steps"]["bench-bf16"]["data"]["bench-bf16"]["modes"][1]["ms_per_iteration"] == 56.0
        assert rep["steps"]["tensorrt"] == {"status": "unavailable", "note": "libnvinfer.so.10 not found"}
    print(json.dumps({"selftest": "ok"}))


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, rest = argv[0], argv[1:]
    table = {
        "init": (1, lambda: cmd_init(rest[0])),
        "step": (3, lambda: cmd_step(rest[0], rest[1], rest[2], rest[3:])),
        "versions": (0, cmd_versions),
        "compare": (2, lambda: cmd_compare(rest[0], rest[1])),
        "agreement": (1, lambda: cmd_agreement(rest[0])),
        "goals": (1, lambda: cmd_goals(rest[0])),
        "selftest": (0, cmd_selftest),
    }
    if cmd not in table or len(rest) < table[cmd][0]:
        sys.exit(__doc__)
    table[cmd][1]()


if __name__ == "__main__":
    main(sys.argv[1:])
