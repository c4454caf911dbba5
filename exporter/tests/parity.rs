//! Parity of the exported model with the tch teacher (what `--verify` checks): the small
//! config over several shapes, both normalisation variants, custom class counts, fixed
//! shapes, fp16 weights and real images; ResNet-101 at a small input.

mod common;

use rccr_exporter::encode;
use rccr_exporter::verify::{verify, Tolerance, VerifyOptions, VerifyReport};
use rccr_exporter::{ExportOptions, Outputs, Shape};
use rccr_models::{Backbone, ModelConfig};
use std::path::Path;

fn run(config: &ModelConfig, opts: &ExportOptions, vopts: &VerifyOptions) -> VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let (_, loaded, model) = common::export_random(dir.path(), config, 7, opts);
    let bytes = encode(&model).unwrap();
    let report = verify(&loaded.net.seg, &bytes, vopts).unwrap();
    eprintln!("{}", report.summary());
    report
}

fn assert_fp32_parity(r: &VerifyReport) {
    assert!(r.passed, "{}", r.summary());
    assert!(r.max_abs_diff <= 1e-4);
    // Equal logits up to float rounding: the argmax may only differ at near-ties.
    assert!(r.min_argmax_agreement >= 0.999, "{}", r.summary());
}

#[test]
fn small_parity_default_shapes() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let r = run(
        &config,
        &ExportOptions::default(),
        &VerifyOptions::default(),
    );
    assert_fp32_parity(&r);
    let shapes: Vec<[i64; 4]> = r.cases.iter().map(|c| c.shape).collect();
    assert_eq!(shapes, vec![[1, 3, 64, 96], [2, 3, 80, 80], [1, 3, 65, 65]]);
}

#[test]
fn small_parity_rgb_std_custom_classes_logits_only() {
    // RGB order and a non-unit std (torchvision-style normalisation), 7 classes, the
    // 2-branch classifier, and no `labels` output (argmax taken from the ORT logits).
    let mut config = ModelConfig::new(Backbone::Small, 7);
    config.input.bgr = false;
    config.input.mean = [123.675, 116.28, 103.53];
    config.input.std = [58.395, 57.12, 57.375];
    config.aspp_branches = 2;
    let opts = ExportOptions {
        outputs: Outputs::Logits,
        ..Default::default()
    };
    let vopts = VerifyOptions {
        shapes: vec![Shape { n: 3, h: 41, w: 57 }, Shape { n: 1, h: 8, w: 8 }],
        ..Default::default()
    };
    let r = run(&config, &opts, &vopts);
    assert_fp32_parity(&r);
}

#[test]
fn small_parity_fixed_shape_uses_that_shape() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let opts = ExportOptions {
        outputs: Outputs::Both,
        fixed_shape: Some(Shape { n: 2, h: 72, w: 40 }),
        ..Default::default()
    };
    let r = run(&config, &opts, &VerifyOptions::default());
    assert_fp32_parity(&r);
    let shapes: Vec<[i64; 4]> = r.cases.iter().map(|c| c.shape).collect();
    assert_eq!(shapes, vec![[2, 3, 72, 40]]);
}

#[test]
fn small_parity_fp16_weights() {
    let config = ModelConfig::new(Backbone::Small, 19);
    let opts = ExportOptions {
        fp16: true,
        ..Default::default()
    };
    let vopts = VerifyOptions {
        tolerance: Tolerance::default_for(true),
        ..Default::default()
    };
    common::assert_fp16_report(&run(&config, &opts, &vopts));
    // The fp32 bound rejects the same model.
    let vopts = VerifyOptions::default();
    let r = run(&config, &opts, &vopts);
    assert!(!r.passed);
}

fn write_images(dir: &Path) -> Vec<std::path::PathBuf> {
    // A colour gradient with stripes (90 x 70) and a larger noisy one (700 x 300) that
    // verification scales down to max_side.
    let a = image::RgbImage::from_fn(90, 70, |x, y| {
        image::Rgb([
            (x * 2) as u8,
            (y * 3) as u8,
            if (x / 7) % 2 == 0 { 30 } else { 220 },
        ])
    });
    let b = image::RgbImage::from_fn(700, 300, |x, y| {
        let v = (x
            .wrapping_mul(2654435761)
            .wrapping_add(y.wrapping_mul(40503)))
            >> 7;
        image::Rgb([v as u8, (v >> 8) as u8, (x / 3) as u8])
    });
    let pa = dir.join("a.png");
    let pb = dir.join("b.jpg");
    a.save(&pa).unwrap();
    b.save(&pb).unwrap();
    vec![pa, pb]
}

#[test]
fn small_parity_on_images() {
    let dir = tempfile::tempdir().unwrap();
    let images = write_images(dir.path());
    assert_eq!(
        rccr_exporter::verify::list_images(dir.path(), 10).unwrap(),
        images
    );
    let config = ModelConfig::new(Backbone::Small, 19);
    let vopts = VerifyOptions {
        shapes: vec![],
        images: images.clone(),
        max_side: 128,
        ..Default::default()
    };
    let r = run(&config, &ExportOptions::default(), &vopts);
    assert_fp32_parity(&r);
    let shapes: Vec<[i64; 4]> = r.cases.iter().map(|c| c.shape).collect();
    // 90 x 70 is kept; 700 x 300 becomes 128 x round(300 * 128 / 700) = 128 x 55.
    assert_eq!(shapes, vec![[1, 3, 70, 90], [1, 3, 55, 128]]);

    // A fixed-shape model gets the images resized to its shape, repeated to its batch.
    let opts = ExportOptions {
        fixed_shape: Some(Shape { n: 2, h: 48, w: 64 }),
        ..Default::default()
    };
    let r = run(&config, &opts, &vopts);
    assert_fp32_parity(&r);
    let shapes: Vec<[i64; 4]> = r.cases.iter().map(|c| c.shape).collect();
    assert_eq!(shapes, vec![[2, 3, 48, 64]; 3]);
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
    assert_fp32_parity(&r);
}
