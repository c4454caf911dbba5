//! The Mix Transformer networks against an independent PyTorch implementation written
//! from the SegFormer and DAFormer papers (tests/reference/mit_reference.py, plain
//! functional PyTorch over the official checkpoint names): the same weights (saved by
//! our safetensors writer) and input must give the same logits to 1e-4, in eval mode
//! (running statistics) and in training mode (batch statistics; drop path and dropout
//! set to 0, the only randomness), on a 64 x 64 input and on a 57 x 70 one (not a
//! multiple of 32: every stage and reduction rounds), for MiT-B0 with both decoders
//! and MiT-B1 with DAFormer's. Also: the encoders' parameter counts are the SegFormer
//! paper's (Tab. 6 / Tab. 1: 3.4 M ... 81.4 M).

use rccr_models::{count_parameters, weights, Backbone, Decoder, ModelConfig, RccrNet};
use rccr_test_support::{assert_matches_reference, read_f32_le, run_python, Deps};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Biases, norm scales and BN statistics away from their 0 / 1 initial values, so that
/// every one of them matters to the logits.
fn randomise_affine(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand_like(&t) * 0.5 + 0.75));
            } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                t.copy_(&(Tensor::randn_like(&t) * 0.1));
            } else if t.dim() == 1 {
                t.copy_(&(Tensor::randn_like(&t) * 0.1 + 1.0));
            }
        }
    });
}

struct Case {
    backbone: Backbone,
    decoder: Decoder,
}

fn config(case: &Case) -> ModelConfig {
    ModelConfig {
        decoder: Some(case.decoder),
        drop_path_rate: Some(0.0),
        decoder_dropout: Some(0.0),
        ..ModelConfig::new(case.backbone, 5)
    }
}

/// Our logits for `rgb` in both modes, and the jobs that ask the reference for them.
fn run_case(
    case: &Case,
    i: usize,
    dir: &Path,
    jobs: &mut Vec<serde_json::Value>,
) -> Vec<(String, Vec<f32>)> {
    tch::manual_seed(i as i64);
    let cfg = config(case);
    cfg.validate().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &cfg);
    randomise_affine(&vs);
    let wpath = dir.join(format!("model{i}.safetensors"));
    weights::save_var_store(&vs, &wpath, &HashMap::new()).unwrap();
    let inputs: Vec<(i64, i64, Tensor, PathBuf)> = [(64, 64), (57, 70)]
        .into_iter()
        .map(|(h, w)| {
            let rgb = Tensor::rand([2, 3, h, w], (Kind::Float, Device::Cpu)) * 255.0;
            let ipath = dir.join(format!("input{i}_{h}x{w}.safetensors"));
            weights::write_tensors(&ipath, [("rgb".to_string(), &rgb)], &HashMap::new()).unwrap();
            (h, w, rgb, ipath)
        })
        .collect();
    let mut ours = Vec::new();
    // Eval first: a training-mode forward updates the running statistics.
    for train in [false, true] {
        for (h, w, rgb, ipath) in &inputs {
            let out = dir.join(format!("logits{i}_{h}x{w}_{train}.bin"));
            let logits = tch::no_grad(|| net.seg.forward_t(&net.seg.normalize(rgb), train).logits);
            assert_eq!(logits.size(), [2, 5, (h + 3) / 4, (w + 3) / 4]);
            let what = format!("{} {} {h}x{w} train={train}", case.backbone, case.decoder);
            ours.push((what, Vec::try_from(logits.flatten(0, -1)).unwrap()));
            jobs.push(serde_json::json!({
                "weights": wpath, "input": ipath, "out": out, "variant": case.backbone.name(),
                "decoder": case.decoder.name(), "classes": 5, "train": train,
            }));
        }
    }
    ours
}

#[test]
fn logits_match_the_independent_pytorch_implementation() {
    let cases = [
        Case {
            backbone: Backbone::MitB0,
            decoder: Decoder::Daformer,
        },
        Case {
            backbone: Backbone::MitB0,
            decoder: Decoder::Segformer,
        },
        Case {
            backbone: Backbone::MitB1,
            decoder: Decoder::Daformer,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        ours.extend(run_case(case, i, dir.path(), &mut jobs));
    }
    let jobs_path = dir.path().join("jobs.json");
    std::fs::write(&jobs_path, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let args = ["forward".to_string(), jobs_path.display().to_string()];
    run_python(
        Deps::TorchAndPy,
        "models/tests/reference/mit_reference.py",
        &args,
    );
    for ((what, values), job) in ours.iter().zip(&jobs) {
        let reference = read_f32_le(Path::new(job["out"].as_str().unwrap()));
        assert_matches_reference(values, &reference, what);
    }
}

/// SegFormer (Xie et al. 2021) Tab. 1: encoder parameters in millions, to the paper's
/// one decimal (its figures are within 0.1 M of the released architectures': B0 is listed
/// as 3.4 M for 3.319 M, B3 as 44.0 M for 44.072 M). The exact counts are those of the
/// official checkpoints' shapes as the reference's `encoder_shapes` spells them out
/// independently (ImageNet classifier `head` excluded).
#[test]
fn encoder_parameter_counts_are_the_segformer_papers() {
    for (backbone, millions, exact) in [
        (Backbone::MitB0, 3.4, 3_319_392),
        (Backbone::MitB1, 13.1, 13_151_424),
        (Backbone::MitB2, 24.2, 24_196_288),
        (Backbone::MitB3, 44.0, 44_072_128),
        (Backbone::MitB4, 60.8, 60_842_688),
        (Backbone::MitB5, 81.4, 81_443_008),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = RccrNet::new(&vs.root(), &ModelConfig::new(backbone, 19));
        let counts = count_parameters(&vs);
        let m = counts.encoder_parameters as f64 / 1e6;
        assert!(
            (m - millions).abs() < 0.1,
            "{backbone}: {m:.3} M, paper {millions} M"
        );
        assert_eq!(counts.encoder_parameters, exact, "{backbone}");
        assert_eq!(
            counts.parameters,
            counts.encoder_parameters + counts.decoder_parameters
        );
    }
    // DAFormer's decoder on MiT-B5 with 19 classes: 3.712 M (the reference's
    // `daformer_shapes`, BN statistics excluded).
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &ModelConfig::new(Backbone::MitB5, 19));
    assert_eq!(count_parameters(&vs).decoder_parameters, 3_712_275);
}

/// What RCCR reads (rccr_models::segmenter): MiT's features and grid logits are the
/// stride-4 maps at every second cell, on the grid `grid_size` gives; DeepLabv2's are
/// layer4 and the logits themselves.
#[test]
fn the_rccr_grid_is_every_second_stride_4_cell() {
    tch::manual_seed(3);
    for backbone in [Backbone::MitB0, Backbone::Small] {
        let cfg = ModelConfig::new(backbone, 5);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = RccrNet::new(&vs.root(), &cfg);
        let x = Tensor::randn([2, 3, 57, 70], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| net.seg.forward_t(&x, false));
        let (gh, gw) = cfg.grid_size(57, 70);
        assert_eq!(out.features.size(), [2, cfg.feature_width(), gh, gw]);
        assert_eq!(out.grid_logits.size(), [2, 5, gh, gw]);
        let features = tch::no_grad(|| net.seg.features_t(&x, false));
        assert!(features.equal(&out.features), "{backbone}");
        if backbone.is_mit() {
            assert_eq!((gh, gw), (8, 9));
            assert_eq!(out.logits.size(), [2, 5, 15, 18]);
            let every_second = out.logits.slice(2, 0, None, 2).slice(3, 0, None, 2);
            assert!(every_second.equal(&out.grid_logits));
            assert_eq!(out.encoder.size(), [2, 256, 2, 3]);
        } else {
            assert!(out.grid_logits.equal(&out.logits));
            assert!(out.encoder.equal(&out.features));
        }
    }
}

/// DAFormer's teacher mode: batch statistics without drop path or dropout is exactly
/// training mode with both rates 0, whatever the configured rates; training mode with
/// the rates applies them (two forwards differ).
#[test]
fn forward_with_separates_batch_statistics_from_the_stochastic_layers() {
    tch::manual_seed(5);
    let cfg = ModelConfig {
        drop_path_rate: Some(0.5),
        decoder_dropout: Some(0.5),
        ..ModelConfig::new(Backbone::MitB0, 5)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &cfg);
    let plain = ModelConfig {
        drop_path_rate: Some(0.0),
        decoder_dropout: Some(0.0),
        ..cfg.clone()
    };
    let mut vs0 = nn::VarStore::new(Device::Cpu);
    let net0 = RccrNet::new(&vs0.root(), &plain);
    vs0.copy(&vs).unwrap();
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let teacher = tch::no_grad(|| net.seg.forward_with(&x, true, false).logits);
    let reference = tch::no_grad(|| net0.seg.forward_t(&x, true).logits);
    assert!(teacher.allclose(&reference, 1e-6, 1e-6, false));
    let a = tch::no_grad(|| net.seg.forward_t(&x, true).logits);
    let b = tch::no_grad(|| net.seg.forward_t(&x, true).logits);
    assert!(!a.allclose(&b, 1e-4, 1e-4, false));
}
