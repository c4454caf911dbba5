//! Parity of the exported model with the tch teacher (the `--verify` check) for the small
//! config (several shapes, both normalisation variants, fp16) and for ResNet-101 at a
//! small input.

mod common;

use rccr_exporter::network::{ExportOptions, Outputs, Shape};
use rccr_exporter::verify::{verify, Tolerance, VerifyOptions};
use rccr_exporter::{encode, export_loaded, load_teacher};
use rccr_models::{Backbone, InputNorm, ModelConfig};

fn run(
    config: &ModelConfig,
    opts: &ExportOptions,
    vopts: &VerifyOptions,
) -> rccr_exporter::VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, _net) = common::checkpoint(dir.path(), config, 7);
    let loaded = load_teacher(&ckpt).unwrap();
    let model = export_loaded(&loaded, &ckpt, opts).unwrap();
    let bytes = encode(&model).unwrap();
    let report = verify(&loaded.net.seg, &bytes, vopts).unwrap();
    eprintln!("{}", report.summary());
    report
}

#[test]
fn small_parity_default_shapes() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let r = run(
        &config,
        &ExportOptions::default(),
        &VerifyOptions::default(),
    );
    assert!(r.passed);
    assert_eq!(r.cases.len(), 3);
    assert!(r.max_abs_diff <= 1e-4);
}

#[test]
fn resnet101_parity_small_input() {
    let config = ModelConfig::new(Backbone::Resnet101, 19);
    let vopts = VerifyOptions {
        shapes: vec![Shape { n: 1, h: 65, w: 65 }],
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let r = run(&config, &ExportOptions::default(), &vopts);
    eprintln!("resnet101 parity took {:.1} s", t.elapsed().as_secs_f64());
    assert!(r.passed);
}
