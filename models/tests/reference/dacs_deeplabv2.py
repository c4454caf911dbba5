# Independent reference: DeepLabv2 as written in the DACS code (model/deeplabv2.py),
# re-typed in plain PyTorch, fed the weights our Rust model saved. Used by
# models/tests/pytorch_reference.rs. Usage:
#   python3 dacs_deeplabv2.py WEIGHTS.safetensors INPUT.safetensors OUT.bin LAYERS NUM_CLASSES BRANCHES
# INPUT holds `rgb` (N x 3 x H x W, RGB 0..255); OUT receives the float32 logits.
import json, struct, sys
import torch
import torch.nn as nn


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"]) if info["shape"] else t.reshape(())
    return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=dilation, bias=False, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class Classifier_Module(nn.Module):
    def __init__(self, inplanes, dilation_series, num_classes, dacs_bug):
        super().__init__()
        self.dacs_bug = dacs_bug
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, kernel_size=3, stride=1, padding=d, dilation=d, bias=True)
            for d in dilation_series
        )

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for i in range(len(self.conv2d_list) - 1):
            out += self.conv2d_list[i + 1](x)
            if self.dacs_bug:
                return out  # DACS returns inside the loop: branches 6 and 12 only
        return out


class ResNet(nn.Module):
    def __init__(self, layers, num_classes, dacs_bug):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=4)
        self.layer5 = Classifier_Module(2048, [6, 12, 18, 24], num_classes, dacs_bug)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4 or dilation == 2 or dilation == 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, dilation=dilation, downsample=downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.layer5(x)


def main():
    weights, inputs, out_path, layers, num_classes, branches = sys.argv[1:7]
    torch.set_grad_enabled(False)
    layers = [int(v) for v in layers.split(",")]
    net = ResNet(layers, int(num_classes), dacs_bug=(branches == "2"))
    state = read_safetensors(weights)
    state = {k: v for k, v in state.items() if not k.startswith("projector.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if branches == "2":  # DACS builds four branches but sums two; ours holds only those two
        missing = [m for m in missing if not m.startswith(("layer5.conv2d_list.2.", "layer5.conv2d_list.3."))]
    assert not missing and not unexpected, (missing, unexpected)
    net.eval()
    rgb = read_safetensors(inputs)["rgb"]
    mean = torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
    x = rgb[:, [2, 1, 0]] - mean  # DACS: BGR, mean subtraction, no std
    logits = net(x).contiguous()
    values = logits.flatten().tolist()
    open(out_path, "wb").write(struct.pack("<%df" % len(values), *values))


if __name__ == "__main__":
    main()
