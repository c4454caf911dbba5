//! Static int8 quantization (`rccr_exporter::quantize`): hand-computed per-channel weight
//! scales, int8 weights and int32 biases on a tiny two-convolution model; its ONNX Runtime
//! output against a brute-force simulation of the QDQ arithmetic; min/max calibration
//! against the hand-computed ranges; on the small random network, the QDQ node counts,
//! argmax agreement with the fp32 libtorch teacher, the official ONNX checker, and the
//! `rccr-export --int8` CLI with its error cases.

mod common;

use common::{initializer, op_types};
use prost::Message;
use rccr_exporter::encode;
use rccr_exporter::graph::{tensor_value_info, Attr, Dim, GraphBuilder};
use rccr_exporter::onnx::{tensor_proto::DataType, ModelProto, TensorProto};
use rccr_exporter::quantize::{self, Calibration, CalibrationMethod, Range};
use rccr_exporter::verify::{self, VerifyOptions};
use rccr_exporter::{ExportOptions, Shape};
use rccr_models::{Backbone, ModelConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

const W1: [f32; 4] = [0.5, -1.27, 0.254, 0.1]; // [2 out, 2 in, 1, 1]
const B1: [f32; 2] = [0.1, -0.2];
const W2: [f32; 2] = [1.27, -0.508]; // [1 out, 2 in, 1, 1]
const B2: [f32; 1] = [0.05];

/// x [1, 2, 2, 2] -> conv1 (1x1) -> relu1 -> conv2 (1x1) -> y [1, 1, 2, 2].
fn tiny_model() -> ModelProto {
    let mut g = GraphBuilder::new();
    let conv = |g: &mut GraphBuilder, name: &str, x: &str, w: &str, b: &str| {
        g.op(
            "Conv",
            name,
            &[x, w, b],
            vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
        )
    };
    let w1 = g.init_f32("w1", &[2, 2, 1, 1], &W1);
    let b1 = g.init_f32("b1", &[2], &B1);
    let w2 = g.init_f32("w2", &[1, 2, 1, 1], &W2);
    let b2 = g.init_f32("b2", &[1], &B2);
    let c1 = conv(&mut g, "conv1", "x", &w1, &b1);
    let r1 = g.op("Relu", "relu1", &[&c1], vec![]);
    g.node(
        "Conv",
        "conv2",
        &[&r1, &w2, &b2],
        &["y"],
        vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
    );
    let f = |v: &[i64]| v.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
    let graph = g.finish(
        "tiny",
        vec![tensor_value_info(
            "x",
            DataType::Float,
            &f(&[1, 2, 2, 2]),
            "",
        )],
        vec![tensor_value_info(
            "y",
            DataType::Float,
            &f(&[1, 1, 2, 2]),
            "",
        )],
        "",
    );
    common::opset17_model(graph)
}

fn f32s(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn i32s(t: &TensorProto) -> Vec<i32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn hand_calibration() -> Calibration {
    // x in [-1, 1.55]: scale 0.01, zero point 100; relu1 in [0, 2.55]: scale 0.01, zp 0.
    let mut ranges = BTreeMap::new();
    ranges.insert("x".to_string(), Range { lo: -1.0, hi: 1.55 });
    ranges.insert("relu1".to_string(), Range { lo: 0.0, hi: 2.55 });
    Calibration {
        method: CalibrationMethod::MinMax,
        batches: 1,
        ranges,
    }
}

/// Runs a serialised model on `x` ([1, 2, 2, 2]) in ONNX Runtime; returns `y`.
fn run_ort(bytes: &[u8], x: &[f32]) -> Vec<f32> {
    let mut s = rccr_infer::provider::session_builder(None)
        .unwrap()
        .commit_from_memory(bytes)
        .unwrap();
    let input = ort::value::Tensor::from_array(([1usize, 2, 2, 2], x.to_vec())).unwrap();
    let out = s.run(ort::inputs!["x" => input]).unwrap();
    let (_, y) = out["y"].try_extract_tensor::<f32>().unwrap();
    y.to_vec()
}

#[test]
fn tiny_model_weights_biases_and_nodes_by_hand() {
    let m = tiny_model();
    assert_eq!(
        quantize::activation_tensors(&m).unwrap(),
        vec!["x", "relu1"]
    );
    let q = quantize::quantize(&m, &hand_calibration()).unwrap();

    // The Relu folds into relu1's QuantizeLinear (zero point 0); Q/DQ where expected.
    assert_eq!(
        op_types(&q),
        vec![
            "QuantizeLinear",   // x
            "DequantizeLinear", // x for conv1
            "DequantizeLinear", // w1
            "DequantizeLinear", // b1
            "Conv",
            "QuantizeLinear",   // relu1 = saturating quantization of conv1's output
            "DequantizeLinear", // relu1 for conv2
            "DequantizeLinear", // w2
            "DequantizeLinear", // b2
            "Conv",
        ]
    );
    let g = q.graph.as_ref().unwrap();
    assert_eq!(g.node[5].input[0], "conv1", "Q reads the Relu's input");
    assert_eq!(g.node[9].output[0], "y");

    // conv1 (7-bit weights, max 63): channel 0 max|w| = 1.27 -> scale 1.27 / 63;
    // channel 1 max|w| = 0.254 -> 0.254 / 63.
    let s1 = f32s(initializer(&q, "w1.int8.scale"));
    assert!(
        (s1[0] - 1.27 / 63.0).abs() < 1e-9 && (s1[1] - 0.254 / 63.0).abs() < 1e-9,
        "{s1:?}"
    );
    let w1q = initializer(&q, "w1.int8");
    assert_eq!(w1q.data_type, DataType::Int8 as i32);
    assert_eq!(w1q.dims, vec![2, 2, 1, 1]);
    let w1v: Vec<i8> = w1q.raw_data.iter().map(|&b| b as i8).collect();
    // 0.5 / (1.27 / 63) = 24.8 -> 25; -1.27 -> -63; 0.254 -> 63; 0.1 / (0.254 / 63) -> 25.
    assert_eq!(w1v, vec![25, -63, 63, 25]);
    // Bias: b / (s_x * s_w): 0.1 / (0.01 * 1.27 / 63) = 496.06 -> 496,
    // -0.2 / (0.01 * 0.254 / 63) = -4960.6 -> -4961.
    assert_eq!(i32s(initializer(&q, "b1.int32")), vec![496, -4961]);
    let bs = f32s(initializer(&q, "b1.int32.scale"));
    assert!((bs[0] - 0.0127 / 63.0).abs() < 1e-10 && (bs[1] - 0.00254 / 63.0).abs() < 1e-10);
    // conv2: max|w| = 1.27 -> 1.27 / 63; -0.508 -> -25.2 -> -25; 0.05 / (0.01 * 1.27 / 63)
    // = 248.03 -> 248.
    let w2v: Vec<i8> = initializer(&q, "w2.int8")
        .raw_data
        .iter()
        .map(|&b| b as i8)
        .collect();
    assert_eq!(w2v, vec![63, -25]);
    assert_eq!(i32s(initializer(&q, "b2.int32")), vec![248]);
    // Activations: x zero point 100, relu1 zero point 0, both scale 0.01.
    assert_eq!(initializer(&q, "x.q_zero").raw_data, vec![100]);
    assert_eq!(initializer(&q, "relu1.q_zero").raw_data, vec![0]);
    assert!((f32s(initializer(&q, "x.q_scale"))[0] - 0.01).abs() < 1e-9);
    // The float weights are gone.
    assert!(g
        .initializer
        .iter()
        .all(|t| t.name != "w1" && t.name != "b2"));
}

/// The QDQ arithmetic written out: quantize x, dequantize, conv1 with the int8 weights
/// and int32 bias, saturating uint8 quantization (the Relu), conv2.
fn brute_force_qdq(x: &[f32]) -> Vec<f32> {
    let qdq = |v: f32, s: f32, zp: f32| ((v / s).round() + zp).clamp(0.0, 255.0) - zp;
    let (w1q, s1) = ([25.0, -63.0, 63.0, 25.0], [1.27 / 63.0, 0.254 / 63.0]);
    let (b1q, w2q, s2, b2q) = ([496.0, -4961.0], [63.0, -25.0], 1.27 / 63.0, 248.0);
    let mut y = vec![0f32; 4];
    for p in 0..4 {
        let xd: Vec<f32> = (0..2)
            .map(|c| qdq(x[c * 4 + p], 0.01, 100.0) * 0.01)
            .collect();
        let mut r = [0f32; 2];
        for o in 0..2 {
            let acc: f32 =
                (0..2).map(|c| xd[c] * w1q[o * 2 + c] * s1[o]).sum::<f32>() + b1q[o] * 0.01 * s1[o];
            r[o] = qdq(acc, 0.01, 0.0) * 0.01;
        }
        y[p] = (0..2).map(|c| r[c] * w2q[c] * s2).sum::<f32>() + b2q * 0.01 * s2;
    }
    y
}

fn float_reference(x: &[f32]) -> Vec<f32> {
    (0..4)
        .map(|p| {
            let r: Vec<f32> = (0..2)
                .map(|o| {
                    ((0..2).map(|c| x[c * 4 + p] * W1[o * 2 + c]).sum::<f32>() + B1[o]).max(0.0)
                })
                .collect();
            (0..2).map(|c| r[c] * W2[c]).sum::<f32>() + B2[0]
        })
        .collect()
}

#[test]
fn tiny_model_runs_in_ort_as_the_qdq_arithmetic_says() {
    let q = quantize::quantize(&tiny_model(), &hand_calibration()).unwrap();
    let x = [-1.0, 0.3, 1.55, 0.0, 0.42, -0.07, 1.0, 0.5];
    let y = run_ort(&q.encode_to_vec(), &x);
    let want = brute_force_qdq(&x);
    let exact = float_reference(&x);
    for p in 0..4 {
        // Requantization may round an intermediate differently by one step (0.01 times
        // |w2| <= 1.27) where ORT rescales the integer accumulator.
        assert!(
            (y[p] - want[p]).abs() <= 0.0128,
            "pixel {p}: ort {} vs qdq {}",
            y[p],
            want[p]
        );
        // And quantization itself stays close to the float network.
        assert!(
            (y[p] - exact[p]).abs() < 0.05,
            "pixel {p}: ort {} vs float {}",
            y[p],
            exact[p]
        );
    }
}

#[test]
fn minmax_calibration_finds_the_ranges_by_hand() {
    let m = tiny_model();
    let x = vec![-0.8, 0.3, 1.2, 0.0, 0.42, -0.07, 1.0, 0.5];
    let c = quantize::calibrate(
        &m,
        &[(vec![1, 2, 2, 2], x.clone())],
        CalibrationMethod::MinMax,
        false,
    )
    .unwrap();
    assert_eq!(c.ranges["x"], Range { lo: -0.8, hi: 1.2 });
    // relu1 by hand over the 4 pixels and 2 channels.
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for p in 0..4 {
        for o in 0..2 {
            let v = ((0..2).map(|c| x[c * 4 + p] * W1[o * 2 + c]).sum::<f32>() + B1[o]).max(0.0);
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let r = c.ranges["relu1"];
    assert!(
        (r.lo - lo).abs() < 1e-6 && (r.hi - hi).abs() < 1e-6,
        "{r:?} vs [{lo}, {hi}]"
    );
}

#[test]
fn small_network_int8_agrees_with_fp32_and_passes_the_checker() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(Backbone::Small, 19);
    let (_, loaded, fp32) =
        common::export_random(dir.path(), &config, 3, &ExportOptions::default());

    let calib: Vec<(Vec<i64>, Vec<f32>)> = (0..4)
        .map(|i| {
            let s = Shape { n: 1, h: 64, w: 96 };
            let t = verify::random_image(s, 100 + i);
            (
                s.nchw().to_vec(),
                Vec::<f32>::try_from(&t.view(-1)).unwrap(),
            )
        })
        .collect();
    let c = quantize::calibrate(&fp32, &calib, CalibrationMethod::default(), false).unwrap();
    let q = quantize::quantize(&fp32, &c).unwrap();

    // Structure: one QuantizeLinear per calibrated tensor, every Relu folded, convs kept,
    // one DequantizeLinear per conv weight, per conv bias and per quantized-op input.
    let count = |m: &ModelProto, op: &str| op_types(m).iter().filter(|o| *o == op).count();
    let convs = count(&fp32, "Conv");
    let acts = quantize::activation_tensors(&fp32).unwrap();
    assert_eq!(count(&q, "QuantizeLinear"), acts.len());
    assert_eq!(count(&q, "Relu"), 0);
    assert_eq!(count(&q, "Conv"), convs);
    let g = fp32.graph.as_ref().unwrap();
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    let quantized_inputs: usize = g
        .node
        .iter()
        .filter(|n| quantize::QUANTIZED_OPS.contains(&n.op_type.as_str()))
        .map(|n| {
            n.input
                .iter()
                .enumerate()
                .filter(|(i, x)| !(inits.contains(x.as_str()) || (n.op_type == "Conv" && *i > 0)))
                .count()
        })
        .sum();
    assert_eq!(count(&q, "DequantizeLinear"), 2 * convs + quantized_inputs);
    let weights = q
        .metadata_props
        .iter()
        .find(|p| p.key == "rccr.weights")
        .unwrap();
    assert_eq!(weights.value, "int8-qdq");

    // Against the fp32 libtorch teacher on inputs not used for calibration.
    let bytes = encode(&q).unwrap();
    let r = verify::verify(
        &loaded.net.seg,
        &bytes,
        &VerifyOptions {
            min_agreement: Some(0.95),
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("{}", r.summary());
    assert!(
        r.passed && r.min_argmax_agreement >= 0.95,
        "{}",
        r.summary()
    );

    let path = dir.path().join("int8.onnx");
    std::fs::write(&path, &bytes).unwrap();
    common::onnx_checker(&path, "");
}

/// `rccr-export --checkpoint ckpt --out out --int8 --calibration-images images` and
/// `extra`.
fn export_int8(ckpt: &Path, out: &Path, images: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--int8",
        "--calibration-images",
        images.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    common::rccr_export(&args)
}

/// Three 96 x 64 PNG images (gradients with noise) in `dir`.
fn write_calibration_images(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    let mut rng = common::Rng::new(9);
    for i in 0..3 {
        let img = image::RgbImage::from_fn(96, 64, |x, y| {
            let n = rng.uniform(0.0, 40.0) as u8;
            image::Rgb([
                (x * 2) as u8 + n,
                (y * 3) as u8 + n,
                ((x + y) as u8).wrapping_mul(i + 1),
            ])
        });
        img.save(dir.join(format!("im{i}.png"))).unwrap();
    }
}

#[test]
fn cli_int8_export_verifies_and_rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(Backbone::Small, 19);
    let (ckpt, _vs, _net) = common::checkpoint(dir.path(), &config, 4);
    let images = dir.path().join("images");
    write_calibration_images(&images);
    let out = dir.path().join("int8.onnx");
    let verify = ["--calibration-size", "96x64", "--verify", "--min-agreement"];
    let r = export_int8(
        &ckpt,
        &out,
        &images,
        &[&verify[..], &["0.9", "--json"]].concat(),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["int8"], true);
    assert_eq!(v["calibration"]["images"], 3);
    assert_eq!(
        v["verify"]["cases"].as_array().unwrap().len(),
        3,
        "one case per image"
    );
    assert!(v["verify"]["min_argmax_agreement"].as_f64().unwrap() >= 0.9);
    assert!(out.is_file());

    // An impossible agreement: verification fails and nothing is written.
    let out2 = dir.path().join("never.onnx");
    let r = export_int8(&ckpt, &out2, &images, &[&verify[..], &["1.01"]].concat());
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("argmax agreement"));
    assert!(!out2.exists());

    // --int8 needs calibration images; --int8 and --fp16 exclude each other; an empty
    // calibration folder is named.
    let (c, o) = (ckpt.to_str().unwrap(), out.to_str().unwrap());
    let r = common::rccr_export(&["--checkpoint", c, "--out", o, "--int8"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--calibration-images"));
    let r = export_int8(&ckpt, &out, &images, &["--fp16"]);
    assert!(!r.status.success());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = export_int8(&ckpt, &out, &empty, &[]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no .png / .jpg calibration images"));
}
