"""Writes the fuzz seed corpora under fuzz/seeds/ (docs/hardening.md): small valid files of
each format, made with the installed PyTorch and PIL (`make setup`), plus the project's own
test fixtures. Run: PYTHONPATH=.deps/torch:.deps/py python3 fuzz/make_seeds.py"""
import io, json, os, shutil, struct, sys
from collections import OrderedDict

import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def saved(obj, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def pth_seeds():
    torch.manual_seed(0)
    sd = OrderedDict(
        [("conv1.weight", torch.randn(2, 3, 1, 1)), ("bn1.running_mean", torch.zeros(2)),
         ("bn1.num_batches_tracked", torch.tensor(3))])
    put("pth", "state_dict_zip.pth", saved(sd))
    put("pth", "state_dict_legacy.pth", saved(sd, _use_new_zipfile_serialization=False))
    put("pth", "fp16_proto4.pth", saved({k: v.half() if v.is_floating_point() else v
                                         for k, v in sd.items()}, pickle_protocol=4))
    base = torch.arange(12, dtype=torch.float32)
    views = OrderedDict([("a.weight", base[2:8].view(2, 3)), ("b.weight", base.view(3, 4).t())])
    put("pth", "views_legacy.pth", saved(views, _use_new_zipfile_serialization=False))
    ckpt = {"model": OrderedDict(("module." + k, v) for k, v in sd.items()),
            "ema_model": OrderedDict(("module." + k, v) for k, v in sd.items()),
            "iteration": 7, "config": {"lr": 0.1}}
    put("pth", "dacs_checkpoint_zip.pth", saved(ckpt))

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))
    put("pth", "hostile_legacy.pth", saved({"x": Evil()}, _use_new_zipfile_serialization=False))


def safetensors(tensors, metadata):
    header = {"__metadata__": metadata}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    model = {"backbone": "small", "num_classes": 5, "aspp_branches": 4}
    f32 = struct.pack("<6f", *range(6))
    put("safetensors", "model.safetensors", safetensors(
        {"conv1.weight": ("F32", [2, 3], f32)},
        {"rccr.format": "rccr-model-v1", "rccr.model_config": json.dumps(model)}))
    with open(os.path.join(ROOT, "demo", "runs", "source-only", "config.json")) as f:
        train = json.load(f)
    put("safetensors", "checkpoint.safetensors", safetensors(
        {"student.conv1.weight": ("F32", [2, 3], f32),
         "teacher.conv1.weight": ("F16", [3], struct.pack("<3e", 1, 2, 3)),
         "bank.0.labels": ("I64", [1], struct.pack("<q", 4))},
        {"rccr.format": "rccr-checkpoint-v1", "rccr.model_config": json.dumps(model),
         "rccr.iteration": "12", "rccr.train_config": json.dumps(train),
         "rccr.best": json.dumps({"iteration": 10, "miou": 0.5})}))


def onnx_metadata_seeds():
    put("onnx_metadata", "minimal.txt", b"rccr.num_classes\t19\n")
    lines = [("rccr.num_classes", "3"), ("rccr.class_names", '["a","b","c"]'),
             ("rccr.palette", "[[0,0,0],[128,0,0],[0,128,0]]"), ("rccr.label_set", "custom3"),
             ("rccr.input_format", "float32 RGB 0..255 NCHW"), ("rccr.backbone", "small"),
             ("rccr.checkpoint", "iter_7.safetensors"), ("rccr.iteration", "7"),
             ("rccr.outputs", '["labels","logits"]'),
             ("rccr.model_config", '{"num_classes":3}'), ("rccr.weights", "ema")]
    put("onnx_metadata", "full.txt", "".join(f"{k}\t{v}\n" for k, v in lines).encode())


def png(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def image_seeds():
    fixtures = os.path.join(ROOT, "trainer", "tests", "fixtures", "synth-v1", "gta5")
    rgb = Image.open(os.path.join(fixtures, "images", "00001.png")).convert("RGB")
    small = rgb.resize((16, 8))
    put("image", "rgb.png", png(small))
    put("image", "rgba_interlaced.png", png(small.convert("RGBA"), optimize=False))
    put("image", "gray16.png", png(Image.new("I;16", (5, 4), 300)))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    put("image", "rgb.jpg", buf.getvalue())
    buf = io.BytesIO()
    small.save(buf, format="JPEG", progressive=True)
    put("image", "progressive.jpg", buf.getvalue())
    for name in ("00001.png", "00002.png"):
        shutil.copy(os.path.join(fixtures, "labels", name),
                    os.path.join(SEEDS, "label", "fixture_" + name))
    lab = Image.open(os.path.join(fixtures, "labels", "00001.png")).resize((16, 8))
    put("label", "gray8.png", png(lab.convert("L")))
    put("label", "indexed.png", png(lab.convert("L").convert("P")))
    put("label", "gray16.png", png(Image.new("I;16", (5, 4), 7)))


def config_seeds():
    shutil.copy(os.path.join(ROOT, "demo", "runs", "source-only", "config.json"),
                os.path.join(SEEDS, "config", "nested.json"))
    put("config", "run.toml", b'[model]\nbackbone = "small"\n[data]\nsource = "gta5:/data"\n'
        b'[method]\nmode = "baseline"\nmu_max = 0.01\n[run]\niterations = 7\n')
    put("config", "flat.json", json.dumps({"backbone": "small", "num_classes": 19,
                                           "source": "gta5:/d", "mode": "rccr", "lr": 0.00025,
                                           "crop": 256}).encode())


if __name__ == "__main__":
    os.makedirs(os.path.join(SEEDS, "label"), exist_ok=True)
    os.makedirs(os.path.join(SEEDS, "config"), exist_ok=True)
    pth_seeds()
    safetensors_seeds()
    onnx_metadata_seeds()
    image_seeds()
    config_seeds()
    for t in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, t))
        size = sum(os.path.getsize(os.path.join(SEEDS, t, f)) for f in files)
        print(f"{t}: {len(files)} files, {size} bytes", file=sys.stderr)
