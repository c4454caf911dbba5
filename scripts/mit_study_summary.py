#!/usr/bin/env python3
"""Summary of scripts/mit_study.sh: each network and mode at equal CPU time, target val
mIoU with a 95 % Student-t interval over seeds, the CPU minutes it really took (warm start
+ mode, user + sys), mIoU per CPU minute, and paired differences by seed: each MiT against
small in the same mode, and baseline / rccr against source-only and rccr against baseline
within a network. Writes OUT/summary.md and OUT/summary.json.

  mit_study_summary.py OUT
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_summary import fmt, stats  # noqa: E402  (one t table for every study)

MODES = ["source-only", "baseline", "rccr"]


def load(out):
    runs = {}
    for f in glob.glob(os.path.join(out, "runs", "*", "result.json")):
        r = json.load(open(f))
        if "net" in r:
            runs[(r["net"], r["mode"], r["seed"])] = r
    return runs


def minutes(r):
    return (r["cpu_seconds_warm"] + r["cpu_seconds_mode"]) / 60


def table(runs, nets, md, js):
    md.append("| network | mode | iterations (warm + mode) | CPU min | target val mIoU [95 % CI] | "
              "held-out mIoU | mIoU per CPU min | seeds |")
    md.append("|---|---|---|---|---|---|---|---|")
    for net in nets:
        for mode in MODES:
            rs = [r for (n, m, _), r in sorted(runs.items()) if n == net and m == mode]
            if not rs:
                continue
            t = stats([100 * r["target_miou"] for r in rs])
            h = stats([100 * r["holdout_miou"] for r in rs])
            cpu = sum(map(minutes, rs)) / len(rs)
            rate = stats([100 * r["target_miou"] / minutes(r) for r in rs])
            ci = f"{t[1]:.2f}" + (f" [{t[1] - t[3]:.2f}, {t[1] + t[3]:.2f}]" if t[3] else "")
            md.append(f"| {net} | {mode} | {rs[0]['warm_iterations']} + {rs[0]['iterations']} | "
                      f"{cpu:.2f} | {ci} | {h[1]:.2f} | {rate[1]:.2f} | {len(rs)} |")
            js.setdefault("arms", []).append({
                "net": net, "mode": mode, "seeds": [r["seed"] for r in rs],
                "warm_iterations": rs[0]["warm_iterations"], "iterations": rs[0]["iterations"],
                "cpu_minutes_mean": cpu, "target_miou": t[1], "target_ci95": t[3],
                "holdout_miou": h[1], "miou_per_cpu_minute": rate[1],
                "per_seed_target": [100 * r["target_miou"] for r in rs]})


def diff(runs, a, b, md, js, label):
    """Paired by seed: run a minus run b, a and b as (net, mode)."""
    d = [100 * (runs[(*a, s)]["target_miou"] - runs[(*b, s)]["target_miou"])
         for (n, m, s) in sorted(runs) if (n, m) == a and (*b, s) in runs]
    h = [100 * (runs[(*a, s)]["holdout_miou"] - runs[(*b, s)]["holdout_miou"])
         for (n, m, s) in sorted(runs) if (n, m) == a and (*b, s) in runs]
    if not d:
        return
    md.append(f"| {label} | {fmt(stats(d))} | {fmt(stats(h))} |")
    js.setdefault("paired", []).append({"label": label, "target": stats(d), "holdout": stats(h),
                                        "per_seed_target": d})


def int8(out, md, js):
    """int8 minus fp32 target val mIoU of each exported rccr teacher (rccr-infer scores)."""
    rows = []
    for f in sorted(glob.glob(os.path.join(out, "runs", "*-rccr-s*", "int8.json"))):
        d = os.path.dirname(f)
        miou = lambda p: 100 * json.load(open(os.path.join(d, p + ".json")))["miou"]
        rows.append((os.path.basename(d), miou("fp32"), miou("int8")))
    if not rows:
        return
    md += ["", "### int8 on the adapted MiT teachers (rccr-infer, target val mIoU %)\n",
           "| run | fp32 | int8 | int8 - fp32 |", "|---|---:|---:|---:|"]
    md += [f"| {n} | {a:.2f} | {b:.2f} | {b - a:+.2f} |" for n, a, b in rows]
    st = stats([b - a for _, a, b in rows])
    md.append(f"\nint8 - fp32 over the {len(rows)} models: {fmt(st)}")
    js["int8"] = {"runs": rows, "diff": st}


def main():
    out = sys.argv[1]
    runs = load(out)
    nets = [n for n in ["small", "mit-b0", "mit-b1", "mit-b2"] if any(k[0] == n for k in runs)]
    plan = json.load(open(os.path.join(out, "plan.json")))
    md = [f"## MiT vs small at equal CPU time ({plan['budget_min']} CPU minutes per arm, "
          f"{plan['warm_share']:.0%} of it the source-only warm start; MiT AdamW rate "
          f"{plan['mit_lr']} chosen on gta5-val)\n"]
    js = {"plan": plan}
    table(runs, nets, md, js)
    md += ["", "### Paired differences by seed (mIoU points, 95 % t interval)\n",
           "| pair | target val | held-out |", "|---|---|---|"]
    for net in nets[1:]:
        for mode in MODES:
            diff(runs, (net, mode), ("small", mode), md, js, f"{net} - small, {mode}")
    for net in nets:
        diff(runs, (net, "baseline"), (net, "source-only"), md, js, f"{net}: baseline - source-only")
        diff(runs, (net, "rccr"), (net, "baseline"), md, js, f"{net}: rccr - baseline")
    int8(out, md, js)
    open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
    json.dump(js, open(os.path.join(out, "summary.json"), "w"), indent=1)
    print("\n".join(md))


if __name__ == "__main__":
    main()
