//! The official ONNX checker (PyPI `onnx`, installed by `scripts/setup.sh` into
//! `.deps/py`) with `full_check=True` (strict shape and type inference) accepts every
//! export variant, and its protobuf parser reads back the metadata we wrote.

mod common;

use rccr_exporter::{encode, write_model};
use rccr_exporter::{ExportOptions, Outputs, Shape};
use rccr_models::{Backbone, ModelConfig};
use std::path::Path;

/// Runs the checker on `model`; returns the metadata as Python's onnx parsed it.
fn check(model: &Path) -> serde_json::Map<String, serde_json::Value> {
    let stdout = common::onnx_checker(
        model,
        r#"
inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
print(json.dumps({"metadata": {p.key: p.value for p in m.metadata_props},
                  "opset": m.opset_import[0].version, "ir": m.ir_version}))
"#,
    );
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    v["metadata"].as_object().unwrap().clone()
}

fn export_to(
    dir: &Path,
    name: &str,
    config: &ModelConfig,
    opts: &ExportOptions,
) -> std::path::PathBuf {
    let (_, _, model) = common::export_random(dir, config, 11, opts);
    let bytes = encode(&model).unwrap();
    let out = dir.join(name);
    write_model(&out, &bytes).unwrap();
    out
}

#[test]
fn checker_accepts_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    let small = ModelConfig::new(Backbone::Small, 19);
    let mut rgb5 = ModelConfig::new(Backbone::Small, 5);
    rgb5.input.bgr = false;
    rgb5.aspp_branches = 2;
    let variants = [
        ("default.onnx", small.clone(), ExportOptions::default()),
        (
            "both-fp16-fixed.onnx",
            small.clone(),
            ExportOptions {
                outputs: Outputs::Both,
                fp16: true,
                fixed_shape: Some(Shape { n: 2, h: 64, w: 96 }),
                opset: 17,
            },
        ),
        (
            "logits-rgb-opset21.onnx",
            rgb5,
            ExportOptions {
                outputs: Outputs::Logits,
                opset: 21,
                ..Default::default()
            },
        ),
        (
            "opset19.onnx",
            small,
            ExportOptions {
                opset: 19,
                ..Default::default()
            },
        ),
    ];
    for (name, config, opts) in variants {
        let path = export_to(dir.path(), name, &config, &opts);
        let meta = check(&path);
        assert_eq!(
            meta["rccr.num_classes"],
            config.num_classes.to_string(),
            "{name}"
        );
    }
}

#[test]
fn checker_accepts_resnet101_and_reads_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::default();
    let path = export_to(dir.path(), "r101.onnx", &config, &ExportOptions::default());
    let meta = check(&path);
    // The values, written out by hand.
    assert_eq!(meta["rccr.num_classes"], "19");
    assert_eq!(meta["rccr.label_set"], "cityscapes19");
    assert_eq!(meta["rccr.backbone"], "resnet101");
    assert_eq!(meta["rccr.iteration"], "1234");
    assert_eq!(meta["rccr.outputs"], r#"["labels"]"#);
    assert_eq!(meta["rccr.input_format"], "float32 RGB 0..255 NCHW");
    let names: Vec<String> =
        serde_json::from_str(meta["rccr.class_names"].as_str().unwrap()).unwrap();
    assert_eq!(names.len(), 19);
    assert_eq!((names[0].as_str(), names[11].as_str()), ("road", "person"));
    let palette: Vec<[u8; 3]> =
        serde_json::from_str(meta["rccr.palette"].as_str().unwrap()).unwrap();
    assert_eq!(palette[13], [0, 0, 142]); // car
    assert!(meta["rccr.checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("ckpt-resnet101-11.safetensors"));
}
