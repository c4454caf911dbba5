//! The errors of the exporter library: every one names the file or option at fault and,
//! where there is one, the fix.

use rccr_models::ModelError;
use std::path::PathBuf;

/// Errors of `rccr-exporter`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint could not be read or is not a complete rccr checkpoint.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An export or verification option out of range.
    #[error("invalid option: {0}")]
    Options(String),
    /// A network tensor whose shape or type the exporter does not expect.
    #[error("unexpected network tensor: {0}")]
    Network(String),
    /// The output file cannot be written.
    #[error("{}: cannot write the ONNX model here: {reason}", path.display())]
    Output {
        /// The requested output path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model could not be written.
    #[error("{}: cannot write the ONNX model: {cause}", path.display())]
    Write {
        /// The output path.
        path: PathBuf,
        /// The cause (in the message; not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// A file that could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message; not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// An image given for verification or calibration that could not be decoded.
    #[error("{}: not a readable image ({cause})", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error (in the message; not chained, so it is printed once).
        cause: image::ImageError,
    },
    /// A serialised model that could not be decoded.
    #[error("not a readable ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Runtime(#[from] rccr_infer::runtime::RuntimeError),
    /// ONNX Runtime rejected the model or failed to run it.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// ONNX Runtime ran the model but an output is missing or has an unexpected shape.
    #[error("ONNX Runtime output: {0}")]
    OrtOutput(String),
    /// A folder listing or another `rccr-infer` call failed.
    #[error(transparent)]
    Infer(#[from] rccr_infer::InferError),
    /// The exported model does not pass verification; it was not written.
    #[error("verification failed: {0}")]
    Verification(String),
    /// libtorch failed while running the reference network.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
