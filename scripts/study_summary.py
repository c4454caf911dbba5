#!/usr/bin/env python3
"""Summary of scripts/study.sh: paired differences (run - baseline of the same seed) of
target mIoU, their mean with a 95 % Student-t interval, per-class IoU differences of the
main pair, the ladder (source-only, baseline, rccr, oracle) with its ratios, the held-out
split's figures and the contrastive term's gradient share. Writes OUT/summary.md and
OUT/summary.json.

  study_summary.py OUT            the summary
  study_summary.py OUT --select   prints the mu setting with the best mean paired gain on
                                  the HELD-OUT split (paper | mu0.01 | mu0.1 | mu1)
  study_summary.py OUT --select-lr  prints the recipes' AdamW rate with the best mean
                                  HELD-OUT mIoU (runs recipe-mic-lr<RATE>)
The successors' part: each switch paired with the baseline, rccr-mic with mic, their
per-class differences and cost/ratio per iteration (OUT/cost.json).
"""
import glob
import json
import math
import os
import sys

# Two-sided 95 % quantiles of Student's t, df = 1..30 (standard tables).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
DOSES = [("mu = 0 (baseline)", None), ("paper (0.01, ramp-up)", "rccr"),
         ("constant 0.01", "rccr-mu0.01"), ("constant 0.1", "rccr-mu0.1"), ("constant 1", "rccr-mu1")]


def load(out):
    runs = {}
    for f in glob.glob(os.path.join(out, "runs", "*", "result.json")):
        r = json.load(open(f))
        if r["run"] != "warmup":  # source-only and oracle included
            runs[(r["run"], r["seed"])] = r
    return runs


def paired(runs, name, key="target_miou", against="baseline"):
    """Per-seed (seed, reference, run, run - reference) in points, for seeds with both."""
    out = []
    for (n, s), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        b = runs.get((against, s))
        if n == name and b is not None:
            out.append((s, 100 * b[key], 100 * r[key], 100 * (r[key] - b[key])))
    return out


def stats(diffs):
    """(n, mean, sd, half-width of the 95 % interval); None where undefined."""
    n = len(diffs)
    if n == 0:
        return (0, None, None, None)
    m = sum(diffs) / n
    if n == 1:
        return (1, m, None, None)
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    return (n, m, sd, T975[min(n - 1, len(T975)) - 1] * sd / math.sqrt(n))


def fmt(st):
    n, m, sd, hw = st
    if m is None:
        return "n/a"
    if hw is None:
        return f"{m:+.2f} (n = 1)"
    return f"{m:+.2f} [{m - hw:+.2f}, {m + hw:+.2f}] (sd {sd:.2f}, n = {n})"


def mean_of(runs, name, key):
    v = [r[key] for (n, _), r in runs.items() if n == name]
    return sum(v) / len(v) if v else None


def ladder(runs, md, js):
    """Mean target mIoU of each rung with its 95 % interval over seeds, and the ratios
    on the seeds every rung has."""
    md.append("### The ladder: source-only, baseline, rccr, oracle (target val mIoU %)\n")
    md.append("| run | mean [95 % CI] | seeds |")
    md.append("|---|---|---|")
    js["ladder"] = {}
    for name in ("source-only", "baseline", "rccr", "oracle"):
        v = [100 * r["target_miou"] for (n, _), r in runs.items() if n == name]
        n, m, sd, hw = stats(v)
        if m is None:
            continue
        ci = f"{m:.2f}" if hw is None else f"{m:.2f} [{m - hw:.2f}, {m + hw:.2f}]"
        md.append(f"| {name} | {ci} | {n} |")
        js["ladder"][name] = {"n": n, "mean": m, "sd": sd, "half_width": hw}
    md.append("")
    seeds = sorted({s for (n, s) in runs if n == "oracle"} & {s for (n, s) in runs if n == "source-only"})
    if not seeds:
        return
    mean = lambda name: sum(100 * runs[(name, s)]["target_miou"] for s in seeds) / len(seeds)
    so, base, orc = mean("source-only"), mean("baseline"), mean("oracle")
    rec = (base - so) / (orc - so) if orc > so else float("nan")
    js["ladder"]["ratios"] = {"seeds": seeds, "source_only_over_oracle": so / orc, "baseline_recovers": rec}
    md.append(f"\nOn seeds {seeds}: source-only / oracle = **{so / orc:.2f}**; the baseline recovers "
              f"**{rec:.2f}** of the gap between source-only and oracle "
              f"(GTA5 -> Cityscapes with DeepLabv2: 36.6 / 65 = 0.56 and DACS 0.55).\n")


def per_class(runs, md, js, name="rccr", against="baseline"):
    """Per-class paired IoU differences (name - against) over the seeds both have."""
    rows = {}
    for (n, s), r in runs.items():
        b = runs.get((against, s))
        if n != name or b is None or not r.get("per_class_iou") or not b.get("per_class_iou"):
            continue
        for c, v in r["per_class_iou"].items():
            w = b["per_class_iou"].get(c)
            if v is not None and w is not None:
                rows.setdefault(c, []).append(100 * (v - w))
    if not rows:
        return
    md.append(f"### Per-class IoU: {name} - {against}, paired by seed (points)\n")
    md.append(f"| class | {against} mean IoU | diff, mean [95 % CI] | interval excludes 0 |")
    md.append("|---|---:|---|---|")
    key = "per_class" if name == "rccr" and against == "baseline" else f"per_class_{name}"
    js[key] = {}
    for c, d in rows.items():
        st = stats(d)
        base = [100 * r["per_class_iou"][c] for (n, _), r in runs.items()
                if n == against and r.get("per_class_iou") and r["per_class_iou"].get(c) is not None]
        excl = st[3] is not None and (st[1] - st[3] > 0 or st[1] + st[3] < 0)
        md.append(f"| {c} | {sum(base) / len(base):.1f} | {fmt(st)} | {'yes' if excl else ''} |")
        js[key][c] = {"diffs": d, "stats": st}
    md.append("")


def select(runs):
    best, best_gain = "paper", None
    for label, name in DOSES[1:]:
        d = [x[3] for x in paired(runs, name, "holdout_miou")]
        if d and (best_gain is None or sum(d) / len(d) > best_gain):
            best, best_gain = ("paper" if name == "rccr" else name[len("rccr-"):]), sum(d) / len(d)
    return best


SUCCESSORS = [("+RCS", "rcs", "baseline"), ("+FD", "fd", "baseline"), ("+MIC", "mic", "baseline"),
              ("+RCCR", "rccr", "baseline"), ("mic recipe", "recipe-mic", "baseline"),
              ("rccr-mic recipe", "recipe-rccr-mic", "baseline"),
              ("rccr-mic vs mic", "recipe-rccr-mic", "recipe-mic")]


def select_lr(runs):
    """The recipes' AdamW rate with the best mean held-out mIoU."""
    means = {}
    for (n, _), r in runs.items():
        if n.startswith("recipe-mic-lr"):
            means.setdefault(n[len("recipe-mic-lr"):], []).append(r["holdout_miou"])
    return max(means, key=lambda k: sum(means[k]) / len(means[k]))


def successors(runs, out, md, js):
    """Each arm paired with its reference, its cost per iteration, per-class effects."""
    if not any(n in ("rcs", "fd", "mic", "recipe-mic") for (n, _) in runs):
        return
    cost = {}
    if os.path.exists(os.path.join(out, "cost.json")):
        cost = json.load(open(os.path.join(out, "cost.json")))
    md.append("### Successors' strategies, paired by seed (target val mIoU points)\n")
    md.append("| arm | vs | diff, mean [95 % CI] | held-out diff | s / iteration (x baseline) |")
    md.append("|---|---|---|---|---|")
    js["successors"] = {}
    for label, name, against in SUCCESSORS:
        rows = paired(runs, name, against=against)
        if not rows:
            continue
        st, sth = stats([x[3] for x in rows]), stats([x[3] for x in paired(runs, name, "holdout_miou", against)])
        c = cost.get(name) if against == "baseline" else None
        cs = f"{c['seconds_per_iteration']:.3f} (x{c['ratio_to_baseline']:.2f})" if c else ""
        md.append(f"| {label} | {against} | {fmt(st)} | {fmt(sth)} | {cs} |")
        js["successors"][label] = {"run": name, "against": against, "target": st, "holdout": sth, "rows": rows}
    md.append("")
    lrs = sorted({n for (n, _) in runs if n.startswith("recipe-mic-lr")})
    if lrs:
        sel = select_lr(runs)
        js["recipe_lr"] = sel
        md.append(f"Recipes' AdamW rate chosen on the held-out split from {[n[len('recipe-mic-lr'):] for n in lrs]}: **{sel}**.\n")
    for name, against in (("rcs", "baseline"), ("fd", "baseline"), ("mic", "baseline"),
                          ("recipe-mic", "baseline"), ("recipe-rccr-mic", "recipe-mic")):
        if paired(runs, name, against=against):
            per_class(runs, md, js, name, against)


def main():
    out = sys.argv[1]
    runs = load(out)
    if "--select" in sys.argv:
        print(select(runs))
        return
    if "--select-lr" in sys.argv:
        print(select_lr(runs))
        return
    md, js = [], {"runs": list(runs.values())}
    warm = os.path.join(out, "runs", "warmup", "result.json")
    if os.path.exists(warm):
        w = json.load(open(warm))
        js["warmup"] = w
        md.append(f"Warm-up (source-only, best on source val: {w['checkpoint']}): source-val curve "
                  + ", ".join(f"{it}: {100 * m:.1f}" for it, m in w["source_val_curve"])
                  + f"; target val {100 * w['target_miou']:.1f}, held-out target {100 * w['holdout_miou']:.1f} mIoU %.\n")
    ladder(runs, md, js)
    main_rows = paired(runs, "rccr")
    md.append("### baseline vs rccr (paper settings), paired by seed\n")
    md.append("| seed | baseline | rccr | rccr - baseline | held-out diff | grad share (mean) |")
    md.append("|---:|---:|---:|---:|---:|---:|")
    hold = {s: d for s, _, _, d in paired(runs, "rccr", "holdout_miou")}
    for s, b, r, d in main_rows:
        md.append(f"| {s} | {b:.2f} | {r:.2f} | {d:+.2f} | {hold.get(s, float('nan')):+.2f} | "
                  f"{runs[('rccr', s)]['grad_share_mean']:.2e} |")
    st = stats([x[3] for x in main_rows])
    sth = stats(list(hold.values()))
    md.append(f"\nMean paired difference (target val): **{fmt(st)}**; held-out target: {fmt(sth)}.\n")
    js["main"] = {"rows": main_rows, "target": st, "holdout": sth}
    per_class(runs, md, js)

    md.append("### mu dose-response (paired with the baseline of the same seed)\n")
    md.append("| mu | target diff, mean [95 % CI] | held-out diff | grad share (mean) | L_cont (mean) |")
    md.append("|---|---|---|---:|---:|")
    js["dose"] = {}
    seeds = sorted({s for (n, s) in runs if n == "rccr-mu0.1"}) or None
    for label, name in DOSES:
        if name is None:
            md.append(f"| {label} | +0.00 (identical runs) | +0.00 | 0 | - |")
            continue
        rows = [x for x in paired(runs, name) if seeds is None or x[0] in seeds]
        hrows = [x for x in paired(runs, name, "holdout_miou") if seeds is None or x[0] in seeds]
        st, sth = stats([x[3] for x in rows]), stats([x[3] for x in hrows])
        share = [runs[(name, x[0])]["grad_share_mean"] for x in rows]
        cont = [runs[(name, x[0])]["loss_cont_mean"] for x in rows]
        js["dose"][label] = {"target": st, "holdout": sth, "rows": rows}
        md.append(f"| {label} | {fmt(st)} | {fmt(sth)} | "
                  f"{(sum(share) / len(share)) if share else float('nan'):.2e} | "
                  f"{(sum(cont) / len(cont)) if cont else float('nan'):.2f} |")
    sel = select(runs)
    js["selected"] = sel
    md.append(f"\nSelected on the held-out split: **{sel}**.\n")
    rungs = sorted({n for (n, _) in runs if n.startswith("rung-")})
    if rungs:
        md.append(f"### Table 3 rungs at {sel} (paired with the baseline)\n")
        md.append("| rung | target diff, mean [95 % CI] | held-out diff |")
        md.append("|---|---|---|")
        js["rungs"] = {}
        full = "rccr" if sel == "paper" else f"rccr-{sel}"
        for name in [r for r in ("RWC", "NSR", "NSC", "PS") if f"rung-{r}-{sel}" in rungs]:
            n = f"rung-{name}-{sel}"
            st, sth = stats([x[3] for x in paired(runs, n)]), stats([x[3] for x in paired(runs, n, "holdout_miou")])
            js["rungs"][name] = {"target": st, "holdout": sth}
            md.append(f"| +{name} | {fmt(st)} | {fmt(sth)} |")
        st = stats([x[3] for x in paired(runs, full) if x[0] in (seeds or [])])
        md.append(f"| full RCCR | {fmt(st)} | |")
    successors(runs, out, md, js)
    text = "\n".join(md) + "\n"
    open(os.path.join(out, "summary.md"), "w").write(text)
    json.dump(js, open(os.path.join(out, "summary.json"), "w"), indent=1)
    print(text)


if __name__ == "__main__":
    main()
