//! One iteration of Algorithm 1 (paper Sec. 3.3) and the state it runs on: student and
//! teacher (encoder + segmentation head + projector each), the optimiser, the memory
//! bank and the generator of every random choice.
//!
//! Per iteration t (0-based), with source crops (x_s, y_s) and target crops x_t:
//! 1. the teacher, under `no_grad` and in training mode (DACS), predicts on the
//!    un-augmented x_t: 1/8 logits and layer4 features (line 5-7); logits upsampled to the
//!    crop (align_corners = true) give the pseudo-label y_t and q;
//! 2. L_CE (Eq. 1) on the student's prediction of x_s (line 4), ignore label 255, mean
//!    over the labelled pixels;
//! 3. ClassMix (line 3, 8, 9): L_cons = mean over pixels of w * CE(P_class, y_class),
//!    w = 1 on source pixels and q on target pixels;
//! 4. CutMix (line 3, 10) and L_cont (Eq. 4-8) between the student's E_cut and the
//!    teacher's E_t, weighted by mu(t);
//! 5. SGD on L = L_CE + lambda L_cons + mu L_cont (Eq. 9, line 11-13), then the EMA of
//!    every teacher parameter (Eq. 2 and 10, line 14-16).
//!
//! Each loss term is checked (a NaN or infinite value stops the run with an error naming
//! the iteration and the term, before any weight changes) and back-propagated on its
//! own, so only one student forward's activations are alive at a time; the gradients
//! add up to those of Eq. 9. Mode `source-only` runs step 2 alone and keeps the teacher
//! an exact copy of the student; mode `baseline` skips step 4.

use crate::config::{Mode, Precision, TrainConfig};
use crate::contrastive::{bank_sample, contrastive_loss, random_keep, ContrastiveInputs};
use crate::ema;
use crate::memory_bank::MemoryBank;
use crate::mixing::{self, AugConfig};
use crate::optim::Sgd;
use crate::schedule;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rccr_models::deeplab::upsample_logits;
use rccr_models::{ModelConfig, RccrNet};
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// Errors of a training step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss term is NaN or infinite.
    #[error(
        "iteration {iteration}: loss term {term} is {value} (not finite); the run stops \
         here and the last checkpoint is unchanged. Lower the learning rate, check the \
         data, or resume from the last checkpoint"
    )]
    NonFinite {
        /// 1-based iteration.
        iteration: u64,
        /// `loss_ce`, `loss_cons` or `loss_cont`.
        term: &'static str,
        /// The value.
        value: f64,
    },
    /// A setting that cannot run here.
    #[error("{0}")]
    Config(String),
    /// Batches that do not fit the configuration.
    #[error("batch: {0}")]
    Batch(String),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Seconds spent in each phase of a step (measured only when profiling, with device
/// synchronisation between phases).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    /// Teacher forward on x_t (+ teacher projector in rccr mode).
    pub teacher: f64,
    /// Student forward + backward on x_s.
    pub source: f64,
    /// ClassMix + student forward + backward.
    pub classmix: f64,
    /// CutMix + student encoder/projector forward on x_cut.
    pub cutmix_forward: f64,
    /// L_cont (Eq. 4-8) itself.
    pub contrastive_loss: f64,
    /// Backward of L_cont through the projector and encoder.
    pub cutmix_backward: f64,
    /// SGD step + EMA update.
    pub update: f64,
}

/// What one step measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StepStats {
    /// Iterations completed after this step.
    pub iteration: u64,
    /// L_CE.
    pub loss_ce: f64,
    /// L_cons.
    pub loss_cons: f64,
    /// L_cont.
    pub loss_cont: f64,
    /// Eq. 9.
    pub loss_total: f64,
    /// Backbone learning rate.
    pub lr: f64,
    /// mu(t).
    pub mu: f64,
    /// EMA alpha(t).
    pub alpha: f64,
    /// Anchors kept (after PS).
    pub kept_anchors: i64,
    /// Anchors in the box.
    pub box_anchors: i64,
    /// Negatives offered per anchor.
    pub negatives: i64,
    /// q.
    pub q: f64,
    /// Phase timings when profiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

/// Salt mixed into the seed of the mixing generator (so that it differs from the seed
/// libtorch gets for the weights).
const RNG_SALT: u64 = 0x5243_4352_4d49_5845;

/// The training state.
#[derive(Debug)]
pub struct Trainer {
    /// The run's configuration.
    pub cfg: TrainConfig,
    /// The network's configuration.
    pub model: ModelConfig,
    /// Where the networks live.
    pub device: Device,
    /// Student variables.
    pub student_vs: nn::VarStore,
    /// The student F_theta.
    pub student: RccrNet,
    /// Teacher variables (never optimised).
    pub teacher_vs: nn::VarStore,
    /// The teacher F_theta_hat.
    pub teacher: RccrNet,
    /// SGD.
    pub opt: Sgd,
    /// The memory bank.
    pub bank: MemoryBank,
    /// Generator of every random choice of the method.
    pub rng: ChaCha8Rng,
    /// Iterations completed.
    pub iteration: u64,
    /// Synchronise and time each phase.
    pub profile: bool,
}

impl Trainer {
    /// Fresh networks (libtorch seeded with `cfg.seed`); the teacher starts as a copy.
    pub fn new(cfg: TrainConfig, device: Device) -> Result<Trainer, TrainError> {
        cfg.validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        if cfg.precision == Precision::Bf16 && !device.is_cuda() {
            return Err(TrainError::Config(
                "--precision bf16 uses CUDA autocast; on the CPU use --precision fp32".into(),
            ));
        }
        let model = cfg.model_config();
        tch::manual_seed(cfg.seed as i64);
        if device.is_cuda() {
            tch::Cuda::manual_seed_all(cfg.seed);
            // Fixed crop sizes: let cuDNN pick the fastest kernels (DACS does the same).
            // Reproducibility is promised on the CPU only.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let student_vs = nn::VarStore::new(device);
        let student = RccrNet::new(&student_vs.root(), &model);
        let teacher_vs = nn::VarStore::new(device);
        let teacher = RccrNet::new(&teacher_vs.root(), &model);
        ema::copy_all(&teacher_vs, &student_vs);
        ema::freeze(&teacher_vs);
        let opt = Sgd::new(
            &student_vs,
            cfg.momentum,
            cfg.weight_decay,
            cfg.train_bn_affine,
        );
        let bank = MemoryBank::new(if cfg.components.mb {
            cfg.bank_iterations
        } else {
            0
        });
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ RNG_SALT);
        Ok(Trainer {
            cfg,
            model,
            device,
            student_vs,
            student,
            teacher_vs,
            teacher,
            opt,
            bank,
            rng,
            iteration: 0,
            profile: false,
        })
    }

    fn bf16(&self) -> bool {
        self.cfg.precision == Precision::Bf16
    }

    fn finite(&self, term: &'static str, t: &Tensor) -> Result<f64, TrainError> {
        let value = t.double_value(&[]);
        if value.is_finite() {
            Ok(value)
        } else {
            Err(TrainError::NonFinite {
                iteration: self.iteration + 1,
                term,
                value,
            })
        }
    }

    /// One iteration on a source batch and (except in mode `source-only`) a target batch
    /// (its labels are not used).
    pub fn step(
        &mut self,
        source: &Tensor,
        source_labels: &Tensor,
        target: Option<&Tensor>,
    ) -> Result<StepStats, TrainError> {
        let cfg = self.cfg.clone();
        let t = self.iteration;
        let n_iter = cfg.iterations;
        let dev = self.device;
        let bf16 = self.bf16();
        let mut phases = Phases::default();
        let mut timer = Timer {
            on: self.profile,
            device: dev,
            clock: Instant::now(),
        };

        let xs = source.to_device(dev).to_kind(Kind::Float);
        let ys = source_labels.to_device(dev).to_kind(Kind::Int64);
        let shape = xs.size();
        if shape.len() != 4
            || shape[1] != 3
            || shape[2] != shape[3]
            || ys.size() != [shape[0], shape[2], shape[3]]
        {
            return Err(TrainError::Batch(format!(
                "source images {:?} / labels {:?} are not N x 3 x C x C / N x C x C",
                shape,
                ys.size()
            )));
        }
        let (bsz, crop) = (shape[0], shape[2]);
        let lr = schedule::poly_lr(cfg.lr, t, n_iter, cfg.poly_power);
        let lr_head = lr * cfg.head_lr_mult;
        let mu = if cfg.contrastive() {
            schedule::mu(cfg.mu_max, t, n_iter)
        } else {
            0.0
        };
        let mut stats = StepStats {
            lr,
            mu,
            ..Default::default()
        };
        self.opt.zero_grad();

        // Line 4 + Eq. 1: L_CE on the source.
        let seg_logits = |net: &RccrNet, x: &Tensor| {
            let xn = net.seg.normalize(x);
            let logits = crate::amp::bf16_autocast(bf16, || net.seg.forward_t(&xn, true).logits);
            upsample_logits(&logits.to_kind(Kind::Float), crop, crop)
        };
        let loss_ce = cross_entropy(&seg_logits(&self.student, &xs), &ys);
        stats.loss_ce = self.finite("loss_ce", &loss_ce)?;
        loss_ce.backward();
        timer.lap(&mut phases.source);

        if cfg.mode == Mode::SourceOnly {
            return self.finish(stats, phases, timer, lr, lr_head, true);
        }
        let xt = target
            .ok_or_else(|| TrainError::Batch(format!("mode {} needs target images", cfg.mode)))?
            .to_device(dev)
            .to_kind(Kind::Float);
        if xt.size() != xs.size() {
            return Err(TrainError::Batch(format!(
                "target images {:?} differ in shape from source images {:?}",
                xt.size(),
                xs.size()
            )));
        }

        // Lines 5-7: the teacher on the un-augmented target.
        let (t_logits, t_feat) = tch::no_grad(|| {
            let xn = self.teacher.seg.normalize(&xt);
            let out = crate::amp::bf16_autocast(bf16, || self.teacher.seg.forward_t(&xn, true));
            (out.logits.to_kind(Kind::Float), out.features)
        });
        let (max_prob, pseudo) = tch::no_grad(|| {
            upsample_logits(&t_logits, crop, crop)
                .softmax(1, Kind::Float)
                .max_dim(1, false)
        });
        let q = mixing::confident_fraction(&max_prob, cfg.pseudo_threshold);
        let aug = AugConfig {
            strength: cfg.jitter_strength,
            jitter_prob: cfg.jitter_prob,
            blur_prob: cfg.blur_prob,
        };
        let e_t = if cfg.contrastive() {
            Some(tch::no_grad(|| {
                crate::amp::bf16_autocast(bf16, || self.teacher.projector.forward(&t_feat))
                    .to_kind(Kind::Float)
            }))
        } else {
            None
        };
        timer.lap(&mut phases.teacher);

        // Lines 3, 8, 9: ClassMix and L_cons.
        let (mask, _) = mixing::classmix_masks(&ys, self.model.num_classes, &mut self.rng);
        let params: Vec<_> = (0..bsz).map(|_| aug.sample(&mut self.rng)).collect();
        let x_class = mixing::augment(&mixing::mix(&mask, &xs, &xt), &params);
        let y_class = mixing::mix_labels(&mask, &ys, &pseudo);
        let weight = mixing::mix_weights(&mask, &q);
        let logits_c = seg_logits(&self.student, &x_class);
        let ce = logits_c.cross_entropy_loss::<Tensor>(&y_class, None, Reduction::None, 255, 0.0);
        let loss_cons = (ce * weight).mean(Kind::Float);
        stats.loss_cons = self.finite("loss_cons", &loss_cons)?;
        (&loss_cons * cfg.lambda_cons).backward();
        stats.q = q.double_value(&[]);
        timer.lap(&mut phases.classmix);

        // Lines 3, 10 + Eq. 3-8: CutMix and L_cont.
        if let Some(e_t) = e_t {
            let cut = mixing::sample_box(crop, &mut self.rng);
            let params: Vec<_> = (0..bsz).map(|_| aug.sample(&mut self.rng)).collect();
            let x_cut = mixing::augment(&mixing::cutmix(&xs, &xt, &cut), &params);
            let xn = self.student.seg.normalize(&x_cut);
            let e_cut = crate::amp::bf16_autocast(bf16, || {
                let f = self.student.seg.encoder.forward_t(&xn, true);
                self.student.projector.forward(&f)
            })
            .to_kind(Kind::Float);
            timer.lap(&mut phases.cutmix_forward);
            let (h, w) = (e_t.size()[2], e_t.size()[3]);
            let (t_conf, t_lab, cell, cut_lab) = tch::no_grad(|| {
                let (conf, lab) = t_logits.softmax(1, Kind::Float).max_dim(1, false);
                let cell = cut
                    .cell_mask(h, w, dev)
                    .unsqueeze(0)
                    .expand([bsz, h, w], true);
                let ys_small = ys
                    .unsqueeze(1)
                    .to_kind(Kind::Float)
                    .upsample_nearest2d([h, w], None, None)
                    .squeeze_dim(1)
                    .to_kind(Kind::Int64);
                let cut_lab = lab.where_self(&cell, &ys_small);
                (conf, lab, cell, cut_lab)
            });
            let box_anchors = cell.sum(Kind::Int64).int64_value(&[]);
            let anchors = if cfg.components.ps {
                cell.logical_and(&t_conf.gt(cfg.ps_threshold))
            } else {
                cell.shallow_clone()
            };
            let keep = cfg.components.ns_random.then(|| {
                let v = random_keep(
                    (2 * bsz * h * w) as usize,
                    cfg.ns_random_fraction,
                    &mut self.rng,
                );
                Tensor::from_slice(&v).to_device(dev)
            });
            let bank = if cfg.components.mb {
                self.bank.all()
            } else {
                None
            };
            let lc = contrastive_loss(&ContrastiveInputs {
                e_cut: &e_cut,
                e_t: &e_t,
                cut_labels: &cut_lab,
                t_labels: &t_lab,
                anchors: &anchors,
                keep: keep.as_ref(),
                bank: bank.as_ref().map(|(e, l)| (e, l)),
                category: cfg.components.ns_category,
                tau: cfg.tau,
                chunk: cfg.anchor_chunk,
            });
            stats.loss_cont = self.finite("loss_cont", &lc.loss)?;
            stats.kept_anchors = lc.anchors;
            stats.box_anchors = box_anchors;
            stats.negatives = lc.negatives;
            timer.lap(&mut phases.contrastive_loss);
            if lc.anchors > 0 {
                (&lc.loss * mu).backward();
            }
            if cfg.components.mb {
                let (be, bl) = bank_sample(
                    &e_cut,
                    &e_t,
                    &cut_lab,
                    &t_lab,
                    cfg.bank_per_iteration,
                    &mut self.rng,
                );
                self.bank.push(&be, &bl);
            }
            timer.lap(&mut phases.cutmix_backward);
        }
        self.finish(stats, phases, timer, lr, lr_head, false)
    }

    fn finish(
        &mut self,
        mut stats: StepStats,
        mut phases: Phases,
        mut timer: Timer,
        lr: f64,
        lr_head: f64,
        copy_teacher: bool,
    ) -> Result<StepStats, TrainError> {
        self.opt.step(lr, lr_head);
        let alpha = if copy_teacher {
            ema::copy_all(&self.teacher_vs, &self.student_vs);
            0.0
        } else {
            let a = schedule::ema_alpha(self.iteration, self.cfg.ema_alpha);
            ema::ema_update(&self.teacher_vs, &self.student_vs, a);
            a
        };
        if timer.on {
            timer.lap(&mut phases.update);
            stats.phases = Some(phases);
        }
        self.iteration += 1;
        stats.iteration = self.iteration;
        stats.alpha = alpha;
        stats.loss_total =
            stats.loss_ce + self.cfg.lambda_cons * stats.loss_cons + stats.mu * stats.loss_cont;
        Ok(stats)
    }
}

/// Phase timing with device synchronisation (profiling only).
#[derive(Debug)]
pub struct Timer {
    on: bool,
    device: Device,
    clock: Instant,
}

impl Timer {
    fn lap(&mut self, slot: &mut f64) {
        if self.on {
            if let Device::Cuda(i) = self.device {
                tch::Cuda::synchronize(i as i64);
            }
            let now = Instant::now();
            *slot += (now - self.clock).as_secs_f64();
            self.clock = now;
        }
    }
}

/// Mean cross-entropy over the pixels whose label is not 255 (0 when there are none).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let ce = logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::None, 255, 0.0);
    let valid = labels.ne(255).sum(Kind::Float).clamp_min(1.0);
    ce.sum(Kind::Float) / valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_averages_over_labelled_pixels_only() {
        // 1 image, 2 classes, 1 x 3 pixels. Pixel 0: logits (0, 0) -> CE ln 2; pixel 1:
        // logits (ln 3, 0), label 0 -> CE -ln(3/4) = ln(4/3); pixel 2 ignored (255).
        let l3 = 3f32.ln();
        let logits = Tensor::from_slice(&[0f32, l3, 5.0, 0., 0., -5.0]).view([1, 2, 1, 3]);
        let labels = Tensor::from_slice(&[1i64, 0, 255]).view([1, 1, 3]);
        let expect = (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0;
        let got = cross_entropy(&logits, &labels).double_value(&[]);
        assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
        // All pixels ignored: 0, not NaN.
        let none = Tensor::from_slice(&[255i64, 255, 255]).view([1, 1, 3]);
        assert_eq!(cross_entropy(&logits, &none).double_value(&[]), 0.0);
    }
}
