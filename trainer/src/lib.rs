#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! rccr-trainer: the RCCR training method (paper Algorithm 1) and its data pipeline.
//!
//! - [`config`]: every setting of a run, nested (model, data, method, optim, run), with
//!   the paper's defaults.
//! - [`schedule`]: poly learning rate, mu(t), EMA alpha(t).
//! - [`mixing`]: ClassMix, CutMix and the strong augmentation of mixed images.
//! - [`contrastive`], [`memory_bank`]: L_cont (Eq. 4-8), its sampling and the memory bank.
//! - [`feature_distance`], [`masking`]: the successors' terms (DAFormer's thing-class
//!   feature distance; MIC's patch mask and the pseudo-label region weights).
//! - [`ema`], [`optim`]: the mean teacher (Eq. 2, 10) and SGD / AdamW with two lr groups;
//!   [`foreach`]: their multi-tensor kernels and channels-last layouts.
//! - [`trainer`]: one iteration of Algorithm 1 and the training run; [`streams`]: its
//!   per-purpose random generators; [`trace`]: iterations written out for a replay.
//! - [`run`]: a whole training run; [`checkpoint`], [`metrics`], [`validate`],
//!   [`bench`](mod@bench): run outputs and measurements.
//! - [`error`]: the crate's one error type, [`Error`], its variants grouped by stage.
//! - [`data`], [`synth`]: dataset loaders and the synthetic benchmark.

pub mod amp;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod contrastive;
pub mod data;
pub mod determinism;
pub mod dist;
pub mod ema;
pub mod error;
pub mod feature_distance;
pub mod foreach;
pub mod masking;
pub mod memory_bank;
pub mod metrics;
pub mod mixing;
pub mod optim;
pub mod pictures;
pub mod run;
pub mod schedule;
pub mod streams;
pub mod synth;
pub mod tensorboard;
pub mod trace;
pub mod trainer;
pub(crate) mod upload;
pub mod validate;

pub use error::{Error, Result};
