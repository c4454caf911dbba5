//! The crate's one error type, its variants grouped by the stage that raises them
//! (configuration, data, synthetic benchmark, checkpoints, model, training, validation,
//! data-parallel runs, files), in the manner of candle-core's `error.rs`. Every message
//! names the file or setting at fault and, where there is one, the fix.

use crate::data::DatasetKind;
use std::path::PathBuf;

/// Every error of rccr-trainer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---------------------------------------------------------------- configuration
    /// A config file does not parse.
    #[error("{}: {msg}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A setting out of range.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// Settings that are valid alone but cannot run this way (missing data, a run folder
    /// that already holds a run, nothing left to train).
    #[error("{0}")]
    Refused(String),

    // ---------------------------------------------------------------- data
    /// A dataset spec that is not `gta5:DIR`, `synthia:DIR` or `cityscapes:DIR`.
    #[error("invalid dataset '{spec}': write gta5:DIR, synthia:DIR or cityscapes:DIR")]
    BadSpec {
        /// The text given.
        spec: String,
    },
    /// A folder the layout needs does not exist.
    #[error("{kind} dataset: folder {path} not found; expected the layout {expected}")]
    MissingDir {
        /// Dataset kind.
        kind: DatasetKind,
        /// The missing folder.
        path: PathBuf,
        /// The expected layout.
        expected: &'static str,
    },
    /// A dataset folder holds no usable image/label pairs.
    #[error("{kind} dataset at {root}: no usable image/label pairs{detail}; expected the layout {expected}")]
    NoSamples {
        /// Dataset kind.
        kind: DatasetKind,
        /// The dataset root.
        root: PathBuf,
        /// Extra detail (e.g. how many files were corrupt).
        detail: String,
        /// The expected layout.
        expected: &'static str,
    },
    /// A data file could not be read.
    #[error("cannot read {path}: {source}; check that the file exists and is readable")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be decoded as the expected image.
    #[error("cannot decode {path}: {reason}; re-extract or replace the file, or delete the pair")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A loader configuration that cannot work.
    #[error("invalid loader configuration: {reason}")]
    LoaderConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A worker thread ended unexpectedly.
    #[error("data worker thread stopped unexpectedly ({reason}); this is a bug, please report it")]
    Worker {
        /// What happened.
        reason: String,
    },
    /// Rare-class sampling found no class with a candidate image.
    #[error(
        "rare-class sampling on the {kind} dataset at {}: no class covers {min_pixels} pixels \
         (data.rcs.min_pixel_share of {}x{}) in any of its {readable} readable labels; lower \
         data.rcs.min_pixel_share, check the labels, or turn data.rcs.enabled off",
        root.display(), size.0, size.1
    )]
    NoRareClasses {
        /// Dataset kind.
        kind: DatasetKind,
        /// The dataset root.
        root: PathBuf,
        /// ceil(min_pixel_share W H).
        min_pixels: u64,
        /// The resize (W, H) the labels were counted at.
        size: (u32, u32),
        /// Labels that could be decoded.
        readable: usize,
    },
    /// A tensor could not be built from decoded data.
    #[error("cannot build a tensor from {what}: {reason}")]
    Tensor {
        /// Which tensor.
        what: String,
        /// libtorch's message.
        reason: String,
    },

    // ---------------------------------------------------------------- synthetic benchmark
    /// A size that is not `WxH` with sides in 32..=8192.
    #[error("invalid size '{text}': write WxH, e.g. 512x256, each side 32..=8192")]
    BadSize {
        /// The text given.
        text: String,
    },
    /// Generator arguments that cannot work.
    #[error("invalid synth arguments: {reason}")]
    BadArgs {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The output folder already holds data the generator did not write.
    #[error("{path} already holds data that rccr-train synth did not write; choose an empty or new --out folder")]
    NotOurs {
        /// The conflicting folder.
        path: PathBuf,
    },
    /// A generated file or folder could not be written.
    #[error("cannot write {path}: {source}; check the permissions and free space")]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// PNG or JSON encoding failed.
    #[error("cannot encode {path}: {reason}")]
    Encode {
        /// The path.
        path: PathBuf,
        /// The encoder's message.
        reason: String,
    },

    // ---------------------------------------------------------------- checkpoints
    /// A checkpoint that is not a training checkpoint or is incomplete.
    #[error("{}: {msg}", path.display())]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },

    // ---------------------------------------------------------------- model
    /// From the models crate (network construction, weight files, shapes, devices).
    #[error(transparent)]
    Model(#[from] rccr_models::ModelError),
    /// From the inference crate (label maps, images, metadata).
    #[error(transparent)]
    Infer(#[from] rccr_infer::InferError),

    // ---------------------------------------------------------------- training
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
    /// The state after an update holds a NaN or an infinity although the losses were finite.
    #[error(
        "iteration {iteration}: after the update, {variable} holds NaN or infinite values \
         (the losses were finite; the update diverged). The run stops here and no \
         checkpoint of this state is written; lower the learning rate or resume from the \
         last checkpoint"
    )]
    NonFiniteState {
        /// 1-based iteration.
        iteration: u64,
        /// `student.<var>`, `teacher.<var>` or `momentum.<var>`.
        variable: String,
    },
    /// A setting that cannot run here (e.g. bf16 on the CPU).
    #[error("{0}")]
    Unsupported(String),
    /// Batches that do not fit the configuration.
    #[error("batch: {0}")]
    Batch(String),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    // ---------------------------------------------------------------- validation
    /// A validation label whose size differs from its image.
    #[error("validation sample {name}: {msg}")]
    ValSample {
        /// The sample.
        name: String,
        /// What is wrong.
        msg: String,
    },

    // ---------------------------------------------------------------- data-parallel runs
    /// A collective of a data-parallel run failed (a rank died or timed out).
    #[error("data-parallel training: {0}")]
    Dist(#[from] crate::dist::DistError),
    /// The launcher's environment or the ranks' states do not fit a data-parallel run.
    #[error("data-parallel run: {0}")]
    DistSetup(String),

    // ---------------------------------------------------------------- files
    /// A file or folder operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be written as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An error with what was being done when it happened.
    #[error("{context}: {inner}")]
    Context {
        /// What was being done.
        context: String,
        /// The cause.
        inner: Box<Error>,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// `Io` at `path`, as a `map_err` argument.
    pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Says what was being done when an error happened (as anyhow's `Context`, typed).
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl std::fmt::Display) -> Result<T>;
    /// Wraps the error with the text `f` builds (only on error).
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.with_context(|| context)
    }
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            inner: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    /// A missing value: `Refused` with `context` as the message.
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Refused(context.to_string()))
    }
    fn with_context<C: std::fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Refused(f().to_string()))
    }
}
