#!/usr/bin/env python3
# Independent replay of one RCCR training iteration, from a trace written by
# `rccr-train trace` (OUT/step_<t:07>.safetensors).
#
# INDEPENDENCE. This file was written from the paper (Zhou et al., "Domain Adaptive
# Semantic Segmentation with Regional Contrastive Consistency Regularization": Eq. 1-10,
# Sec. 3.2.2-3.2.5, Algorithm 1) and the project's written rules for one iteration
# (mean teacher, ClassMix consistency with DACS's confidence weight q, CutMix region-wise
# contrastive loss with PS / NS(R) / NS(C) / memory bank, SGD with momentum and weight
# decay, EMA teacher). It does not port the Rust trainer (trainer/src): the network is
# re-typed from the architecture description only, in plain functional PyTorch, and
# every step below is computed in float64 from the trace's float32 inputs and weights.
#
# WHAT IT CHECKS, per trace file:
#   losses   L_CE (Eq. 1, mean over labelled pixels), L_cons (ClassMix, pixel weights w),
#            L_cont (Eq. 4-8 with the sampling rules), L total (Eq. 9)       rel 1e-4
#   derived  q (teacher confidence >= pseudo_threshold), the ClassMix weights / labels
#            (w in {1, q}; label = teacher pseudo-label where w != 1, source label where
#            w == 1), the CutMix box (square, multiples of 8), the anchor mask (box and
#            PS), anchor / negative labels, NS(R) keep mask, memory-bank size and (when the
#            earlier steps' traces are given too) that every bank entry is an E_cut / E_t
#            embedding of one of the previous `bank_iterations` steps with its label.
#            Exact, except decisions that sit on a float32 tie (argmax margin or
#            threshold distance below --tie-eps / --prob-eps) which are counted, not failed.
#   student  every variable's update (after - before): SGD (momentum, weight decay,
#            backbone / head learning rates) on the gradient of L computed here by
#            autograd; frozen variables unchanged; BN running statistics from the
#            training-mode forwards on x_s, the ClassMix image and (rccr) the CutMix image.
#   teacher  EMA of the parameters with the trace's alpha (applied to the trace's
#            student.after), BN running statistics from the teacher's own forward on x_t.
#            Updates compare to 1e-3 of the largest |entry| of the trace's update (floor:
#            the float32 resolution of the variable, at least 1e-9).
#   schedule lr.head / lr.backbone = head_lr_mult; lr poly, alpha = min(1 - 1/(t+1),
#            ema_alpha) and mu (constant or the paper's schedule), accepting either
#            0- or 1-based t.
# Usage: rccr_replay.py [--summary-json F] [--verbose] TRACE.safetensors|DIR ...
# Exit status 0 when every check passes, 1 on any failure, 2 on bad input.
import argparse
import glob
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- I/O

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    """Hand parser: u64 LE header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        shape = list(info["shape"])
        if len(buf) == 0:
            t = torch.zeros(shape, dtype=dtype)
        else:
            t = torch.frombuffer(buf, dtype=dtype).reshape(shape)
        out[name] = t
    return out, meta


# ------------------------------------------------------------------------- network
# DeepLabv2 (DACS layout) re-typed from the description: 7x7/2 stem + BN + ReLU,
# 3x3/2 ceil-mode max-pool (padding 1); layer1..4 with strides 1,2,1,1 and dilations
# 1,1,2,4; a 1x1 shortcut projection on a layer's first block when the stride or width
# changes or the layer is dilated; bottleneck (stride on the first 1x1) or basic blocks;
# ASPP classifier `layer5.conv2d_list.i` (3x3, dilation = padding in 6,12,18,24, bias)
# summed; projector 1x1 -> ReLU -> 1x1 -> L2 normalise.

BACKBONES = {
    "resnet101": dict(blocks=[3, 4, 23, 3], stem=64, planes=[64, 128, 256, 512], exp=4),
    "resnet50": dict(blocks=[3, 4, 6, 3], stem=64, planes=[64, 128, 256, 512], exp=4),
    "small": dict(blocks=[1, 1, 1, 1], stem=16, planes=[16, 32, 64, 128], exp=1),
}
STRIDES = [1, 2, 1, 1]
DILATIONS = [1, 1, 2, 4]
ASPP = [6, 12, 18, 24]
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def is_running_stat(name):
    return name.endswith("running_mean") or name.endswith("running_var") or name.endswith(
        "num_batches_tracked")


class Net:
    def __init__(self, mc):
        self.mc = mc
        self.spec = BACKBONES[mc["backbone"]]
        self.branches = int(mc.get("aspp_branches", 4))
        norm = mc.get("input") or {"bgr": True, "mean": [104.008, 116.669, 122.675],
                                    "std": [1.0, 1.0, 1.0]}
        self.bgr = bool(norm["bgr"])
        self.mean = torch.tensor(norm["mean"], dtype=torch.float64).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float64).view(1, 3, 1, 1)
        # (conv name, bn name, stride, padding, dilation) lists, built from the spec.
        self.layers = []
        inplanes = self.spec["stem"]
        exp = self.spec["exp"]
        for l in range(4):
            blocks = []
            for b in range(self.spec["blocks"][l]):
                p = f"layer{l + 1}.{b}"
                s = STRIDES[l] if b == 0 else 1
                d = DILATIONS[l]
                planes = self.spec["planes"][l]
                out = planes * exp
                if exp == 4:
                    convs = [(f"{p}.conv1", f"{p}.bn1", s, 0, 1),
                             (f"{p}.conv2", f"{p}.bn2", 1, d, d),
                             (f"{p}.conv3", f"{p}.bn3", 1, 0, 1)]
                else:
                    convs = [(f"{p}.conv1", f"{p}.bn1", s, d, d),
                             (f"{p}.conv2", f"{p}.bn2", 1, d, d)]
                down = None
                if b == 0 and (s != 1 or inplanes != out or d > 1):
                    down = (f"{p}.downsample.0", f"{p}.downsample.1", s, 0, 1)
                blocks.append((convs, down))
                inplanes = out
            self.layers.append(blocks)

    def expected_names(self):
        names = set()

        def bn(n):
            names.update(f"{n}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))

        names.add("conv1.weight")
        bn("bn1")
        for blocks in self.layers:
            for convs, down in blocks:
                for c, b, *_ in convs + ([down] if down else []):
                    names.add(f"{c}.weight")
                    bn(b)
        for i in range(self.branches):
            names.update({f"layer5.conv2d_list.{i}.weight", f"layer5.conv2d_list.{i}.bias"})
        names.update({"projector.0.weight", "projector.0.bias", "projector.2.weight",
                      "projector.2.bias"})
        return names

    def normalize(self, rgb):
        x = rgb.to(torch.float64)
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    @staticmethod
    def conv_bn(P, R, x, conv, bn, stride, padding, dilation):
        y = F.conv2d(x, P[f"{conv}.weight"], None, stride, padding, dilation)
        # Training mode: batch statistics; running stats updated in place (momentum 0.1,
        # unbiased variance), as torch.nn.BatchNorm2d does.
        return F.batch_norm(y, R[f"{bn}.running_mean"], R[f"{bn}.running_var"],
                            P[f"{bn}.weight"], P[f"{bn}.bias"], training=True,
                            momentum=BN_MOMENTUM, eps=BN_EPS)

    def encoder(self, P, R, x):
        y = F.relu(self.conv_bn(P, R, x, "conv1", "bn1", 2, 3, 1))
        y = F.max_pool2d(y, 3, 2, 1, ceil_mode=True)
        for blocks in self.layers:
            for convs, down in blocks:
                z = y
                for k, (c, b, s, p, d) in enumerate(convs):
                    z = self.conv_bn(P, R, z, c, b, s, p, d)
                    if k != len(convs) - 1:
                        z = F.relu(z)
                sc = self.conv_bn(P, R, y, *down) if down else y
                y = F.relu(z + sc)
        return y

    def classifier(self, P, feat):
        out = None
        for i in range(self.branches):
            d = ASPP[i]
            y = F.conv2d(feat, P[f"layer5.conv2d_list.{i}.weight"],
                         P[f"layer5.conv2d_list.{i}.bias"], 1, d, d)
            out = y if out is None else out + y
        return out

    @staticmethod
    def projector(P, feat):
        e = F.relu(F.conv2d(feat, P["projector.0.weight"], P["projector.0.bias"]))
        e = F.conv2d(e, P["projector.2.weight"], P["projector.2.bias"])
        return F.normalize(e, p=2.0, dim=1, eps=1e-12)


def upsample(logits, h, w):
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)


# -------------------------------------------------------------------------- report


class Report:
    def __init__(self, verbose):
        self.verbose = verbose
        self.failures = []
        self.worst = {}  # category -> (ratio, text)
        self.notes = []

    def check(self, category, ok, text, ratio=None):
        if ratio is not None:
            w = self.worst.get(category)
            if w is None or ratio > w[0]:
                self.worst[category] = (ratio, text)
        if not ok:
            self.failures.append(f"[{category}] {text}")
            print(f"  FAIL [{category}] {text}")
        elif self.verbose:
            print(f"  ok   [{category}] {text}")
        return ok

    def note(self, text):
        self.notes.append(text)
        print(f"  note {text}")


def close(a, b, rtol, floor):
    return abs(a - b) <= max(rtol * abs(b), floor)


# ------------------------------------------------------------------------- replay


def grid_pixels(n_cells, crop):
    # cell k of the 1/8 grid <-> crop pixel 8k, clipped to crop - 1
    return torch.clamp(torch.arange(n_cells) * 8, max=crop - 1)


def top2_margin(x, dim=1):
    v = x.topk(2, dim=dim).values
    return v.select(dim, 0) - v.select(dim, 1)


def scalar(T, name):
    return float(T[name].to(torch.float64).reshape(-1)[0]) if name in T else None


def flat_config(tc):
    """The trainer's configuration (sections model, data, method, optim and run, or the
    earlier flat form) as one table of settings."""
    sections = ("model", "data", "method", "optim", "run")
    flat = {}
    for section in sections:
        if isinstance(tc.get(section), dict):
            flat.update(tc[section])
    flat.update({k: v for k, v in tc.items() if k not in sections})
    return flat


def replay(path, args, rep, history):
    T, meta = read_safetensors(path)
    if meta.get("rccr.format") != "rccr-trace-v1":
        raise ValueError(f"{path}: rccr.format is {meta.get('rccr.format')!r}, expected rccr-trace-v1")
    mc = json.loads(meta["rccr.model_config"])
    tc = flat_config(json.loads(meta["rccr.train_config"]))
    t = int(meta["rccr.iteration"])
    comps = tc.get("components", {})
    mode = tc.get("mode")
    net = Net(mc)
    f64 = lambda name: T[name].to(torch.float64)
    summary = {"file": os.path.basename(path), "t": t, "mode": mode}
    print(f"== {path}: t={t} mode={mode} backbone={mc['backbone']} components={comps}")

    # ---- the variables
    sb = {k[len("student.before."):]: v for k, v in T.items() if k.startswith("student.before.")}
    names = sorted(sb)
    expected = net.expected_names()
    missing = sorted(expected - set(names))
    unexpected = sorted(set(names) - expected - {n for n in names if n.endswith("num_batches_tracked")})
    rep.check("structure", not missing and not unexpected,
              f"student variables: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for side in ("teacher.before.", "student.after.", "teacher.after."):
        absent = [n for n in names if side + n not in T]
        rep.check("structure", not absent, f"{side}* lacks {absent[:5]}")
    optimised = sorted(k[len("momentum.before."):] for k in T if k.startswith("momentum.before."))
    train_bn_affine = bool(tc.get("train_bn_affine", False))
    expect_opt = sorted(n for n in names if not is_running_stat(n) and (
        train_bn_affine or not (".bn" in "." + n or "downsample.1" in n)))
    # BN affine names: bn1.*, layerX.Y.bnZ.*, layerX.0.downsample.1.*
    rep.check("structure", optimised == expect_opt,
              f"optimised set (momentum.before.*): {len(optimised)} variables, expected "
              f"{len(expect_opt)} (train_bn_affine={train_bn_affine}); "
              f"extra {sorted(set(optimised) - set(expect_opt))[:4]} "
              f"missing {sorted(set(expect_opt) - set(optimised))[:4]}")

    x_s, x_t, y_s = f64("input.x_s"), f64("input.x_t"), T["input.y_s"].long()
    B, _, H, W = x_s.shape
    has_mix = "classmix.x" in T
    has_cont = "cutmix.x" in T
    rccr_on = mode == "rccr" and comps.get("rwc", True)
    rep.check("structure", has_cont == rccr_on,
              f"CutMix/contrast tensors present={has_cont}, expected {rccr_on} (mode {mode})")
    if has_cont and not rccr_on:
        rccr_on = True  # replay what the trace says was computed

    # ---- scalars and schedule
    lr_b, lr_h, mu, alpha, q_tr = (scalar(T, n) for n in ("lr.backbone", "lr.head", "mu", "alpha", "q"))
    N = float(tc.get("iterations", 1))
    summary.update(lr_backbone=lr_b, lr_head=lr_h, mu=mu, alpha=alpha, q=q_tr)
    hm = float(tc.get("head_lr_mult", 10.0))
    rep.check("schedule", close(lr_h, lr_b * hm, 1e-9, 1e-15),
              f"lr.head {lr_h:.6g} = lr.backbone {lr_b:.6g} x head_lr_mult {hm}")
    base, pw = float(tc["lr"]), float(tc.get("poly_power", 0.9))
    cands = [base * (1 - s / N) ** pw for s in (t - 1, t) if s <= N]
    rep.check("schedule", any(close(lr_b, c, 1e-6, 1e-15) for c in cands),
              f"lr.backbone {lr_b:.8g} is poly lr (1 - t/N)^{pw}: candidates {cands}")
    ema = float(tc.get("ema_alpha", 0.99))
    cands = [min(1 - 1 / (s + 1), ema) for s in (t - 1, t)]
    rep.check("schedule", any(close(alpha, c, 1e-9, 1e-12) for c in cands),
              f"alpha {alpha:.8g}: candidates min(1-1/(t+1), ema_alpha) {cands}")
    if rccr_on and mu is not None:
        mu_max = float(tc.get("mu_max", 0.01))
        sched = tc.get("mu_schedule", "paper")
        if sched == "constant":
            cands = [mu_max]
        else:
            cands = [mu_max * math.exp(-5 * (1 - s / N) ** 0.5) for s in (t - 1, t) if s <= N]
        rep.check("schedule", any(close(mu, c, 1e-6, 1e-15) for c in cands),
                  f"mu {mu:.8g} ({sched} schedule): candidates {cands}")

    # ---- 2. teacher forward on x_t (training-mode BN, no grad)
    TP = {n: f64("teacher.before." + n) for n in names}
    TR = {n: TP[n].clone() for n in names if is_running_stat(n)}
    with torch.no_grad():
        feat_t = net.encoder(TP, TR, net.normalize(x_t))
        logit_t = net.classifier(TP, feat_t)
        up_t = upsample(logit_t, H, W)
        prob = up_t.softmax(1)
        conf, plabel = prob.max(1)
        margin_up = top2_margin(up_t)
        thr = float(tc.get("pseudo_threshold", 0.968))
        n_conf = int((conf >= thr).sum())
        n_near = int(((conf - thr).abs() < args.prob_eps).sum())
        q_mine = n_conf / conf.numel()
        ok = abs(q_tr - q_mine) <= (n_near / conf.numel()) + 1e-9
        rep.check("derived", ok, f"q: trace {q_tr:.8g}, replay {q_mine:.8g} "
                  f"({n_near} pixels within {args.prob_eps} of {thr})")
        p18 = logit_t.softmax(1)
        conf18, arg18 = p18.max(1)
        margin18 = top2_margin(logit_t)
        scale = max(1.0, float(logit_t.abs().max()))
        tie18 = margin18 < args.tie_eps * scale
        tie_up = margin_up < args.tie_eps * max(1.0, float(up_t.abs().max()))
        E_t = net.projector(TP, feat_t) if rccr_on else None

    # ---- ClassMix tensors (derived checks)
    if has_mix:
        w = f64("classmix.w")
        y_m = T["classmix.y"].long()
        q32 = float(torch.tensor(q_tr, dtype=torch.float32))
        one = (w == 1.0)
        isq = (w - q32).abs() <= 1e-7
        rep.check("derived", bool((one | isq).all()),
                  f"classmix.w takes only 1 and q: {int((~(one | isq)).sum())} other pixels "
                  f"(values {sorted(set(w[~(one | isq)].flatten().tolist()))[:5]})")
        tgt_px = ~one
        bad = tgt_px & (y_m != plabel)
        excused = bad & tie_up
        rep.check("derived", int((bad & ~excused).sum()) == 0,
                  f"classmix.y = teacher pseudo-label where w != 1: {int(tgt_px.sum())} pixels, "
                  f"{int((bad & ~excused).sum())} differ ({int(excused.sum())} on argmax ties)")
        if q32 != 1.0:
            bad = one & (y_m != y_s)
            rep.check("derived", int(bad.sum()) == 0,
                      f"classmix.y = source label where w == 1: {int(one.sum())} pixels, "
                      f"{int(bad.sum())} differ")
        summary["classmix_source_fraction"] = float(one.double().mean())

    # ---- CutMix / contrast derived tensors
    h, wg = logit_t.shape[2], logit_t.shape[3]
    if rccr_on:
        box = [int(v) for v in T["cutmix.box"].tolist()]
        y0, x0, y1, x1 = box
        side_ok = (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W and y0 % 8 == 0 and x0 % 8 == 0
                   and (y1 - y0) == (x1 - x0) and (y1 - y0) % 8 == 0)
        rep.check("derived", side_ok, f"cutmix.box {box}: a square inside the crop, corner and "
                  f"side multiples of 8 (Sec. 3.2.2)")
        gy, gx = grid_pixels(h, H), grid_pixels(wg, W)
        inbox = ((gy >= y0) & (gy < y1))[:, None] & ((gx >= x0) & (gx < x1))[None, :]
        inbox = inbox[None].expand(B, h, wg)
        ps_on = bool(comps.get("ps", True))
        delta = float(tc.get("ps_threshold", 0.75))
        exp_anchor = inbox & (conf18 > delta) if ps_on else inbox.clone()
        near_delta = (conf18 - delta).abs() < args.prob_eps if ps_on else torch.zeros_like(inbox)
        am = T["contrast.anchor_mask"].bool()
        rep.check("derived", tuple(am.shape) == (B, h, wg), f"anchor_mask shape {tuple(am.shape)}")
        diff = am != exp_anchor
        rep.check("derived", int((diff & ~near_delta).sum()) == 0,
                  f"anchor_mask = in box{' AND teacher conf > %g' % delta if ps_on else ''}: "
                  f"{int(am.sum())} anchors of {int(inbox.sum())} in-box cells, "
                  f"{int((diff & ~near_delta).sum())} differ ({int((diff & near_delta).sum())} at the threshold)")
        al = T["contrast.anchor_label"].long()
        diff = al != arg18
        rep.check("derived", int((diff & ~tie18).sum()) == 0,
                  f"anchor_label = teacher 1/8 argmax: {int((diff & ~tie18).sum())} cells differ "
                  f"({int((diff & ~tie18 & am).sum())} of them anchors; {int((diff & tie18).sum())} on ties)")
        nl = T["contrast.neg_label"].long()
        src_grid = y_s[:, gy][:, :, gx]
        exp_nl0 = torch.where(inbox, arg18, src_grid)
        d0 = nl[0] != exp_nl0
        d0x = d0 & ~(tie18 & inbox)
        rep.check("derived", int(d0x.sum()) == 0,
                  f"neg_label[0] (E_cut) = teacher argmax in the box, y_s[8i,8j] outside: "
                  f"{int(d0x.sum())} differ ({int((d0x & inbox).sum())} in the box)")
        d1x = (nl[1] != arg18) & ~tie18
        rep.check("derived", int(d1x.sum()) == 0,
                  f"neg_label[1] (E_t) = teacher argmax: {int(d1x.sum())} differ")
        nk = T["contrast.neg_keep"].bool()
        ns_r = bool(comps.get("ns_random", True))
        frac = float(nk.double().mean())
        if ns_r:
            rep.check("derived", 0.0 < frac < 1.0,
                      f"neg_keep with NS(R): kept fraction {frac:.3f} "
                      f"(ns_random_fraction {tc.get('ns_random_fraction')})")
        else:
            rep.check("derived", bool(nk.all()), f"neg_keep all ones without NS(R): fraction {frac:.3f}")
        bank_e = f64("bank.emb")
        bank_l = T["bank.label"].long().reshape(-1)
        M = bank_l.numel()
        mb = bool(comps.get("mb", True))
        if not mb or t == 1:
            rep.check("derived", M == 0, f"bank empty ({'MB off' if not mb else 't = 1'}): M = {M}")
        else:
            per = int(tc.get("bank_per_iteration", 4000))
            its = int(tc.get("bank_iterations", 3))
            rep.check("derived", 0 < M <= its * 2 * per,
                      f"bank size M = {M} (0 < M <= bank_iterations x 2 x bank_per_iteration)")
        summary.update(anchors=int(am.sum()), in_box=int(inbox.sum()), bank=M,
                       neg_keep_fraction=frac, box=box)
        print(f"  contrast: box {box}, {int(am.sum())} anchors of {int(inbox.sum())} in-box cells, "
              f"bank M = {M}, neg_keep fraction {frac:.3f}")

    # ---- 3-5. student forwards with autograd
    SP = {}
    for n in names:
        v = sb[n].to(torch.float64).clone()
        if n in optimised:
            v.requires_grad_(True)
        SP[n] = v
    SR = {n: SP[n].detach().clone() for n in names if is_running_stat(n)}
    up_s = upsample(net.classifier(SP, net.encoder(SP, SR, net.normalize(x_s))), H, W)
    n_lab = int((y_s != 255).sum())
    L_ce = F.cross_entropy(up_s, y_s, ignore_index=255, reduction="sum") / max(n_lab, 1)
    L_cons = torch.zeros((), dtype=torch.float64)
    if has_mix:
        up_m = upsample(net.classifier(SP, net.encoder(SP, SR, net.normalize(f64("classmix.x")))), H, W)
        ce_m = F.cross_entropy(up_m, y_m, ignore_index=255, reduction="none")
        L_cons = (w * ce_m).mean()
    L_cont = torch.zeros((), dtype=torch.float64)
    E_cut = None
    if rccr_on:
        E_cut = net.projector(SP, net.encoder(SP, SR, net.normalize(f64("cutmix.x"))))
        L_cont = contrastive(E_cut, E_t.detach(), am, al, nl, nk, bank_e, bank_l,
                             float(tc.get("tau", 0.1)), bool(comps.get("ns_category", True)))
    lam = float(tc.get("lambda_cons", 1.0))
    L = L_ce + lam * L_cons + (mu * L_cont if rccr_on else 0.0)

    for name, mine in (("loss.ce", L_ce), ("loss.cons", L_cons), ("loss.cont", L_cont), ("loss.total", L)):
        tr = scalar(T, name)
        if tr is None:
            rep.check("losses", name == "loss.cont" and not rccr_on, f"{name} missing from the trace")
            continue
        m = float(mine.detach())
        err = abs(m - tr) / max(abs(tr), 1e-12)
        rep.check("losses", close(m, tr, args.loss_rtol, 1e-7),
                  f"{name}: trace {tr:.10g}, replay {m:.10g} (rel {err:.2e})", ratio=err)
        summary[name] = tr

    # ---- 7. gradients and SGD
    opt_vars = [SP[n] for n in optimised]
    grads = torch.autograd.grad(L, opt_vars, allow_unused=True) if L.requires_grad else [None] * len(opt_vars)
    grads = dict(zip(optimised, grads))
    mom = float(tc.get("momentum", 0.9))
    wd = float(tc.get("weight_decay", 5e-4))
    s_after_mine = {}
    untouched = []
    for n in names:
        p = SP[n].detach()
        if is_running_stat(n):
            s_after_mine[n] = SR[n]
        elif n in grads:
            buf0 = f64("momentum.before." + n)
            g = grads[n]
            if g is None and not bool(buf0.any()):
                s_after_mine[n] = p
                untouched.append(n)
                continue
            g = torch.zeros_like(p) if g is None else g
            lr = lr_h if n.startswith(("layer5.", "projector.")) else lr_b
            buf = mom * buf0 + g + wd * p
            s_after_mine[n] = p - lr * buf
        else:
            s_after_mine[n] = p
    if untouched:
        rep.note(f"never-touched variables left unchanged: {', '.join(untouched)}")

    compare_updates(rep, "student", names, sb, {n: T["student.after." + n] for n in names},
                    s_after_mine, args)
    # ---- 8. teacher: EMA of the parameters (on the trace's student.after), own BN stats
    s_after_tr = {n: f64("student.after." + n) for n in names}
    t_after_mine = {}
    for n in names:
        if is_running_stat(n):
            t_after_mine[n] = TR[n]
        else:
            t_after_mine[n] = alpha * TP[n] + (1 - alpha) * s_after_tr[n]
    compare_updates(rep, "teacher", names, {n: T["teacher.before." + n] for n in names},
                    {n: T["teacher.after." + n] for n in names}, t_after_mine, args)

    # ---- memory bank provenance (needs the earlier steps' traces)
    if rccr_on:
        record = dict(t=t, cut=to_cells(E_cut.detach()), tgt=to_cells(E_t),
                      l_cut=nl[0].reshape(-1), l_tgt=nl[1].reshape(-1))
        check_bank(rep, t, bank_e, bank_l, history, int(tc.get("bank_iterations", 3)), summary)
        history[t] = record
    return summary


def to_cells(E):
    return E.permute(0, 2, 3, 1).reshape(-1, E.shape[1])


def contrastive(E_cut, E_t, am, al, nl, nk, bank_e, bank_l, tau, ns_c):
    """Eq. 4-8 with PS (anchor mask), NS(R) (keep mask), NS(C) and the memory bank."""
    cut, tgt = to_cells(E_cut), to_cells(E_t)  # cell n = b*h*w + i*w + j
    A = am.reshape(-1).nonzero().reshape(-1)
    if A.numel() == 0:
        return torch.zeros((), dtype=torch.float64)
    Ncell = cut.shape[0]
    a_lab = al.reshape(-1)[A]
    u = cut[A]
    s_pos = (u * tgt[A]).sum(1) / tau
    own = torch.zeros(A.numel(), Ncell, dtype=torch.bool)
    own[torch.arange(A.numel()), A] = True
    cols = []
    for k, emb in ((0, cut), (1, tgt)):
        keep = nk[k].reshape(-1)[None, :].expand(A.numel(), Ncell) & ~own
        if ns_c:
            keep = keep & (nl[k].reshape(-1)[None, :] != a_lab[:, None])
        s = u @ emb.t() / tau
        cols.append(torch.where(keep, s, torch.full_like(s, -math.inf)))
    if bank_l.numel() > 0:
        s = u @ bank_e.t() / tau
        keep = torch.ones_like(s, dtype=torch.bool)
        if ns_c:
            keep = bank_l[None, :] != a_lab[:, None]
        cols.append(torch.where(keep, s, torch.full_like(s, -math.inf)))
    logits = torch.cat([s_pos[:, None]] + cols, dim=1)
    return (torch.logsumexp(logits, dim=1) - s_pos).mean()


def compare_updates(rep, who, names, before, after_tr, after_mine, args):
    for n in names:
        b = before[n].to(torch.float64)
        a = after_tr[n].to(torch.float64)
        upd_tr = a - b
        upd_mine = after_mine[n].detach() - b
        big = float(upd_tr.abs().max()) if upd_tr.numel() else 0.0
        res = float(max(b.abs().max(), a.abs().max())) * 2.0 ** -22 if b.numel() else 0.0
        tol = max(args.update_rtol * big, res, 1e-9)
        err = float((upd_mine - upd_tr).abs().max()) if b.numel() else 0.0
        cat = f"{who}-bn-stats" if is_running_stat(n) else f"{who}-update"
        rep.check(cat, err <= tol,
                  f"{n}: max |diff| {err:.3e}, largest |update| {big:.3e}, tol {tol:.3e}",
                  ratio=err / tol)


def check_bank(rep, t, bank_e, bank_l, history, its, summary):
    M = bank_l.numel()
    window = list(range(max(1, t - its), t))
    if M == 0:
        return
    if not all(s in history for s in window):
        rep.note(f"bank provenance not checked at t={t}: traces of steps {window} not all replayed")
        return
    cands, labs, tags = [], [], []
    for s in window:
        r = history[s]
        for kind in ("cut", "tgt"):
            cands.append(r[kind])
            labs.append(r["l_" + kind])
            tags += [(s, kind)] * r[kind].shape[0]
    cand = torch.cat(cands)
    lab = torch.cat(labs)
    d = torch.cdist(bank_e, cand)  # M x C
    tol = 1e-4
    close_ = d <= tol
    found = close_.any(1)
    lab_ok = (close_ & (lab[None, :] == bank_l[:, None])).any(1)
    worst = float(d.min(1).values.max())
    counts = {}
    for i in d.argmin(1).tolist():
        counts[tags[i]] = counts.get(tags[i], 0) + 1
    rep.check("derived", bool(found.all()),
              f"bank entries are E_cut / E_t cells of steps {window}: {int((~found).sum())} of {M} "
              f"not found (worst nearest distance {worst:.2e})")
    rep.check("derived", bool(lab_ok[found].all()),
              f"bank labels = the cells' neg_label: {int((found & ~lab_ok).sum())} differ")
    summary["bank_sources"] = {f"{s}:{k}": c for (s, k), c in sorted(counts.items())}
    print(f"  bank: {M} entries, nearest trace cells by (step, E_cut|E_t): {summary['bank_sources']}")


def main():
    ap = argparse.ArgumentParser(
        description="Independent replay of rccr-train trace files (rccr-trace-v1); see the header.")
    ap.add_argument("traces", nargs="+", help="trace files or folders of step_*.safetensors")
    ap.add_argument("--loss-rtol", type=float, default=1e-4)
    ap.add_argument("--update-rtol", type=float, default=1e-3)
    ap.add_argument("--tie-eps", type=float, default=1e-4,
                    help="argmax decisions with a top-2 logit margin below this (x max(1, |logit|)) are ties")
    ap.add_argument("--prob-eps", type=float, default=1e-5,
                    help="threshold decisions with |p - threshold| below this are ties")
    ap.add_argument("--summary-json", help="write the per-step summary here")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = []
    for p in args.traces:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "step_*.safetensors")))
        else:
            files.append(p)
    if not files:
        print("no trace files given / found", file=sys.stderr)
        return 2

    def step_of(f):
        try:
            return int(read_safetensors_meta(f).get("rccr.iteration", 0))
        except Exception:
            return 0

    # One history (for the memory-bank check) per run folder, steps in order.
    files.sort(key=lambda f: (os.path.dirname(os.path.abspath(f)), step_of(f)))
    rep = Report(args.verbose)
    histories, summaries = {}, []
    for f in files:
        history = histories.setdefault(os.path.dirname(os.path.abspath(f)), {})
        try:
            summaries.append(replay(f, args, rep, history))
        except (KeyError, ValueError) as e:
            rep.check("structure", False, f"{f}: cannot replay: {type(e).__name__}: {e}")
    print("== summary over %d trace file(s)" % len(files))
    for cat in sorted(rep.worst):
        ratio, text = rep.worst[cat]
        unit = "of tolerance" if cat.endswith(("update", "stats")) else "relative"
        print(f"  worst {cat:20s} {ratio:.3e} {unit}: {text}")
    if args.summary_json:
        with open(args.summary_json, "w") as fh:
            json.dump({"steps": summaries, "failures": rep.failures}, fh, indent=1)
    if rep.failures:
        print(f"REPLAY FAILED: {len(rep.failures)} check(s)")
        for f in rep.failures[:40]:
            print("  " + f)
        return 1
    print("REPLAY OK: every check passed")
    return 0


def read_safetensors_meta(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return header.get("__metadata__", {}) or {}


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    sys.exit(main())
