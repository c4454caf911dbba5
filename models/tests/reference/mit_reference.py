# Independent reference: the Mix Transformer (MiT-B0..B5) with DAFormer's and
# SegFormer's decoders, written in plain functional PyTorch from the papers
# (Xie et al., "SegFormer", NeurIPS 2021, Sec. 3 and Tab. 6; Hoyer et al., "DAFormer",
# CVPR 2022, Sec. 3.2 and its sepaspp model) over a dict of tensors that carries the
# official checkpoints' names. Used by models/tests/mit_reference.rs and
# models/tests/mit_import.rs. Usage:
#   python3 mit_reference.py forward JOBS.json
#       each job: {weights, input, out, variant, decoder, classes, train}; `weights` is a
#       safetensors file (ours), `input` a safetensors file holding `rgb` (N x 3 x H x W,
#       RGB 0..255); `out` receives the float32 logits.
#   python3 mit_reference.py checkpoints OUT_DIR
#       writes MiT-B0 checkpoints in the official layouts (see `checkpoints`), the input
#       and PyTorch's outputs for each, and manifest.json.
import json, os, struct, sys
import torch
import torch.nn.functional as F

# SegFormer Tab. 6: widths C_i, depths L_i; heads N_i, reduction R_i, MLP ratio E_i.
WIDTHS = {"mit-b0": [32, 64, 160, 256]}
for v in ["mit-b1", "mit-b2", "mit-b3", "mit-b4", "mit-b5"]:
    WIDTHS[v] = [64, 128, 320, 512]
DEPTHS = {"mit-b0": [2, 2, 2, 2], "mit-b1": [2, 2, 2, 2], "mit-b2": [3, 4, 6, 3],
          "mit-b3": [3, 4, 18, 3], "mit-b4": [3, 8, 27, 3], "mit-b5": [3, 6, 40, 3]}
HEADS = [1, 2, 5, 8]
REDUCTION = [8, 4, 2, 1]
MLP_RATIO = 4
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[8 + n + a:8 + n + b]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"])
    return out


def decoder_width(variant, decoder):
    if decoder == "segformer" and variant not in ("mit-b0", "mit-b1"):
        return 768
    return 256


# ----------------------------------------------------------------------------- encoder

def ln(x, w, name, eps):
    return F.layer_norm(x, (x.shape[-1],), w[name + ".weight"], w[name + ".bias"], eps)


def lin(x, w, name):
    return x @ w[name + ".weight"].t() + w[name + ".bias"]


def attention(x, hw, w, p, heads, r):
    # Efficient self-attention: K, V from the sequence reduced by R (SegFormer Eq. 2).
    n, length, c = x.shape
    h, wd = hw
    q = lin(x, w, p + ".q").reshape(n, length, heads, c // heads)
    src = x
    if r > 1:
        grid = x.transpose(1, 2).reshape(n, c, h, wd)
        grid = F.conv2d(grid, w[p + ".sr.weight"], w[p + ".sr.bias"], stride=r)
        src = ln(grid.flatten(2).transpose(1, 2), w, p + ".norm", 1e-5)
    kv = lin(src, w, p + ".kv")
    k = kv[..., :c].reshape(n, -1, heads, c // heads)
    v = kv[..., c:].reshape(n, -1, heads, c // heads)
    logits = torch.einsum("nqhd,nkhd->nhqk", q, k) / (c // heads) ** 0.5
    out = torch.einsum("nhqk,nkhd->nqhd", logits.softmax(-1), v).reshape(n, length, c)
    return lin(out, w, p + ".proj")


def mix_ffn(x, hw, w, p):
    # Mix-FFN (SegFormer Eq. 3): MLP(GELU(Conv3x3(MLP(x)))).
    n, length, _ = x.shape
    y = lin(x, w, p + ".fc1")
    hidden = y.shape[-1]
    grid = y.transpose(1, 2).reshape(n, hidden, *hw)
    grid = F.conv2d(grid, w[p + ".dwconv.dwconv.weight"], w[p + ".dwconv.dwconv.bias"],
                    padding=1, groups=hidden)
    y = F.gelu(grid.flatten(2).transpose(1, 2))
    return lin(y, w, p + ".fc2")


def encoder(x, w, variant):
    outs = []
    for i in range(4):
        s = i + 1
        k, stride = (7, 4) if i == 0 else (3, 2)
        grid = F.conv2d(x, w[f"patch_embed{s}.proj.weight"], w[f"patch_embed{s}.proj.bias"],
                        stride=stride, padding=k // 2)
        n, c, h, wd = grid.shape
        t = ln(grid.flatten(2).transpose(1, 2), w, f"patch_embed{s}.norm", 1e-5)
        for j in range(DEPTHS[variant][i]):
            p = f"block{s}.{j}"
            t = t + attention(ln(t, w, p + ".norm1", 1e-6), (h, wd), w, p + ".attn", HEADS[i], REDUCTION[i])
            t = t + mix_ffn(ln(t, w, p + ".norm2", 1e-6), (h, wd), w, p + ".mlp")
        t = ln(t, w, f"norm{s}", 1e-6)
        x = t.transpose(1, 2).reshape(n, c, h, wd)
        outs.append(x)
    return outs


# ----------------------------------------------------------------------------- decoders

def bn(x, w, name, train):
    rm, rv = w[name + ".running_mean"].clone(), w[name + ".running_var"].clone()
    return F.batch_norm(x, rm, rv, w[name + ".weight"], w[name + ".bias"], train, 0.1, 1e-5)


def conv_bn_relu(x, w, p, train, dilation=1, groups=1):
    k = w[p + ".conv.weight"].shape[-1]
    y = F.conv2d(x, w[p + ".conv.weight"], None, padding=dilation * (k // 2),
                 dilation=dilation, groups=groups)
    return F.relu(bn(y, w, p + ".bn", train))


def embed_concat(feats, w, p):
    # Linear embedding of each stage as a 1x1 convolution, then bilinear to stride 4.
    size = feats[0].shape[2:]
    maps = []
    for i, f in enumerate(feats):
        wt = w[f"{p}.{i}.proj.weight"]
        e = F.conv2d(f, wt[:, :, None, None], w[f"{p}.{i}.proj.bias"])
        maps.append(F.interpolate(e, size=size, mode="bilinear", align_corners=False))
    return torch.cat(maps, 1)


def daformer(feats, w, train):
    # Context-aware fusion: ASPP of a 1x1 and depthwise-separable 3x3 convolutions at
    # dilations 6, 12, 18, each with BN + ReLU, then a 3x3 bottleneck (DAFormer Fig. 3).
    x = embed_concat(feats, w, "decode_head.embed_layers")
    p = "decode_head.fuse_layer.aspp_modules"
    branches = [conv_bn_relu(x, w, f"{p}.0", train)]
    for j, d in enumerate([6, 12, 18], start=1):
        y = conv_bn_relu(x, w, f"{p}.{j}.depthwise_conv", train, dilation=d, groups=x.shape[1])
        branches.append(conv_bn_relu(y, w, f"{p}.{j}.pointwise_conv", train))
    fused = conv_bn_relu(torch.cat(branches, 1), w, "decode_head.fuse_layer.bottleneck", train)
    return F.conv2d(fused, w["decode_head.conv_seg.weight"], w["decode_head.conv_seg.bias"])


def segformer(feats, w, train):
    # All-MLP decoder (SegFormer Eq. 4), stages concatenated in order 1..4.
    x = embed_concat(feats, w, "decode_head.linear_c")
    fused = conv_bn_relu(x, w, "decode_head.linear_fuse", train)
    return F.conv2d(fused, w["decode_head.linear_pred.weight"], w["decode_head.linear_pred.bias"])


def normalize(rgb):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def logits(w, rgb, variant, decoder, train):
    feats = encoder(normalize(rgb), w, variant)
    head = {"daformer": daformer, "segformer": segformer}[decoder]
    return head(feats, w, train)


def write_f32(path, t):
    values = t.detach().float().flatten().tolist()
    open(path, "wb").write(struct.pack(f"<{len(values)}f", *values))


def forward(jobs_path):
    torch.set_grad_enabled(False)
    for job in json.load(open(jobs_path)):
        w = read_safetensors(job["weights"])
        rgb = read_safetensors(job["input"])["rgb"]
        out = logits(w, rgb, job["variant"], job["decoder"], job["train"])
        assert out.shape[1] == job["classes"], out.shape
        write_f32(job["out"], out)


# ----------------------------------------------------------------------------- checkpoints

def encoder_shapes(variant):
    shapes = {}
    c_in = 3
    for i, c in enumerate(WIDTHS[variant]):
        s, k = i + 1, (7 if i == 0 else 3)
        shapes[f"patch_embed{s}.proj.weight"] = [c, c_in, k, k]
        for n in ["proj.bias", "norm.weight", "norm.bias"]:
            shapes[f"patch_embed{s}.{n}"] = [c]
        for j in range(DEPTHS[variant][i]):
            p = f"block{s}.{j}"
            hidden = MLP_RATIO * c
            for n in ["norm1", "norm2"]:
                shapes[f"{p}.{n}.weight"] = shapes[f"{p}.{n}.bias"] = [c]
            for n, (o, ii) in {"q": (c, c), "kv": (2 * c, c), "proj": (c, c),
                               "fc1": (hidden, c), "fc2": (c, hidden)}.items():
                q = "attn" if n in ("q", "kv", "proj") else "mlp"
                shapes[f"{p}.{q}.{n}.weight"] = [o, ii]
                shapes[f"{p}.{q}.{n}.bias"] = [o]
            if REDUCTION[i] > 1:
                r = REDUCTION[i]
                shapes[f"{p}.attn.sr.weight"] = [c, c, r, r]
                shapes[f"{p}.attn.sr.bias"] = [c]
                shapes[f"{p}.attn.norm.weight"] = shapes[f"{p}.attn.norm.bias"] = [c]
            shapes[f"{p}.mlp.dwconv.dwconv.weight"] = [hidden, 1, 3, 3]
            shapes[f"{p}.mlp.dwconv.dwconv.bias"] = [hidden]
        shapes[f"norm{s}.weight"] = shapes[f"norm{s}.bias"] = [c]
        c_in = c
    return shapes


def conv_bn_shapes(shapes, p, c_out, c_in, k):
    shapes[p + ".conv.weight"] = [c_out, c_in, k, k]
    for n in ["weight", "bias", "running_mean", "running_var"]:
        shapes[f"{p}.bn.{n}"] = [c_out]


def daformer_shapes(variant, classes, d=256):
    shapes = {}
    for i, c in enumerate(WIDTHS[variant]):
        shapes[f"decode_head.embed_layers.{i}.proj.weight"] = [d, c]
        shapes[f"decode_head.embed_layers.{i}.proj.bias"] = [d]
    p = "decode_head.fuse_layer.aspp_modules"
    conv_bn_shapes(shapes, f"{p}.0", d, 4 * d, 1)
    for j in [1, 2, 3]:
        conv_bn_shapes(shapes, f"{p}.{j}.depthwise_conv", 4 * d, 1, 3)
        conv_bn_shapes(shapes, f"{p}.{j}.pointwise_conv", d, 4 * d, 1)
    conv_bn_shapes(shapes, "decode_head.fuse_layer.bottleneck", d, 4 * d, 3)
    shapes["decode_head.conv_seg.weight"] = [classes, d, 1, 1]
    shapes["decode_head.conv_seg.bias"] = [classes]
    return shapes


def random_weights(shapes, gen):
    w = {}
    for name, shape in shapes.items():
        if name.endswith("running_var"):
            t = torch.rand(shape, generator=gen) * 0.5 + 0.75
        elif name.endswith("running_mean") or name.endswith("bias"):
            t = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1:  # LayerNorm / BN scale
            t = 1.0 + torch.randn(shape, generator=gen) * 0.1
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = torch.randn(shape, generator=gen) / fan_in ** 0.5
        w[name] = t
        if name.endswith("bn.running_var"):
            w[name[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
    return w


def daformer_model(variant, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = {**{"backbone." + k: v for k, v in encoder_shapes(variant).items()},
              **daformer_shapes(variant, classes)}
    return random_weights(shapes, gen)


def strip(w, prefix):
    return {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}


def model_logits(w, rgb, variant):
    enc = strip(w, "backbone.")
    return logits({**enc, **w}, rgb, variant, "daformer", False)


def checkpoints(out):
    # MiT-B0, 5 classes. Files:
    #   imagenet.pth   the encoder as the SegFormer release's mit_b0.pth: a plain state_dict
    #                  with the ImageNet classifier `head.*` (unused here);
    #   mmseg.pth      an mmseg checkpoint: {meta, state_dict: backbone.* + decode_head.*};
    #   uda.pth        a DAFormer UDA checkpoint: {meta, state_dict: model.* (student),
    #                  ema_model.* (teacher), imnet_model.* (frozen ImageNet encoder), optimizer}.
    torch.set_grad_enabled(False)
    variant, classes = "mit-b0", 5
    gen = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 3, 57, 70, generator=gen) * 255
    student = daformer_model(variant, classes, 11)
    teacher = daformer_model(variant, classes, 12)
    imnet = daformer_model(variant, classes, 13)
    encoder_only = strip(student, "backbone.")
    imagenet = {**encoder_only, "head.weight": torch.randn(1000, 256), "head.bias": torch.zeros(1000)}
    torch.save(imagenet, os.path.join(out, "imagenet.pth"))
    meta = {"CLASSES": [f"c{i}" for i in range(classes)], "iter": 40000}
    torch.save({"meta": meta, "state_dict": student}, os.path.join(out, "mmseg.pth"))
    uda = {f"model.{k}": v for k, v in student.items()}
    uda.update({f"ema_model.{k}": v for k, v in teacher.items()})
    uda.update({f"imnet_model.{k}": v for k, v in imnet.items() if k.startswith("backbone.")})
    optimizer = {"state": {}, "param_groups": [{"lr": 6e-5, "params": [0, 1]}]}
    torch.save({"meta": meta, "state_dict": uda, "optimizer": optimizer}, os.path.join(out, "uda.pth"))
    write_f32(os.path.join(out, "input.bin"), rgb)
    write_f32(os.path.join(out, "imagenet_stage4.bin"), encoder(normalize(rgb), encoder_only, variant)[3])
    write_f32(os.path.join(out, "student_logits.bin"), model_logits(student, rgb, variant))
    write_f32(os.path.join(out, "teacher_logits.bin"), model_logits(teacher, rgb, variant))
    json.dump({"variant": variant, "classes": classes, "input": list(rgb.shape)},
              open(os.path.join(out, "manifest.json"), "w"))


if __name__ == "__main__":
    {"forward": forward, "checkpoints": checkpoints}[sys.argv[1]](sys.argv[2])
