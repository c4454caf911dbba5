//! Metadata round trip: what the exporter writes into `metadata_props` is what ONNX
//! Runtime (the reader `rccr-infer` uses) reads back, and rccr-infer's contract reader
//! (`ModelMetadata::from_props`) and model reader (`ModelInfo::from_session`) parse it into
//! what the exporter meant to write; values checked against the contract by hand.

mod common;

use rccr_exporter::{encode, export_metadata, write_model};
use rccr_exporter::{ExportOptions, Outputs, Source};
use rccr_infer::contract::{self, ModelMetadata};
use rccr_infer::ModelInfo;
use rccr_models::{Backbone, ModelConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn read_with_ort(path: &Path) -> (BTreeMap<String, String>, Option<String>, Option<i64>) {
    let session = common::ort_session(path);
    let meta = session.metadata().unwrap();
    let map = meta
        .custom_keys()
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = meta.custom(&k).unwrap();
            (k, v)
        })
        .collect();
    (map, meta.producer(), meta.version())
}

/// A random network of `config` exported with `opts` to `dir/m.onnx`; the checkpoint
/// and the model's paths.
fn export_to_file(dir: &Path, config: &ModelConfig, opts: &ExportOptions) -> (PathBuf, PathBuf) {
    let (ckpt, _, model) = common::export_random(dir, config, 9, opts);
    let out = dir.join("m.onnx");
    write_model(&out, &encode(&model).unwrap()).unwrap();
    (ckpt, out)
}

#[test]
fn metadata_round_trips_through_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ModelConfig::new(Backbone::Small, 19);
    config.aspp_branches = 2;
    let opts = ExportOptions {
        outputs: Outputs::Both,
        fp16: true,
        ..Default::default()
    };
    let (ckpt, out) = export_to_file(dir.path(), &config, &opts);

    let (props, producer, version) = read_with_ort(&out);
    assert_eq!(producer.as_deref(), Some("rccr-export"));
    assert_eq!(version, Some(1234)); // model_version = the checkpoint's iteration
    let keys: Vec<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "rccr.backbone",
            "rccr.checkpoint",
            "rccr.class_names",
            "rccr.input_format",
            "rccr.iteration",
            "rccr.label_set",
            "rccr.model_config",
            "rccr.num_classes",
            "rccr.outputs",
            "rccr.palette",
            "rccr.weights",
        ]
    );
    assert_eq!(props["rccr.num_classes"], "19");
    assert_eq!(props["rccr.label_set"], "cityscapes19");
    assert_eq!(props["rccr.backbone"], "small");
    assert_eq!(props["rccr.iteration"], "1234");
    assert_eq!(props["rccr.checkpoint"], ckpt.display().to_string());
    assert_eq!(props["rccr.outputs"], r#"["labels","logits"]"#);
    assert_eq!(props["rccr.input_format"], "float32 RGB 0..255 NCHW");
    assert_eq!(props["rccr.weights"], "float16");
    assert!(props["rccr.class_names"]
        .starts_with(r#"["road","sidewalk","building","wall","fence","pole","traffic light""#));
    assert!(props["rccr.palette"].starts_with("[[128,64,128],[244,35,232],[70,70,70]"));
    let cfg: ModelConfig = serde_json::from_str(&props["rccr.model_config"]).unwrap();
    assert_eq!(cfg, config);

    let parsed = ModelMetadata::from_props(|k| props.get(k).cloned()).unwrap();
    let source = Source {
        checkpoint: ckpt.display().to_string(),
        iteration: 1234,
    };
    assert_eq!(
        parsed,
        export_metadata(&config, &source, &["labels", "logits"], true)
    );
}

#[test]
fn custom_label_sets_get_generic_names_and_distinct_colours() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(Backbone::Small, 12);
    let (_, out) = export_to_file(dir.path(), &config, &ExportOptions::default());
    let (props, _, _) = read_with_ort(&out);
    assert_eq!(props["rccr.label_set"], "custom12");
    assert_eq!(props["rccr.num_classes"], "12");
    let names: Vec<String> = serde_json::from_str(&props["rccr.class_names"]).unwrap();
    assert_eq!(names.first().map(String::as_str), Some("class_0"));
    assert_eq!(names.last().map(String::as_str), Some("class_11"));
    let palette: Vec<[u8; 3]> = serde_json::from_str(&props["rccr.palette"]).unwrap();
    assert_eq!(palette.len(), 12);
    let distinct: std::collections::BTreeSet<[u8; 3]> = palette.iter().copied().collect();
    assert_eq!(distinct.len(), 12);
    assert_eq!(props["rccr.weights"], "float32");
    // The contract's fallbacks are what the exporter wrote: a reader without the palette
    // or the names gets the same ones; without the class count it gets an error naming it.
    let without = |key: &str| {
        ModelMetadata::from_props(|k| (k != key).then(|| props.get(k).cloned()).flatten())
    };
    assert_eq!(without("rccr.palette").unwrap().palette, palette);
    assert_eq!(without("rccr.class_names").unwrap().class_names, names);
    assert!(without("rccr.num_classes")
        .unwrap_err()
        .to_string()
        .contains("rccr.num_classes"));
}

#[test]
fn rccr_infer_reads_what_the_exporter_writes() {
    let dir = tempfile::tempdir().unwrap();
    for (classes, outputs) in [(19, Outputs::Labels), (7, Outputs::Both)] {
        let config = ModelConfig::new(Backbone::Small, classes);
        let opts = ExportOptions {
            outputs,
            ..Default::default()
        };
        let (ckpt, out) = export_to_file(dir.path(), &config, &opts);
        let written = export_metadata(
            &config,
            &Source {
                checkpoint: ckpt.display().to_string(),
                iteration: 1234,
            },
            &outputs.names(),
            false,
        );
        let info = ModelInfo::from_session(&common::ort_session(&out), &out).unwrap();
        let meta = &info.metadata;
        assert_eq!(meta.num_classes, classes as usize);
        assert_eq!(meta.class_names, written.class_names);
        assert_eq!(
            meta.class_names,
            contract::default_class_names(classes as usize)
        );
        assert_eq!(meta.palette, written.palette);
        assert_eq!(
            meta.label_set,
            contract::default_label_set(classes as usize)
        );
        assert_eq!(meta.input_format, contract::INPUT_FORMAT);
        assert_eq!(meta.backbone.as_deref(), Some("small"));
        assert_eq!(meta.checkpoint, written.checkpoint);
        assert_eq!(meta.iteration, Some(1234));
        assert_eq!(
            (info.has_labels, info.has_logits),
            (outputs != Outputs::Logits, outputs != Outputs::Labels)
        );
        assert_eq!((info.fixed_batch, info.fixed_size), (None, None));
    }
}
