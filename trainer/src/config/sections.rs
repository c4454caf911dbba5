//! The sections of a training configuration, each setting declared once with its default
//! beside it (as burn's `#[config(default = ..)]`): the data, the method (losses,
//! sampling, memory bank, mu), the optimiser and the run (iterations, device,
//! checkpoints, validation, logging, data-parallel settings). The doc of each field
//! names where its default comes from (the paper's Sec. 4.1.2, or the reference code of
//! docs/design.md#reference-code-choices);
//! the value itself is only in the declaration.

use super::Size;
use crate::data::DatasetSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Declares a config section: the struct (serde defaults, unknown keys refused) and its
/// `Default` from the `= value` written beside each field.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }
    };
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

/// The optimiser of the student.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum and weight decay (paper Sec. 4.1.2). Default.
    #[default]
    Sgd,
    /// AdamW, decoupled weight decay (DAFormer's optimiser; docs/method.md "Successors'
    /// strategies").
    Adamw,
}

/// Cityscapes' thing classes (train ids of traffic light, traffic sign, person, rider,
/// car, truck, bus, train, motorcycle, bicycle): DAFormer's feature-distance classes.
pub const THING_CLASSES: [i64; 10] = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18];

section! {
    /// Rare-class sampling of the source images (DAFormer Sec. 3.3): a class c drawn with
    /// P(c) proportional to exp((1 - f_c) / T), then a source image holding at least
    /// `min_pixels` pixels of c and a crop holding c where possible (docs/method.md).
    pub struct RcsConfig {
        /// Switch (DAFormer: on; paper: off).
        pub enabled: bool = false,
        /// Temperature T (DAFormer).
        pub temperature: f64 = 0.01,
        /// An image is a candidate for class c when c covers at least this share of it at
        /// the training resize (DAFormer: 3000 pixels of a 1914 x 1052 GTA5 label = 0.0015).
        pub min_pixel_share: f64 = 0.0015,
        /// A crop is kept once it holds more than this fraction of `min_pixel_share`
        /// pixels of c (DAFormer's `rcs_min_crop_ratio`).
        pub min_crop_ratio: f64 = 0.5,
        /// Crops tried before the last one is kept (DAFormer).
        pub crop_tries: usize = 10,
    }
}

section! {
    /// Thing-class feature distance (DAFormer Sec. 3.4): lambda_FD times the mean over
    /// thing-class cells of || F_student(x_s) - F_frozen(x_s) ||_2 on the final encoder
    /// features, F_frozen the encoder the run started from, kept frozen in eval mode.
    pub struct FdConfig {
        /// Switch (DAFormer: on; paper: off).
        pub enabled: bool = false,
        /// lambda_FD (DAFormer).
        pub lambda: f64 = 0.005,
        /// The thing classes (DAFormer: Cityscapes' ten thing classes).
        pub classes: Vec<i64> = THING_CLASSES.to_vec(),
        /// A feature cell takes the majority label of its stride x stride block when that
        /// label covers at least this share of it, else none (DAFormer).
        pub min_ratio: f64 = 0.75,
    }
}

section! {
    /// Masked image consistency (MIC, Hoyer et al. 2023, Eq. 4-6): the student predicts
    /// the colour-augmented target with random square patches masked out, trained on the
    /// teacher's pseudo-labels of the whole target, weighted by q.
    pub struct MicConfig {
        /// Switch (MIC: on; paper: off).
        pub enabled: bool = false,
        /// lambda_MIC (MIC).
        pub lambda: f64 = 1.0,
        /// Side of the square patches in crop pixels; unset: crop / 8 (MIC: 64 px at its
        /// 512 px crops, so the mask grid stays 8 x 8 on small crops).
        pub patch: Option<u32> = None,
        /// Share of the patches masked (MIC).
        pub ratio: f64 = 0.7,
        /// Probability of colour jitter on the masked image (MIC).
        pub jitter_prob: f64 = 0.2,
        /// Probability of Gaussian blur on the masked image (MIC: as its colour jitter).
        pub blur_prob: f64 = 0.2,
    }
}

section! {
    /// The switches of the paper's ablation (Table 3), all on in the paper's RCCR; they
    /// only matter in mode `rccr`.
    #[derive(Copy, Eq)]
    pub struct Components {
        /// RWC: the region-wise contrastive loss L_cont (Eq. 4-8) on CutMix images. Off = baseline.
        pub rwc: bool = true,
        /// NS(R): keep a random half of the negatives (Sec. 3.2.4).
        pub ns_random: bool = true,
        /// NS(C): drop negatives with the anchor's (pseudo-)label (Sec. 3.2.4).
        pub ns_category: bool = true,
        /// PS: keep only anchors whose teacher confidence exceeds delta (Sec. 3.2.4).
        pub ps: bool = true,
        /// MB: negatives of the last iterations from a memory bank (Sec. 3.2.5).
        pub mb: bool = true,
    }
}

section! {
    /// Data-parallel settings (docs/distributed.md); used only when a
    /// launcher such as torchrun sets `WORLD_SIZE`.
    pub struct DistConfig {
        /// `auto` (NCCL on CUDA, Gloo on the CPU), `nccl` or `gloo`.
        pub backend: DistBackend = DistBackend::Auto,
        /// Seconds a rendezvous or collective waits for the other ranks before failing
        /// (default: PyTorch's NCCL default).
        pub timeout_s: u32 = 600,
        /// Synchronised batch norm in the student's forwards (DACS's
        /// `use_sync_batchnorm` option, off there).
        pub sync_bn: bool = false,
        /// Processes of the run: written by the trainer (1 without a launcher), not read.
        pub world_size: usize = 1,
        /// The backend that ran, written by the trainer (`none` without a launcher).
        pub backend_used: String = "none".into(),
    }
}

section! {
    /// Where the images come from and how they are cut into batches.
    pub struct DataConfig {
        /// Labelled source data, `gta5:DIR`, `synthia:DIR` or `cityscapes:DIR` (an
        /// oracle); required by `train`.
        pub source: Option<DatasetSpec> = None,
        /// Unlabelled target data (its labels are never read for training),
        /// `cityscapes:DIR`; required by `train` except in mode `source-only`.
        pub target: Option<DatasetSpec> = None,
        /// Validation data; unset: the target's val split.
        pub val: Option<DatasetSpec> = None,
        /// Source resize before cropping; unset: the dataset's size (GTA5 1280x720,
        /// SYNTHIA 1280x760, Cityscapes 1024x512).
        pub source_size: Option<Size> = None,
        /// Target resize before cropping; unset: 1024x512 for Cityscapes (DACS).
        pub target_size: Option<Size> = None,
        /// Validation input size; unset: the target size (DACS protocol).
        pub val_size: Option<Size> = None,
        /// Square crop side in pixels, a multiple of 8 (paper).
        pub crop: u32 = 512,
        /// Images per domain per iteration (paper; as many target images).
        pub batch_size: usize = 2,
        /// Data-loading worker threads.
        pub workers: usize = 4,
        /// Batches decoded ahead.
        pub prefetch: usize = 4,
        /// Test hook: draw batches and random choices as rank R of a data-parallel run
        /// would, in a single process; unset: the process's own rank.
        pub data_rank: Option<usize> = None,
        /// Share of each source / target crop that is padding because the resized images
        /// are smaller than the crop (written by the trainer, with a warning; not read).
        /// Padding rule: crops that do not fit are padded at the bottom / right with
        /// image 0 and label 255 (ignored), so padded pixels add no L_CE but do enter the
        /// mixed images.
        pub crop_padding: [f64; 2] = [0.0, 0.0],
        /// Rare-class sampling of the source (DAFormer; off in the paper).
        pub rcs: RcsConfig = RcsConfig::default(),
    }
}

section! {
    /// The losses of Eq. 9, the sampling of L_cont, the memory bank and the strong
    /// augmentation of mixed images.
    pub struct MethodConfig {
        /// Method (paper: `rccr`).
        pub mode: Mode = Mode::Rccr,
        /// Component switches of Table 3 (paper: all on).
        pub components: Components = Components::default(),
        /// lambda of Eq. 9 (paper).
        pub lambda_cons: f64 = 1.0,
        /// Teacher confidence for q, the target-pixel weight of L_cons (DACS).
        pub pseudo_threshold: f64 = 0.968,
        /// mu_max of mu(t) = mu_max exp(-5 (1 - t/N)^0.5) (paper Sec. 4.1.2;
        /// docs/design.md#cutmix-and-l_cont).
        pub mu_max: f64 = 0.01,
        /// The shape of mu(t): `paper` (the formula above) or `constant` (mu_max).
        pub mu_schedule: MuSchedule = MuSchedule::Paper,
        /// Temperature tau of L_cont (paper).
        pub tau: f64 = 0.1,
        /// delta of positive sampling (paper).
        pub ps_threshold: f64 = 0.75,
        /// Fraction of the current negatives kept by NS(R) (paper).
        pub ns_random_fraction: f64 = 0.5,
        /// Iterations held by the memory bank (paper).
        pub bank_iterations: usize = 3,
        /// Negatives sampled into the bank per iteration from each of E_cut and E_t
        /// (docs/design.md#cutmix-and-l_cont).
        pub bank_per_iteration: usize = 4000,
        /// Anchors per chunk of the anchor x negative similarity (bounds memory).
        pub anchor_chunk: usize = 1024,
        /// Colour-jitter strength s: brightness, contrast, saturation, hue in 1 +- s (DACS).
        pub jitter_strength: f64 = 0.2,
        /// Probability of colour jitter per mixed image (DACS).
        pub jitter_prob: f64 = 0.8,
        /// Probability of Gaussian blur per mixed image (DACS).
        pub blur_prob: f64 = 0.5,
        /// Rows at the top of the crop whose target pixels get weight 0 in L_cons and
        /// L_MIC (DAFormer: 15 of a 512 crop; paper: 0).
        pub pseudo_ignore_top: u32 = 0,
        /// Rows at the bottom of the crop whose target pixels get weight 0 (DAFormer: 120
        /// of a 512 crop, the ego car's hood; paper: 0).
        pub pseudo_ignore_bottom: u32 = 0,
        /// Thing-class feature distance (DAFormer; off in the paper).
        pub fd: FdConfig = FdConfig::default(),
        /// Masked image consistency (MIC; off in the paper).
        pub mic: MicConfig = MicConfig::default(),
    }
}

section! {
    /// SGD (or AdamW) with the poly schedule, an optional linear warm-up and the mean
    /// teacher's EMA (paper Sec. 4.1.2; DAFormer Sec. 4.1 for AdamW and the warm-up).
    pub struct OptimConfig {
        /// `sgd` (paper) or `adamw` (DAFormer: lr 6e-5, weight decay 0.01, head x10).
        pub optimizer: Optimizer = Optimizer::Sgd,
        /// Linear warm-up iterations before the poly schedule: lr(t) = poly(t) (1 - (1 -
        /// t / W)(1 - warmup_ratio)) for t < W (DAFormer: 1500; paper: 0).
        pub warmup_iters: u64 = 0,
        /// The warm-up's starting fraction of the rate (DAFormer: 1e-6).
        pub warmup_ratio: f64 = 1e-6,
        /// AdamW's beta1 (DAFormer).
        pub beta1: f64 = 0.9,
        /// AdamW's beta2 (DAFormer).
        pub beta2: f64 = 0.999,
        /// AdamW's epsilon (PyTorch's default, DAFormer).
        pub adam_eps: f64 = 1e-8,
        /// Base learning rate of the backbone (paper).
        pub lr: f64 = 2.5e-4,
        /// Learning-rate multiplier of the classifier and projector (paper).
        pub head_lr_mult: f64 = 10.0,
        /// SGD momentum (paper; unused by AdamW).
        pub momentum: f64 = 0.9,
        /// Weight decay (paper: 5e-4 for SGD); AdamW's is decoupled and skips parameters
        /// named `*norm*` (DAFormer's rule).
        pub weight_decay: f64 = 5e-4,
        /// Poly schedule power: lr (1 - t/N)^power (paper).
        pub poly_power: f64 = 0.9,
        /// Train the batch-norm affine parameters (frozen by default, the running
        /// statistics still update in training mode: docs/design.md#network).
        pub train_bn_affine: bool = false,
        /// Upper bound of the EMA coefficient alpha = min(1 - 1/(t+1), this) (DACS).
        pub ema_alpha: f64 = 0.99,
    }
}

section! {
    /// How long and where the run goes, where it starts from and what it writes.
    pub struct RunConfig {
        /// Training iterations N of Algorithm 1 (paper).
        pub iterations: u64 = 250_000,
        /// `auto | cpu | cuda | cuda:N`.
        pub device: String = "auto".into(),
        /// `fp32` or `bf16` (CUDA autocast).
        pub precision: Precision = Precision::Fp32,
        /// Seed of the weights, data order and every random choice.
        pub seed: u64 = 0,
        /// cuDNN benchmark off and libtorch's deterministic algorithms on (warn-only), so
        /// GPU runs repeat; off: cuDNN picks the fastest kernels, as DACS. CPU runs are
        /// deterministic either way.
        pub deterministic: bool = false,
        /// Channels-last (NHWC) weights and activations, so on CUDA that cuDNN can pick its
        /// bf16 / TF32 tensor-core kernels without layout transposes
        /// (docs/gpu-acceptance.md); same results up to rounding (on the CPU too, slower).
        pub channels_last: bool = false,
        /// ImageNet backbone with torchvision names to start from; unset: random init
        /// (the paper starts from ImageNet).
        pub init: Option<PathBuf> = None,
        /// An rccr checkpoint or model file whose teacher (encoder, classifier, BN
        /// statistics, projector where present) starts both student and teacher. The
        /// stand-in for the paper's pretrained start (docs/study.md: a source-only run).
        pub init_from: Option<PathBuf> = None,
        /// Validate every this many iterations (0: only at the end).
        pub val_every: u64 = 2000,
        /// Validate on at most this many images; unset: all.
        pub val_limit: Option<usize> = None,
        /// Save a checkpoint every this many iterations (0: only at the end).
        pub save_every: u64 = 5000,
        /// Periodic checkpoints kept (the best by mIoU is kept as well).
        pub keep_last: usize = 3,
        /// Log losses every this many iterations.
        pub log_every: u64 = 10,
        /// Data-parallel settings.
        pub dist: DistConfig = DistConfig::default(),
    }
}
