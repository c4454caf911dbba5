//! The typed errors of rccr-infer. Every variant names the file it is about and, where
//! there is one, the fix.

use std::path::PathBuf;

use crate::runtime::RuntimeError;

/// Everything that can go wrong while segmenting or scoring.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An image file that does not decode (corrupt, truncated or not an image).
    #[error("cannot decode image {path}: {reason} (corrupt, truncated or not a PNG/JPEG file)")]
    ImageDecode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// An image whose decoded pixels would exceed the decoder's memory limit.
    #[error("image {path} is too large: {width}x{height} needs {bytes} bytes decoded, over the decoder's limit of {limit} bytes ({} MiB); downscale it", limit / (1024 * 1024))]
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// Bytes its decoded pixels need.
        bytes: u64,
        /// The decoder's limit in bytes.
        limit: u64,
    },
    /// A folder argument that does not exist or is not a folder.
    #[error("{path} {problem}: give an existing folder")]
    NotAFolder {
        /// The path given.
        path: PathBuf,
        /// "does not exist" or "is not a folder".
        problem: &'static str,
    },
    /// Two inputs whose outputs would have the same file name (one would overwrite the other).
    #[error("{first} and {second} would both be written as {output}: rename or move one of them (outputs keep the input's folder and stem, with a .png extension)")]
    OutputCollision {
        /// One input.
        first: PathBuf,
        /// The other.
        second: PathBuf,
        /// The shared output path (under `trainIds/`).
        output: PathBuf,
    },
    /// A report that cannot be merged with the others.
    #[error("cannot merge {path}: {reason}")]
    Merge {
        /// The report file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A label map that is not a single-channel 8-bit PNG.
    #[error("bad label map {path}: {reason}")]
    LabelFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A Cityscapes labelId outside the official table (0..=33).
    #[error("{path} contains label id {id}, outside the Cityscapes table (0..=33; {count} pixels): is it a labelIds PNG (not trainIds or colour)?")]
    UnknownLabelId {
        /// The file.
        path: PathBuf,
        /// The first offending id.
        id: u8,
        /// How many pixels carry an unknown id.
        count: u64,
    },
    /// Two maps that must be the same size are not.
    #[error("size mismatch: {a} is {aw}x{ah} but {b} is {bw}x{bh}")]
    SizeMismatch {
        /// First file.
        a: PathBuf,
        /// Its width.
        aw: u32,
        /// Its height.
        ah: u32,
        /// Second file.
        b: PathBuf,
        /// Its width.
        bw: u32,
        /// Its height.
        bh: u32,
    },
    /// A folder without a single usable file.
    #[error("no {what} found in {path}")]
    EmptyFolder {
        /// The folder.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// Two files that map to the same key (ambiguous pairing).
    #[error("{first} and {second} both match key {key}: keep one of them")]
    DuplicateKey {
        /// The shared key.
        key: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// Ground-truth files without a prediction (or images without a label).
    #[error("{} {what} missing under {dir}: {}{}", missing.len(), missing.iter().take(10).map(|k| k.as_str()).collect::<Vec<_>>().join(", "), if missing.len() > 10 { ", ..." } else { "" })]
    Missing {
        /// What is missing ("predictions", "labels").
        what: &'static str,
        /// Where it was looked for.
        dir: PathBuf,
        /// The keys (or files) without a match.
        missing: Vec<String>,
    },
    /// An ONNX file that does not follow the rccr model contract.
    #[error("{path} is not an rccr segmentation model: {reason}. Export one with `rccr-export --checkpoint CKPT --out MODEL.onnx`")]
    NotRccrModel {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A model metadata value that breaks the [`crate::contract`].
    #[error("metadata `{key}` {problem}")]
    Metadata {
        /// The key.
        key: &'static str,
        /// What is wrong with it ("is missing", "lists 3 class names for 4 classes", ...).
        problem: String,
    },
    /// ONNX Runtime refused to load or run the model.
    #[error("ONNX Runtime failed on {path}: {reason}")]
    Session {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// An explicitly requested execution provider could not be used.
    #[error("execution provider {provider} is unavailable for {path}: {reason}. It needs {needs}; use --provider auto or cpu, or install onnxruntime-gpu (`make setup GPU=1`)")]
    Provider {
        /// The provider asked for.
        provider: String,
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
        /// The libraries this provider loads.
        needs: String,
    },
    /// An ONNX Runtime call failed outside a model's session (building a session).
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// ONNX Runtime itself could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// An external tool (the official Python evaluation) failed.
    #[error("{tool} failed: {reason}")]
    External {
        /// The tool.
        tool: &'static str,
        /// Its output.
        reason: String,
    },
    /// A bad option value.
    #[error("invalid option: {0}")]
    Invalid(String),
}

impl From<ort::Error<ort::session::builder::SessionBuilder>> for InferError {
    fn from(e: ort::Error<ort::session::builder::SessionBuilder>) -> Self {
        InferError::Ort(e.into())
    }
}

impl InferError {
    /// An I/O error about `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InferError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result with [`InferError`].
pub type Result<T, E = InferError> = std::result::Result<T, E>;
