//! The exported graph matches the network: node types and initialiser counts (worked out
//! by hand from the architecture, not from the exporter), the weight total against the
//! model's own parameter count, conv attributes at known places, typed inputs / outputs,
//! fp16 storage and opset / IR versions.

mod common;

use common::{node, op_types};
use rccr_exporter::onnx::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value, type_proto, ModelProto,
    NodeProto, ValueInfoProto,
};
use rccr_exporter::{encode, export_loaded, load_teacher};
use rccr_exporter::{ExportOptions, Outputs, Shape};
use rccr_models::{count_parameters, Backbone, ModelConfig};
use std::collections::BTreeMap;

fn export(config: &ModelConfig, opts: &ExportOptions) -> (ModelProto, i64) {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, vs, _net) = common::checkpoint(dir.path(), config, 3);
    // Parameters of encoder + classifier, minus one per BN channel: each BN's gamma and
    // beta (2 per channel) become one folded conv bias (1 per channel).
    let bn_channels: i64 = vs
        .variables()
        .iter()
        .filter(|(n, _)| n.ends_with("running_mean"))
        .map(|(_, t)| t.numel() as i64)
        .sum();
    let expected_weights = count_parameters(&vs).parameters - bn_channels;
    let loaded = load_teacher(&ckpt).unwrap();
    let model = export_loaded(&loaded, &ckpt, opts).unwrap();
    // Round trip through the bytes, as a reader sees it.
    let bytes = encode(&model).unwrap();
    let model = rccr_exporter::export::decode(&bytes).unwrap();
    (model, expected_weights)
}

fn op_counts(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for op in op_types(model) {
        *m.entry(op).or_insert(0) += 1;
    }
    m
}

fn ints(n: &NodeProto, attr: &str) -> Vec<i64> {
    n.attribute
        .iter()
        .find(|a| a.name == attr)
        .unwrap()
        .ints
        .clone()
}

fn dims(v: &ValueInfoProto) -> (i32, Vec<String>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("not a tensor")
    };
    let d = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Value::DimValue(v) => v.to_string(),
            Value::DimParam(p) => p.clone(),
        })
        .collect();
    (t.elem_type, d)
}

/// Asserts the op counts of an exported DeepLabv2: the normalisation (`Gather` only for
/// a BGR config, `Sub`, `Div`), the stem's `MaxPool`, the ASPP `Sum`, the upsampling
/// (`Shape` x 2, `Concat`, `Resize`) and the `ArgMax`, plus `varying` (convolutions,
/// ReLUs, residual additions, casts), counted by hand for each network.
fn expect_ops(model: &ModelProto, bgr: bool, varying: &[(&str, usize)]) {
    let mut want: BTreeMap<String, usize> = [
        ("Sub", 1),
        ("Div", 1),
        ("MaxPool", 1),
        ("Sum", 1),
        ("Shape", 2),
        ("Concat", 1),
        ("Resize", 1),
        ("ArgMax", 1),
    ]
    .iter()
    .chain(varying)
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    if bgr {
        want.insert("Gather".into(), 1);
    }
    assert_eq!(op_counts(model), want);
}

fn weight_total(model: &ModelProto) -> i64 {
    model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| !t.name.starts_with("input."))
        .map(|t| t.dims.iter().product::<i64>())
        .sum()
}

#[test]
fn small_graph_matches_the_network() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let (m, expected_weights) = export(&config, &ExportOptions::default());
    // small: 4 basic blocks (2 convs each), shortcut convs in layer2 (stride 2), layer3 and
    // layer4 (dilated) but not layer1 (16 -> 16, stride 1): 1 + 8 + 3 = 12 encoder convs,
    // plus 4 ASPP branches. ReLUs: stem + 2 per block.
    expect_ops(&m, true, &[("Conv", 16), ("Relu", 9), ("Add", 4)]);
    let g = m.graph.as_ref().unwrap();
    // Weight + bias per conv, and the BGR indices, mean and std.
    assert_eq!(g.initializer.len(), 2 * 16 + 3);
    assert_eq!(weight_total(&m), expected_weights);
    assert!(g
        .initializer
        .iter()
        .all(|t| t.data_type == DataType::Float as i32 || t.name == "input.bgr_indices"));

    // Stride and dilation at known places (DeepLabv2: output stride 8).
    assert_eq!(ints(node(&m, "conv1"), "strides"), vec![2, 2]);
    assert_eq!(ints(node(&m, "conv1"), "pads"), vec![3; 4]);
    assert_eq!(ints(node(&m, "layer2.0.conv1"), "strides"), vec![2, 2]);
    assert_eq!(ints(node(&m, "layer3.0.conv2"), "dilations"), vec![2, 2]);
    assert_eq!(ints(node(&m, "layer4.0.conv1"), "dilations"), vec![4, 4]);
    assert_eq!(ints(node(&m, "layer4.0.conv1"), "pads"), vec![4; 4]);
    for (i, d) in [6, 12, 18, 24].into_iter().enumerate() {
        let n = node(&m, &format!("layer5.conv2d_list.{i}"));
        assert_eq!(ints(n, "dilations"), vec![d, d]);
        assert_eq!(ints(n, "pads"), vec![d; 4]);
    }
    let pool = node(&m, "maxpool");
    assert_eq!(
        pool.attribute
            .iter()
            .find(|a| a.name == "ceil_mode")
            .unwrap()
            .i,
        1
    );

    // Typed, dynamic input and output.
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "image");
    assert_eq!(
        dims(&g.input[0]),
        (
            DataType::Float as i32,
            vec!["N".into(), "3".into(), "H".into(), "W".into()]
        )
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "labels");
    assert_eq!(
        dims(&g.output[0]),
        (
            DataType::Int64 as i32,
            vec!["N".into(), "H".into(), "W".into()]
        )
    );
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(m.opset_import[0].version, 17);
    assert_eq!(m.opset_import[0].domain, "");
}

#[test]
fn resnet101_graph_matches_the_network() {
    let config = ModelConfig::new(Backbone::Resnet101, 19);
    let (m, expected_weights) = export(&config, &ExportOptions::default());
    // ResNet-101: 3 + 4 + 23 + 3 = 33 bottlenecks of 3 convs, 4 shortcut convs (the first
    // block of every layer), the stem: 1 + 99 + 4 = 104, plus 4 ASPP branches = 108.
    // ReLUs: stem + 3 per block = 100; one Add per block.
    expect_ops(&m, true, &[("Conv", 108), ("Relu", 100), ("Add", 33)]);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.initializer.len(), 2 * 108 + 3);
    assert_eq!(weight_total(&m), expected_weights);
    // Caffe-style: the stride sits on the first 1x1 of layer2.0, not on the 3x3.
    assert_eq!(ints(node(&m, "layer2.0.conv1"), "strides"), vec![2, 2]);
    assert_eq!(ints(node(&m, "layer2.0.conv2"), "strides"), vec![1, 1]);
    assert_eq!(ints(node(&m, "layer3.22.conv2"), "dilations"), vec![2, 2]);
    assert_eq!(ints(node(&m, "layer4.2.conv2"), "dilations"), vec![4, 4]);
    assert_eq!(
        ints(node(&m, "layer4.0.downsample"), "kernel_shape"),
        vec![1, 1]
    );
    let w = g
        .initializer
        .iter()
        .find(|t| t.name == "layer5.conv2d_list.0.weight")
        .unwrap();
    assert_eq!(w.dims, vec![19, 2048, 3, 3]);
}

#[test]
fn options_change_outputs_shapes_storage_and_versions() {
    let mut config = ModelConfig::new(Backbone::Small, 5);
    config.aspp_branches = 2;
    config.input.bgr = false;
    let opts = ExportOptions {
        outputs: Outputs::Both,
        fp16: true,
        fixed_shape: Some(Shape { n: 2, h: 48, w: 64 }),
        opset: 21,
    };
    let (m, expected_weights) = export(&config, &opts);
    // No channel reorder (RGB config), 2 ASPP branches, a Cast per fp16 weight and bias.
    expect_ops(
        &m,
        false,
        &[("Conv", 14), ("Cast", 28), ("Relu", 9), ("Add", 4)],
    );
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.initializer.len(), 2 * 14 + 2);
    assert_eq!(weight_total(&m), expected_weights);
    for t in &g.initializer {
        let want = if t.name.starts_with("input.") {
            DataType::Float
        } else {
            DataType::Float16
        };
        assert_eq!(t.data_type, want as i32, "{}", t.name);
        let n: i64 = t.dims.iter().product();
        assert_eq!(
            t.raw_data.len() as i64,
            n * if want == DataType::Float { 4 } else { 2 }
        );
    }
    assert_eq!(dims(&g.input[0]).1, vec!["2", "3", "48", "64"]);
    let names: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["labels", "logits"]);
    assert_eq!(
        dims(&g.output[0]),
        (
            DataType::Int64 as i32,
            vec!["2".into(), "48".into(), "64".into()]
        )
    );
    assert_eq!(
        dims(&g.output[1]),
        (
            DataType::Float as i32,
            vec!["2".into(), "5".into(), "48".into(), "64".into()]
        )
    );
    assert_eq!(m.ir_version, 10);
    assert_eq!(m.opset_import[0].version, 21);

    // logits only: no ArgMax.
    let opts = ExportOptions {
        outputs: Outputs::Logits,
        ..Default::default()
    };
    let (m, _) = export(&config, &opts);
    assert!(!op_counts(&m).contains_key("ArgMax"));
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "logits");
}

#[test]
fn unsupported_opset_is_refused() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, _net) = common::checkpoint(dir.path(), &config, 1);
    let loaded = load_teacher(&ckpt).unwrap();
    for opset in [13, 16, 22] {
        let opts = ExportOptions {
            opset,
            ..Default::default()
        };
        let err = export_loaded(&loaded, &ckpt, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("opset"), "{err}");
    }
}
