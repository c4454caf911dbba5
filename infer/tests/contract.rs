//! The model contract end to end: metadata written with `rccr_infer::contract` the way
//! `rccr-export` writes it (`ModelMetadata::to_props` into `metadata_props`), stored in a
//! real ONNX file, and read back by the `Segmenter` (`ModelInfo::from_session`).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use rccr_infer::contract::{self, ModelMetadata};
use rccr_infer::{ModelInfo, Segmenter};

/// Builds the 19-class test model with exactly `props` as its metadata and opens it.
fn info_of(dir: &Path, props: &[(String, String)]) -> ModelInfo {
    let map: HashMap<&str, &str> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let json = dir.join("meta.json");
    std::fs::write(&json, serde_json::to_string(&map).unwrap()).unwrap();
    let model = make_model(
        &dir.join("m.onnx"),
        &["--metadata-json", json.to_str().unwrap()],
    );
    let options = cpu_options(Some((32, 16)), 1);
    Segmenter::open(&model, &options).unwrap().info().clone()
}

#[test]
fn exporter_metadata_reads_back_through_the_model() {
    let d = tempfile::tempdir().unwrap();
    let mut meta = ModelMetadata::for_classes(19);
    meta.backbone = Some("resnet101".into());
    meta.checkpoint = Some("runs/gta/ckpt.safetensors".into());
    meta.iteration = Some(250_000);
    meta.outputs = vec![contract::LABELS_OUTPUT.into()];
    meta.model_config = Some("{\"num_classes\":19}".into());
    meta.weights = Some("float16".into());
    let info = info_of(d.path(), &meta.to_props());
    assert_eq!(info.metadata, meta);
    assert_eq!(info.metadata.label_set, contract::CITYSCAPES19);
    assert!(info.is_cityscapes());
    assert!(info.has_labels && !info.has_logits);
}

#[test]
fn only_the_class_count_falls_back_to_the_contract_defaults() {
    let d = tempfile::tempdir().unwrap();
    let props = [(contract::NUM_CLASSES.to_string(), "19".to_string())];
    let info = info_of(d.path(), &props).metadata;
    assert_eq!(info.class_names, contract::default_class_names(19));
    assert_eq!(info.palette, contract::default_palette(19));
    assert_eq!(info.label_set, contract::UNKNOWN_LABEL_SET);
    assert_eq!(info.input_format, contract::INPUT_FORMAT);
    assert_eq!((info.backbone, info.iteration), (None, None));
}
