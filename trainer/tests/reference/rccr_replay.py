#!/usr/bin/env python3
# Independent replay of one RCCR training iteration, from a trace written by
# `rccr-train trace` (OUT/step_<t:07>.safetensors).
#
# INDEPENDENCE. This file was written from the papers (Zhou et al., "Domain Adaptive
# Semantic Segmentation with Regional Contrastive Consistency Regularization": Eq. 1-10,
# Sec. 3.2.2-3.2.5, Algorithm 1; Hoyer et al., "DAFormer", CVPR 2022, Sec. 3.3-3.4 (rare
# class sampling, thing-class ImageNet feature distance, learning-rate warm-up, AdamW);
# Hoyer et al., "MIC", CVPR 2023, Sec. 3 (masked image consistency); Loshchilov & Hutter,
# "Decoupled Weight Decay Regularization" (AdamW, in PyTorch's torch.optim.AdamW form);
# mmcv's linear warm-up) and the project's written rules for one iteration (mean teacher,
# ClassMix consistency with DACS's confidence weight q, CutMix region-wise contrastive
# loss with PS / NS(R) / NS(C) / memory bank, SGD with momentum and weight decay or AdamW,
# EMA teacher, the successors' switches). It does not port the Rust trainer (trainer/src):
# the network is re-typed from the architecture description only, in plain functional
# PyTorch, and every step below is computed in float64 from the trace's float32 inputs
# and weights. The networks: DeepLabv2 (below) or, when the model config names a mit-b*
# backbone, the Mix Transformer with DAFormer's or SegFormer's decoder (Xie et al.,
# "SegFormer", NeurIPS 2021; Hoyer et al., "DAFormer", Sec. 3.2), its blocks from
# models/tests/reference/mit_reference.py; RCCR's 1/8 grid on it is the fused decoder
# feature and the stride-4 logits subsampled [::2, ::2] (docs/method.md).
#
# WHAT IT CHECKS, per trace file:
#   losses   L_CE (Eq. 1, mean over labelled pixels), L_cons (ClassMix, pixel weights w),
#            L_cont (Eq. 4-8 with the sampling rules), L_FD (DAFormer Sec. 3.4: mean over
#            thing-class cells of the L2 distance between the student's and the frozen
#            initial encoder's features on x_s), L_MIC (MIC Sec. 3: q-weighted CE of the
#            student on the masked, colour-augmented target against the teacher's
#            pseudo-labels of the unmasked target), L total (Eq. 9 + lambda_FD L_FD +
#            lambda_MIC L_MIC)                                                rel 1e-4
#   derived  q (teacher confidence >= pseudo_threshold), the ClassMix weights / labels
#            (w in {1, q}, 0 on the pseudo-ignored top / bottom rows; label = teacher
#            pseudo-label where w != 1, source label where w == 1), the CutMix box (square,
#            multiples of 8), the anchor mask (box and PS), anchor / negative labels, NS(R)
#            keep mask, memory-bank size and (when the earlier steps' traces are given too)
#            that every bank entry is an E_cut / E_t embedding of one of the previous
#            `bank_iterations` steps with its label; the FD cell mask (majority label of
#            each s x s block of y_s, s = ceil(crop / h), share >= min_ratio, in the thing
#            classes); the MIC patch mask (constant on patch squares aligned at 0, masked
#            share near the ratio), labels (teacher pseudo-labels) and weights (q, 0 on the
#            ignored rows); the RCS class probabilities (softmax of (1 - f_c) / T over the
#            classes with pixels and candidate images), drawn classes and crop hits.
#            Exact, except decisions that sit on a float32 tie (argmax margin or
#            threshold distance below --tie-eps / --prob-eps) which are counted, not failed.
#   features the student's final encoder features on x_s (training mode) and the frozen
#            encoder's (eval mode: BN running statistics), to 1e-4 of their largest |entry|;
#            the frozen encoder equals the student at t = 1 and never changes.
#   student  every variable's update (after - before): SGD (momentum, weight decay,
#            backbone / head learning rates) or AdamW (decoupled weight decay, none on
#            `norm` names; bias-corrected moments, per-variable step counts) on the
#            gradient of L computed here by autograd; frozen variables unchanged; BN
#            running statistics from the training-mode forwards on x_s, the ClassMix
#            image, (rccr) the CutMix image and (MIC) the masked image, in that order.
#            The optimiser state of step t + 1 (momentum or AdamW moments and step
#            counts) is the state computed here at step t, when both traces are given.
#   teacher  EMA of the parameters with the trace's alpha (applied to the trace's
#            student.after), BN running statistics from the teacher's own forward on x_t.
#            Updates compare to 1e-3 of the largest |entry| of the trace's update (floor:
#            the float32 resolution of the variable, at least 1e-9), plus, per entry, a
#            slack for ReLU inputs of the MiT decoder within 1e-6 of the kink, which the
#            trainer's float32 forward may have put on the other side (kink_slack).
#   schedule lr.head / lr.backbone = head_lr_mult; lr poly times mmcv's linear warm-up
#            factor 1 - (1 - s/W)(1 - warmup_ratio) for s < W, alpha = min(1 - 1/(t+1),
#            ema_alpha) and mu (constant or the paper's schedule), accepting either
#            0- or 1-based t.
#   switches a term switched on in the configuration (data.rcs, method.fd, method.mic,
#            optim.optimizer) whose tensors are missing fails, and so do tensors of a term
#            switched off; traces written before a term existed skip its checks.
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


class SegOut:
    """One forward: logits at the network's stride, the projector's input on the 1/8
    grid, the logits on that grid, and the final encoder features (for L_FD)."""

    def __init__(self, logits, grid_feat, grid_logits, enc):
        self.logits, self.grid_feat, self.grid_logits, self.enc = logits, grid_feat, grid_logits, enc


class NetBase:
    """What both families share: the model config's `input` (channel order, mean and std
    of 0..255 pixels), the projector (paper Sec. 3.2.1: 1x1 -> ReLU -> 1x1 -> L2
    normalise) and the logits' bilinear upsampling (align_corners per family)."""
    align_corners = True

    def __init__(self, mc):
        # ReLUs whose input sits within float32 noise of the kink (MitNet.relu).
        self.kinks = []
        norm = mc.get("input") or {"bgr": True, "mean": [104.008, 116.669, 122.675],
                                    "std": [1.0, 1.0, 1.0]}
        self.bgr = bool(norm["bgr"])
        self.mean = torch.tensor(norm["mean"], dtype=torch.float64).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float64).view(1, 3, 1, 1)

    def normalize(self, rgb):
        x = rgb.to(torch.float64)
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    @staticmethod
    def projector(P, feat):
        e = F.relu(F.conv2d(feat, P["projector.0.weight"], P["projector.0.bias"]))
        e = F.conv2d(e, P["projector.2.weight"], P["projector.2.bias"])
        return F.normalize(e, p=2.0, dim=1, eps=1e-12)

    def upsample(self, logits, h, w):
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=self.align_corners)

    @staticmethod
    def projector_names():
        return {"projector.0.weight", "projector.0.bias", "projector.2.weight", "projector.2.bias"}


class Net(NetBase):
    # DeepLabv2 (DACS): logits upsampled with align_corners true.
    align_corners = True

    def __init__(self, mc):
        super().__init__(mc)
        self.mc = mc
        self.spec = BACKBONES[mc["backbone"]]
        self.branches = int(mc.get("aspp_branches", 4))
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
        return names | self.projector_names()

    @staticmethod
    def frozen_bn_affine(name):
        """BN affine names (bn1.*, layerX.Y.bnZ.*, layerX.0.downsample.1.*): trained only
        with train_bn_affine."""
        return ".bn" in "." + name or "downsample.1" in name

    @staticmethod
    def conv_bn(P, R, x, conv, bn, stride, padding, dilation, train=True):
        y = F.conv2d(x, P[f"{conv}.weight"], None, stride, padding, dilation)
        # Training mode: batch statistics; running stats updated in place (momentum 0.1,
        # unbiased variance), as torch.nn.BatchNorm2d does. Eval mode: the running stats.
        return F.batch_norm(y, R[f"{bn}.running_mean"], R[f"{bn}.running_var"],
                            P[f"{bn}.weight"], P[f"{bn}.bias"], training=train,
                            momentum=BN_MOMENTUM, eps=BN_EPS)

    def encoder_names(self):
        return {n for n in self.expected_names() if not n.startswith(("layer5.", "projector."))}

    def encoder(self, P, R, x, train=True):
        cb = lambda z, c, b, s, p, d: self.conv_bn(P, R, z, c, b, s, p, d, train)
        y = F.relu(cb(x, "conv1", "bn1", 2, 3, 1))
        y = F.max_pool2d(y, 3, 2, 1, ceil_mode=True)
        for blocks in self.layers:
            for convs, down in blocks:
                z = y
                for k, (c, b, s, p, d) in enumerate(convs):
                    z = cb(z, c, b, s, p, d)
                    if k != len(convs) - 1:
                        z = F.relu(z)
                sc = cb(y, *down) if down else y
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

    def forward(self, P, R, x, train=True):
        feat = self.encoder(P, R, x, train)
        logits = self.classifier(P, feat)  # stride 8: the grid itself
        return SegOut(logits, feat, logits, feat)


# ---------------------------------------------------------------- MiT network
# Mix Transformer encoder (SegFormer, Xie et al. 2021, Sec. 3 and Tab. 6): the attention,
# LayerNorm and linear layers of models/tests/reference/mit_reference.py (the independent
# functional re-typing of the papers that the model tests use), the stage loop re-typed
# here with a float64-friendly depthwise convolution; the decoders are re-typed here so
# that their BN running statistics update in place: DAFormer's context-aware fusion
# (Hoyer et al. 2022, Sec. 3.2, Fig. 3: per-stage linear embeddings resized to stride 4
# with align_corners false and concatenated, an ASPP of a 1x1 and depthwise-separable 3x3
# convolutions at dilations 6, 12, 18 with BN + ReLU, a 3x3 bottleneck with BN + ReLU,
# then the 1x1 classifier `conv_seg`) or SegFormer's all-MLP decoder (Sec. 3.2, Eq. 4).
# RCCR on it (docs/method.md): the projector reads the fused decoder feature (before
# dropout and the classifier) subsampled [::2, ::2] to the 1/8 grid, the grid logits are
# the stride-4 logits subsampled the same way, and the logits are upsampled with
# align_corners false (mmseg's resize). Drop path and decoder dropout must be 0 in the
# traced model (the replay is deterministic); the teacher is then the training-mode
# forward (batch statistics) as well.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "models", "tests", "reference"))
import mit_reference as mitref  # noqa: E402


def depthwise3x3(x, w, b, dilation=1):
    """Depthwise 3x3 convolution, padding = dilation, as nine shifted products (PyTorch's
    float64 grouped conv2d takes a path that costs seconds on the 2 x 2 maps of stage 4)."""
    d, (H, W) = dilation, x.shape[2:]
    xp = F.pad(x, (d, d, d, d))
    y = b.view(1, -1, 1, 1) if b is not None else 0.0
    for i in range(3):
        for j in range(3):
            y = y + w[:, 0, i, j].view(1, -1, 1, 1) * xp[:, :, i * d:i * d + H, j * d:j * d + W]
    return y


def mit_encoder(x, P, variant):
    """The four stage maps: overlapping patch embeddings (7x7/4, then 3x3/2) + LayerNorm,
    blocks of efficient self-attention (SegFormer Eq. 1-2) and Mix-FFN (Eq. 3, its 3x3
    depthwise conv by depthwise3x3), each pre-norm with a residual, and a final LayerNorm
    per stage (LayerNorm eps: 1e-5 in the patch embeddings and the reduction, 1e-6 in
    the blocks and the stage norms)."""
    outs = []
    for i in range(4):
        s, (k, stride) = i + 1, ((7, 4) if i == 0 else (3, 2))
        grid = F.conv2d(x, P[f"patch_embed{s}.proj.weight"], P[f"patch_embed{s}.proj.bias"],
                        stride=stride, padding=k // 2)
        n, c, h, w = grid.shape
        t = mitref.ln(grid.flatten(2).transpose(1, 2), P, f"patch_embed{s}.norm", 1e-5)
        for j in range(mitref.DEPTHS[variant][i]):
            p = f"block{s}.{j}"
            a = mitref.ln(t, P, p + ".norm1", 1e-6)
            t = t + mitref.attention(a, (h, w), P, p + ".attn", mitref.HEADS[i], mitref.REDUCTION[i])
            y = mitref.lin(mitref.ln(t, P, p + ".norm2", 1e-6), P, p + ".mlp.fc1")
            g = depthwise3x3(y.transpose(1, 2).reshape(n, -1, h, w), P[p + ".mlp.dwconv.dwconv.weight"],
                             P[p + ".mlp.dwconv.dwconv.bias"])
            t = t + mitref.lin(F.gelu(g.flatten(2).transpose(1, 2)), P, p + ".mlp.fc2")
        x = mitref.ln(t, P, f"norm{s}", 1e-6).transpose(1, 2).reshape(n, c, h, w)
        outs.append(x)
    return outs


# A decoder ReLU input within this of 0 may sit on the other side of the kink in the
# trainer's float32 forward (its 1024-channel sums round by ~1e-7; a MiT-B0 trace had
# an input at -1.8e-7 that the trainer's ReLU passed).
KINK_EPS = 1e-6


def mit_conv_bn(P, R, x, p, train, dilation=1, groups=1):
    """mmcv's ConvModule before its ReLU: bias-free conv (padding dilation * k // 2), BN."""
    wt = P[p + ".conv.weight"]
    if groups > 1:
        y = depthwise3x3(x, wt, None, dilation)
    else:
        y = F.conv2d(x, wt, None, 1, dilation * (wt.shape[-1] // 2), dilation)
    y = F.batch_norm(y, R[p + ".bn.running_mean"], R[p + ".bn.running_var"], P[p + ".bn.weight"],
                     P[p + ".bn.bias"], training=train, momentum=BN_MOMENTUM, eps=BN_EPS)
    return y


class MitNet(NetBase):
    align_corners = False

    def __init__(self, mc):
        super().__init__(mc)
        self.variant = mc["backbone"]
        self.decoder = mc.get("decoder") or "daformer"
        if self.variant not in mitref.DEPTHS or self.decoder not in ("daformer", "segformer"):
            raise ValueError(f"backbone {self.variant} / decoder {self.decoder}: not replayable")
        for key in ("drop_path_rate", "decoder_dropout"):
            v = mc.get(key)
            if v is None or float(v) != 0.0:
                raise ValueError(f"model {key} = {v}: the replay has no stochastic layers; trace "
                                 f"with `{key} = 0` under [model] in the --config file")
        self.classes = int(mc.get("num_classes", 19))

    def expected_names(self):
        names = set(mitref.encoder_shapes(self.variant))
        if self.decoder == "daformer":
            names |= set(mitref.daformer_shapes(self.variant, self.classes))
        else:
            names |= {f"decode_head.linear_c.{i}.proj.{k}" for i in range(4) for k in ("weight", "bias")}
            names.add("decode_head.linear_fuse.conv.weight")
            names |= {f"decode_head.linear_fuse.bn.{k}" for k in
                      ("weight", "bias", "running_mean", "running_var")}
            names |= {"decode_head.linear_pred.weight", "decode_head.linear_pred.bias"}
        return names | self.projector_names()

    def encoder_names(self):
        return {n for n in self.expected_names() if not n.startswith(("decode_head.", "projector."))}

    @staticmethod
    def frozen_bn_affine(name):
        """The encoder has no BN; the decoder's BN affine parameters are always trained."""
        return False

    def conv_bn_relu(self, P, R, x, p, train, dilation=1, groups=1):
        return self.relu(mit_conv_bn(P, R, x, p, train, dilation, groups))

    def relu(self, y):
        """ReLU; where the input is within KINK_EPS of 0 (float32 may have taken the other
        side), the input, output and ties are kept for kink_slack."""
        out = F.relu(y)
        tie = y.detach().abs() <= KINK_EPS
        if y.requires_grad and bool(tie.any()):
            self.kinks.append((y, out, tie))
        return out

    def encoder(self, P, R, x, train=True):
        """Stage 4 (stride 32), the features L_FD compares; no BN, no stochastic layer."""
        return mit_encoder(x, P, self.variant)[3]

    def fused(self, P, R, feats, train):
        if self.decoder == "segformer":
            x = mitref.embed_concat(feats, P, "decode_head.linear_c")
            return self.conv_bn_relu(P, R, x, "decode_head.linear_fuse", train)
        x = mitref.embed_concat(feats, P, "decode_head.embed_layers")
        p = "decode_head.fuse_layer.aspp_modules"
        branches = [self.conv_bn_relu(P, R, x, f"{p}.0", train)]
        for j, d in enumerate([6, 12, 18], start=1):
            y = self.conv_bn_relu(P, R, x, f"{p}.{j}.depthwise_conv", train, d, x.shape[1])
            branches.append(self.conv_bn_relu(P, R, y, f"{p}.{j}.pointwise_conv", train))
        return self.conv_bn_relu(P, R, torch.cat(branches, 1), "decode_head.fuse_layer.bottleneck", train)

    def forward(self, P, R, x, train=True):
        feats = mit_encoder(x, P, self.variant)
        fused = self.fused(P, R, feats, train)
        cls = "conv_seg" if self.decoder == "daformer" else "linear_pred"
        logits = F.conv2d(fused, P[f"decode_head.{cls}.weight"], P[f"decode_head.{cls}.bias"])
        return SegOut(logits, fused[:, :, ::2, ::2], logits[:, :, ::2, ::2], feats[3])



def make_net(mc):
    return MitNet(mc) if str(mc.get("backbone", "")).startswith("mit-") else Net(mc)


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
    net = make_net(mc)
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
    optimizer = tc.get("optimizer", "sgd")
    state = "adam.step.before." if optimizer == "adamw" else "momentum.before."
    optimised = sorted(k[len(state):] for k in T if k.startswith(state))
    if optimizer == "adamw":
        absent = [n for n in optimised for k in ("adam.exp_avg.before.", "adam.exp_avg_sq.before.")
                  if k + n not in T]
        rep.check("structure", not absent, f"AdamW moments lack {absent[:4]}")
    stray = "momentum.before." if optimizer == "adamw" else "adam.step.before."
    rep.check("structure", not any(k.startswith(stray) for k in T),
              f"optimizer {optimizer}: no {stray}* tensors expected")
    train_bn_affine = bool(tc.get("train_bn_affine", False))
    expect_opt = sorted(n for n in names if not is_running_stat(n) and (
        train_bn_affine or not net.frozen_bn_affine(n)))
    rep.check("structure", optimised == expect_opt,
              f"optimised set ({state}*): {len(optimised)} variables, expected "
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
    on = switches(rep, T, tc, mode)
    top, bottom = int(tc.get("pseudo_ignore_top", 0)), int(tc.get("pseudo_ignore_bottom", 0))
    ignored = ignored_rows(H, top, bottom)[None, :, None].expand(B, H, W)
    if on["rcs"]:
        check_rcs(rep, T, tc, y_s, summary)

    # ---- scalars and schedule
    lr_b, lr_h, mu, alpha, q_tr = (scalar(T, n) for n in ("lr.backbone", "lr.head", "mu", "alpha", "q"))
    N = float(tc.get("iterations", 1))
    summary.update(lr_backbone=lr_b, lr_head=lr_h, mu=mu, alpha=alpha, q=q_tr)
    hm = float(tc.get("head_lr_mult", 10.0))
    rep.check("schedule", close(lr_h, lr_b * hm, 1e-9, 1e-15),
              f"lr.head {lr_h:.6g} = lr.backbone {lr_b:.6g} x head_lr_mult {hm}")
    base, pw = float(tc["lr"]), float(tc.get("poly_power", 0.9))
    wu, wr = int(tc.get("warmup_iters", 0)), float(tc.get("warmup_ratio", 1e-6))

    def lr_at(s):  # poly decay times mmcv's linear warm-up (DAFormer Sec. 3.4)
        warm = 1 - (1 - s / wu) * (1 - wr) if s < wu else 1.0
        return base * (1 - s / N) ** pw * warm

    cands = [lr_at(s) for s in (t - 1, t) if s <= N]
    rep.check("schedule", any(close(lr_b, c, 1e-6, 1e-15) for c in cands),
              f"lr.backbone {lr_b:.8g} is poly lr (1 - t/N)^{pw} x warm-up (W = {wu}, "
              f"ratio {wr:g}): candidates {cands}")
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
        out_t = net.forward(TP, TR, net.normalize(x_t))
        logit_t = out_t.grid_logits
        up_t = net.upsample(out_t.logits, H, W)
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
        E_t = net.projector(TP, out_t.grid_feat) if rccr_on else None

    # ---- ClassMix tensors (derived checks)
    q32 = float(torch.tensor(q_tr, dtype=torch.float32))
    if has_mix:
        w = f64("classmix.w")
        y_m = T["classmix.y"].long()
        one = (w == 1.0)
        isq = (w - q32).abs() <= 1e-7
        # DAFormer's pseudo-label crop: target pixels of the ignored rows weigh 0.
        fine = torch.where(ignored, one | (w == 0.0), one | isq)
        rep.check("derived", bool(fine.all()),
                  f"classmix.w takes only 1 and q (1 and 0 on the {top} top / {bottom} bottom "
                  f"ignored rows): {int((~fine).sum())} other pixels "
                  f"(values {sorted(set(w[~fine].flatten().tolist()))[:5]})")
        if top or bottom:
            bad = ignored & one & (y_m != y_s)
            rep.check("derived", int(bad.sum()) == 0,
                      f"classmix: on the ignored rows w == 1 only on source pixels: "
                      f"{int(bad.sum())} of {int((ignored & one).sum())} carry another label")
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

    if on["mic"]:
        check_mic(rep, T, tc, plabel, tie_up, q32, ignored, x_t, summary)

    # ---- 3-5. student forwards with autograd, in the trainer's order (BN statistics)
    SP = {}
    for n in names:
        v = sb[n].to(torch.float64).clone()
        if n in optimised:
            v.requires_grad_(True)
        SP[n] = v
    SR = {n: SP[n].detach().clone() for n in names if is_running_stat(n)}
    out_s = net.forward(SP, SR, net.normalize(x_s))
    feat_s = out_s.enc
    up_s = net.upsample(out_s.logits, H, W)
    n_lab = int((y_s != 255).sum())
    L_ce = F.cross_entropy(up_s, y_s, ignore_index=255, reduction="sum") / max(n_lab, 1)
    L_cons = torch.zeros((), dtype=torch.float64)
    if has_mix:
        up_m = net.upsample(net.forward(SP, SR, net.normalize(f64("classmix.x"))).logits, H, W)
        ce_m = F.cross_entropy(up_m, y_m, ignore_index=255, reduction="none")
        L_cons = (w * ce_m).mean()
    L_cont = torch.zeros((), dtype=torch.float64)
    E_cut = None
    if rccr_on:
        E_cut = net.projector(SP, net.forward(SP, SR, net.normalize(f64("cutmix.x"))).grid_feat)
        L_cont = contrastive(E_cut, E_t.detach(), am, al, nl, nk, bank_e, bank_l,
                             float(tc.get("tau", 0.1)), bool(comps.get("ns_category", True)))
    zero = torch.zeros((), dtype=torch.float64)
    L_mic = zero
    if on["mic"]:
        # MIC Sec. 3: masked patches are 0 in the normalised input.
        x_k = net.normalize(f64("mic.x")) * f64("mic.mask")
        up_k = net.upsample(net.forward(SP, SR, x_k).logits, H, W)
        ce_k = F.cross_entropy(up_k, T["mic.y"].long(), ignore_index=255, reduction="none")
        L_mic = (f64("mic.w") * ce_k).mean()
    L_fd = zero
    record = {}
    if on["fd"]:
        L_fd, record["frozen"] = feature_distance(rep, T, net, mc, tc, feat_s, x_s, y_s, sb,
                                                  history.get(t - 1), t, args, summary)
    lam = float(tc.get("lambda_cons", 1.0))
    lam_fd = float((tc.get("fd") or {}).get("lambda", 0.0))
    lam_mic = float((tc.get("mic") or {}).get("lambda", 0.0))
    L = L_ce + lam * L_cons + (mu * L_cont if rccr_on else 0.0)
    L = L + (lam_fd * L_fd if on["fd"] else 0.0) + (lam_mic * L_mic if on["mic"] else 0.0)

    terms = [("loss.ce", L_ce), ("loss.cons", L_cons), ("loss.cont", L_cont)]
    terms += [("loss.fd", L_fd)] if on["fd"] else []
    terms += [("loss.mic", L_mic)] if on["mic"] else []
    for name, mine in terms + [("loss.total", L)]:
        tr = scalar(T, name)
        if tr is None:
            rep.check("losses", name == "loss.cont" and not rccr_on, f"{name} missing from the trace")
            continue
        m = float(mine.detach())
        err = abs(m - tr) / max(abs(tr), 1e-12)
        rep.check("losses", close(m, tr, args.loss_rtol, 1e-7),
                  f"{name}: trace {tr:.10g}, replay {m:.10g} (rel {err:.2e})", ratio=err)
        summary[name] = tr

    # ---- 7. gradients and the optimiser step
    opt_vars = [SP[n] for n in optimised]
    outs = [k[1] for k in net.kinks]
    if L.requires_grad:
        res = torch.autograd.grad(L, opt_vars + outs, allow_unused=True, retain_graph=bool(outs))
    else:
        res = [None] * (len(opt_vars) + len(outs))
    grads = dict(zip(optimised, res[:len(opt_vars)]))
    gslack = kink_slack(rep, net.kinks, res[len(opt_vars):], optimised, SP)
    params = {n: SP[n].detach() for n in names}
    s_after_mine, record["opt"], slack, record["opt_slack"] = optimiser_step(
        rep, T, tc, params, grads, lr_b, lr_h, gslack)
    for n in names:
        if is_running_stat(n):
            s_after_mine[n] = SR[n]
        elif n not in s_after_mine:
            s_after_mine[n] = params[n]
    check_state_carried(rep, T, optimizer, history.get(t - 1), args)
    net.kinks.clear()

    compare_updates(rep, "student", names, sb, {n: T["student.after." + n] for n in names},
                    s_after_mine, args, slack)
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
        record.update(t=t, cut=to_cells(E_cut.detach()), tgt=to_cells(E_t),
                      l_cut=nl[0].reshape(-1), l_tgt=nl[1].reshape(-1))
        check_bank(rep, t, bank_e, bank_l, history, int(tc.get("bank_iterations", 3)), summary)
    history[t] = record
    return summary


# ------------------------------------------------------- the successors' switches

SWITCH_KEYS = {
    "rcs": ("rcs.class", "rcs.crop_hit", "rcs.prob", "rcs.class_pixels", "rcs.candidates",
            "rcs.min_pixels"),
    "fd": ("fd.student", "fd.frozen", "fd.mask", "loss.fd"),
    "mic": ("mic.x", "mic.mask", "mic.y", "mic.w", "loss.mic"),
}
HEAD_PREFIXES = ("layer5.", "projector.", "decode_head.")


def switches(rep, T, tc, mode):
    """Which of RCS / FD / MIC the trace replays: a switch on in the configuration needs
    all its tensors, a switch off (or a configuration without it) none of them."""
    enabled = lambda sec: bool((tc.get(sec) or {}).get("enabled", False))
    want = {"rcs": enabled("rcs"), "fd": enabled("fd"),
            "mic": enabled("mic") and mode in ("baseline", "rccr")}
    on = {}
    for k, keys in SWITCH_KEYS.items():
        present = [n for n in keys if n in T]
        # A switched-off term may still log its loss, as 0 (like loss.cont in the baseline).
        loss = f"loss.{k}"
        idle = loss in present and scalar(T, loss) == 0.0
        expect = len(keys) if want[k] else int(idle)
        rep.check("switches", len(present) == expect,
                  f"{k} switched {'on' if want[k] else 'off'} (mode {mode}): the trace holds "
                  f"{present or 'none'} of {list(keys)}{' (loss 0)' if idle and not want[k] else ''}")
        on[k] = len(present) == len(keys)
    print("  switches: " + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in on.items())
          + f", optimizer {tc.get('optimizer', 'sgd')}, warm-up {tc.get('warmup_iters', 0)}, "
          f"pseudo-ignore top {tc.get('pseudo_ignore_top', 0)} bottom {tc.get('pseudo_ignore_bottom', 0)}")
    return on


def ignored_rows(H, top, bottom):
    """DAFormer's pseudo-label crop: rows < top or >= H - bottom of the target crop."""
    r = torch.arange(H)
    return (r < top) | (r >= H - bottom)


def check_rcs(rep, T, tc, y_s, summary):
    """DAFormer Sec. 3.3: P(c) = softmax((1 - f_c) / T) over the sampleable classes; the
    drawn crops hold their class (more than min_crop_ratio x min_pixels pixels)."""
    cfg = tc["rcs"]
    temp, ratio = float(cfg.get("temperature", 0.01)), float(cfg.get("min_crop_ratio", 0.5))
    prob = T["rcs.prob"].to(torch.float64)
    pix, cand = T["rcs.class_pixels"].long(), T["rcs.candidates"].long()
    min_px = int(T["rcs.min_pixels"].reshape(-1)[0])
    cls, hit = T["rcs.class"].long().reshape(-1), T["rcs.crop_hit"].reshape(-1).bool()
    C = prob.numel()
    ok = pix.numel() == C and cand.numel() == C and int(pix.sum()) > 0
    rep.check("rcs", ok, f"rcs.prob / class_pixels / candidates: {C} / {pix.numel()} / "
              f"{cand.numel()} classes, {int(pix.sum())} pixels")
    if not ok:
        return
    valid = (pix > 0) & (cand > 0)
    f = pix.to(torch.float64) / float(pix.sum())
    logits = torch.where(valid, (1 - f) / temp, torch.full_like(f, -math.inf))
    mine = torch.softmax(logits, 0)
    err = float((prob - mine).abs().max())
    rep.check("rcs", err <= 1e-9 + 1e-6 * float(mine.max()),
              f"rcs.prob = softmax((1 - f_c) / {temp:g}) over {int(valid.sum())} classes with "
              f"pixels and candidates: max |diff| {err:.2e}", ratio=err)
    drawn_ok = bool(((cls >= 0) & (cls < C)).all()) and bool((prob[cls.clamp(0, C - 1)] > 0).all())
    rep.check("rcs", drawn_ok, f"drawn classes {cls.tolist()} all have prob > 0")
    counts = [int((y_s[b] == int(c)).sum()) for b, c in enumerate(cls.tolist())]
    need = ratio * min_px
    bad = [b for b in range(cls.numel()) if hit[b] and not counts[b] > need]
    rep.check("rcs", not bad, f"crops with crop_hit hold > {ratio:g} x {min_px} pixels of their "
              f"class: pixels {counts}, hits {hit.int().tolist()}, failing samples {bad}")
    odd = [b for b in range(cls.numel()) if not hit[b] and counts[b] > need]
    if odd:
        rep.note(f"rcs: samples {odd} not flagged crop_hit although their crop holds the class")
    summary.update(rcs_class=cls.tolist(), rcs_hit=hit.int().tolist(), rcs_pixels=counts)
    print(f"  rcs: classes {cls.tolist()}, crop hits {hit.int().tolist()}, class pixels {counts} "
          f"(need > {need:g}), {int(valid.sum())} sampleable classes, max prob {float(prob.max()):.3f}")


def check_mic(rep, T, tc, plabel, tie_up, q32, ignored, x_t, summary):
    """MIC Sec. 3: patch mask aligned at 0 with the configured ratio; labels the teacher's
    pseudo-labels of the unmasked target; weights q (0 on the ignored rows)."""
    cfg = tc["mic"]
    mx, mm = T["mic.x"].to(torch.float64), T["mic.mask"].to(torch.float64)
    my, mw = T["mic.y"].long(), T["mic.w"].to(torch.float64)
    B, _, H, W = x_t.shape
    shapes = (tuple(mx.shape), tuple(mm.shape), tuple(my.shape), tuple(mw.shape))
    ok = shapes == ((B, 3, H, W), (B, 1, H, W), (B, H, W), (B, H, W))
    rep.check("mic", ok, f"mic.x / mask / y / w shapes {shapes}")
    if not ok:
        return
    p = int(cfg.get("patch") or int(tc.get("crop", H)) // 8)
    m = mm[:, 0]
    rep.check("mic", bool(((m == 0) | (m == 1)).all()), "mic.mask takes only 0 and 1")
    rr, cc = (torch.arange(H) // p) * p, (torch.arange(W) // p) * p
    corner = m[:, rr][:, :, cc]
    n_bad = int((m != corner).sum())
    rep.check("mic", n_bad == 0, f"mic.mask constant on {p} x {p} squares aligned at 0: "
              f"{n_bad} pixels differ from their square's corner")
    squares = m[:, ::p, ::p]
    n = squares.numel()
    share = float((squares == 0).double().mean())
    r = float(cfg.get("ratio", 0.7))
    bound = 4 * math.sqrt(r * (1 - r) / n) + 1 / n
    rep.check("mic", abs(share - r) <= bound,
              f"masked share of squares {share:.3f} within {bound:.3f} of the ratio {r:g} ({n} squares)")
    bad = (my != plabel) & ~tie_up
    rep.check("mic", int(bad.sum()) == 0,
              f"mic.y = teacher pseudo-label of the unmasked x_t: {int(bad.sum())} pixels differ "
              f"({int(((my != plabel) & tie_up).sum())} on argmax ties)")
    want = torch.where(ignored, torch.zeros_like(mw), torch.full_like(mw, q32))
    err = float((mw - want).abs().max())
    rep.check("mic", err <= 1e-7, f"mic.w = q {q32:.6g} (0 on the ignored rows): max |diff| {err:.2e}")
    same = [bool(torch.equal(mx[b], x_t[b])) for b in range(B)]
    print(f"  mic: {p} px squares, masked share {share:.3f} (ratio {r:g}), "
          f"{sum(same)} of {B} images un-augmented (equal to x_t)")
    summary.update(mic_masked_share=share, mic_unaugmented=sum(same))


def fd_mask(y_s, h, w, classes, min_ratio, n_classes):
    """DAFormer Sec. 3.4: the label of feature cell (i, j) is the majority class of its
    s x s block of y_s (s = ceil(crop / h); pixels outside the crop and 255 count as
    ignore) when its share is >= min_ratio; the mask holds the cells labelled a thing
    class. Returns the mask and the cells whose majority is a tie."""
    B, H, W = y_s.shape
    s = -(-H // h)
    lab = torch.full((B, h * s, w * s), n_classes, dtype=torch.long)
    lab[:, :H, :W] = torch.where(y_s == 255, torch.full_like(y_s, n_classes), y_s)
    blocks = lab.view(B, h, s, w, s).permute(0, 1, 3, 2, 4).reshape(B, h, w, s * s)
    counts = F.one_hot(blocks, n_classes + 1).sum(-2)
    top2 = counts.topk(2, dim=-1).values
    best, label = counts.max(-1)
    label = torch.where(best.double() / (s * s) >= min_ratio, label, torch.full_like(label, n_classes))
    mask = torch.zeros_like(label, dtype=torch.bool)
    for c in classes:
        mask |= label == int(c)
    tie = (top2[..., 0] == top2[..., 1]) & (best.double() / (s * s) >= min_ratio)
    return mask, tie, s


def feature_distance(rep, T, net, mc, tc, feat_s, x_s, y_s, sb, prev, t, args, summary):
    """L_FD (DAFormer Sec. 3.4) against the frozen initial encoder in eval mode."""
    cfg = tc["fd"]
    enc = net.encoder_names()
    have = {k[len("frozen."):] for k in T if k.startswith("frozen.")}
    missing = sorted(enc - have)
    extra = sorted(have - enc - {n for n in have if n.endswith("num_batches_tracked")})
    rep.check("structure", not missing and not extra,
              f"frozen.* encoder variables: missing {missing[:4]}, unexpected {extra[:4]}")
    frozen = {n: T["frozen." + n] for n in sorted(have)}
    if t == 1:
        moved = [n for n in frozen if n in sb and not torch.equal(frozen[n], sb[n])]
        rep.check("features", not moved, f"frozen encoder = the student at the run's start: "
                  f"{len(moved)} variables differ {moved[:4]}")
    if prev and "frozen" in prev:
        moved = [n for n in frozen if not torch.equal(frozen[n], prev["frozen"].get(n, frozen[n]))]
        rep.check("features", not moved, f"frozen encoder unchanged since step {t - 1}: "
                  f"{len(moved)} variables differ {moved[:4]}")
    FP = {n: v.to(torch.float64) for n, v in frozen.items()}
    FR = {n: v.clone() for n, v in FP.items() if is_running_stat(n)}
    with torch.no_grad():
        feat_f = net.encoder(FP, FR, net.normalize(x_s), train=False)
    for name, mine in (("fd.student", feat_s.detach()), ("fd.frozen", feat_f)):
        tr = T[name].to(torch.float64)
        ok = tr.shape == mine.shape
        err = float((tr - mine).abs().max()) if ok else math.inf
        tol = args.loss_rtol * max(float(mine.abs().max()), 1e-12)
        rep.check("features", ok and err <= tol, f"{name} {tuple(tr.shape)}: max |diff| {err:.3e}, "
                  f"tol {tol:.3e} (1e-4 of the largest |entry|)", ratio=err / tol)
    B, _, h, w = feat_s.shape
    mine, tie, s = fd_mask(y_s, h, w, cfg.get("classes", []), float(cfg.get("min_ratio", 0.75)),
                           int(mc.get("num_classes", 19)))
    tm = T["fd.mask"].bool()
    ok = tuple(tm.shape) == (B, h, w)
    diff = (tm != mine) & ~tie if ok else torch.ones(1, dtype=torch.bool)
    rep.check("fd", ok and int(diff.sum()) == 0,
              f"fd.mask {tuple(tm.shape)} = thing-class majority cells ({s} x {s} blocks, share >= "
              f"{cfg.get('min_ratio')}): {int(mine.sum())} cells, {int(diff.sum())} differ "
              f"({int(((tm != mine) & tie).sum()) if ok else 0} on count ties)")
    if not ok:
        return torch.zeros((), dtype=torch.float64), frozen
    dist = (feat_s - feat_f).norm(p=2, dim=1)
    L_fd = dist[tm].mean() if bool(tm.any()) else torch.zeros((), dtype=torch.float64)
    print(f"  fd: {int(tm.sum())} of {tm.numel()} cells masked ({s} px blocks), "
          f"mean distance {float(L_fd.detach()):.6g}")
    summary["fd_cells"] = int(tm.sum())
    return L_fd, frozen


# ------------------------------------------------------------------- the optimisers


def kink_slack(rep, kinks, ups, names, SP):
    """Per entry of each optimised variable, how far the trainer's gradient can be from
    the replay's because float32 put some ReLU ties (MitNet.relu) on the other side of
    the kink: flipping tie e moves the gradient by c_e = J_e^T u_e (u_e = dL/d out_e).
    Estimated as max(|sum_e c_e|, |sum_e r_e c_e|) with random signs r_e (two backward
    passes; a flipped subset of ties moves it by about as much or less)."""
    pairs = [(y, tie * u) for (y, _, tie), u in zip(kinks, ups) if u is not None and bool(tie.any())]
    if not pairs:
        return {}
    ys = [y for y, _ in pairs]
    gen = torch.Generator().manual_seed(0)
    slack = {}
    for signs in (False, True):
        gos = [g * (torch.randint(0, 2, g.shape, generator=gen) * 2 - 1) if signs else g for _, g in pairs]
        cs = torch.autograd.grad(ys, [SP[n] for n in names], gos, retain_graph=True, allow_unused=True)
        for n, c in zip(names, cs):
            if c is not None:
                slack[n] = torch.maximum(slack[n], c.abs()) if n in slack else c.abs()
    n_ties = sum(int(tie.sum()) for _, _, tie in kinks)
    worst = max(float(v.max()) for v in slack.values())
    rep.note(f"{n_ties} decoder ReLU inputs within {KINK_EPS:g} of the kink: gradient slack up to "
             f"{worst:.3e} on {len(slack)} variables")
    return slack


def optimiser_step(rep, T, tc, params, grads, lr_b, lr_h, gslack=None):
    """SGD with momentum and L2 weight decay, or AdamW as torch.optim.AdamW (Loshchilov &
    Hutter; no weight decay on `norm` names, as DAFormer's recipe). A variable no loss has
    reached yet is left alone; from its first gradient on it steps every iteration.
    `gslack` (kink_slack) widens the tolerance of the update and of the state it leaves."""
    gslack = gslack or {}
    state_slack = {}
    adamw = tc.get("optimizer", "sgd") == "adamw"
    wd = float(tc.get("weight_decay", 5e-4))
    mom = float(tc.get("momentum", 0.9))
    b1, b2 = float(tc.get("beta1", 0.9)), float(tc.get("beta2", 0.999))
    eps = float(tc.get("adam_eps", 1e-8))
    after, state, slack, untouched = {}, {}, {}, []
    for n, g in grads.items():
        p = params[n]
        lr = lr_h if n.startswith(HEAD_PREFIXES) else lr_b
        if adamw:
            m0 = T["adam.exp_avg.before." + n].to(torch.float64)
            v0 = T["adam.exp_avg_sq.before." + n].to(torch.float64)
            k0 = int(round(float(T["adam.step.before." + n].reshape(-1)[0])))
            started = k0 > 0
        else:
            buf0 = T["momentum.before." + n].to(torch.float64)
            started = bool(buf0.any())
        if g is None and not started:
            after[n] = p
            untouched.append(n)
            continue
        g = torch.zeros_like(p) if g is None else g
        if adamw:
            hyper = (lr, 0.0 if "norm" in n else wd, b1, b2, eps)
            after[n], m, v, k = adamw_step(p, g, m0, v0, k0, *hyper)
            state[n] = (m, v, k)
            # The trainer's float32 gradient is known to about 2^-24 of the variable's
            # largest |g|; allow 4x that, propagated through the step (d update / d g is
            # ~ lr / eps where |g| ~ eps). Structural zeros (e.g. ASPP taps that only see
            # padding) are exact in float32 too: no slack there.
            dg = 2.0 ** -22 * float(g.abs().max()) + gslack.get(n, 0.0)
            moved = torch.maximum((adamw_step(p, g + dg, m0, v0, k0, *hyper)[0] - after[n]).abs(),
                                  (adamw_step(p, g - dg, m0, v0, k0, *hyper)[0] - after[n]).abs())
            slack[n] = torch.where(g == 0, torch.zeros_like(moved), moved)
            if n in gslack:
                ds = gslack[n]
                state_slack[n] = ((1 - b1) * ds, (1 - b2) * (2 * g.abs() + ds) * ds)
        else:
            buf = mom * buf0 + g + wd * p
            after[n] = p - lr * buf
            state[n] = (buf,)
            if n in gslack:
                slack[n] = lr * gslack[n]
                state_slack[n] = (gslack[n],)
    if untouched:
        rep.note(f"never-touched variables left unchanged: {', '.join(untouched)}")
    return after, state, slack, state_slack


def adamw_step(p, g, m0, v0, k0, lr, wd, b1, b2, eps):
    """torch.optim.AdamW's update: decoupled decay, bias-corrected moments, step k0 + 1."""
    k = k0 + 1
    m = b1 * m0 + (1 - b1) * g
    v = b2 * v0 + (1 - b2) * g * g
    denom = (v / (1 - b2 ** k)).sqrt() + eps
    return p * (1 - lr * wd) - lr * (m / (1 - b1 ** k)) / denom, m, v, k


def check_state_carried(rep, T, optimizer, prev, args):
    """The optimiser state before step t is the one the replay computed at step t - 1."""
    if not prev or "opt" not in prev:
        return
    worst, worst_key, bad, n_vars = 0.0, "", [], 0
    kink = prev.get("opt_slack", {})
    for n, st in prev["opt"].items():
        if optimizer == "adamw":
            pairs = [("adam.exp_avg.before." + n, st[0]), ("adam.exp_avg_sq.before." + n, st[1])]
            k = float(T["adam.step.before." + n].reshape(-1)[0])
            if k != st[2]:
                bad.append(f"{n}: step {k} != {st[2]}")
        else:
            pairs = [("momentum.before." + n, st[0])]
        for i, (key, mine) in enumerate(pairs):
            tr = T[key].to(torch.float64)
            big = float(tr.abs().max())
            tol = max(args.update_rtol * big, 1e-30)
            diff = (tr - mine).abs()
            err = float(diff.max())
            ratio = float((diff / (tol + kink[n][i])).max()) if n in kink else err / tol
            if ratio >= worst:
                worst, worst_key = ratio, key
            n_vars += 1
            if ratio > 1.0:
                bad.append(f"{key}: max |diff| {err:.3e} > tol {tol:.3e}"
                           f"{' (+ ReLU-kink slack)' if n in kink else ''}")
    rep.check("optimiser-state", not bad, f"{n_vars} state tensors carried from the previous "
              f"step (worst {worst:.3e} of tolerance, {worst_key}): {bad[:4]}", ratio=worst)


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


def compare_updates(rep, who, names, before, after_tr, after_mine, args, slack=None):
    """`slack` (per variable, per entry), added to the tolerance: what the float32
    resolution of the gradient can move an ill-conditioned update (AdamW where |g| is near
    eps) and what float32 ReLU ties can move the gradient (kink_slack)."""
    slack = slack or {}
    loose, entries, used = 0, 0, 0
    for n in names:
        b = before[n].to(torch.float64)
        a = after_tr[n].to(torch.float64)
        upd_tr = a - b
        upd_mine = after_mine[n].detach() - b
        big = float(upd_tr.abs().max()) if upd_tr.numel() else 0.0
        res = float(max(b.abs().max(), a.abs().max())) * 2.0 ** -22 if b.numel() else 0.0
        tol = max(args.update_rtol * big, res, 1e-9)
        diff = (upd_mine - upd_tr).abs()
        allowed = tol + slack[n] if n in slack else torch.full_like(diff, tol)
        if n in slack:
            loose, entries = loose + int((slack[n] > tol).sum()), entries + diff.numel()
        err = float(diff.max()) if b.numel() else 0.0
        ratio = float((diff / allowed).max()) if b.numel() else 0.0
        n_slack = int(((diff > tol) & (diff <= allowed)).sum())
        cat = f"{who}-bn-stats" if is_running_stat(n) else f"{who}-update"
        extra = f", {n_slack} entries within the gradient slack" if n_slack else ""
        rep.check(cat, ratio <= 1.0,
                  f"{n}: max |diff| {err:.3e}, largest |update| {big:.3e}, tol {tol:.3e}{extra}",
                  ratio=ratio)
        used += n_slack
    if entries:
        print(f"  {who}: {loose} of {entries} entries have a gradient slack above their tolerance "
              f"(AdamW |g| near adam_eps, ReLU ties); {used} entries needed it")


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
        unit = "of tolerance" if cat.endswith(("update", "stats", "state", "features")) else "relative"
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
