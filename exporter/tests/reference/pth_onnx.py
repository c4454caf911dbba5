# Writes the .pth fixtures of exporter/tests/pth_onnx.rs with the installed PyTorch: the
# independent DACS DeepLabv2 of models/tests/reference/dacs_deeplabv2.py (ResNet-50
# layers, 5 classes, random weights and batch-norm statistics, via make_pth.py), saved
# as a bare state_dict and as a DACS checkpoint ({'model', 'ema_model', 'optimizer',
# 'iteration', 'config'}, `module.` names) in the zip and the legacy format, plus
# PyTorch's logits resized to the input size as the ONNX graph does (bilinear,
# align_corners=True). Usage:
#   python3 pth_onnx.py OUT_DIR
# OUT_DIR receives zip_state_dict.pth, legacy_state_dict.pth, zip_dacs.pth,
# legacy_dacs.pth, input.bin (float32 2x3x57x70 RGB 0..255) and ema.bin / student.bin
# (float32 2x5x57x70).
import os, sys
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "models", "tests", "reference"))
from make_pth import checkpoint, logits, make_net, save, write_f32  # noqa: E402


def upsampled(net, rgb):
    return F.interpolate(logits(net, rgb), size=rgb.shape[2:], mode="bilinear", align_corners=True).contiguous()


def main():
    out = sys.argv[1]
    p = lambda name: os.path.join(out, name)
    torch.set_grad_enabled(False)
    student, ema = make_net(11), make_net(12)
    torch.manual_seed(13)
    rgb = torch.rand(2, 3, 57, 70) * 255
    write_f32(p("input.bin"), rgb)
    write_f32(p("ema.bin"), upsampled(ema, rgb))
    write_f32(p("student.bin"), upsampled(student, rgb))
    sd = ema.state_dict()
    save(sd, p("zip_state_dict.pth"))
    save(sd, p("legacy_state_dict.pth"), legacy=True)
    torch.set_grad_enabled(True)  # the optimizer step of checkpoint()
    ckpt = checkpoint(student, ema)
    torch.set_grad_enabled(False)
    save(ckpt, p("zip_dacs.pth"))
    save(ckpt, p("legacy_dacs.pth"), legacy=True)


if __name__ == "__main__":
    main()
