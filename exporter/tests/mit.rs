//! MiT export (SegFormer's Mix Transformer with DAFormer's or SegFormer's decoder): parity
//! of the ONNX model in ONNX Runtime with the libtorch teacher on several shapes (one not
//! a multiple of 32, one batched), both decoders, fp16 weights; the official ONNX checker
//! on every variant; the ops the graph is made of; `rccr-infer`'s pipeline on an exported
//! MiT model against libtorch's argmax.

mod common;

use common::{export_random_mit, op_types};
use rccr_exporter::verify::{verify, Tolerance, VerifyOptions, VerifyReport};
use rccr_exporter::{encode, write_model, ExportOptions, Outputs, Shape};
use rccr_models::{Backbone, Decoder, ModelConfig};

fn mit_b0(decoder: Decoder, classes: i64) -> ModelConfig {
    let mut config = ModelConfig::new(Backbone::MitB0, classes);
    config.decoder = Some(decoder);
    config
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape { n: 1, h: 64, w: 96 },
        Shape { n: 2, h: 32, w: 32 },
        Shape { n: 1, h: 65, w: 47 },
    ]
}

fn run(config: &ModelConfig, opts: &ExportOptions, vopts: &VerifyOptions) -> VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let (_, loaded, model) = export_random_mit(dir.path(), config, 5, opts);
    let report = verify(&loaded.net.seg, &encode(&model).unwrap(), vopts).unwrap();
    eprintln!("{}", report.summary());
    report
}

#[test]
fn mit_b0_daformer_parity() {
    let vopts = VerifyOptions {
        shapes: shapes(),
        ..Default::default()
    };
    let r = run(
        &mit_b0(Decoder::Daformer, 19),
        &ExportOptions::default(),
        &vopts,
    );
    assert!(r.passed, "{}", r.summary());
    assert!(r.max_abs_diff <= 1e-4);
    assert!(r.min_argmax_agreement >= 0.999, "{}", r.summary());
}

#[test]
fn mit_b0_segformer_parity_logits_only_opset21_gelu_op() {
    // Opset 21 writes GELU as the `Gelu` op (opset 20 on), opset 17 as its erf form.
    let config = mit_b0(Decoder::Segformer, 7);
    let opts = ExportOptions {
        outputs: Outputs::Logits,
        opset: 21,
        ..Default::default()
    };
    let vopts = VerifyOptions {
        shapes: vec![Shape { n: 2, h: 48, w: 80 }, Shape { n: 1, h: 33, w: 70 }],
        ..Default::default()
    };
    let r = run(&config, &opts, &vopts);
    assert!(r.passed, "{}", r.summary());
    assert!(r.max_abs_diff <= 1e-4);
    assert!(r.min_argmax_agreement >= 0.999, "{}", r.summary());
}

#[test]
fn mit_b0_fp16_weights_within_the_fp16_bound_and_not_the_fp32_one() {
    let config = mit_b0(Decoder::Daformer, 19);
    let opts = ExportOptions {
        fp16: true,
        outputs: Outputs::Both,
        ..Default::default()
    };
    let vopts = VerifyOptions {
        shapes: vec![Shape { n: 1, h: 64, w: 96 }, Shape { n: 1, h: 65, w: 47 }],
        tolerance: Tolerance::default_for(true),
        ..Default::default()
    };
    common::assert_fp16_report(&run(&config, &opts, &vopts));
}

#[test]
fn graph_is_made_of_the_mit_ops_with_dynamic_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, model) = export_random_mit(
        dir.path(),
        &mit_b0(Decoder::Daformer, 19),
        3,
        &ExportOptions::default(),
    );
    let ops = op_types(&model);
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    // MiT-B0: depths 2, 2, 2, 2 (8 blocks); 4 patch embeddings.
    // LayerNorm: 4 patch-embedding + 2 per block + 3 reduction (stages 1-3) + 4 stage.
    assert_eq!(count("LayerNormalization"), 4 + 16 + 6 + 4);
    // Gemm: q, k, v, proj, fc1, fc2 per block.
    assert_eq!(count("Gemm"), 6 * 8);
    // MatMul: scores and context per block; one Softmax per block; erf GELU at opset 17.
    assert_eq!((count("MatMul"), count("Softmax")), (16, 8));
    assert_eq!((count("Erf"), count("Gelu")), (8, 0));
    // Conv: 4 patch embeddings, 6 reductions, 8 depthwise, 4 embeddings, ASPP (1 + 3 x 2),
    // bottleneck, classifier.
    assert_eq!(count("Conv"), 4 + 6 + 8 + 4 + 7 + 1 + 1);
    // No batch norm, dropout or fixed-size reshape: H and W are read in the graph.
    for absent in ["BatchNormalization", "Dropout", "Identity"] {
        assert_eq!(count(absent), 0, "{absent}");
    }
    // Depthwise: the Mix-FFN convs and the 3 dilated ASPP convs have group = channels.
    let g = common::graph(&model);
    let depthwise = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter(|n| n.attribute.iter().any(|a| a.name == "group" && a.i > 1))
        .count();
    assert_eq!(depthwise, 8 + 3);
    // Resize: stages 2-4 to stride 4 and the final upsample, all align_corners false.
    let resizes: Vec<_> = g.node.iter().filter(|n| n.op_type == "Resize").collect();
    assert_eq!(resizes.len(), 4);
    for r in resizes {
        let mode = r
            .attribute
            .iter()
            .find(|a| a.name == "coordinate_transformation_mode")
            .unwrap();
        assert_eq!(mode.s, b"half_pixel");
    }
}

#[test]
fn checker_accepts_mit_variants() {
    let dir = tempfile::tempdir().unwrap();
    let variants = [
        ("daformer.onnx", Decoder::Daformer, ExportOptions::default()),
        (
            "segformer-fp16-fixed-opset20.onnx",
            Decoder::Segformer,
            ExportOptions {
                outputs: Outputs::Both,
                fp16: true,
                fixed_shape: Some(Shape { n: 1, h: 64, w: 96 }),
                opset: 20,
            },
        ),
    ];
    for (name, decoder, opts) in variants {
        let config = mit_b0(decoder, 19);
        let (_, _, model) = export_random_mit(dir.path(), &config, 9, &opts);
        let path = dir.path().join(name);
        write_model(&path, &encode(&model).unwrap()).unwrap();
        let out = common::onnx_checker(
            &path,
            r#"
inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
print(json.dumps({p.key: p.value for p in m.metadata_props}))
"#,
        );
        let meta: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(meta["rccr.backbone"], "mit-b0", "{name}");
        assert_eq!(meta["rccr.num_classes"], "19", "{name}");
    }
}

/// `count` synthetic `w x h` RGB images (gradients, stripes and a hashed texture) saved as
/// PNG in `dir`.
fn write_images(dir: &std::path::Path, count: u32, w: u32, h: u32) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|k| {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let t = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503 + k)) >> 9;
                image::Rgb([
                    (x * 255 / w) as u8 ^ (k * 60) as u8,
                    if ((x + 3 * k) / 9 + y / 7) % 2 == 0 {
                        40
                    } else {
                        210
                    },
                    t as u8,
                ])
            });
            let p = dir.join(format!("img{k}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

#[test]
fn rccr_infer_runs_an_exported_mit_model_like_libtorch() {
    use rccr_infer::pipeline::{self, PipelineOptions};
    let dir = tempfile::tempdir().unwrap();
    let config = mit_b0(Decoder::Daformer, 19);
    let (_, loaded, model) = export_random_mit(dir.path(), &config, 13, &ExportOptions::default());
    let onnx = dir.path().join("mit.onnx");
    write_model(&onnx, &encode(&model).unwrap()).unwrap();
    let (w, h) = (96u32, 72u32); // 72 is not a multiple of 32
    let images = write_images(&dir.path().join("images"), 3, w, h);

    // rccr-infer's pipeline, unchanged, at the images' own size.
    let mut opts = PipelineOptions::new(&onnx, dir.path().join("images"));
    opts.out = Some(dir.path().join("pred"));
    opts.segmenter.input_size = Some((w, h));
    opts.segmenter.batch_size = 2;
    let report = pipeline::run(&opts).expect("rccr-infer runs the MiT model");
    assert_eq!(report.images, 3);

    // Its label PNGs against the libtorch teacher's argmax on the same pixels.
    for p in &images {
        let rgb = image::open(p).unwrap().to_rgb8();
        let x = tch::Tensor::from_slice(rgb.as_raw())
            .view([h as i64, w as i64, 3])
            .permute([2, 0, 1])
            .to_kind(tch::Kind::Float)
            .unsqueeze(0);
        let seg = &loaded.net.seg;
        let reference = tch::no_grad(|| seg.forward_upsampled(&seg.normalize(&x), false))
            .argmax(1, false)
            .view(-1);
        let reference = Vec::<i64>::try_from(&reference).unwrap();
        let out = rccr_infer::files::output_path(
            &dir.path().join("pred"),
            "trainIds",
            &dir.path().join("images"),
            p,
        );
        let labels = image::open(&out).unwrap().to_luma8();
        assert_eq!(labels.dimensions(), (w, h), "{}", out.display());
        let same = labels
            .as_raw()
            .iter()
            .zip(&reference)
            .filter(|(a, b)| **a as i64 == **b)
            .count();
        let agreement = same as f64 / reference.len() as f64;
        eprintln!(
            "{}: argmax agreement with libtorch {agreement:.5}",
            p.display()
        );
        assert!(agreement >= 0.999, "{}: {agreement}", p.display());
    }
}

#[test]
fn rccr_export_cli_verifies_mit_fp32_and_fp16_and_writes_int8() {
    let dir = tempfile::tempdir().unwrap();
    let config = mit_b0(Decoder::Segformer, 19);
    let (ckpt, _, _) = export_random_mit(dir.path(), &config, 17, &ExportOptions::default());
    let images = dir.path().join("images");
    write_images(&images, 2, 64, 48);
    let ckpt = ckpt.to_str().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (fp32, fp16, int8) = (out("m.onnx"), out("m16.onnx"), out("m8.onnx"));
    let runs: [Vec<&str>; 3] = [
        vec![
            "--out",
            &fp32,
            "--verify-shape",
            "1x40x72",
            "--verify-shape",
            "2x33x33",
        ],
        vec!["--out", &fp16, "--fp16", "--verify-shape", "1x40x72"],
        vec![
            "--out",
            &int8,
            "--int8",
            "--calibration-images",
            images.to_str().unwrap(),
            "--calibration-size",
            "64x48",
            "--min-agreement",
            "0.8",
        ],
    ];
    for args in runs {
        let mut all = vec!["--checkpoint", ckpt, "--verify", "--json"];
        all.extend(&args);
        let o = common::rccr_export(&all);
        assert!(
            o.status.success(),
            "{all:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["verify"]["passed"], true, "{all:?}: {v}");
        assert!(std::path::Path::new(args[1]).is_file());
    }
}
