//! Test fixtures: trainer-style checkpoints of randomly initialised networks whose
//! batch-norm statistics and affine parameters are randomised, so that folding is
//! exercised with non-trivial values.
#![allow(dead_code)]

use rccr_models::checkpoint::{model_metadata, CHECKPOINT_FORMAT, STUDENT, TEACHER};
use rccr_models::{ModelConfig, RccrNet};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// The workspace root (for `.deps/py`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A network in its own VarStore, BN statistics / affine parameters and ASPP biases
/// randomised (seeded), the stem scaled to the 0..255 input range.
pub fn random_net(config: &ModelConfig, seed: i64) -> (nn::VarStore, RccrNet) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), config);
    let uniform = |t: &Tensor, lo: f64, hi: f64| {
        Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) * (hi - lo) + lo
    };
    // The last BN of each residual branch: small scales (as in trained ResNets), so that
    // 33 stacked blocks keep the activations O(1) instead of doubling their variance.
    let last_bn = if config.backbone.bottleneck() {
        ".bn3.weight"
    } else {
        ".bn2.weight"
    };
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            let is_bn =
                name.contains(".bn") || name.starts_with("bn") || name.contains("downsample.1");
            let value = if name == "conv1.weight" {
                // Trained stems see the 0..255 range (mean-subtracted only, DACS) with
                // small weights; scale the kaiming init so activations stay O(1) and the
                // logits have a trained network's magnitude (a few units to tens).
                &var / 128.0
            } else if name.ends_with("running_mean") {
                uniform(&var, -0.2, 0.2)
            } else if name.ends_with("running_var") {
                uniform(&var, 0.5, 2.0)
            } else if name.starts_with("layer") && name.ends_with(last_bn) {
                uniform(&var, 0.05, 0.2)
            } else if is_bn && name.ends_with(".weight") {
                uniform(&var, 0.5, 1.5)
            } else if is_bn && name.ends_with(".bias") {
                uniform(&var, -0.2, 0.2)
            } else if name.starts_with("layer5.") && name.ends_with(".bias") {
                uniform(&var, -0.5, 0.5)
            } else {
                continue;
            };
            let mut v = var.shallow_clone();
            v.copy_(&value);
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
pub fn checkpoint(dir: &Path, config: &ModelConfig, seed: i64) -> (PathBuf, nn::VarStore, RccrNet) {
    let (vs, net) = random_net(config, seed);
    let path = dir.join(format!("ckpt-{}-{seed}.safetensors", config.backbone));
    write_checkpoint(&path, &vs, config, 1234, true, true);
    (path, vs, net)
}
