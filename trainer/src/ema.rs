//! The mean teacher (paper Eq. 2 and Eq. 10, Algorithm 1 lines 14-16): after every
//! optimiser step each teacher parameter of the encoder, the segmentation head and the
//! projector becomes theta_hat = alpha theta_hat + (1 - alpha) theta, with
//! alpha = min(1 - 1/(t+1), 0.99) (see `crate::schedule::ema_alpha`).
//!
//! Batch-norm buffers (docs/design.md#mean-teacher-and-classmix): the running mean
//! and variance are *not* averaged. The teacher runs its forward on the un-augmented
//! target crops in training mode (batch statistics, under `no_grad`), so its running
//! statistics are its own estimate of the target domain under the teacher's weights,
//! and those are what validation and the exported model use. BN affine parameters are
//! parameters and are averaged like every other (they stay at their initial values when
//! frozen). The teacher never receives gradients: its variables have
//! `requires_grad = false` and it only runs under `no_grad`.

use rccr_models::is_buffer;
use std::collections::HashMap;
use tch::{nn, Tensor};

/// The pairs (teacher, student) of variables the EMA averages, in name order.
fn pairs(teacher: &nn::VarStore, student: &nn::VarStore) -> Vec<(String, Tensor, Tensor)> {
    let s: HashMap<String, Tensor> = student.variables();
    let mut out: Vec<(String, Tensor, Tensor)> = teacher
        .variables()
        .into_iter()
        .filter_map(|(n, t)| s.get(&n).map(|sv| (n, t, sv.shallow_clone())))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// theta_hat <- alpha theta_hat + (1 - alpha) theta over the parameters (not the BN
/// running statistics), by multi-tensor kernels ([`crate::foreach::ema`]).
pub(crate) fn ema_update(teacher: &nn::VarStore, student: &nn::VarStore, alpha: f64) {
    let params: Vec<(Tensor, Tensor)> = pairs(teacher, student)
        .into_iter()
        .filter(|(name, _, _)| !is_buffer(name))
        .map(|(_, t, s)| (t, s))
        .collect();
    let t: Vec<&Tensor> = params.iter().map(|(t, _)| t).collect();
    let s: Vec<&Tensor> = params.iter().map(|(_, s)| s).collect();
    crate::foreach::ema(&t, &s, alpha);
}

/// Copies every variable, buffers included (teacher initialisation; mode `source-only`,
/// where the "teacher" that is validated and exported is the student itself).
pub(crate) fn copy_all(teacher: &nn::VarStore, student: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut t, s) in pairs(teacher, student) {
            t.copy_(&s);
        }
    });
}

/// Marks every variable of `vs` as not requiring gradients.
pub(crate) fn freeze(vs: &nn::VarStore) {
    for (_, t) in vs.variables() {
        let _ = t.set_requires_grad(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn store(vals: &[(&str, [f32; 2])]) -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        for (name, v) in vals {
            let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
            let p = if module.is_empty() {
                root.clone()
            } else {
                &root / module
            };
            let t = p.var(leaf, &[2], nn::Init::Const(0.0));
            tch::no_grad(|| t.shallow_clone().copy_(&Tensor::from_slice(v)));
        }
        vs
    }

    fn get(vs: &nn::VarStore, name: &str) -> Vec<f32> {
        let t = vs.variables()[name].to_kind(Kind::Float);
        Vec::<f32>::try_from(&t).unwrap()
    }

    #[test]
    fn ema_averages_parameters_not_running_stats() {
        let teacher = store(&[("w", [1.0, 2.0]), ("bn.running_mean", [5.0, 5.0])]);
        let student = store(&[("w", [3.0, -2.0]), ("bn.running_mean", [9.0, 9.0])]);
        ema_update(&teacher, &student, 0.75);
        // 0.75 * 1 + 0.25 * 3 = 1.5; 0.75 * 2 + 0.25 * -2 = 1.0
        assert_eq!(get(&teacher, "w"), vec![1.5, 1.0]);
        assert_eq!(get(&teacher, "bn.running_mean"), vec![5.0, 5.0]);
        // alpha = 0 (t = 0) copies the parameters.
        ema_update(&teacher, &student, 0.0);
        assert_eq!(get(&teacher, "w"), vec![3.0, -2.0]);
        copy_all(&teacher, &student);
        assert_eq!(get(&teacher, "bn.running_mean"), vec![9.0, 9.0]);
    }
}
