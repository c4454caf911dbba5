//! The training configuration: every knob of Algorithm 1 and Eq. 1-10 of the paper with
//! the paper's value as the default, serde-serialisable so that it can come from a TOML
//! or JSON file (`--config`), be overridden on the command line, travel inside every
//! checkpoint and be written, resolved, to `RUN_DIR/config.json`.

use crate::data::DatasetSpec;
use crate::error::{Error, Result};
use rccr_models::{Backbone, ModelConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A `WIDTHxHEIGHT` pixel size (`1280x720`), serialised as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Size {
    /// `width x height`.
    pub const fn new(width: u32, height: u32) -> Size {
        Size { width, height }
    }
    /// As the `(width, height)` pair the data loaders take.
    pub fn pair(self) -> (u32, u32) {
        (self.width, self.height)
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("size `{s}` is not WIDTHxHEIGHT (for example 1280x720)");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if width == 0 || height == 0 {
            return Err(format!("size `{s}` must be positive"));
        }
        Ok(Size { width, height })
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

/// Which method runs (paper Table 3 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// L_CE on the source only (Eq. 1); the teacher is a plain copy of the student.
    SourceOnly,
    /// Mean teacher + ClassMix: L_CE + lambda L_cons (DACS; paper Table 3 "baseline").
    Baseline,
    /// The full method: L_CE + lambda L_cons + mu L_cont (Eq. 9). Default.
    #[default]
    Rccr,
}

impl Mode {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::SourceOnly => "source-only",
            Mode::Baseline => "baseline",
            Mode::Rccr => "rccr",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How mu(t), the weight of L_cont in Eq. 9, moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MuSchedule {
    /// mu(t) = mu_max exp(-5 (1 - t/N)^0.5): the paper's printed ramp-up. Default.
    #[default]
    Paper,
    /// mu(t) = mu_max at every iteration (docs/study.md: the weight at which the term
    /// acts within a short run).
    Constant,
}

/// The c10d backend of data-parallel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum DistBackend {
    /// NCCL on CUDA, Gloo on the CPU. Default.
    #[default]
    Auto,
    /// NVIDIA's collectives (CUDA tensors).
    Nccl,
    /// Gloo (CPU tensors).
    Gloo,
}

/// Data-parallel settings (README "Multi-GPU and multi-node"); used only when a launcher
/// such as torchrun sets `WORLD_SIZE`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// `auto` (default: NCCL on CUDA, Gloo on the CPU), `nccl` or `gloo`.
    pub backend: DistBackend,
    /// Seconds a rendezvous or collective waits for the other ranks before failing.
    /// Default 600 (PyTorch's NCCL default).
    pub timeout_s: u32,
    /// Synchronised batch norm in the student's forwards. Default false (DACS's
    /// `use_sync_batchnorm` option).
    pub sync_bn: bool,
    /// Processes of the run: written by the trainer (1 without a launcher), not read.
    pub world_size: usize,
    /// The backend that ran, written by the trainer (`none` without a launcher).
    pub backend_used: String,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            backend: DistBackend::Auto,
            timeout_s: 600,
            sync_bn: false,
            world_size: 1,
            backend_used: "none".into(),
        }
    }
}

/// Numeric precision of the forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32. Default.
    #[default]
    Fp32,
    /// bf16 autocast of the network forwards on CUDA (weights, optimiser, losses stay f32;
    /// on the CPU this is refused rather than silently ignored).
    Bf16,
}

/// The switches of the paper's ablation (Table 3). All on by default (the paper's RCCR);
/// they only matter in mode `rccr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Components {
    /// RWC: the region-wise contrastive loss L_cont (Eq. 4-8) on CutMix images. Off = baseline.
    pub rwc: bool,
    /// NS(R): keep a random half of the negatives (Sec. 3.2.4).
    pub ns_random: bool,
    /// NS(C): drop negatives with the anchor's (pseudo-)label (Sec. 3.2.4).
    pub ns_category: bool,
    /// PS: keep only anchors whose teacher confidence exceeds delta (Sec. 3.2.4).
    pub ps: bool,
    /// MB: negatives of the last iterations from a memory bank (Sec. 3.2.5).
    pub mb: bool,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            rwc: true,
            ns_random: true,
            ns_category: true,
            ps: true,
            mb: true,
        }
    }
}

/// Every setting of a training run. Defaults are the paper's (Sec. 4.1.2) and the
/// reference code's values recorded in the implementation notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Labelled source data, `gta5:DIR`, `synthia:DIR` or `cityscapes:DIR` (an oracle).
    /// No default; required by `train`.
    pub source: Option<DatasetSpec>,
    /// Unlabelled target data (its labels are never read for training), `cityscapes:DIR`.
    /// No default; required by `train` except in mode `source-only`.
    pub target: Option<DatasetSpec>,
    /// Validation data; default (None): the target's val split.
    pub val: Option<DatasetSpec>,
    /// Method. Default and paper: `rccr`.
    pub mode: Mode,
    /// Component switches of Table 3. Default: all on (paper).
    pub components: Components,
    /// Encoder. Default and paper: `resnet101`.
    pub backbone: Backbone,
    /// Output classes. Default and paper: 19.
    pub num_classes: i64,
    /// ASPP branches: 4 (default, paper) or 2 (the DACS/RCCR release).
    pub aspp_branches: usize,
    /// ImageNet backbone with torchvision names to start from; default none (random init;
    /// the paper starts from ImageNet).
    pub init: Option<PathBuf>,
    /// An rccr checkpoint or model file whose teacher (encoder, classifier, BN statistics,
    /// projector where present) starts both student and teacher; default none. The
    /// stand-in for the paper's pretrained start (docs/study.md: a source-only run).
    pub init_from: Option<PathBuf>,
    /// Training iterations N (Algorithm 1). Default and paper: 250000.
    pub iterations: u64,
    /// Square crop side in pixels; a multiple of 8. Default and paper: 512.
    pub crop: u32,
    /// Images per domain per iteration. Default and paper: 2 (+2 target).
    pub batch_size: usize,
    /// Source resize before cropping. Default (None): the dataset's size in the notes,
    /// GTA5 1280x720, SYNTHIA 1280x760, Cityscapes 1024x512.
    pub source_size: Option<Size>,
    /// Target resize before cropping. Default (None): 1024x512 for Cityscapes (DACS).
    pub target_size: Option<Size>,
    /// Validation input size. Default: the target size (DACS protocol).
    pub val_size: Option<Size>,
    /// `auto | cpu | cuda | cuda:N`. Default: auto.
    pub device: String,
    /// `fp32` (default) or `bf16` (CUDA autocast).
    pub precision: Precision,
    /// Seed of the weights, data order and every random choice. Default: 0.
    pub seed: u64,
    /// cuDNN benchmark off and libtorch's deterministic algorithms on (warn-only), so GPU
    /// runs repeat; default false (cuDNN picks the fastest kernels, as DACS). CPU runs are
    /// deterministic either way.
    pub deterministic: bool,
    /// Base learning rate of the backbone. Default and paper: 2.5e-4.
    pub lr: f64,
    /// Learning-rate multiplier of the classifier and projector. Default and paper: 10.
    pub head_lr_mult: f64,
    /// SGD momentum. Default and paper: 0.9.
    pub momentum: f64,
    /// SGD weight decay. Default and paper: 5e-4.
    pub weight_decay: f64,
    /// Poly schedule power: lr (1 - t/N)^power. Default and paper: 0.9.
    pub poly_power: f64,
    /// Train the batch-norm affine parameters. Default false (DACS and the RCCR release
    /// freeze them; the running statistics still update in training mode).
    pub train_bn_affine: bool,
    /// Upper bound of the EMA coefficient alpha = min(1 - 1/(t+1), this). Default: 0.99 (DACS).
    pub ema_alpha: f64,
    /// lambda of Eq. 9. Default and paper: 1.
    pub lambda_cons: f64,
    /// Teacher confidence for q, the target-pixel weight of L_cons. Default (DACS): 0.968.
    pub pseudo_threshold: f64,
    /// mu_max of mu(t) = mu_max exp(-5 (1 - t/N)^0.5). Default (release): 0.01.
    pub mu_max: f64,
    /// The shape of mu(t): `paper` (default, the formula above) or `constant` (mu_max).
    pub mu_schedule: MuSchedule,
    /// Temperature tau of L_cont. Default and paper: 0.1.
    pub tau: f64,
    /// delta of positive sampling. Default and paper: 0.75.
    pub ps_threshold: f64,
    /// Fraction of the current negatives kept by NS(R). Default and paper: 0.5.
    pub ns_random_fraction: f64,
    /// Iterations held by the memory bank. Default and paper: 3.
    pub bank_iterations: usize,
    /// Negatives sampled into the bank per iteration from each of E_cut and E_t. Default
    /// (release): 4000.
    pub bank_per_iteration: usize,
    /// Anchors per chunk of the anchor x negative similarity (bounds memory). Default 1024.
    pub anchor_chunk: usize,
    /// Colour-jitter strength s (brightness, contrast, saturation, hue in 1 +- s). Default
    /// (DACS): 0.2.
    pub jitter_strength: f64,
    /// Probability of colour jitter per mixed image. Default (DACS): 0.8.
    pub jitter_prob: f64,
    /// Probability of Gaussian blur per mixed image. Default (DACS): 0.5.
    pub blur_prob: f64,
    /// Validate every this many iterations (0: only at the end). Default: 2000.
    pub val_every: u64,
    /// Validate on at most this many images. Default: all.
    pub val_limit: Option<usize>,
    /// Save a checkpoint every this many iterations (0: only at the end). Default: 5000.
    pub save_every: u64,
    /// Periodic checkpoints kept (the best by mIoU is kept as well). Default: 3.
    pub keep_last: usize,
    /// Log losses every this many iterations. Default: 10.
    pub log_every: u64,
    /// Data-parallel settings. Default: see [`DistConfig`].
    pub dist: DistConfig,
    /// Share of each source / target crop that is padding because the resized images are
    /// smaller than the crop (written by the trainer, with a warning; not read). Padding
    /// rule: crops that do not fit are padded at the bottom / right with image 0 and label
    /// 255 (ignored), so padded pixels add no L_CE but do enter the mixed images.
    pub crop_padding: [f64; 2],
    /// Test hook: draw batches and random choices as rank R of a data-parallel run
    /// would, in a single process. Default: none (the process's own rank).
    pub data_rank: Option<usize>,
    /// Data-loading worker threads. Default: 4.
    pub workers: usize,
    /// Batches decoded ahead. Default: 4.
    pub prefetch: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            source: None,
            target: None,
            val: None,
            mode: Mode::Rccr,
            components: Components::default(),
            backbone: Backbone::Resnet101,
            num_classes: 19,
            aspp_branches: 4,
            init: None,
            init_from: None,
            iterations: 250_000,
            crop: 512,
            batch_size: 2,
            source_size: None,
            target_size: None,
            val_size: None,
            device: "auto".into(),
            precision: Precision::Fp32,
            seed: 0,
            deterministic: false,
            lr: 2.5e-4,
            head_lr_mult: 10.0,
            momentum: 0.9,
            weight_decay: 5e-4,
            poly_power: 0.9,
            train_bn_affine: false,
            ema_alpha: 0.99,
            lambda_cons: 1.0,
            pseudo_threshold: 0.968,
            mu_max: 0.01,
            mu_schedule: MuSchedule::Paper,
            tau: 0.1,
            ps_threshold: 0.75,
            ns_random_fraction: 0.5,
            bank_iterations: 3,
            bank_per_iteration: 4000,
            anchor_chunk: 1024,
            jitter_strength: 0.2,
            jitter_prob: 0.8,
            blur_prob: 0.5,
            val_every: 2000,
            val_limit: None,
            save_every: 5000,
            keep_last: 3,
            log_every: 10,
            dist: DistConfig::default(),
            crop_padding: [0.0, 0.0],
            data_rank: None,
            workers: 4,
            prefetch: 4,
        }
    }
}

impl TrainConfig {
    /// Reads a config file: TOML (`.toml`) or JSON (anything else). Missing fields take
    /// their defaults; unknown fields are an error (they are usually typos).
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |msg: String| Error::ConfigParse {
            path: path.to_path_buf(),
            msg,
        };
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| parse(e.to_string()))
        } else {
            serde_json::from_str(&text).map_err(|e| parse(e.to_string()))
        }
    }

    /// The network this run trains.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            aspp_branches: self.aspp_branches,
            ..ModelConfig::new(self.backbone, self.num_classes)
        }
    }

    /// Whether L_cont runs (mode `rccr` with RWC on).
    pub fn contrastive(&self) -> bool {
        self.mode == Mode::Rccr && self.components.rwc
    }

    /// Whether the mean teacher and ClassMix run (modes `baseline` and `rccr`).
    pub fn mean_teacher(&self) -> bool {
        self.mode != Mode::SourceOnly
    }

    /// Checks ranges (not the data paths; the loaders do that).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        self.model_config()
            .validate()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        if self.crop < 16 || !self.crop.is_multiple_of(8) {
            return bad(format!(
                "crop must be a multiple of 8 and at least 16, got {}",
                self.crop
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.iterations == 0 {
            return bad("iterations must be at least 1".into());
        }
        for (name, v) in [
            ("lr", self.lr),
            ("head_lr_mult", self.head_lr_mult),
            ("tau", self.tau),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        for (name, v) in [
            ("momentum", self.momentum),
            ("ema_alpha", self.ema_alpha),
            ("pseudo_threshold", self.pseudo_threshold),
            ("ps_threshold", self.ps_threshold),
            ("jitter_prob", self.jitter_prob),
            ("blur_prob", self.blur_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if !(self.ns_random_fraction > 0.0 && self.ns_random_fraction <= 1.0) {
            return bad(format!(
                "ns_random_fraction must be in (0, 1], got {}",
                self.ns_random_fraction
            ));
        }
        for (name, v) in [
            ("weight_decay", self.weight_decay),
            ("poly_power", self.poly_power),
            ("lambda_cons", self.lambda_cons),
            ("mu_max", self.mu_max),
            ("jitter_strength", self.jitter_strength),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be >= 0, got {v}"));
            }
        }
        if self.anchor_chunk == 0 {
            return bad("anchor_chunk must be at least 1".into());
        }
        if self.init.is_some() && self.init_from.is_some() {
            return bad(
                "init (an ImageNet backbone) and init_from (an rccr model) exclude each other"
                    .into(),
            );
        }
        if self.dist.timeout_s == 0 {
            return bad("dist.timeout_s must be at least 1".into());
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_parses_and_prints() {
        let s: Size = "1280x720".parse().unwrap();
        assert_eq!((s.width, s.height), (1280, 720));
        assert_eq!(s.to_string(), "1280x720");
        assert!("1280".parse::<Size>().is_err());
        assert!("0x5".parse::<Size>().is_err());
    }

    #[test]
    fn defaults_are_the_papers() {
        let c = TrainConfig::default();
        assert_eq!(c.lr, 2.5e-4);
        assert_eq!(c.lr * c.head_lr_mult, 2.5e-3);
        assert_eq!((c.momentum, c.weight_decay, c.poly_power), (0.9, 5e-4, 0.9));
        assert_eq!((c.tau, c.ps_threshold, c.bank_iterations), (0.1, 0.75, 3));
        assert_eq!((c.crop, c.batch_size, c.iterations), (512, 2, 250_000));
        assert_eq!(c.lambda_cons, 1.0);
        c.validate().unwrap();
    }

    #[test]
    fn toml_file_overrides_and_rejects_typos() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "iterations = 10\nbackbone = \"small\"\nsource_size = \"64x32\"\n[components]\nmb = false\n",
        )
        .unwrap();
        let c = TrainConfig::from_file(&p).unwrap();
        assert_eq!(c.iterations, 10);
        assert_eq!(c.backbone, Backbone::Small);
        assert_eq!(c.source_size, Some(Size::new(64, 32)));
        assert!(!c.components.mb && c.components.ps);
        std::fs::write(&p, "iteratons = 10\n").unwrap();
        assert!(TrainConfig::from_file(&p).is_err());
    }
}
