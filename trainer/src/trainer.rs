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
//! The successors' strategies (docs/method.md, "Successors' strategies"), each off unless
//! its switch is on: the thing-class feature distance lambda_FD L_FD on step 2's forward
//! ([`crate::feature_distance`]); after step 4, MIC's masked-target term lambda_MIC L_MIC
//! ([`crate::masking`]); the pseudo-label region weights in L_cons and L_MIC; AdamW and the
//! warm-up in step 5 ([`crate::optim`], [`crate::schedule`]). Rare-class sampling acts
//! in the source loader.
//!
//! Every random choice draws from its own stream keyed by (seed, purpose, iteration)
//! ([`crate::streams`]), so modes and component switches pair by seed. The grid labels
//! follow the 1/8 grid's geometry: cell (i, j) sees crop pixel (8i, 8j) (the centre of its
//! receptive field under the stride-2 stem, pool and layer2), so the source label of a
//! cell is y_s at (8i, 8j) and a cell is in the CutMix box when that pixel is
//! (docs/method.md).
//!
//! Each loss term is checked (a NaN or infinite value stops the run with an error naming
//! the iteration and the term, before any weight changes) and back-propagated on its
//! own, so only one student forward's activations are alive at a time; the gradients
//! add up to those of Eq. 9. Mode `source-only` runs step 2 alone and keeps the teacher
//! an exact copy of the student; mode `baseline` skips step 4.

use crate::config::{Mode, Precision, TrainConfig};
use crate::contrastive::{bank_sample, contrastive_loss, random_keep, ContrastiveInputs};
use crate::dist::Ddp;
use crate::ema;
use crate::error::{Error, Result};
use crate::feature_distance::{feature_distance, thing_mask, FrozenEncoder};
use crate::memory_bank::MemoryBank;
use crate::mixing::{self, AugConfig, CutBox, IGNORE};
use crate::optim::{group_of, Group, Optimiser, Rule};
use crate::schedule;
use crate::streams::{Purpose, Streams};
use crate::trace::Trace;
use rccr_models::RccrNet;
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

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

/// Encoder gradient norms of each term of Eq. 9, as weighted in the update (measured on
/// logged iterations; see `Trainer::measure_grads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct GradNorms {
    /// |grad (L_CE + lambda_FD L_FD)| over the encoder parameters.
    pub grad_norm_ce: f64,
    /// |lambda grad L_cons|.
    pub grad_norm_cons: f64,
    /// |mu grad L_cont| (0 outside mode rccr).
    pub grad_norm_cont: f64,
    /// The contrastive term's share: |mu grad L_cont| / |grad (L_CE + lambda L_cons)|.
    pub grad_share: f64,
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
    /// L_FD, unweighted (0 unless `method.fd.enabled`).
    pub loss_fd: f64,
    /// L_MIC, unweighted (0 unless `method.mic.enabled`).
    pub loss_mic: f64,
    /// Eq. 9, plus lambda_FD L_FD + lambda_MIC L_MIC when they run.
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
    /// Encoder gradient norms of the terms, on measured iterations.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub grads: Option<GradNorms>,
    /// Phase timings when profiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

/// The training state.
#[derive(Debug)]
pub struct Trainer {
    /// The run's configuration.
    pub cfg: TrainConfig,
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
    /// SGD or AdamW.
    pub opt: Optimiser,
    /// The memory bank.
    pub bank: MemoryBank,
    /// F_frozen of the feature distance (set by [`Trainer::freeze_reference`]).
    pub frozen: Option<FrozenEncoder>,
    /// The per-iteration generators of every random choice.
    pub streams: Streams,
    /// Iterations completed.
    pub iteration: u64,
    /// Synchronise and time each phase.
    pub profile: bool,
    /// Measure the terms' encoder gradient norms on every iteration (else on logged ones).
    pub measure_every_step: bool,
    /// Record the next steps' tensors (`rccr-train trace`).
    pub trace: Option<Trace>,
    /// Data-parallel state (None: one process).
    pub ddp: Option<Ddp>,
}

/// What the teacher said about the target batch (lines 5-7).
struct TeacherOut {
    /// Logits on the 1/8 grid of the features `B x C x h x w` (`SegOutput::grid_logits`).
    logits: Tensor,
    /// Layer4 features.
    features: Tensor,
    /// Crop-size pseudo-labels `B x H x W`.
    pseudo: Tensor,
    /// q (scalar tensor).
    q: Tensor,
}

/// The settings a trainer on `device` refuses: invalid ranges, and bf16 off CUDA.
fn check_supported(cfg: &TrainConfig, device: Device) -> Result<()> {
    cfg.validate()
        .map_err(|e| Error::Unsupported(e.to_string()))?;
    if cfg.run.precision == Precision::Bf16 && !device.is_cuda() {
        return Err(Error::Unsupported(
            "--precision bf16 uses CUDA autocast; on the CPU use --precision fp32".into(),
        ));
    }
    Ok(())
}

impl Trainer {
    /// Fresh networks (libtorch seeded with `cfg.run.seed`); the teacher starts as a copy.
    pub fn new(cfg: TrainConfig, device: Device) -> Result<Trainer> {
        check_supported(&cfg, device)?;
        tch::manual_seed(cfg.run.seed as i64);
        configure_determinism(&cfg, device)?;
        let student_vs = nn::VarStore::new(device);
        let student = RccrNet::new(&student_vs.root(), &cfg.model);
        let teacher_vs = nn::VarStore::new(device);
        let teacher = RccrNet::new(&teacher_vs.root(), &cfg.model);
        if cfg.run.channels_last {
            for vs in [&student_vs, &teacher_vs] {
                let vars: Vec<Tensor> = vs.variables().into_values().collect();
                crate::foreach::to_channels_last_(&vars.iter().collect::<Vec<_>>());
            }
        }
        ema::copy_all(&teacher_vs, &student_vs);
        ema::freeze(&teacher_vs);
        let opt = Optimiser::new(&student_vs, Rule::of(&cfg.optim), cfg.optim.train_bn_affine);
        let bank = MemoryBank::new(if cfg.method.components.mb {
            cfg.method.bank_iterations
        } else {
            0
        });
        let streams = Streams {
            seed: cfg.run.seed,
            rank: cfg.data.data_rank.unwrap_or(0) as u64,
        };
        Ok(Trainer {
            cfg,
            device,
            student_vs,
            student,
            teacher_vs,
            teacher,
            opt,
            bank,
            frozen: None,
            streams,
            iteration: 0,
            profile: false,
            measure_every_step: false,
            trace: None,
            ddp: None,
        })
    }

    fn bf16(&self) -> bool {
        self.cfg.run.precision == Precision::Bf16
    }

    /// A network input in the networks' memory layout (channels-last under
    /// `run.channels_last`).
    fn layout(&self, x: Tensor) -> Tensor {
        if self.cfg.run.channels_last {
            crate::foreach::channels_last(&x)
        } else {
            x
        }
    }

    /// The loss terms and q of this step, read with one device-to-host copy (the step's
    /// only other synchronisations are the anchor count of L_cont and the ClassMix class
    /// counts), checked finite in the order they were computed, before any weight changes.
    fn read_scalars(&self, s: &mut StepState) -> Result<()> {
        let Some(stacked) = (!s.scalars.is_empty()).then(|| {
            let ts: Vec<Tensor> = s
                .scalars
                .iter()
                .map(|(_, t)| t.to_kind(Kind::Double))
                .collect();
            Tensor::stack(&ts, 0).to_device(Device::Cpu)
        }) else {
            return Ok(());
        };
        let values = Vec::<f64>::try_from(&stacked)?;
        for ((term, _), value) in s.scalars.iter().zip(values) {
            if !value.is_finite() && *term != "q" {
                return Err(Error::NonFinite {
                    iteration: self.iteration + 1,
                    term,
                    value,
                });
            }
            match *term {
                "loss_ce" => s.stats.loss_ce = value,
                "loss_cons" => s.stats.loss_cons = value,
                "loss_cont" => s.stats.loss_cont = value,
                "loss_fd" => s.stats.loss_fd = value,
                "loss_mic" => s.stats.loss_mic = value,
                _ => s.stats.q = value,
            }
        }
        Ok(())
    }

    /// Whether this step measures the terms' gradient norms: every logged iteration (the
    /// run logs multiples of `log_every` and the last one) and every traced one.
    fn measure_grads(&self) -> bool {
        let t = self.iteration + 1;
        self.measure_every_step
            || self.trace.is_some()
            || t.is_multiple_of(self.cfg.run.log_every)
            || t == self.cfg.run.iterations
    }

    /// Records `t` under `name` when tracing.
    fn rec(&mut self, name: &str, t: &Tensor) {
        if let Some(tr) = &mut self.trace {
            tr.put(name, t);
        }
    }

    /// The student's logits at the crop size (bilinear, align_corners, as DACS).
    fn student_logits(&self, x: &Tensor, crop: i64, pass: Purpose) -> Result<Tensor> {
        let xn = self.layout(self.student.seg.normalize(x));
        Ok(self.student_on_normalised(&xn, crop, pass)?.0)
    }

    /// The student's forward on normalised input: crop-size logits and the final encoder
    /// features.
    fn student_on_normalised(
        &self,
        xn: &Tensor,
        crop: i64,
        pass: Purpose,
    ) -> Result<(Tensor, Tensor)> {
        let out = self.student_forward(pass, || {
            crate::amp::bf16_autocast(self.bf16(), || self.student.seg.forward_t(xn, true))
        })?;
        let logits = self
            .student
            .seg
            .upsample_logits(&out.logits.to_kind(Kind::Float), crop, crop);
        Ok((logits, out.encoder))
    }

    /// Runs a student forward, with synchronised batch norm under `--sync-bn`, its
    /// stochastic depth and dropout drawn from the stream of `pass` (crate::streams).
    fn student_forward<T>(&self, pass: Purpose, f: impl FnOnce() -> T) -> Result<T> {
        let seed = self.streams.pass_seed(pass, self.iteration);
        let f = || rccr_models::stochastic::with_seed(seed, f);
        let Some(d) = self.ddp.as_ref().filter(|d| d.sync_bn) else {
            return Ok(f());
        };
        let hook = crate::dist::sync_bn::hook(d.pg.clone(), d.bn_failure.clone());
        let out = rccr_models::batch_norm::with_hook(hook, f);
        match d.bn_failure.borrow_mut().take() {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// One iteration on a source batch and (except in mode `source-only`) a target batch
    /// (its labels are not used): Algorithm 1's lines 3-12 for t = iteration + 1.
    pub fn step(
        &mut self,
        source: &Tensor,
        source_labels: &Tensor,
        target: Option<&Tensor>,
    ) -> Result<StepStats> {
        let (xs, ys) = self.check_source(source, source_labels)?;
        let mut s = self.begin_step(&xs, &ys);
        self.source_step(&xs, &ys, &mut s)?;
        if self.cfg.method.mode == Mode::SourceOnly {
            return self.finish(s, true);
        }
        let xt = self.check_target(target, &xs)?;
        self.rec("input.x_t", &xt);
        let teacher = self.teacher_pass(&xt, s.crop, self.cfg.method.pseudo_threshold);
        s.scalars.push(("q", teacher.q.shallow_clone()));
        s.timer.lap(&mut s.phases.teacher);
        let loss_cons = self.classmix_step(&xs, &ys, &xt, &teacher, s.crop)?;
        s.scalars.push(("loss_cons", loss_cons));
        s.probe.after_cons();
        s.timer.lap(&mut s.phases.classmix);
        if self.cfg.contrastive() {
            self.contrastive_step(&xs, &ys, &xt, &teacher, &mut s)?;
        }
        if self.cfg.method.mic.enabled {
            s.probe.before_mic();
            let loss_mic = self.mic_step(&xt, &teacher, s.crop)?;
            s.scalars.push(("loss_mic", loss_mic));
        }
        self.finish(s, false)
    }

    /// The learning rates and mu(t) of this iteration, the trace of its inputs and
    /// variables, and the gradients zeroed.
    fn begin_step(&mut self, xs: &Tensor, ys: &Tensor) -> StepState {
        let cfg = &self.cfg;
        let (t, n) = (self.iteration, cfg.run.iterations);
        let lr = schedule::poly_lr(cfg.optim.lr, t, n, cfg.optim.poly_power)
            * schedule::warmup_factor(t, cfg.optim.warmup_iters, cfg.optim.warmup_ratio);
        let mu = match cfg.contrastive() {
            true => schedule::mu_at(cfg.method.mu_schedule, cfg.method.mu_max, t, n),
            false => 0.0,
        };
        let state = StepState {
            stats: StepStats {
                lr,
                mu,
                ..Default::default()
            },
            phases: Phases::default(),
            timer: Timer::new(self.profile, self.device),
            probe: GradProbe::new(self.measure_grads(), &self.student_vs),
            scalars: Vec::new(),
            lr_head: lr * cfg.optim.head_lr_mult,
            crop: xs.size()[2],
        };
        self.record_before();
        self.rec("input.x_s", xs);
        self.rec("input.y_s", ys);
        self.opt.zero_grad();
        state
    }

    /// Line 4 + Eq. 1: L_CE on the source, with lambda_FD L_FD on the same forward's
    /// encoder features when the feature distance is on, back-propagated.
    fn source_step(&mut self, xs: &Tensor, ys: &Tensor, s: &mut StepState) -> Result<()> {
        let xn = self.layout(self.student.seg.normalize(xs));
        let (logits, encoder) = self.student_on_normalised(&xn, s.crop, Purpose::SourcePass)?;
        let loss_ce = cross_entropy(&logits, ys);
        let loss = match self.feature_distance(&xn, &encoder.to_kind(Kind::Float), ys) {
            Some(fd) => {
                s.scalars.push(("loss_fd", fd.detach()));
                &loss_ce + fd * self.cfg.method.fd.lambda
            }
            None => loss_ce.shallow_clone(),
        };
        loss.backward();
        s.scalars.push(("loss_ce", loss_ce.detach()));
        s.probe.after_ce();
        s.timer.lap(&mut s.phases.source);
        Ok(())
    }

    /// The source batch on the device, checked to be `N x 3 x C x C` / `N x C x C`.
    fn check_source(&self, source: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let xs = crate::upload::batch(source, self.device, Kind::Float);
        let ys = crate::upload::batch(labels, self.device, Kind::Int64);
        let shape = xs.size();
        if shape.len() != 4
            || shape[1] != 3
            || shape[2] != shape[3]
            || ys.size() != [shape[0], shape[2], shape[3]]
        {
            return Err(Error::Batch(format!(
                "source images {:?} / labels {:?} are not N x 3 x C x C / N x C x C",
                shape,
                ys.size()
            )));
        }
        Ok((xs, ys))
    }

    /// The target batch on the device, checked to match the source's shape.
    fn check_target(&self, target: Option<&Tensor>, xs: &Tensor) -> Result<Tensor> {
        let xt = target.ok_or_else(|| {
            Error::Batch(format!("mode {} needs target images", self.cfg.method.mode))
        })?;
        let xt = crate::upload::batch(xt, self.device, Kind::Float);
        if xt.size() != xs.size() {
            return Err(Error::Batch(format!(
                "target images {:?} differ in shape from source images {:?}",
                xt.size(),
                xs.size()
            )));
        }
        Ok(xt)
    }

    /// Lines 5-7: the teacher on the un-augmented target (training-mode BN, no drop path
    /// or dropout, no grad).
    fn teacher_pass(&self, xt: &Tensor, crop: i64, threshold: f64) -> TeacherOut {
        tch::no_grad(|| {
            let xn = self.layout(self.teacher.seg.normalize(xt));
            // Batch statistics (DACS), no drop path or dropout (DAFormer's teacher).
            let out = crate::amp::bf16_autocast(self.bf16(), || {
                self.teacher.seg.forward_with(&xn, true, false)
            });
            let logits = out.grid_logits.to_kind(Kind::Float);
            let (max_prob, pseudo) = (self.teacher.seg)
                .upsample_logits(&out.logits.to_kind(Kind::Float), crop, crop)
                .softmax(1, Kind::Float)
                .max_dim(1, false);
            let q = mixing::confident_fraction(&max_prob, threshold);
            TeacherOut {
                logits,
                features: out.features,
                pseudo,
                q,
            }
        })
    }

    /// L_FD (unweighted) between the student's encoder features `f_student` and the
    /// frozen encoder's on `xn`, when the feature distance is on.
    fn feature_distance(&mut self, xn: &Tensor, f_student: &Tensor, ys: &Tensor) -> Option<Tensor> {
        let fd = &self.cfg.method.fd;
        let frozen = self.frozen.as_ref().filter(|_| fd.enabled)?;
        let f_frozen = frozen.features(xn).to_kind(Kind::Float);
        let (h, w) = (f_student.size()[2], f_student.size()[3]);
        let mask = thing_mask(
            ys,
            (h, w),
            &fd.classes,
            fd.min_ratio,
            self.cfg.model.num_classes,
        );
        let loss = feature_distance(f_student, &f_frozen, &mask);
        if self.trace.is_some() {
            for (n, t) in frozen.encoder_vars() {
                self.rec(&format!("frozen.{n}"), &t);
            }
            self.rec("fd.mask", &mask.to_kind(Kind::Uint8));
            self.rec("fd.student", f_student);
            self.rec("fd.frozen", &f_frozen);
        }
        Some(loss)
    }

    /// Takes F_frozen of the feature distance: a frozen copy of the student as it is now
    /// (call once the starting weights are in place; a resume restores it instead).
    pub fn freeze_reference(&mut self) {
        if self.cfg.method.fd.enabled {
            let frozen = FrozenEncoder::copy_of(&self.student_vs, &self.cfg.model, self.device);
            self.frozen = Some(frozen);
        }
    }

    /// The target pixels' weight factor of L_cons and L_MIC: q, times 0 on the ignored
    /// top / bottom rows (`crop x crop`, or the scalar q when none are ignored).
    fn target_weight(&self, q: &Tensor, crop: i64) -> Tensor {
        let m = &self.cfg.method;
        if m.pseudo_ignore_top == 0 && m.pseudo_ignore_bottom == 0 {
            return q.shallow_clone();
        }
        let (top, bottom) = (
            i64::from(m.pseudo_ignore_top),
            i64::from(m.pseudo_ignore_bottom),
        );
        crate::masking::region_weights(crop, top, bottom, self.device) * q
    }

    /// MIC (Hoyer et al. 2023, Eq. 4-6): the student on the colour-augmented target with
    /// patches masked out, against the teacher's pseudo-labels of the whole target,
    /// weighted by q (and the pseudo-label region); lambda_MIC L_MIC back-propagated.
    fn mic_step(&mut self, xt: &Tensor, teacher: &TeacherOut, crop: i64) -> Result<Tensor> {
        let (t, bsz) = (self.iteration, xt.size()[0]);
        let mic = self.cfg.method.mic.clone();
        let aug = AugConfig {
            jitter_prob: mic.jitter_prob,
            blur_prob: mic.blur_prob,
            ..self.aug()
        };
        let mut rng = self.streams.rng(Purpose::MicAug, t);
        let params: Vec<_> = (0..bsz).map(|_| aug.sample(&mut rng)).collect();
        let x_aug = mixing::augment(xt, &params);
        let patch = i64::from(mic.patch.unwrap_or(self.cfg.data.crop / 8));
        let mut rng = self.streams.rng(Purpose::MicMask, t);
        let mask = crate::masking::patch_mask(bsz, crop, patch, mic.ratio, &mut rng, self.device);
        let weight = self
            .target_weight(&teacher.q, crop)
            .expand([bsz, crop, crop], false);
        self.rec("mic.x", &x_aug);
        self.rec("mic.mask", &mask);
        self.rec("mic.y", &teacher.pseudo);
        self.rec("mic.w", &weight);
        let xn = self.layout(self.student.seg.normalize(&x_aug) * &mask);
        let (logits, _) = self.student_on_normalised(&xn, crop, Purpose::MicPass)?;
        let ce = logits.cross_entropy_loss::<Tensor>(
            &teacher.pseudo,
            None,
            Reduction::None,
            IGNORE,
            0.0,
        );
        let loss = (ce * weight).mean(Kind::Float);
        (&loss * mic.lambda).backward();
        Ok(loss.detach())
    }

    fn aug(&self) -> AugConfig {
        AugConfig {
            strength: self.cfg.method.jitter_strength,
            jitter_prob: self.cfg.method.jitter_prob,
            blur_prob: self.cfg.method.blur_prob,
        }
    }

    /// Lines 3, 8, 9: ClassMix and the q-weighted L_cons, back-propagated; returns L_cons
    /// (detached, read at the end of the step).
    fn classmix_step(
        &mut self,
        xs: &Tensor,
        ys: &Tensor,
        xt: &Tensor,
        teacher: &TeacherOut,
        crop: i64,
    ) -> Result<Tensor> {
        let t = self.iteration;
        let bsz = xs.size()[0];
        let mut rng = self.streams.rng(Purpose::ClassMix, t);
        let (mask, _) = mixing::classmix_masks(ys, self.cfg.model.num_classes, &mut rng);
        let mut rng = self.streams.rng(Purpose::ClassMixAug, t);
        let params: Vec<_> = (0..bsz).map(|_| self.aug().sample(&mut rng)).collect();
        let x_class = mixing::augment(&mixing::mix(&mask, xs, xt), &params);
        let y_class = mixing::mix_labels(&mask, ys, &teacher.pseudo);
        let weight = mixing::mix_weights(&mask, &self.target_weight(&teacher.q, crop));
        self.rec("classmix.x", &x_class);
        self.rec("classmix.y", &y_class);
        self.rec("classmix.w", &weight);
        let logits = self.student_logits(&x_class, crop, Purpose::ClassMixPass)?;
        let ce = logits.cross_entropy_loss::<Tensor>(&y_class, None, Reduction::None, IGNORE, 0.0);
        let loss_cons = (ce * weight).mean(Kind::Float);
        (&loss_cons * self.cfg.method.lambda_cons).backward();
        Ok(loss_cons.detach())
    }

    /// Lines 3, 10 + Eq. 3-8: CutMix, L_cont (weighted by mu, back-propagated) and the
    /// memory-bank update.
    fn contrastive_step(
        &mut self,
        xs: &Tensor,
        ys: &Tensor,
        xt: &Tensor,
        teacher: &TeacherOut,
        s: &mut StepState,
    ) -> Result<()> {
        let e_t = self.teacher_embeddings(teacher);
        let (cut, e_cut) = self.cutmix_embeddings(xs, xt)?;
        s.timer.lap(&mut s.phases.cutmix_forward);
        let (h, w) = (e_t.size()[2], e_t.size()[3]);
        let m = &self.cfg.method;
        let g = grid_labels(&teacher.logits, ys, &cut, m.components.ps, m.ps_threshold);
        let lc = self.contrastive_terms(&e_cut, &e_t, &g, [xs.size()[0], h, w]);
        s.scalars.push(("loss_cont", lc.loss.detach()));
        s.stats.kept_anchors = lc.anchors;
        s.stats.box_anchors = g.box_cells;
        s.stats.negatives = lc.negatives;
        s.timer.lap(&mut s.phases.contrastive_loss);
        self.contrastive_backward(&lc, &e_cut, s.stats.mu)?;
        if self.cfg.method.components.mb {
            self.update_bank(&e_cut, &e_t, &g)?;
        }
        s.timer.lap(&mut s.phases.cutmix_backward);
        Ok(())
    }

    /// E_t: the teacher's projection of the target features (no grad).
    fn teacher_embeddings(&self, teacher: &TeacherOut) -> Tensor {
        tch::no_grad(|| {
            crate::amp::bf16_autocast(self.bf16(), || {
                self.teacher.projector.forward(&teacher.features)
            })
            .to_kind(Kind::Float)
        })
    }

    /// Line 3 (CutMix): the box, the strongly augmented mixed images and E_cut, the
    /// student's projection of them.
    fn cutmix_embeddings(&mut self, xs: &Tensor, xt: &Tensor) -> Result<(CutBox, Tensor)> {
        let t = self.iteration;
        let (bsz, crop) = (xs.size()[0], xs.size()[2]);
        let cut = mixing::sample_box(crop, &mut self.streams.rng(Purpose::CutMixBox, t));
        let mut rng = self.streams.rng(Purpose::CutMixAug, t);
        let params: Vec<_> = (0..bsz).map(|_| self.aug().sample(&mut rng)).collect();
        let x_cut = mixing::augment(&mixing::cutmix(xs, xt, &cut), &params);
        self.rec("cutmix.x", &x_cut);
        self.rec_box(&cut);
        let xn = self.layout(self.student.seg.normalize(&x_cut));
        let e_cut = self
            .student_forward(Purpose::CutMixPass, || {
                crate::amp::bf16_autocast(self.bf16(), || {
                    let f = self.student.seg.features_t(&xn, true);
                    self.student.projector.forward(&f)
                })
            })?
            .to_kind(Kind::Float);
        Ok((cut, e_cut))
    }

    /// Eq. 4-8: L_cont over the anchors of `g` with the NS(R) choice and the bank's
    /// negatives; `grid` is `[batch, h, w]` of the embeddings.
    fn contrastive_terms(
        &mut self,
        e_cut: &Tensor,
        e_t: &Tensor,
        g: &GridLabels,
        grid: [i64; 3],
    ) -> crate::contrastive::ContrastiveLoss {
        let m = self.cfg.method.clone();
        let n_neg = (2 * grid.iter().product::<i64>()) as usize;
        let keep = m.components.ns_random.then(|| {
            let mut rng = self.streams.rng(Purpose::NsRandom, self.iteration);
            let v = random_keep(n_neg, m.ns_random_fraction, &mut rng);
            crate::upload::small(&Tensor::from_slice(&v), self.device)
        });
        let bank = if m.components.mb {
            self.bank.all()
        } else {
            None
        };
        self.rec_contrast(g, keep.as_ref(), bank.as_ref(), n_neg, grid);
        contrastive_loss(&ContrastiveInputs {
            e_cut,
            e_t,
            cut_labels: &g.cut_labels,
            t_labels: &g.t_labels,
            anchors: &g.anchors,
            keep: keep.as_ref(),
            bank: bank.as_ref().map(|(e, l)| (e, l)),
            category: m.components.ns_category,
            tau: m.tau,
            chunk: m.anchor_chunk,
        })
    }

    /// mu L_cont back-propagated where there are anchors; under --sync-bn the backward
    /// all-reduces in every BN layer, so all ranks run it (a zero loss where a rank has
    /// no anchors).
    fn contrastive_backward(
        &self,
        lc: &crate::contrastive::ContrastiveLoss,
        e_cut: &Tensor,
        mu: f64,
    ) -> Result<()> {
        let local = lc.anchors > 0 && mu != 0.0;
        let any = match self.ddp.as_ref().filter(|d| d.sync_bn) {
            Some(d) => d.any(local)?,
            None => local,
        };
        if local {
            (&lc.loss * mu).backward();
        } else if any {
            (e_cut.sum(Kind::Float) * 0.0).backward();
        }
        Ok(())
    }

    /// Sec. 3.2.5: this iteration's sample of negatives (of every rank) into the bank.
    fn update_bank(&mut self, e_cut: &Tensor, e_t: &Tensor, g: &GridLabels) -> Result<()> {
        let mut rng = self.streams.rng(Purpose::Bank, self.iteration);
        let (be, bl) = bank_sample(
            e_cut,
            e_t,
            &g.cut_labels,
            &g.t_labels,
            self.cfg.method.bank_per_iteration,
            &mut rng,
        );
        let (be, bl) = match &self.ddp {
            Some(d) => (d.gather_rows(&be)?, d.gather_rows(&bl)?),
            None => (be, bl),
        };
        self.bank.push(&be, &bl);
        Ok(())
    }

    fn rec_box(&mut self, cut: &CutBox) {
        if self.trace.is_some() {
            let b = [cut.y0, cut.x0, cut.y0 + cut.side, cut.x0 + cut.side];
            self.rec("cutmix.box", &Tensor::from_slice(&b));
        }
    }

    /// Records what L_cont sees (trace only): anchors, labels, NS(R) and bank.
    fn rec_contrast(
        &mut self,
        g: &GridLabels,
        keep: Option<&Tensor>,
        bank: Option<&(Tensor, Tensor)>,
        n_neg: usize,
        grid: [i64; 3],
    ) {
        if self.trace.is_none() {
            return;
        }
        let [b, h, w] = grid;
        let keep_mask = match keep {
            Some(k) => Tensor::zeros([n_neg as i64], (Kind::Uint8, self.device))
                .index_fill(0, k, 1)
                .view([2, b, h, w]),
            None => Tensor::ones([2, b, h, w], (Kind::Uint8, self.device)),
        };
        self.rec("contrast.anchor_mask", &g.anchors.to_kind(Kind::Uint8));
        self.rec("contrast.anchor_label", &g.t_labels);
        self.rec(
            "contrast.neg_label",
            &Tensor::stack(&[&g.cut_labels, &g.t_labels], 0),
        );
        self.rec("contrast.neg_keep", &keep_mask);
        let k = self.cfg.model.projector_dim;
        let (be, bl) = match bank {
            Some((e, l)) => (e.shallow_clone(), l.shallow_clone()),
            None => (
                Tensor::zeros([0, k], (Kind::Float, self.device)),
                Tensor::zeros([0], (Kind::Int64, self.device)),
            ),
        };
        self.rec("bank.emb", &be);
        self.rec("bank.label", &bl);
    }

    /// Trace: every variable of both networks and the momentum, before the step.
    fn record_before(&mut self) {
        if let Some(tr) = &mut self.trace {
            tr.begin(self.iteration + 1);
            tr.put_vars("student.before.", &self.student_vs);
            tr.put_vars("teacher.before.", &self.teacher_vs);
            for (slot, name, t) in self.opt.slots() {
                tr.put(&format!("{slot}.before.{name}"), t);
            }
        }
    }

    /// Lines 11-12: the SGD update (gradients averaged over the ranks), the teacher's EMA
    /// (a copy in mode `source-only`), the state check and the step's statistics.
    fn finish(&mut self, s: StepState, copy_teacher: bool) -> Result<StepStats> {
        let mut s = s;
        self.read_scalars(&mut s)?;
        let StepState {
            mut stats,
            mut phases,
            mut timer,
            probe,
            lr_head,
            ..
        } = s;
        stats.grads = probe.finish();
        self.update_student(stats.lr, lr_head)?;
        let alpha = self.update_teacher(copy_teacher)?;
        self.check_state()?;
        if timer.on {
            timer.lap(&mut phases.update);
            stats.phases = Some(phases);
        }
        self.iteration += 1;
        stats.iteration = self.iteration;
        stats.alpha = alpha;
        let m = &self.cfg.method;
        stats.loss_total = stats.loss_ce
            + m.lambda_cons * stats.loss_cons
            + stats.mu * stats.loss_cont
            + m.fd.lambda * stats.loss_fd
            + m.mic.lambda * stats.loss_mic;
        if let Some(tr) = &mut self.trace {
            tr.put_vars("student.after.", &self.student_vs);
            tr.put_vars("teacher.after.", &self.teacher_vs);
            tr.put_scalars(&stats, lr_head);
        }
        Ok(stats)
    }

    /// Line 11: SGD on the student, with the gradients averaged over the ranks.
    fn update_student(&mut self, lr: f64, lr_head: f64) -> Result<()> {
        match &mut self.ddp {
            Some(d) => {
                let mut grads = self.opt.gradients();
                d.average_gradients(&mut grads, &self.opt.variables())?;
                self.opt.apply(lr, lr_head, grads);
            }
            None => self.opt.step(lr, lr_head),
        }
        Ok(())
    }

    /// Line 12 (Eq. 2, 10): the teacher's EMA of the student, or a copy; then rank 0's BN
    /// statistics to every rank. Returns alpha (0 for a copy).
    fn update_teacher(&mut self, copy_teacher: bool) -> Result<f64> {
        let alpha = if copy_teacher {
            ema::copy_all(&self.teacher_vs, &self.student_vs);
            0.0
        } else {
            let a = schedule::ema_alpha(self.iteration, self.cfg.optim.ema_alpha);
            ema::ema_update(&self.teacher_vs, &self.student_vs, a);
            a
        };
        if let Some(d) = &self.ddp {
            let mut bufs = Ddp::variables(&self.student_vs, true);
            bufs.extend(Ddp::variables(&self.teacher_vs, true));
            d.broadcast(&bufs)?;
        }
        Ok(alpha)
    }
}

/// The running state of one iteration.
struct StepState {
    stats: StepStats,
    phases: Phases,
    timer: Timer,
    probe: GradProbe,
    lr_head: f64,
    /// The crop side of the batch.
    crop: i64,
    /// The loss terms and q as computed (device scalars), read in [`Trainer::finish`].
    scalars: Vec<(&'static str, Tensor)>,
}

impl Trainer {
    /// Every variable of both networks and the momentum must be finite after an update.
    fn check_state(&self) -> Result<()> {
        let named: Vec<(String, Tensor)> = [
            ("student.", &self.student_vs),
            ("teacher.", &self.teacher_vs),
        ]
        .into_iter()
        .flat_map(|(p, vs)| {
            vs.variables()
                .into_iter()
                .map(move |(n, t)| (format!("{p}{n}"), t))
        })
        .chain(
            self.opt
                .state()
                .into_iter()
                .map(|(n, t)| (n, t.shallow_clone())),
        )
        .collect();
        if crate::foreach::all_finite(&named.iter().map(|(_, t)| t).collect::<Vec<_>>()) {
            return Ok(());
        }
        match rccr_models::weights::first_non_finite(named.iter().map(|(n, t)| (n.as_str(), t))) {
            None => Ok(()),
            Some(variable) => Err(Error::NonFiniteState {
                iteration: self.iteration + 1,
                variable,
            }),
        }
    }
}

/// `--deterministic` on (cuDNN benchmark off, deterministic algorithms, with a note of
/// what stays non-deterministic), else cuDNN benchmark mode on CUDA (DACS's choice).
fn configure_determinism(cfg: &TrainConfig, device: Device) -> Result<()> {
    if device.is_cuda() {
        tch::Cuda::manual_seed_all(cfg.run.seed);
        tch::Cuda::cudnn_set_benchmark(!cfg.run.deterministic);
    }
    if cfg.run.deterministic {
        crate::determinism::set(true).map_err(Error::Unsupported)?;
        if device.is_cuda() {
            tracing::warn!(
                "--deterministic: cuDNN benchmark off, deterministic algorithms on; still \
                 not deterministic: {}",
                crate::determinism::STILL_NONDETERMINISTIC
            );
        }
    }
    Ok(())
}

/// The labels and anchors of L_cont on the 1/8 grid (h x w).
struct GridLabels {
    /// Teacher argmax `B x h x w` (labels of E_t, and of the anchors).
    t_labels: Tensor,
    /// Labels of E_cut: the teacher's inside the box, the source label at (8i, 8j) outside.
    cut_labels: Tensor,
    /// Anchors `B x h x w` (bool): in the box, and teacher max-softmax > delta with PS.
    anchors: Tensor,
    /// Cells in the box over the batch.
    box_cells: i64,
}

/// Grid labels and anchors (module doc: cell (i, j) sees crop pixel (8i, 8j)).
fn grid_labels(t_logits: &Tensor, ys: &Tensor, cut: &CutBox, ps: bool, delta: f64) -> GridLabels {
    tch::no_grad(|| {
        let (b, h, w) = (t_logits.size()[0], t_logits.size()[2], t_logits.size()[3]);
        let dev = t_logits.device();
        let (conf, t_labels) = t_logits.softmax(1, Kind::Float).max_dim(1, false);
        let cell = cut
            .cell_mask(h, w, dev)
            .unsqueeze(0)
            .expand([b, h, w], true);
        let ys_grid = cell_centre_labels(ys, h, w);
        let cut_labels = t_labels.where_self(&cell, &ys_grid);
        let (rows, cols) = cut.cells(h, w);
        let box_cells = b * (rows.end - rows.start) * (cols.end - cols.start);
        let anchors = if ps {
            cell.logical_and(&conf.gt(delta))
        } else {
            cell.shallow_clone()
        };
        GridLabels {
            t_labels,
            cut_labels,
            anchors,
            box_cells,
        }
    })
}

/// `labels[:, 8i, 8j]` for the `h x w` grid (clipped to the crop): the label at each
/// cell's centre pixel.
pub(crate) fn cell_centre_labels(labels: &Tensor, h: i64, w: i64) -> Tensor {
    let (hh, ww) = (labels.size()[1], labels.size()[2]);
    let dev = labels.device();
    let rows = (Tensor::arange(h, (Kind::Int64, dev)) * 8).clamp_max(hh - 1);
    let cols = (Tensor::arange(w, (Kind::Int64, dev)) * 8).clamp_max(ww - 1);
    labels.index_select(1, &rows).index_select(2, &cols)
}

/// Measures the encoder gradient of each term by differencing the accumulated
/// gradients after each term's backward (the terms are back-propagated one by one).
struct GradProbe {
    params: Vec<Tensor>,
    ce: Option<Vec<Tensor>>,
    ce_cons: Option<Vec<Tensor>>,
    /// After L_cont, before L_MIC (when MIC runs).
    before_mic: Option<Vec<Tensor>>,
}

impl GradProbe {
    fn new(on: bool, vs: &nn::VarStore) -> GradProbe {
        let params = if on {
            let mut v: Vec<_> = vs
                .variables()
                .into_iter()
                .filter(|(n, t)| group_of(n) == Group::Backbone && t.requires_grad())
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.into_iter().map(|(_, t)| t).collect()
        } else {
            Vec::new()
        };
        GradProbe {
            params,
            ce: None,
            ce_cons: None,
            before_mic: None,
        }
    }

    fn snapshot(&self) -> Option<Vec<Tensor>> {
        if self.params.is_empty() {
            return None;
        }
        Some(tch::no_grad(|| {
            self.params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if g.defined() {
                        g.copy()
                    } else {
                        p.zeros_like()
                    }
                })
                .collect()
        }))
    }

    fn after_ce(&mut self) {
        self.ce = self.snapshot();
    }

    fn after_cons(&mut self) {
        self.ce_cons = self.snapshot();
    }

    fn before_mic(&mut self) {
        self.before_mic = self.snapshot();
    }

    /// The norms, once every term has been back-propagated.
    fn finish(mut self) -> Option<GradNorms> {
        let ce = self.ce.as_ref()?;
        let all = match self.before_mic.take() {
            Some(before) => before,
            None => self.snapshot()?,
        };
        let ce_cons = self.ce_cons.as_ref().unwrap_or(ce);
        let norm = |a: &[Tensor], b: Option<&[Tensor]>| -> f64 {
            let sq: f64 = a
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let d = match b {
                        Some(b) => x - &b[i],
                        None => x.shallow_clone(),
                    };
                    d.to_kind(Kind::Double)
                        .square()
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum();
            sq.sqrt()
        };
        let base = norm(ce_cons, None);
        let cont = norm(&all, Some(ce_cons));
        Some(GradNorms {
            grad_norm_ce: norm(ce, None),
            grad_norm_cons: norm(ce_cons, Some(ce)),
            grad_norm_cont: cont,
            grad_share: if base > 0.0 { cont / base } else { 0.0 },
        })
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
    fn new(on: bool, device: Device) -> Timer {
        Timer {
            on,
            device,
            clock: Instant::now(),
        }
    }

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

/// Mean cross-entropy over the pixels whose label is not [`IGNORE`] (0 when there are none).
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let ce = logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::None, IGNORE, 0.0);
    let valid = labels.ne(IGNORE).sum(Kind::Float).clamp_min(1.0);
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
