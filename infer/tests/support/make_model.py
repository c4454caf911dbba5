"""Builds tiny ONNX models that follow (or deliberately break) the rccr model contract,
for rccr-infer's tests.

The network is a nearest-colour classifier: a 1x1 convolution with weights 2*c_k and bias
-|c_k|^2 for the Cityscapes palette colour c_k of class k, so
argmax_k logits_k = argmin_k |x - c_k|^2 and an image painted in palette colours is
labelled with exactly the train ids it was painted with.

usage: make_model.py OUT.onnx [--outputs labels,logits] [--fixed N,H,W]
                              [--no-metadata] [--input-name NAME]
                              [--metadata-json FILE]

--metadata-json writes exactly the key/value pairs of a JSON object in FILE as
metadata_props (as rccr-export writes rccr_infer::contract::ModelMetadata::to_props).
"""
import argparse
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70],
    [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
]
NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--outputs", default="labels")
    ap.add_argument("--fixed", default=None)
    ap.add_argument("--no-metadata", action="store_true")
    ap.add_argument("--input-name", default="image")
    ap.add_argument("--metadata-json", default=None)
    a = ap.parse_args()

    c = np.array(PALETTE, dtype=np.float32)
    w = (2.0 * c).reshape(19, 3, 1, 1)
    b = -(c * c).sum(axis=1)
    if a.fixed:
        n, h, wd = [int(v) for v in a.fixed.split(",")]
        in_shape, lab_shape, log_shape = [n, 3, h, wd], [n, h, wd], [n, 19, h, wd]
    else:
        in_shape, lab_shape, log_shape = ["N", 3, "H", "W"], ["N", "H", "W"], ["N", 19, "H", "W"]

    outputs = a.outputs.split(",")
    nodes = [helper.make_node("Conv", [a.input_name, "w", "b"], ["logits"])]
    outs = []
    if "labels" in outputs:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        outs.append(helper.make_tensor_value_info("labels", TensorProto.INT64, lab_shape))
    if "logits" in outputs:
        outs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, log_shape))
    graph = helper.make_graph(
        nodes,
        "nearest_colour",
        [helper.make_tensor_value_info(a.input_name, TensorProto.FLOAT, in_shape)],
        outs,
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if a.metadata_json:
        with open(a.metadata_json) as f:
            meta = json.load(f)
    elif not a.no_metadata:
        meta = {
            "rccr.num_classes": "19",
            "rccr.class_names": json.dumps(NAMES),
            "rccr.label_set": "cityscapes19",
            "rccr.palette": json.dumps(PALETTE),
            "rccr.input_format": "float32 RGB 0..255 NCHW",
            "rccr.backbone": "test-nearest-colour",
            "rccr.checkpoint": "none",
            "rccr.iteration": "0",
            "rccr.outputs": json.dumps(outputs),
        }
    else:
        meta = {}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
