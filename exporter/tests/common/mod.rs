//! Test fixtures: trainer-style checkpoints of randomly initialised networks whose
//! batch-norm statistics and affine parameters are randomised, so that folding is
//! exercised with non-trivial values; their exports; lookups into an exported graph; the
//! `rccr-export` binary and the official ONNX checker. The examples include this file too.
#![allow(dead_code)]

use rccr_exporter::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};
use rccr_exporter::{export_loaded, load_teacher, ExportOptions};
use rccr_models::checkpoint::{model_metadata, LoadedNet, CHECKPOINT_FORMAT, STUDENT, TEACHER};
use rccr_models::{ModelConfig, RccrNet};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

pub use rccr_test_support::{repo_root, Rng};

/// `shape` values uniform in [lo, hi) from `rng`.
pub fn random_tensor(rng: &mut Rng, shape: &[i64], lo: f64, hi: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    Tensor::from_slice(&rng.uniforms(n as usize, lo, hi)).view(shape)
}

/// A network in its own VarStore with every variable drawn from a seeded local
/// generator: convolutions kaiming-uniform (bound sqrt(6 / fan_in)), the stem scaled to
/// the 0..255 input range, BN statistics and affine parameters randomised so that folding
/// is exercised, the last BN of each residual branch small (as in trained ResNets, so 33
/// stacked blocks keep activations O(1)), the ASPP weights at DACS's scale (std 0.01).
pub fn random_net(config: &ModelConfig, seed: u64) -> (nn::VarStore, RccrNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), config);
    let mut rng = Rng::new(seed);
    let last_bn = if config.backbone.bottleneck() {
        ".bn3.weight"
    } else {
        ".bn2.weight"
    };
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, var) in vars {
            let shape = var.size();
            let is_bn =
                name.contains(".bn") || name.starts_with("bn") || name.contains("downsample.1");
            let (lo, hi) = if shape.len() == 4 {
                let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
                let b = if name.starts_with("layer5.") {
                    0.01 * 3f64.sqrt()
                } else if name == "conv1.weight" {
                    (6.0 / fan_in).sqrt() / 128.0
                } else {
                    (6.0 / fan_in).sqrt()
                };
                (-b, b)
            } else if name.ends_with("running_mean") {
                (-0.2, 0.2)
            } else if name.ends_with("running_var") {
                (0.5, 2.0)
            } else if name.starts_with("layer") && name.ends_with(last_bn) {
                (0.05, 0.2)
            } else if is_bn && name.ends_with(".weight") {
                (0.5, 1.5)
            } else if is_bn && name.ends_with(".bias") {
                (-0.2, 0.2)
            } else if name.ends_with(".bias") {
                (-0.05, 0.05)
            } else {
                panic!("unexpected variable {name}");
            };
            let mut v = var.shallow_clone();
            v.copy_(&random_tensor(&mut rng, &shape, lo, hi));
        }
    });
    (vs, net)
}

/// Writes a trainer-style checkpoint: the network's variables under `teacher.` (and,
/// with `student`, a second copy under `student.` plus an unrelated optimiser entry).
pub fn write_checkpoint(
    path: &Path,
    vs: &nn::VarStore,
    config: &ModelConfig,
    iteration: u64,
    teacher: bool,
    student: bool,
) {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let mut tensors: Vec<(String, &Tensor)> = Vec::new();
    for (n, t) in &vars {
        if teacher {
            tensors.push((format!("{TEACHER}{n}"), t));
        }
        if student {
            tensors.push((format!("{STUDENT}{n}"), t));
        }
    }
    let step = Tensor::from_slice(&[iteration as i64]);
    tensors.push(("optim.step".to_string(), &step));
    rccr_models::weights::write_tensors(
        path,
        tensors,
        &model_metadata(CHECKPOINT_FORMAT, config, iteration),
    )
    .expect("checkpoint written");
}

/// A random network written as a checkpoint in `dir`; returns the path and the network.
pub fn checkpoint(dir: &Path, config: &ModelConfig, seed: u64) -> (PathBuf, nn::VarStore, RccrNet) {
    let (vs, net) = random_net(config, seed);
    let path = dir.join(format!("ckpt-{}-{seed}.safetensors", config.backbone));
    write_checkpoint(&path, &vs, config, 1234, true, true);
    (path, vs, net)
}

/// A random network of `config` checkpointed in `dir` (see [`checkpoint`]), its teacher
/// loaded back and exported with `opts`: the checkpoint, the teacher and the model.
pub fn export_random(
    dir: &Path,
    config: &ModelConfig,
    seed: u64,
    opts: &ExportOptions,
) -> (PathBuf, LoadedNet, ModelProto) {
    let (ckpt, _vs, _net) = checkpoint(dir, config, seed);
    let loaded = load_teacher(&ckpt).unwrap();
    let model = export_loaded(&loaded, &ckpt, opts).unwrap();
    (ckpt, loaded, model)
}

/// The graph of a model.
pub fn graph(m: &ModelProto) -> &GraphProto {
    m.graph.as_ref().expect("the model has a graph")
}

/// The node called `name`.
pub fn node<'a>(m: &'a ModelProto, name: &str) -> &'a NodeProto {
    graph(m)
        .node
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The initialiser called `name`.
pub fn initializer<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
    graph(m)
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initialiser {name}"))
}

/// The op types of the graph's nodes, in order.
pub fn op_types(m: &ModelProto) -> Vec<String> {
    graph(m).node.iter().map(|n| n.op_type.clone()).collect()
}

/// An ONNX Runtime session of the model file `path`, from rccr-infer's session builder.
pub fn ort_session(path: &Path) -> ort::session::Session {
    rccr_infer::provider::session_builder(None)
        .unwrap()
        .commit_from_file(path)
        .unwrap()
}

/// Runs this build's `rccr-export` with `args` (logging at warn). Cargo names the binary
/// to integration tests only; the benchmark examples that share this module never call it.
pub fn rccr_export(args: &[&str]) -> std::process::Output {
    let Some(bin) = option_env!("CARGO_BIN_EXE_rccr-export") else {
        panic!("rccr-export is known to integration tests only (cargo test --test ...)");
    };
    std::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("rccr-export runs")
}

/// Runs the official ONNX checker (`onnx.checker.check_model(full_check=True)`, PyPI
/// `onnx` from `.deps/py`) on `model`, then the Python statements `extra` (with `m` the
/// loaded model), asserting success; returns what `extra` printed. `.deps/py` is appended
/// to `sys.path` rather than put first, so nothing there can shadow the standard library.
pub fn onnx_checker(model: &Path, extra: &str) -> Vec<u8> {
    let py = repo_root().join(".deps/py");
    assert!(
        py.join("onnx").is_dir(),
        "{} has no onnx package: run ./scripts/setup.sh",
        py.display()
    );
    let script = format!(
        "import sys, json\nsys.path.append(sys.argv[1])\nimport onnx\nm = onnx.load(sys.argv[2])\nonnx.checker.check_model(m, full_check=True)\n{extra}"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&py)
        .arg(model)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "onnx checker rejected {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A MiT network (`config.backbone` = `mit-b*`) in its own VarStore: the model's own
/// initialisation (SegFormer's, seeded through tch), then, from a seeded local generator,
/// every LayerNorm's scale in [0.5, 1.5) and shift in [-0.2, 0.2), every batch norm's
/// running statistics and affine parameters randomised (as [`random_net`] does), the
/// linear layers' and convolutions' biases in [-0.05, 0.05), the query / key weights
/// scaled by `attention_gain` (8 makes the attention far from uniform: the release's
/// N(0, 0.02) gives near-equal scores, which would hide an error in the key layout; 1
/// keeps the release's scale), and the classifier's
/// weights by 20 so that the logits are O(1-10) rather than mmseg's N(0, 0.01) scale.
pub fn random_mit(config: &ModelConfig, seed: u64, attention_gain: f64) -> (nn::VarStore, RccrNet) {
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), config);
    let mut rng = Rng::new(seed);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, var) in vars {
            let shape = var.size();
            let is_ln = name.contains("norm") && !name.contains(".bn.");
            let is_bn = name.contains(".bn.");
            let range = if name.ends_with("running_mean") {
                Some((-0.2, 0.2))
            } else if name.ends_with("running_var") {
                Some((0.5, 2.0))
            } else if (is_ln || is_bn) && name.ends_with(".weight") {
                Some((0.5, 1.5))
            } else if (is_ln || is_bn) && name.ends_with(".bias") {
                Some((-0.2, 0.2))
            } else if name.ends_with(".bias") {
                Some((-0.05, 0.05))
            } else {
                None
            };
            let mut v = var.shallow_clone();
            match range {
                Some((lo, hi)) => {
                    v.copy_(&random_tensor(&mut rng, &shape, lo, hi));
                }
                None if name.ends_with("attn.q.weight") || name.ends_with("attn.kv.weight") => {
                    let _ = v.g_mul_scalar_(attention_gain);
                }
                None if name.ends_with("conv_seg.weight")
                    || name.ends_with("linear_pred.weight") =>
                {
                    let _ = v.g_mul_scalar_(20.0);
                }
                None => {}
            }
        }
    });
    (vs, net)
}

/// A random MiT network ([`random_mit`], attention gain 8) checkpointed in `dir`, its
/// teacher loaded back and exported with `opts`: the checkpoint, the teacher and the model.
pub fn export_random_mit(
    dir: &Path,
    config: &ModelConfig,
    seed: u64,
    opts: &ExportOptions,
) -> (PathBuf, LoadedNet, ModelProto) {
    export_random_mit_with(dir, config, seed, 8.0, opts)
}

/// [`export_random_mit`] with the query / key weights scaled by `attention_gain`.
pub fn export_random_mit_with(
    dir: &Path,
    config: &ModelConfig,
    seed: u64,
    attention_gain: f64,
    opts: &ExportOptions,
) -> (PathBuf, LoadedNet, ModelProto) {
    let (vs, _net) = random_mit(config, seed, attention_gain);
    let ckpt = dir.join(format!("ckpt-{}-{seed}.safetensors", config.backbone));
    write_checkpoint(&ckpt, &vs, config, 1234, true, true);
    let loaded = load_teacher(&ckpt).unwrap();
    let model = export_loaded(&loaded, &ckpt, opts).unwrap();
    (ckpt, loaded, model)
}

/// A model of `graph` at IR 8 / opset 17 (the small hand-built graphs of the tests).
pub fn opset17_model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![rccr_exporter::onnx::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// An fp16 export's verification: it passed, its rounded weights were really used (the
/// logits differ beyond fp32 rounding), and no case errs as much as a structural slip
/// would (1e-2 x max |logit|).
pub fn assert_fp16_report(r: &rccr_exporter::VerifyReport) {
    assert!(r.passed, "{}", r.summary());
    assert!(r.max_abs_diff > 1e-5, "{}", r.summary());
    for c in &r.cases {
        assert!(c.max_abs_diff <= 1e-2 * c.max_abs_logit, "{}", r.summary());
    }
}
