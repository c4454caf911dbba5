# Writes the .pth fixtures of models/tests/pth.rs with the installed PyTorch, from the
# independent DACS DeepLabv2 of dacs_deeplabv2.py (ResNet-50 layers, 5 classes), plus the
# PyTorch logits of the networks they hold. Usage:
#   python3 make_pth.py OUT_DIR
# OUT_DIR receives the .pth files, input.bin (float32 2x3x57x70 RGB 0..255), the logits
# ema.bin / student.bin / fp16.bin / ema_two_branch.bin (float32, PyTorch's forward in
# eval mode) and manifest.json (shapes, the marker a hostile file would create).
import json, os, struct, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dacs_deeplabv2 import ResNet  # noqa: E402

LAYERS = [3, 4, 6, 3]
CLASSES = 5
MEAN = torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)


def make_net(seed, classes=CLASSES, dacs_bug=False):
    torch.manual_seed(seed)
    net = ResNet(LAYERS, classes, dacs_bug=dacs_bug)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_mean") or ("bn" in name or "downsample.1" in name) and name.endswith(".bias"):
                t.copy_(torch.randn_like(t) * 0.1)
            elif name.endswith("running_var") or ("bn" in name or "downsample.1" in name) and name.endswith(".weight"):
                t.copy_(torch.rand_like(t) * 0.5 + 0.75)
            elif name.endswith("num_batches_tracked"):
                t.fill_(seed * 100)
    return net.eval()


def logits(net, rgb):
    with torch.no_grad():
        return net(rgb[:, [2, 1, 0]] - MEAN).contiguous()  # DACS: BGR minus mean


def write_f32(path, t):
    values = t.flatten().tolist()
    with open(path, "wb") as f:
        f.write(struct.pack("<%df" % len(values), *values))


def save(obj, path, legacy=False, **kw):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy, **kw)


def shared_views(sd):
    """The same values, every float tensor a view into one storage: contiguous slices at
    offsets, conv1.weight a permuted (non-contiguous) view, bn1.running_mean a strided one."""
    floats = [(k, v) for k, v in sd.items() if v.is_floating_point()]
    sizes = [v.numel() * (2 if k == "bn1.running_mean" else 1) for k, v in floats]
    big = torch.zeros(sum(sizes))
    out, offset = {}, 0
    for (k, v), n in zip(floats, sizes):
        seg = big[offset:offset + n]
        if k == "conv1.weight":
            seg.copy_(v.permute(1, 0, 2, 3).contiguous().flatten())
            out[k] = seg.view(v.shape[1], v.shape[0], *v.shape[2:]).permute(1, 0, 2, 3)
        elif k == "bn1.running_mean":
            seg[0::2] = v
            out[k] = seg[0::2]
        else:
            seg.copy_(v.flatten())
            out[k] = seg.view(v.shape)
        offset += n
    for k, v in out.items():
        assert v.untyped_storage().data_ptr() == big.untyped_storage().data_ptr(), k
        assert torch.equal(v, sd[k]), k
    assert not out["conv1.weight"].is_contiguous() and not out["bn1.running_mean"].is_contiguous()
    out.update({k: v for k, v in sd.items() if not v.is_floating_point()})
    return out


class Payload:
    """What a hostile file carries: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def checkpoint(student, ema):
    params = [q.detach().clone().requires_grad_() for q in student.layer5.parameters()]
    opt = torch.optim.SGD(params, lr=2.5e-3, momentum=0.9)
    for q in params:
        q.grad = torch.ones_like(q)
    opt.step()  # momentum buffers in the optimizer state (tensors under another key)
    module = lambda sd: {"module." + k: v for k, v in sd.items()}  # DataParallel names
    return {
        "iteration": 1234,
        "model": module(student.state_dict()),
        "optimizer": opt.state_dict(),
        "config": {"model": "DeepLabv2", "training": {"batch_size": 2, "learning_rate": 2.5e-4}},
        "ema_model": module(ema.state_dict()),
    }


def main():
    out = sys.argv[1]
    torch.set_grad_enabled(False)
    student, ema = make_net(1), make_net(2)
    torch.manual_seed(3)
    rgb = torch.rand(2, 3, 57, 70) * 255
    write_f32(os.path.join(out, "input.bin"), rgb)
    write_f32(os.path.join(out, "ema.bin"), logits(ema, rgb))
    write_f32(os.path.join(out, "student.bin"), logits(student, rgb))
    # The DACS release's classifier (branches 6 and 12 summed) over the same weights.
    write_f32(os.path.join(out, "ema_two_branch.bin"), logits(make_net(2, dacs_bug=True), rgb))
    sd = ema.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    rounded = make_net(2)
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    write_f32(os.path.join(out, "fp16.bin"), logits(rounded, rgb))
    p = lambda name: os.path.join(out, name)

    save(sd, p("zip_state_dict.pth"))
    save(sd, p("zip_protocol4.pth"), pickle_protocol=4)
    save(half, p("zip_fp16.pth"))
    views = shared_views(sd)
    save(views, p("zip_views.pth"))
    save(views, p("legacy_views.pth"), legacy=True)
    torch.set_grad_enabled(True)
    ckpt = checkpoint(student, ema)
    torch.set_grad_enabled(False)
    save(ckpt, p("zip_dacs.pth"))
    save(ckpt, p("legacy_dacs.pth"), legacy=True)
    save({"model": {"conv1.weight": sd["conv1.weight"]}, "iteration": 5}, p("student_only.pth"))
    coco = {"Scale." + k: v for k, v in sd.items() if not k.startswith("layer5.")}
    coco.update({"Scale." + k: v for k, v in make_net(4, classes=91).state_dict().items() if k.startswith("layer5.")})
    save(coco, p("legacy_coco.pth"), legacy=True)
    marker = p("PWNED")
    evil = {"conv1.weight": sd["conv1.weight"], "payload": Payload(marker)}
    save(evil, p("evil_zip.pth"))
    save(evil, p("evil_legacy.pth"), legacy=True)
    save(evil, p("evil_protocol4.pth"), pickle_protocol=4)
    assert not os.path.exists(marker)

    manifest = {
        "input_shape": list(rgb.shape),
        "logits_shape": list(logits(ema, rgb).shape),
        "classes": CLASSES,
        "marker": marker,
        "conv1_weight_sum": float(sd["conv1.weight"].double().sum()),
    }
    with open(p("manifest.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
