# Writes the fixtures of exporter/tests/daformer_import_deploy.rs with the installed
# PyTorch: a whole DAFormer / MIC UDA checkpoint of a random MiT-B0 + DAFormer decoder
# (19 classes) as the release saves it (Hoyer et al., "DAFormer", CVPR 2022; mmseg
# layout: {meta, state_dict, optimizer}, the state_dict holding the student `model.*`, the
# EMA teacher `ema_model.*` (other weights) and the frozen ImageNet encoder
# `imnet_model.*`; meta carrying the config text with its img_norm_cfg, CLASSES and
# PALETTE), PNG / PPM images, and what the independent functional implementation of
# models/tests/reference/mit_reference.py computes on them after the release's own
# preprocessing (mmseg's Normalize: the BGR image cv2 decodes flipped to RGB, then
# (x - mean) / std of img_norm_cfg) and its resize of the logits to the image
# (bilinear, align_corners=False). Usage:
#   python3 daformer_deploy.py OUT_DIR
# OUT_DIR receives:
#   uda.pth                       the checkpoint;
#   images/img{k}.png, ppm/img{k}.ppm   3 test images, 96x64 (W x H);
#   calib/cal{k}.png              4 other 96x64 images for int8 calibration;
#   teacher_labels.bin, student_labels.bin   uint8 argmax of each network on the test
#                                 images, image after image, row-major;
#   odd.bin                       float32 1x3x65x70 RGB 0..255 pixels of one more image;
#   odd_teacher.bin, odd_student.bin   float32 1x19x65x70 logits resized to it.
import os, sys
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "models", "tests", "reference"))
from mit_reference import daformer, daformer_model, encoder, strip, write_f32  # noqa: E402

VARIANT, CLASSES = "mit-b0", 19
# DAFormer's configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py.
IMG_NORM_CFG = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
CONFIG_TEXT = f"""norm_cfg = dict(type='BN', requires_grad=True)
model = dict(type='EncoderDecoder', backbone=dict(type='mit_b0'),
             decode_head=dict(type='DAFormerHead', num_classes={CLASSES}, align_corners=False))
uda = dict(type='DACS', alpha=0.999, imnet_feature_dist_lambda=0.005)
img_norm_cfg = dict(mean={IMG_NORM_CFG['mean']}, std={IMG_NORM_CFG['std']}, to_rgb=True)
"""


def image(gen, h, w):
    # A smooth random colour field plus pixel noise: 3 x h x w uint8 RGB.
    coarse = torch.rand(1, 3, 4, 6, generator=gen) * 255
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    noisy = smooth + torch.randn(1, 3, h, w, generator=gen) * 12
    return noisy.clamp(0, 255).round().to(torch.uint8)[0]


def save_image(rgb, path, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _, h, w = rgb.shape
    data = bytes(rgb.permute(1, 2, 0).contiguous().flatten().tolist())
    Image.frombytes("RGB", (w, h), data).save(path, fmt)


def release_normalize(rgb):
    # mmseg's LoadImageFromFile decodes BGR (cv2); Normalize flips to RGB when to_rgb and
    # applies (x - mean) / std per channel.
    bgr = rgb.flip(0).float()
    x = bgr.flip(0) if IMG_NORM_CFG["to_rgb"] else bgr
    mean = torch.tensor(IMG_NORM_CFG["mean"]).view(3, 1, 1)
    std = torch.tensor(IMG_NORM_CFG["std"]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def logits(w, rgb):
    # mmseg's EncoderDecoder.inference: decode at stride 4, resize to the image.
    feats = encoder(release_normalize(rgb), strip(w, "backbone."), VARIANT)
    out = daformer(feats, w, False)
    return F.interpolate(out, size=rgb.shape[1:], mode="bilinear", align_corners=False)


def labels(w, rgb):
    return bytes(logits(w, rgb).argmax(1).flatten().to(torch.uint8).tolist())


def checkpoint(student, teacher, imnet):
    state = {f"model.{k}": v for k, v in student.items()}
    state.update({f"ema_model.{k}": v for k, v in teacher.items()})
    state.update({f"imnet_model.{k}": v for k, v in imnet.items() if k.startswith("backbone.")})
    meta = {"mmseg_version": "0.16.0+", "config": CONFIG_TEXT, "iter": 40000,
            "CLASSES": tuple(f"c{i}" for i in range(CLASSES)),
            "PALETTE": [[i * 13 % 256, i * 29 % 256, i * 71 % 256] for i in range(CLASSES)]}
    optimizer = {"state": {}, "param_groups": [{"lr": 6e-5, "params": [0, 1]}]}
    return {"meta": meta, "state_dict": state, "optimizer": optimizer}


def main():
    out = sys.argv[1]
    p = lambda *name: os.path.join(out, *name)
    torch.set_grad_enabled(False)
    student = daformer_model(VARIANT, CLASSES, 21)
    teacher = daformer_model(VARIANT, CLASSES, 22)
    imnet = daformer_model(VARIANT, CLASSES, 23)
    torch.save(checkpoint(student, teacher, imnet), p("uda.pth"))
    gen = torch.Generator().manual_seed(5)
    teacher_ids, student_ids = b"", b""
    for k in range(3):
        rgb = image(gen, 64, 96)
        save_image(rgb, p("images", f"img{k}.png"), "PNG")
        save_image(rgb, p("ppm", f"img{k}.ppm"), "PPM")
        teacher_ids += labels(teacher, rgb)
        student_ids += labels(student, rgb)
    open(p("teacher_labels.bin"), "wb").write(teacher_ids)
    open(p("student_labels.bin"), "wb").write(student_ids)
    for k in range(4):
        save_image(image(gen, 64, 96), p("calib", f"cal{k}.png"), "PNG")
    odd = image(gen, 65, 70)
    write_f32(p("odd.bin"), odd.float())
    write_f32(p("odd_teacher.bin"), logits(teacher, odd))
    write_f32(p("odd_student.bin"), logits(student, odd))


if __name__ == "__main__":
    main()
