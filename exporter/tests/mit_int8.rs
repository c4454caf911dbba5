//! int8 static quantization of the MiT ops: a tiny `Gemm` + `MatMul` + constant-`Add`
//! model quantized with hand-computed scales and run by ONNX Runtime against the QDQ
//! arithmetic written out; on a random MiT-B0 + DAFormer, the rewrite covers every linear
//! layer (`Gemm`), attention product (`MatMul`) and convolution, and the int8 model agrees
//! with the fp32 libtorch teacher on random inputs within the stated tolerance.

mod common;

use common::export_random_mit_with;
use rccr_exporter::graph::{tensor_value_info, Attr, Dim, GraphBuilder};
use rccr_exporter::onnx::tensor_proto::DataType;
use rccr_exporter::onnx::ModelProto;
use rccr_exporter::quantize::{self, CalibrationMethod};
use rccr_exporter::quantize::{Calibration, Range};
use rccr_exporter::verify::{self, verify, VerifyOptions};
use rccr_exporter::{encode, ExportOptions, Shape};
use rccr_models::{Backbone, Decoder, ModelConfig};
use std::collections::BTreeMap;

fn mit_b0(decoder: Decoder, classes: i64) -> ModelConfig {
    let mut config = ModelConfig::new(Backbone::MitB0, classes);
    config.decoder = Some(decoder);
    config
}

/// Calibration batches of random images (the model's input format).
fn random_batches(shapes: &[Shape], seed: u64) -> Vec<quantize::Batch> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let t = verify::random_image(s, seed + i as u64);
            (
                s.nchw().to_vec(),
                Vec::<f32>::try_from(&t.view(-1)).unwrap(),
            )
        })
        .collect()
}

#[test]
fn mit_b0_int8_covers_gemm_matmul_and_conv_and_agrees_with_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let config = mit_b0(Decoder::Daformer, 19);
    // The release's attention scale (gain 1): random inputs on a random network give
    // near-tied logits, and sharpened attention turns int8 rounding into flipped labels.
    let opts = ExportOptions::default();
    let (_, loaded, fp32) = export_random_mit_with(dir.path(), &config, 21, 1.0, &opts);
    let calib = random_batches(
        &[Shape {
            n: 1,
            h: 128,
            w: 128,
        }; 4],
        1000,
    );
    let c = quantize::calibrate(&fp32, &calib, CalibrationMethod::default(), false).unwrap();
    let q = quantize::quantize(&fp32, &c).unwrap();

    // Against the fp32 libtorch teacher on inputs not used for calibration.
    let vopts = VerifyOptions {
        shapes: vec![
            Shape {
                n: 1,
                h: 128,
                w: 128,
            },
            Shape {
                n: 1,
                h: 96,
                w: 160,
            },
        ],
        seed: 7,
        min_agreement: Some(0.9),
        ..Default::default()
    };
    let r = verify(&loaded.net.seg, &encode(&q).unwrap(), &vopts).unwrap();
    eprintln!("{}", r.summary());
    // Stated tolerance: >= 90 % of the pixels keep libtorch's label, and no logit moves by
    // more than 15 % of the largest one (measured: 92-93 %, 8 %).
    assert!(r.passed, "{}", r.summary());
    for c in &r.cases {
        assert!(c.max_abs_diff <= 0.15 * c.max_abs_logit, "{}", r.summary());
    }
    // Every Gemm (6 per block), attention MatMul (2 per block) and Conv reads its
    // activations through DequantizeLinear; Gemm and Conv weights are int8 initialisers.
    let g = common::graph(&q);
    let producers: std::collections::HashMap<&str, &str> = g
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .map(move |o| (o.as_str(), n.op_type.as_str()))
        })
        .collect();
    for op in ["Gemm", "MatMul", "Conv"] {
        let nodes: Vec<_> = g.node.iter().filter(|n| n.op_type == op).collect();
        assert!(!nodes.is_empty(), "{op}");
        for n in nodes {
            let inputs = if op == "MatMul" { 2 } else { 3 };
            for x in &n.input[..inputs] {
                assert_eq!(
                    producers.get(x.as_str()),
                    Some(&"DequantizeLinear"),
                    "{op} {}",
                    n.name
                );
            }
        }
    }
    let int8_weights = g
        .initializer
        .iter()
        .filter(|t| t.data_type == DataType::Int8 as i32 && t.name.ends_with(".weight.int8"))
        .count();
    assert_eq!(int8_weights, 6 * 8 + 31);
    // DAFormer's ASPP branches join in a quantized Concat (read only by the bottleneck
    // conv), so their Relus fold into QuantizeLinear: only the int64 shape Concats and
    // the stride-4 embedding Concat (read by the 1x1 ASPP branch and 3 depthwise convs,
    // also quantized) remain as they were.
    let aspp = g
        .node
        .iter()
        .find(|n| n.name == "decode_head.fuse_layer.concat")
        .unwrap();
    for x in &aspp.input {
        assert_eq!(producers[x.as_str()], "DequantizeLinear", "{x}");
    }
    let relus = |m: &rccr_exporter::onnx::ModelProto| {
        common::op_types(m).iter().filter(|o| *o == "Relu").count()
    };
    // fp32: 7 ASPP + 1 bottleneck ConvModules; int8: all folded.
    assert_eq!((relus(&fp32), relus(&q)), (8, 0));
    // The official checker accepts the int8 model.
    let path = dir.path().join("mit-int8.onnx");
    std::fs::write(&path, encode(&q).unwrap()).unwrap();
    common::onnx_checker(&path, "");
    // GELU's `+ 1` stays float (an Add with a constant input is not quantized).
    let gelu_add = g
        .node
        .iter()
        .find(|n| n.name == "block1.0.mlp.act.add")
        .unwrap();
    assert_eq!(producers[gelu_add.input[0].as_str()], "Erf");
}

const W: [f32; 4] = [0.5, -1.27, 0.254, 0.1]; // Gemm weight [2 out, 2 in], transB = 1
const B: [f32; 2] = [0.1, -0.2];

/// x [2, 2] -> Gemm(W, B, transB) -> g; MatMul(g, x) -> m; m + 1 -> y [2, 2].
fn tiny_model() -> ModelProto {
    let mut g = GraphBuilder::new();
    let w = g.init_f32("w", &[2, 2], &W);
    let b = g.init_f32("b", &[2], &B);
    let one = g.init_f32("one", &[], &[1.0]);
    let gm = g.op("Gemm", "g", &["x", &w, &b], vec![("transB", Attr::Int(1))]);
    let m = g.op("MatMul", "m", &[&gm, "x"], vec![]);
    g.node("Add", "add", &[&m, &one], &["y"], vec![]);
    let d = [Dim::Fixed(2), Dim::Fixed(2)];
    let graph = g.finish(
        "tiny",
        vec![tensor_value_info("x", DataType::Float, &d, "")],
        vec![tensor_value_info("y", DataType::Float, &d, "")],
        "",
    );
    common::opset17_model(graph)
}

#[test]
fn tiny_gemm_matmul_model_runs_in_ort_as_the_qdq_arithmetic_says() {
    let m = tiny_model();
    // The constant Add is not quantized: its input m is no activation to calibrate.
    assert_eq!(quantize::activation_tensors(&m).unwrap(), vec!["x", "g"]);
    // x in [-1, 1.55]: scale 0.01, zero point 100; g in [-2, 0.55]: scale 0.01, zp 200.
    let mut ranges = BTreeMap::new();
    ranges.insert("x".to_string(), Range { lo: -1.0, hi: 1.55 });
    ranges.insert("g".to_string(), Range { lo: -2.0, hi: 0.55 });
    let calibration = Calibration {
        method: CalibrationMethod::MinMax,
        batches: 1,
        ranges,
    };
    let q = quantize::quantize(&m, &calibration).unwrap();
    let ops: Vec<&str> = common::graph(&q)
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(
        ops,
        [
            "QuantizeLinear",   // x
            "DequantizeLinear", // x for g
            "DequantizeLinear", // w (int8, per output channel)
            "DequantizeLinear", // b (int32)
            "Gemm",
            "QuantizeLinear",   // g
            "DequantizeLinear", // g for m
            "DequantizeLinear", // x for m
            "MatMul",
            "Add", // float
        ]
    );
    // Weights as the conv rule (7-bit, per output channel): the same numbers as
    // tests/quantize.rs's conv1, 0.5 / (1.27 / 63) -> 25, ...; bias 0.1 / (0.01 * 1.27 / 63)
    // -> 496, -0.2 / (0.01 * 0.254 / 63) -> -4961.
    let wq: Vec<i8> = common::initializer(&q, "w.int8")
        .raw_data
        .iter()
        .map(|&b| b as i8)
        .collect();
    assert_eq!(wq, vec![25, -63, 63, 25]);

    let x = [0.37f32, -0.81, 1.2, 0.05];
    let mut s = rccr_infer::provider::session_builder(None)
        .unwrap()
        .commit_from_memory(&encode(&q).unwrap())
        .unwrap();
    let input = ort::value::Tensor::from_array(([2usize, 2], x.to_vec())).unwrap();
    let out = s.run(ort::inputs!["x" => input]).unwrap();
    let y = out["y"].try_extract_tensor::<f32>().unwrap().1.to_vec();

    // The QDQ arithmetic written out.
    let qdq = |v: f32, s: f32, zp: f32| (((v / s).round() + zp).clamp(0.0, 255.0) - zp) * s;
    let (wq, sw, bq) = (
        [25.0, -63.0, 63.0, 25.0],
        [1.27f32 / 63.0, 0.254 / 63.0],
        [496.0, -4961.0],
    );
    let xd: Vec<f32> = x.iter().map(|&v| qdq(v, 0.01, 100.0)).collect();
    let mut gd = [0f32; 4];
    for r in 0..2 {
        for o in 0..2 {
            let acc: f32 = (0..2)
                .map(|c| xd[r * 2 + c] * wq[o * 2 + c] * sw[o])
                .sum::<f32>();
            gd[r * 2 + o] = qdq(acc + bq[o] * 0.01 * sw[o], 0.01, 200.0);
        }
    }
    for r in 0..2 {
        for c in 0..2 {
            let m: f32 = (0..2).map(|k| gd[r * 2 + k] * xd[k * 2 + c]).sum();
            let want = m + 1.0;
            assert!(
                (y[r * 2 + c] - want).abs() < 1e-5,
                "y[{r},{c}] {} vs {want}",
                y[r * 2 + c]
            );
        }
    }
}
