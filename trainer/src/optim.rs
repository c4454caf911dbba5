//! SGD with momentum 0.9 and weight decay 5e-4 in two parameter groups (paper Sec. 4.1.2):
//! the encoder at the base rate (2.5e-4) and the classifier and projector at 10x, both
//! on the poly schedule. Written out here rather than taken from `tch::nn::Optimizer`
//! so that the momentum buffers can be saved in checkpoints and restored on resume.
//!
//! Update, as PyTorch's `torch.optim.SGD` (dampening 0, no Nesterov):
//! `d = grad + wd * p; buf = momentum * buf + d; p -= lr * buf` (buffers start at zero,
//! which equals PyTorch's first-step `buf = d`). A parameter no loss term has reached yet
//! (e.g. the projector in mode `baseline`) is left alone, as PyTorch does; from its first
//! gradient on it is updated every iteration, its gradient taken as zero when no term
//! reaches it (PyTorch after `zero_grad(set_to_none=False)`). Whether a parameter is
//! active is read back from its momentum buffer on resume, so a resumed run updates the
//! same parameters as an uninterrupted one.
//!
//! Batch-norm policy: by default the BN affine parameters (gamma, beta) are frozen and
//! not optimised (docs/design.md#network); their layers stay in training mode, so
//! the running statistics keep updating. `train_bn_affine = true` trains them in the
//! backbone group instead (the DAFormer choice).

use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// Which learning-rate group a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Encoder (backbone): base learning rate.
    Backbone,
    /// Classifier (`layer5.`) and projector (`projector.`): base x head multiplier.
    Head,
}

/// The group of a variable name.
pub(crate) fn group_of(name: &str) -> Group {
    if name.starts_with("layer5.") || name.starts_with("projector.") {
        Group::Head
    } else {
        Group::Backbone
    }
}

/// Whether `name` is a batch-norm affine parameter of `vars` (a `weight` / `bias` whose
/// module also has a `running_mean`).
pub(crate) fn is_bn_affine(name: &str, vars: &BTreeMap<String, Tensor>) -> bool {
    let module = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"));
    module.is_some_and(|m| vars.contains_key(&format!("{m}.running_mean")))
}

/// One optimised parameter.
#[derive(Debug)]
struct Param {
    name: String,
    var: Tensor,
    momentum: Tensor,
    group: Group,
    /// Updated at least once (see the module documentation).
    active: bool,
}

/// SGD with momentum, weight decay and two learning-rate groups.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Param>,
    /// Momentum coefficient.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

impl Sgd {
    /// Optimises the trainable variables of `vs` (BN affine ones only with
    /// `train_bn_affine`; the frozen ones get `requires_grad = false`).
    pub fn new(vs: &nn::VarStore, momentum: f64, weight_decay: f64, train_bn_affine: bool) -> Sgd {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut params = Vec::new();
        for (name, var) in &vars {
            if rccr_models::is_buffer(name) {
                continue;
            }
            if !train_bn_affine && is_bn_affine(name, &vars) {
                let _ = var.set_requires_grad(false);
                continue;
            }
            let momentum = tch::no_grad(|| var.zeros_like());
            params.push(Param {
                name: name.clone(),
                var: var.shallow_clone(),
                momentum,
                group: group_of(name),
                active: false,
            });
        }
        Sgd {
            params,
            momentum,
            weight_decay,
        }
    }

    /// Names of the optimised parameters, in order, with their groups.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, Group)> {
        self.params.iter().map(|p| (p.name.as_str(), p.group))
    }

    /// Number of optimised scalars per group: (backbone, head).
    pub fn counts(&self) -> (i64, i64) {
        let mut c = (0, 0);
        for p in &self.params {
            let n = p.var.numel() as i64;
            match p.group {
                Group::Backbone => c.0 += n,
                Group::Head => c.1 += n,
            }
        }
        c
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// One update with the learning rates of the two groups.
    pub fn step(&mut self, lr_backbone: f64, lr_head: f64) {
        let grads = self.gradients();
        self.apply(lr_backbone, lr_head, grads);
    }

    /// Each optimised parameter's gradient (None where no term reached it), in order.
    pub fn gradients(&self) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|p| {
                let g = p.var.grad();
                g.defined().then_some(g)
            })
            .collect()
    }

    /// The optimised parameters, in the order of [`Sgd::gradients`].
    pub fn variables(&self) -> Vec<&Tensor> {
        self.params.iter().map(|p| &p.var).collect()
    }

    /// One update with the given gradients (as [`Sgd::gradients`] returns them, possibly
    /// averaged over ranks); see the module documentation for absent gradients. Each
    /// learning-rate group is updated by multi-tensor kernels (`foreach::sgd`).
    pub fn apply(&mut self, lr_backbone: f64, lr_head: f64, grads: Vec<Option<Tensor>>) {
        let mut groups: [Vec<(Tensor, Tensor, Tensor)>; 2] = [Vec::new(), Vec::new()];
        for (p, grad) in self.params.iter_mut().zip(grads) {
            let grad = match grad {
                Some(g) => g,
                None if p.active => tch::no_grad(|| p.var.zeros_like()),
                None => continue,
            };
            p.active = true;
            let slot = &mut groups[usize::from(p.group == Group::Head)];
            slot.push((p.var.shallow_clone(), grad, p.momentum.shallow_clone()));
        }
        for (group, lr) in groups.iter().zip([lr_backbone, lr_head]) {
            let ps: Vec<&Tensor> = group.iter().map(|(p, _, _)| p).collect();
            let gs: Vec<&Tensor> = group.iter().map(|(_, g, _)| g).collect();
            let bs: Vec<&Tensor> = group.iter().map(|(_, _, b)| b).collect();
            crate::foreach::sgd(&ps, &gs, &bs, self.momentum, self.weight_decay, lr);
        }
    }

    /// The momentum buffers by parameter name (for checkpoints).
    pub fn state(&self) -> Vec<(String, &Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), &p.momentum))
            .collect()
    }

    /// Restores the momentum buffers; returns the names the map lacked.
    pub(crate) fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<(), String> {
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for p in &mut self.params {
                match state.get(&p.name) {
                    Some(t) if t.size() == p.momentum.size() => {
                        p.momentum
                            .copy_(&t.to_kind(p.momentum.kind()).to_device(p.momentum.device()));
                        p.active = p.momentum.abs().max().double_value(&[]) > 0.0;
                    }
                    _ => missing.push(p.name.clone()),
                }
            }
        });
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "optimiser state lacks {} buffer(s), first `{}`",
                missing.len(),
                missing[0]
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn groups_and_bn_policy() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = rccr_models::ModelConfig::new(rccr_models::Backbone::Small, 3);
        let _net = rccr_models::RccrNet::new(&vs.root(), &cfg);
        let frozen = Sgd::new(&vs, 0.9, 5e-4, false);
        let names: Vec<(&str, Group)> = frozen.parameters().collect();
        assert!(names.contains(&("conv1.weight", Group::Backbone)));
        assert!(names.contains(&("layer5.conv2d_list.0.bias", Group::Head)));
        assert!(names.contains(&("projector.2.weight", Group::Head)));
        assert!(!names.iter().any(|(n, _)| n.starts_with("bn1.")));
        assert!(!names.iter().any(|(n, _)| n.contains("downsample.1.")));
        assert!(!vs.variables()["bn1.weight"].requires_grad());
        let vs2 = nn::VarStore::new(Device::Cpu);
        let _net2 = rccr_models::RccrNet::new(&vs2.root(), &cfg);
        let all = Sgd::new(&vs2, 0.9, 5e-4, true);
        assert!(all.parameters().any(|(n, _)| n == "bn1.weight"));
        assert!(!all.parameters().any(|(n, _)| n.contains("running")));
    }

    #[test]
    fn two_steps_match_hand_computed_sgd() {
        // p = 1, grad = 2 (from loss 2p), wd 0.1, momentum 0.9, lr 0.5:
        // step 1: d = 2 + 0.1 = 2.1, buf = 2.1, p = 1 - 1.05 = -0.05
        // step 2: d = 2 + 0.1 * -0.05 = 1.995, buf = 0.9 * 2.1 + 1.995 = 3.885,
        //         p = -0.05 - 0.5 * 3.885 = -1.9925
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var("w", &[1], nn::Init::Const(1.0));
        let mut opt = Sgd::new(&vs, 0.9, 0.1, false);
        for _ in 0..2 {
            opt.zero_grad();
            (&p * 2.0).sum(Kind::Float).backward();
            opt.step(0.5, 5.0);
        }
        assert!((p.double_value(&[0]) + 1.9925).abs() < 1e-6);
    }
}
