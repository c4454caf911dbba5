#!/usr/bin/env python3
"""Summarises scripts/ladder.sh results: target mIoU mean and spread per run name."""
import json
import statistics
import sys

ORDER = ["source-only", "baseline", "+RWC", "+NS(R)", "+NS(C)", "+PS", "rccr", "oracle"]


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["run"], []).append(r)
    print("| run | target mIoU % (mean ± sd) | seeds | per seed | source-val mIoU % |")
    print("|---|---:|---:|---|---:|")
    for name in sorted(by, key=lambda n: ORDER.index(n) if n in ORDER else 99):
        ok = [r for r in by[name] if r["miou"] is not None and r["exit"] == 0]
        vals = [100 * r["miou"] for r in ok]
        mean = statistics.mean(vals) if vals else float("nan")
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        per = ", ".join(f"s{r['seed']}: {100 * r['miou']:.1f}" for r in sorted(ok, key=lambda r: r["seed"]))
        src = [100 * r["source_val_miou"] for r in ok if r.get("source_val_miou") is not None]
        src_s = f"{statistics.mean(src):.1f}" if src else ""
        failed = len(by[name]) - len(ok)
        print(f"| {name} | {mean:.1f} ± {sd:.1f} | {len(ok)}{f' ({failed} failed)' if failed else ''} | {per} | {src_s} |")


if __name__ == "__main__":
    main()
