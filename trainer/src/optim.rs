//! The student's optimiser in two parameter groups (paper Sec. 4.1.2): the encoder at the
//! base rate and the classifier, decoder and projector at 10x, both on the poly schedule.
//! Written out here rather than taken from `tch::nn::Optimizer` so that its state can be
//! saved in checkpoints and restored on resume. Two rules (`optim.optimizer`):
//!
//! - SGD, as PyTorch's `torch.optim.SGD` (dampening 0, no Nesterov), the paper's:
//!   `d = grad + wd * p; buf = momentum * buf + d; p -= lr * buf` (buffers start at zero,
//!   which equals PyTorch's first-step `buf = d`).
//! - AdamW (Loshchilov and Hutter; DAFormer's optimiser), as PyTorch's `torch.optim.AdamW`:
//!   `p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//!   p -= lr (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)`, k the parameter's own step
//!   count; parameters named `*norm*` get no weight decay (DAFormer's `decay_mult 0`).
//!
//! A parameter no loss term has reached yet (e.g. the projector in mode `baseline`) is
//! left alone, as PyTorch does; from its first gradient on it is updated every iteration,
//! its gradient taken as zero when no term reaches it (PyTorch after
//! `zero_grad(set_to_none=False)`). Whether a parameter is active is read back from its
//! state on resume, so a resumed run updates the same parameters as an uninterrupted one.
//!
//! Batch-norm policy: by default the BN affine parameters (gamma, beta) are frozen and
//! not optimised (docs/design.md#network); their layers stay in training mode, so
//! the running statistics keep updating. `train_bn_affine = true` trains them in the
//! backbone group instead (the DAFormer choice). The BN layers of a decoder (MiT's
//! `decode_head.`) are always trained, in the head group, as DAFormer does.

use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// Which learning-rate group a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Encoder (backbone): base learning rate.
    Backbone,
    /// Classifier (`layer5.`), decoder (`decode_head.`) and projector (`projector.`): base x
    /// head multiplier.
    Head,
}

/// The group of a variable name.
pub(crate) fn group_of(name: &str) -> Group {
    if name.starts_with("layer5.")
        || name.starts_with("projector.")
        || name.starts_with("decode_head.")
    {
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

/// The state an update rule keeps per parameter.
#[derive(Debug)]
enum Slots {
    /// SGD's momentum buffer.
    Sgd { momentum: Tensor },
    /// AdamW's moments and step count (a float64 scalar mirror of `steps` for checkpoints).
    AdamW {
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
        step: Tensor,
        steps: u64,
    },
}

/// One optimised parameter.
#[derive(Debug)]
struct Param {
    name: String,
    var: Tensor,
    slots: Slots,
    group: Group,
    /// Updated at least once (see the module documentation).
    active: bool,
}

/// The hyper-parameters of the update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// SGD with momentum and (coupled) weight decay.
    Sgd {
        /// Momentum coefficient.
        momentum: f64,
        /// Weight decay.
        weight_decay: f64,
    },
    /// AdamW with decoupled weight decay.
    AdamW {
        /// beta1.
        beta1: f64,
        /// beta2.
        beta2: f64,
        /// epsilon.
        eps: f64,
        /// Decoupled weight decay (none on `*norm*` parameters).
        weight_decay: f64,
    },
}

impl Rule {
    /// The rule `cfg` asks for.
    pub fn of(cfg: &crate::config::OptimConfig) -> Rule {
        match cfg.optimizer {
            crate::config::Optimizer::Sgd => Rule::Sgd {
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
            },
            crate::config::Optimizer::Adamw => Rule::AdamW {
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.adam_eps,
                weight_decay: cfg.weight_decay,
            },
        }
    }

    fn slots(&self, var: &Tensor) -> Slots {
        tch::no_grad(|| match self {
            Rule::Sgd { .. } => Slots::Sgd {
                momentum: var.zeros_like(),
            },
            Rule::AdamW { .. } => Slots::AdamW {
                exp_avg: var.zeros_like(),
                exp_avg_sq: var.zeros_like(),
                step: Tensor::zeros([], (tch::Kind::Double, var.device())),
                steps: 0,
            },
        })
    }
}

/// The student's optimiser: an update rule over two learning-rate groups.
#[derive(Debug)]
pub struct Optimiser {
    params: Vec<Param>,
    /// The update rule.
    pub rule: Rule,
}

impl Optimiser {
    /// Optimises the trainable variables of `vs` (BN affine ones only with
    /// `train_bn_affine`; the frozen ones get `requires_grad = false`).
    pub fn new(vs: &nn::VarStore, rule: Rule, train_bn_affine: bool) -> Optimiser {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut params = Vec::new();
        for (name, var) in &vars {
            if rccr_models::is_buffer(name) {
                continue;
            }
            if !train_bn_affine && is_bn_affine(name, &vars) && group_of(name) == Group::Backbone {
                let _ = var.set_requires_grad(false);
                continue;
            }
            params.push(Param {
                name: name.clone(),
                var: var.shallow_clone(),
                slots: rule.slots(var),
                group: group_of(name),
                active: false,
            });
        }
        Optimiser { params, rule }
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

    /// The optimised parameters, in the order of [`Optimiser::gradients`].
    pub fn variables(&self) -> Vec<&Tensor> {
        self.params.iter().map(|p| &p.var).collect()
    }

    /// One update with the given gradients (as [`Optimiser::gradients`] returns them,
    /// possibly averaged over ranks); see the module documentation for absent gradients.
    pub fn apply(&mut self, lr_backbone: f64, lr_head: f64, grads: Vec<Option<Tensor>>) {
        let rule = self.rule;
        let mut groups: [Vec<(&mut Param, Tensor)>; 2] = [Vec::new(), Vec::new()];
        for (p, grad) in self.params.iter_mut().zip(grads) {
            let grad = match grad {
                Some(g) => g,
                None if p.active => tch::no_grad(|| p.var.zeros_like()),
                None => continue,
            };
            p.active = true;
            groups[usize::from(p.group == Group::Head)].push((p, grad));
        }
        for (group, lr) in groups.iter_mut().zip([lr_backbone, lr_head]) {
            match rule {
                Rule::Sgd {
                    momentum,
                    weight_decay,
                } => sgd_group(group, momentum, weight_decay, lr),
                Rule::AdamW { .. } => {
                    for (p, g) in group.iter_mut() {
                        adamw(p, g, &rule, lr);
                    }
                }
            }
        }
    }

    /// The optimiser state as (slot, parameter, tensor): slot `momentum` (SGD) or
    /// `adam.exp_avg`, `adam.exp_avg_sq`, `adam.step` (AdamW).
    pub fn slots(&self) -> Vec<(&'static str, &str, &Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            let name = p.name.as_str();
            match &p.slots {
                Slots::Sgd { momentum } => out.push(("momentum", name, momentum)),
                Slots::AdamW {
                    exp_avg,
                    exp_avg_sq,
                    step,
                    ..
                } => out.extend([
                    ("adam.exp_avg", name, exp_avg),
                    ("adam.exp_avg_sq", name, exp_avg_sq),
                    ("adam.step", name, step),
                ]),
            }
        }
        out
    }

    /// The optimiser state by name, `<slot>.<var>` ([`Optimiser::slots`]).
    pub fn state(&self) -> Vec<(String, &Tensor)> {
        self.slots()
            .into_iter()
            .map(|(slot, name, t)| (format!("{slot}.{name}"), t))
            .collect()
    }

    /// Restores the state written by [`Optimiser::state`]; an error names what the map
    /// lacked (a checkpoint of the other optimiser, or of another network).
    pub(crate) fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<(), String> {
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for p in &mut self.params {
                if let Err(name) = load_param(p, state) {
                    missing.push(name);
                }
            }
        });
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "optimiser state lacks {} tensor(s), first `{first}` (was the checkpoint \
                 trained with another optim.optimizer?)",
                missing.len()
            )),
        }
    }
}

/// Copies `from` into `to` when the shapes agree.
fn restore_into(to: &Tensor, from: Option<&Tensor>) -> bool {
    match from {
        Some(t) if t.size() == to.size() => {
            let mut to = to.shallow_clone();
            to.copy_(&t.to_kind(to.kind()).to_device(to.device()));
            true
        }
        _ => false,
    }
}

/// Restores one parameter's slots; Err(the first missing name).
fn load_param(p: &mut Param, state: &BTreeMap<String, Tensor>) -> Result<(), String> {
    let get = |slot: &str| {
        let key = format!("{slot}.{}", p.name);
        (state.get(&key), key)
    };
    match &mut p.slots {
        Slots::Sgd { momentum } => {
            let (t, key) = get("momentum");
            if !restore_into(momentum, t) {
                return Err(key);
            }
            p.active = momentum.abs().max().double_value(&[]) > 0.0;
        }
        Slots::AdamW {
            exp_avg,
            exp_avg_sq,
            step,
            steps,
        } => {
            for (slot, to) in [
                ("adam.exp_avg", &*exp_avg),
                ("adam.exp_avg_sq", &*exp_avg_sq),
            ]
            .into_iter()
            .chain([("adam.step", &*step)])
            {
                let (t, key) = get(slot);
                if !restore_into(to, t) {
                    return Err(key);
                }
            }
            *steps = step.double_value(&[]) as u64;
            p.active = *steps > 0;
        }
    }
    Ok(())
}

/// SGD on one learning-rate group by multi-tensor kernels (`foreach::sgd`).
fn sgd_group(group: &[(&mut Param, Tensor)], momentum: f64, weight_decay: f64, lr: f64) {
    let ps: Vec<&Tensor> = group.iter().map(|(p, _)| &p.var).collect();
    let gs: Vec<&Tensor> = group.iter().map(|(_, g)| g).collect();
    let bs: Vec<&Tensor> = group
        .iter()
        .map(|(p, _)| match &p.slots {
            Slots::Sgd { momentum } => momentum,
            Slots::AdamW { .. } => unreachable!("an SGD group holds SGD slots"),
        })
        .collect();
    crate::foreach::sgd(&ps, &gs, &bs, momentum, weight_decay, lr);
}

/// One AdamW update of `p` with gradient `g` (module documentation).
fn adamw(p: &mut Param, g: &Tensor, rule: &Rule, lr: f64) {
    let Rule::AdamW {
        beta1,
        beta2,
        eps,
        weight_decay,
    } = *rule
    else {
        return;
    };
    let Slots::AdamW {
        exp_avg,
        exp_avg_sq,
        step,
        steps,
    } = &mut p.slots
    else {
        return;
    };
    let wd = if p.name.contains("norm") {
        0.0
    } else {
        weight_decay
    };
    *steps += 1;
    let k = *steps as i32;
    let (bc1, bc2) = (1.0 - beta1.powi(k), 1.0 - beta2.powi(k));
    tch::no_grad(|| {
        let _ = step.fill_(*steps as f64);
        let mut var = p.var.shallow_clone();
        let _ = var.g_mul_scalar_(1.0 - lr * wd);
        let _ = exp_avg.g_mul_scalar_(beta1).g_add_(&(g * (1.0 - beta1)));
        let _ = exp_avg_sq
            .g_mul_scalar_(beta2)
            .g_add_(&(g.square() * (1.0 - beta2)));
        let denom = (&*exp_avg_sq / bc2).sqrt() + eps;
        let _ = var.g_sub_(&(&*exp_avg / &denom * (lr / bc1)));
    });
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
        let sgd = Rule::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let frozen = Optimiser::new(&vs, sgd, false);
        let names: Vec<(&str, Group)> = frozen.parameters().collect();
        assert!(names.contains(&("conv1.weight", Group::Backbone)));
        assert!(names.contains(&("layer5.conv2d_list.0.bias", Group::Head)));
        assert!(names.contains(&("projector.2.weight", Group::Head)));
        assert!(!names.iter().any(|(n, _)| n.starts_with("bn1.")));
        assert!(!names.iter().any(|(n, _)| n.contains("downsample.1.")));
        assert!(!vs.variables()["bn1.weight"].requires_grad());
        let vs2 = nn::VarStore::new(Device::Cpu);
        let _net2 = rccr_models::RccrNet::new(&vs2.root(), &cfg);
        let all = Optimiser::new(&vs2, sgd, true);
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
        let rule = Rule::Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
        };
        let mut opt = Optimiser::new(&vs, rule, false);
        for _ in 0..2 {
            opt.zero_grad();
            (&p * 2.0).sum(Kind::Float).backward();
            opt.step(0.5, 5.0);
        }
        assert!((p.double_value(&[0]) + 1.9925).abs() < 1e-6);
    }

    #[test]
    fn two_steps_match_hand_computed_adamw() {
        // p = 1, grad = 2, lr 0.1, b1 0.9, b2 0.999, eps 1e-8, wd 0.01:
        // step 1: p = 0.999; m = 0.2, v = 0.004; m^ = 2, v^ = 4; p = 0.999 - 0.1 = 0.899
        // step 2: p = 0.899 * 0.999 = 0.898101; m = 0.38, v = 0.007996; m^ = 0.38 / 0.19
        //         = 2, v^ = 0.007996 / 0.001999 = 4; p = 0.798101.
        // A `norm` parameter gets no decay: 1 - 0.1 = 0.9, then 0.8.
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var("w", &[1], nn::Init::Const(1.0));
        let n = vs
            .root()
            .sub("norm1")
            .var("weight", &[1], nn::Init::Const(1.0));
        let rule = Rule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = Optimiser::new(&vs, rule, false);
        for _ in 0..2 {
            opt.zero_grad();
            ((&p + &n) * 2.0).sum(Kind::Float).backward();
            opt.step(0.1, 1.0);
        }
        assert!((p.double_value(&[0]) - 0.798101).abs() < 1e-6, "{p:?}");
        assert!((n.double_value(&[0]) - 0.8).abs() < 1e-6, "{n:?}");
        let state: BTreeMap<String, f64> = opt
            .state()
            .into_iter()
            .map(|(k, t)| (k, t.double_value(&[])))
            .filter(|(k, _)| k.starts_with("adam.step."))
            .collect();
        assert_eq!(state["adam.step.w"], 2.0);
    }
}
