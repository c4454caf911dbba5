#!/usr/bin/env python3
"""The PyTorch speed peer of `rccr-train bench`: one RCCR training iteration (paper
Algorithm 1, Eq. 1-10) written as a careful PyTorch user would, from the paper and the
settings of docs/method.md, not from the Rust code. It times the same work as the bench
(baseline = mean teacher + ClassMix, then rccr = baseline + CutMix + L_cont + memory bank,
in one process) and prints one JSON object with the bench's field names, so
scripts/gpu/compare.py can put the two side by side (docs/gpu-acceptance.md).

What a careful user does here: a torchvision-style ResNet DeepLabv2 (the DACS layout:
Caffe-style bottlenecks, ceil-mode max-pool, layer3/4 dilated 2/4, output stride 8, a
4-branch ASPP classifier, a 1x1-ReLU-1x1 projector to 128-d unit vectors), cuDNN
benchmark mode, bf16 autocast for the forwards, channels-last tensors, SGD with the
fused (CUDA) or foreach kernels, the EMA teacher with `torch._foreach_*`, one backward
of the summed Eq. 9 loss, L_cont as one masked anchor x negative matrix under autograd,
batched colour jitter and blur, and no host synchronisation inside the step except the
class list ClassMix needs.

Settings (the bench's): crop 512, batch 2 per domain, 19 classes, tau 0.1, NS(R) half of
the 2Bhw current negatives, NS(C), a bank of the last 3 iterations x (4000 + 4000)
cells, positive sampling off (as `rccr-train bench` without --ps: every box cell is an
anchor), lr 2.5e-4 (head x10), momentum 0.9, weight decay 5e-4, poly 0.9 over 250k
iterations, EMA alpha min(1 - 1/(t+1), 0.99), BN affine frozen.

CPU: `--device cpu --backbone small --crop 64` runs in seconds (the test in
trainer/tests/peer.rs does that)."""

import argparse
import collections
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = 255
BACKBONES = {
    # blocks per layer, planes per layer, stem width, bottleneck (expansion 4) or basic
    "resnet101": ([3, 4, 23, 3], [64, 128, 256, 512], 64, True),
    "resnet50": ([3, 4, 6, 3], [64, 128, 256, 512], 64, True),
    "small": ([1, 1, 1, 1], [16, 32, 64, 128], 16, False),
}
ASPP_DILATIONS = (6, 12, 18, 24)
BGR_MEAN = (104.008, 116.669, 122.675)


# ---------------------------------------------------------------- network
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, dilation, downsample):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, dilation, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class DeepLabV2(nn.Module):
    """Encoder (ResNet, output stride 8), ASPP classifier and projector."""

    def __init__(self, backbone, num_classes, proj_dim=128):
        super().__init__()
        blocks, planes, stem, bottleneck = BACKBONES[backbone]
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.inplanes = stem
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        for i in range(4):
            layer = self._layer(block, planes[i], blocks[i], strides[i], dilations[i])
            setattr(self, f"layer{i + 1}", layer)
        width = planes[3] * block.expansion
        self.layer5 = nn.ModuleList(
            nn.Conv2d(width, num_classes, 3, 1, d, d, bias=True) for d in ASPP_DILATIONS
        )
        for conv in self.layer5:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
        self.projector = nn.Sequential(
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, proj_dim, 1)
        )
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def _layer(self, block, planes, n, stride, dilation):
        out = planes * block.expansion
        down = None
        if stride != 1 or self.inplanes != out or dilation > 1:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [block(self.inplanes, planes, stride, dilation, down)]
        self.inplanes = out
        layers += [block(out, planes, 1, dilation, None) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def normalize(self, rgb255):
        return rgb255.flip(1) - self.mean  # DACS: BGR, mean subtraction, no std

    def encode(self, x):
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def classify(self, features):
        return sum(conv(features) for conv in self.layer5)

    def project(self, features):
        return F.normalize(self.projector(features), dim=1)


def freeze_bn_affine(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)


# ---------------------------------------------------------------- mixing
def classmix_masks(labels, num_classes, gen):
    """Per image, ceil(n/2) of its n present classes (255 excluded): a 0/1 mask."""
    masks = []
    for lab in labels:
        present = torch.unique(lab)  # the one host synchronisation a step needs
        present = present[present < num_classes]
        k = (present.numel() + 1) // 2
        chosen = present[torch.randperm(present.numel(), generator=gen)[:k].to(present.device)]
        masks.append(torch.isin(lab, chosen))
    return torch.stack(masks).float()


def cutmix_box(crop, gen):
    """One square box on the 8-pixel grid, area fraction ~ Beta(1, 1) = U(0, 1)."""
    area = torch.rand((), generator=gen).item()
    side = min(max(int(math.sqrt(area) * crop / 8) * 8, 8), crop)
    slots = (crop - side) // 8
    y0 = 8 * int(torch.randint(0, slots + 1, (), generator=gen))
    x0 = 8 * int(torch.randint(0, slots + 1, (), generator=gen))
    return y0, x0, side


_CONST = {}


def const(values, dev):
    """A small constant tensor, uploaded once per device."""
    key = (values, str(dev))
    if key not in _CONST:
        _CONST[key] = torch.tensor(values, device=dev)
    return _CONST[key]


YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))
RGB = ((1.0, 0.9563, 0.6210), (1.0, -0.2721, -0.6474), (1.0, -1.1070, 1.7046))


def strong_augment(x, gen, strength=0.2, p_jitter=0.8, p_blur=0.5):
    """DACS's colour jitter (brightness, contrast, saturation, hue as a YIQ rotation) and
    Gaussian blur, with per-image parameters, batched over the images."""
    b, dev = x.shape[0], x.device
    r = torch.rand(b, 7, generator=gen).to(dev, non_blocking=True)
    x = x / 255.0
    on = (r[:, 0] < p_jitter).view(b, 1, 1, 1)
    bri, con, sat = [(1 - strength + 2 * strength * r[:, i]).view(b, 1, 1, 1) for i in (1, 2, 3)]
    gw = const((0.299, 0.587, 0.114), dev).view(1, 3, 1, 1)
    y = (x * bri).clamp(0, 1)
    m = (y * gw).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    y = ((y - m) * con + m).clamp(0, 1)
    g = (y * gw).sum(1, keepdim=True)
    y = ((y - g) * sat + g).clamp(0, 1)
    theta = 2 * math.pi * strength * (2 * r[:, 6] - 1)
    cos, sin, one, zero = theta.cos(), theta.sin(), torch.ones_like(theta), torch.zeros_like(theta)
    rot = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1).view(b, 3, 3)
    mat = const(RGB, dev) @ rot @ const(YIQ, dev)
    y = torch.einsum("bij,bjhw->bihw", mat, y).clamp(0, 1)
    x = torch.where(on, y, x)
    # Blur: sigma ~ U(0.15, 1.15), separable, radius 5 (= ceil(4 * 1.15)), reflect pad.
    sigma = (0.15 + r[:, 4]).view(b, 1)
    k = torch.arange(-5, 6, device=dev, dtype=x.dtype).view(1, -1)
    w = torch.exp(-(k**2) / (2 * sigma**2))
    w = (w / w.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (3b) x 11
    h, wd = x.shape[2], x.shape[3]
    y = F.pad(x.reshape(1, 3 * b, h, wd), (5, 5, 5, 5), mode="reflect")
    y = F.conv2d(y, w.view(3 * b, 1, 1, 11), groups=3 * b)
    y = F.conv2d(y, w.view(3 * b, 1, 11, 1), groups=3 * b).view_as(x)
    x = torch.where((r[:, 5] < p_blur).view(b, 1, 1, 1), y, x)
    return x * 255.0


# ---------------------------------------------------------------- L_cont
def contrastive_loss(e_cut, e_t, cut_lab, t_lab, anchors, bank, tau, gen):
    """Eq. 4-8: anchors = box cells of E_cut, positive = E_t at the cell, negatives =
    a random half of all 2Bhw cells of E_cut and E_t (NS(R)) plus the bank, minus the
    anchor's own two cells and those of its label (NS(C)); mean over anchors."""
    k = e_cut.shape[1]
    u = e_cut.permute(0, 2, 3, 1).reshape(-1, k)
    t = e_t.permute(0, 2, 3, 1).reshape(-1, k)
    n = u.shape[0]
    ids = torch.randperm(2 * n, generator=gen)[:n].to(u.device, non_blocking=True)
    cols = torch.cat([u, t])[ids]
    col_lab = torch.cat([cut_lab.reshape(-1), t_lab.reshape(-1)])[ids]
    col_id = ids
    if bank is not None:
        cols = torch.cat([cols, bank[0]])
        col_lab = torch.cat([col_lab, bank[1]])
        col_id = torch.cat([ids, ids.new_full((bank[1].numel(),), -1)])
    a_idx = anchors.reshape(-1).nonzero().squeeze(1)
    a = u[a_idx]
    pos = (a * t[a_idx]).sum(1, keepdim=True) / tau
    neg = a @ cols.t() / tau
    a_lab = t_lab.reshape(-1)[a_idx]
    drop = (col_id == a_idx[:, None]) | (col_id == a_idx[:, None] + n)
    drop |= col_lab[None, :] == a_lab[:, None]
    neg = neg.masked_fill(drop, float("-inf"))
    logits = torch.cat([pos, neg], 1)
    return (torch.logsumexp(logits, 1) - pos.squeeze(1)).mean()


class MemoryBank:
    def __init__(self, iterations=3, per_iteration=4000):
        self.entries = collections.deque(maxlen=iterations)
        self.per_iteration = per_iteration

    def get(self):
        if not self.entries:
            return None
        return torch.cat([e for e, _ in self.entries]), torch.cat([l for _, l in self.entries])

    @torch.no_grad()
    def push(self, e_cut, e_t, cut_lab, t_lab, gen):
        embs, labs = [], []
        for e, l in ((e_cut, cut_lab), (e_t, t_lab)):
            e = e.detach().float().permute(0, 2, 3, 1).reshape(-1, e.shape[1])
            pick = torch.randperm(e.shape[0], generator=gen)[: self.per_iteration].to(e.device)
            embs.append(e[pick])
            labs.append(l.reshape(-1)[pick])
        self.entries.append((torch.cat(embs), torch.cat(labs)))


# ---------------------------------------------------------------- one iteration
class Peer:
    def __init__(self, args, rccr):
        self.args, self.rccr, self.dev = args, rccr, torch.device(args.device)
        torch.manual_seed(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)  # host draws (mixing, NS(R))
        self.student = DeepLabV2(args.backbone, args.num_classes).to(self.dev)
        freeze_bn_affine(self.student)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        if args.channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        head = [p for n, p in self.student.named_parameters()
                if p.requires_grad and n.split(".")[0] in ("layer5", "projector")]
        head_ids = {id(p) for p in head}
        body = [p for p in self.student.parameters() if p.requires_grad and id(p) not in head_ids]
        kw = {"fused": True} if args.optimizer == "fused" else {"foreach": args.optimizer == "foreach"}
        self.opt = torch.optim.SGD(
            [{"params": body, "lr": args.lr}, {"params": head, "lr": 10 * args.lr}],
            lr=args.lr, momentum=0.9, weight_decay=5e-4, **kw)
        self.t_params = list(self.teacher.parameters())
        self.s_params = list(self.student.parameters())
        self.bank = MemoryBank()
        self.t = 0

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.precision == "bf16")

    def fmt(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x

    def seg_logits(self, model, x, crop):
        with self.autocast():
            logits = model.classify(model.encode(self.fmt(x)))
        return F.interpolate(logits.float(), (crop, crop), mode="bilinear", align_corners=True)

    def step(self, xs, ys, xt):
        a, t, crop = self.args, self.t, xs.shape[-1]
        n_total = a.total_iterations
        lr = a.lr * (1 - t / n_total) ** 0.9
        self.opt.param_groups[0]["lr"], self.opt.param_groups[1]["lr"] = lr, 10 * lr
        mu = 0.01 * math.exp(-5 * math.sqrt(1 - t / n_total)) if self.rccr else 0.0
        # Teacher (no grad, training-mode BN): pseudo-labels, q, grid logits, features.
        with torch.no_grad(), self.autocast():
            t_feat = self.teacher.encode(self.fmt(xt))
            t_grid = self.teacher.classify(t_feat).float()
        prob, pseudo = F.interpolate(t_grid, (crop, crop), mode="bilinear",
                                     align_corners=True).softmax(1).max(1)
        q = (prob >= 0.968).float().mean()
        # L_CE on the source.
        loss_ce = F.cross_entropy(self.seg_logits(self.student, xs, crop), ys, ignore_index=IGNORE)
        # ClassMix + L_cons.
        mask = classmix_masks(ys, a.num_classes, self.gen)
        x_mix = strong_augment(mask[:, None] * xs + (1 - mask[:, None]) * xt, self.gen)
        y_mix = torch.where(mask > 0, ys, pseudo)
        w = mask + (1 - mask) * q
        ce = F.cross_entropy(self.seg_logits(self.student, x_mix, crop), y_mix,
                             ignore_index=IGNORE, reduction="none")
        loss_cons = (ce * w).mean()
        loss = loss_ce + loss_cons
        loss_cont = torch.zeros((), device=self.dev)
        if self.rccr:
            loss_cont = self.contrastive(xs, ys, xt, t_feat, t_grid, crop)
            loss = loss + mu * loss_cont
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        alpha = min(1 - 1 / (t + 1), 0.99)
        with torch.no_grad():
            torch._foreach_lerp_(self.t_params, self.s_params, 1 - alpha)
        self.t += 1
        return torch.stack([loss_ce.detach(), loss_cons.detach(), loss_cont.detach(), q])

    def contrastive(self, xs, ys, xt, t_feat, t_grid, crop):
        y0, x0, side = cutmix_box(crop, self.gen)
        box = torch.zeros(1, 1, crop, crop, device=self.dev)
        box[..., y0:y0 + side, x0:x0 + side] = 1
        x_cut = strong_augment(box * xt + (1 - box) * xs, self.gen)
        with self.autocast():
            e_cut = self.student.project(self.student.encode(self.fmt(x_cut))).float()
            with torch.no_grad():
                e_t = self.teacher.project(t_feat).float()
        h, w = e_t.shape[-2:]
        t_lab = t_grid.argmax(1)
        cells = torch.zeros(h, w, dtype=torch.bool, device=self.dev)
        cells[y0 // 8:(y0 + side) // 8, x0 // 8:(x0 + side) // 8] = True
        cells = cells.expand_as(t_lab)
        rows = (torch.arange(h, device=self.dev) * 8).clamp_max(crop - 1)
        cols = (torch.arange(w, device=self.dev) * 8).clamp_max(crop - 1)
        ys_grid = ys[:, rows][:, :, cols]  # the label at each cell's centre (8i, 8j)
        cut_lab = torch.where(cells, t_lab, ys_grid)
        loss = contrastive_loss(e_cut, e_t, cut_lab, t_lab, cells, self.bank.get(),
                                self.args.tau, self.gen)
        self.bank.push(e_cut, e_t, cut_lab, t_lab, self.gen)
        return loss


# ---------------------------------------------------------------- timing
def synthetic(args, dev):
    g = torch.Generator().manual_seed(args.seed + 1)
    b, c = args.batch_size, args.crop
    xs = torch.rand(b, 3, c, c, generator=g) * 255
    xt = torch.rand(b, 3, c, c, generator=g) * 255
    blocks = max(c // 32, 1)
    coarse = torch.randint(0, args.num_classes + 1, (b, 1, blocks, blocks), generator=g)
    coarse[coarse == args.num_classes] = IGNORE
    ys = F.interpolate(coarse.float(), (c, c), mode="nearest").squeeze(1).long()
    return xs.to(dev), ys.to(dev), xt.to(dev)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def nvidia_smi_mib():
    """What nvidia-smi says this process (else the device) uses, MiB: the figure
    rccr-train bench reports, so the two compare like for like."""
    def query(*args):
        try:
            out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20)
            return out.stdout if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""
    for line in query("--query-compute-apps=pid,used_memory").splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used), "nvidia-smi per-process used memory"
    used = query("--query-gpu=memory.used", "-i", str(torch.cuda.current_device())).split()
    if used:
        return float(used[0]), "nvidia-smi device used memory (dedicated GPU assumed)"
    return None, "unavailable: nvidia-smi not found or unreadable"


def peak_mib(dev):
    """(peak MiB, how read, torch's own peak reservation or None), cumulative."""
    if dev.type == "cuda":
        mib, how = nvidia_smi_mib()
        return mib, how, torch.cuda.max_memory_reserved(dev) / 2**20
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return kb / 1024, "process resident high-water mark (VmHWM)", None


def bench_mode(args, rccr, batches):
    peer = Peer(args, rccr)
    dev = peer.dev
    first = None
    for i in range(args.warmup + args.iterations):
        if i == args.warmup:
            sync(dev)
            times = []
        t0 = time.perf_counter()
        losses = peer.step(*batches)
        if i >= args.warmup:
            sync(dev)
            times.append((time.perf_counter() - t0) * 1e3)
        if first is None:
            first = losses.tolist()
    last = losses.tolist()
    mib, how, torch_mib = peak_mib(dev)
    return {
        "mode": "rccr" if rccr else "baseline",
        "ms_per_iteration": statistics.fmean(times),
        "ms_median": sorted(times)[len(times) // 2],  # as rccr-train bench
        "ms_min": min(times),
        "peak_memory_mib": mib,
        "memory_source": how,
        "torch_max_reserved_mib": torch_mib,
        "first_losses": dict(zip(("loss_ce", "loss_cons", "loss_cont", "q"), first)),
        "last_losses": dict(zip(("loss_ce", "loss_cons", "loss_cont", "q"), last)),
    }


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet101", choices=sorted(BACKBONES))
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--mode", default="rccr", choices=("rccr", "baseline"),
                   help="rccr also measures baseline, as rccr-train bench")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--optimizer", default=None, choices=("fused", "foreach", "plain"),
                   help="SGD kernels (default: fused on CUDA, foreach on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC tensors (default: on for CUDA)")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--total-iterations", type=int, default=250_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out", default=None, help="also write the JSON report here")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if a.precision == "bf16" and not cuda:
        p.error("--precision bf16 uses CUDA autocast; on the CPU use fp32 (as rccr-train)")
    if cuda and not torch.cuda.is_available():
        p.error(f"--device {a.device}: no CUDA device visible to torch {torch.__version__}")
    if a.crop % 8 or a.iterations < 1:
        p.error("--crop must be a multiple of 8 and --iterations at least 1")
    a.optimizer = a.optimizer or ("fused" if cuda else "foreach")
    a.channels_last = cuda if a.channels_last is None else a.channels_last
    return a


def main(argv=None):
    args = parse(argv if argv is not None else sys.argv[1:])
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    batches = synthetic(args, dev)
    modes = [False, True] if args.mode == "rccr" else [False]
    results = [bench_mode(args, rccr, batches) for rccr in modes]
    ratio = lambda f: (results[1][f] / results[0][f]) if len(results) == 2 else None
    report = {
        "implementation": "pytorch-peer",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "backbone": args.backbone, "crop": args.crop, "batch_size": args.batch_size,
        "precision": args.precision, "iterations": args.iterations, "warmup": args.warmup,
        "threads": torch.get_num_threads(), "optimizer": args.optimizer,
        "channels_last": args.channels_last, "modes": results,
        "rccr_over_baseline": ratio("ms_per_iteration"),
        "rccr_over_baseline_median": ratio("ms_median"),
    }
    text = json.dumps(report)
    print(text)
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
