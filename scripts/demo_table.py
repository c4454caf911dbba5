#!/usr/bin/env python3
"""Prints a markdown table of the final validation (target mIoU per class) of several runs.

usage: demo_table.py RUNS_DIR MODE[:RECIPE] ...   (reads RUNS_DIR/MODE/metrics.jsonl; a
column is headed by its mode and the recipe file it trained with)
"""
import json
import sys


def last_val(path):
    val = None
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind") == "val":
                val = rec
    if val is None:
        sys.exit(f"{path}: no validation record (did the run finish?)")
    return val


def main():
    runs = sys.argv[1]
    cols = [a.split(":", 1) + [None] for a in sys.argv[2:]]
    modes = [c[0] for c in cols]
    heads = [m if r is None else f"{m} (`{r}`)" for m, r, *_ in cols]
    vals = {m: last_val(f"{runs}/{m}/metrics.jsonl") for m in modes}
    classes = list(next(iter(vals.values()))["per_class_iou"].keys())
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
    print("| class | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(modes))
    for c in classes:
        cells = [vals[m]["per_class_iou"].get(c) for m in modes]
        if all(v is None for v in cells):
            continue
        print(f"| {c} | " + " | ".join(fmt(v) for v in cells) + " |")
    print("| **mIoU** | " + " | ".join(f"**{fmt(vals[m]['miou'])}**" for m in modes) + " |")


if __name__ == "__main__":
    main()
