#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! Network definitions shared by the RCCR trainer and exporter.
//!
//! - [`config`]: the serde-serialisable network configuration (backbone, classes, ASPP
//!   variant, projector, input normalisation) that travels inside every checkpoint.
//! - [`resnet`], [`layers`]: the DeepLabv2 encoder in the DACS layout (output stride 8).
//! - [`deeplab`]: encoder + ASPP classifier; forward gives the 1/8 logits and the layer4
//!   features.
//! - [`mit`], [`decoder`]: the Mix Transformer encoder (SegFormer) and the DAFormer /
//!   SegFormer decoders on it.
//! - [`segmenter`]: either network behind one interface, and what RCCR reads from it.
//! - [`projector`]: the momentum projector head of the paper (Sec. 3.2.1).
//! - [`weights`]: safetensors save / load (atomic) and torchvision-named backbone import.
//! - [`device`]: the one `--device` parser.

pub mod batch_norm;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod deeplab;
pub mod device;
pub mod layers;
pub mod mit;
pub mod projector;
pub mod pth;
pub mod resnet;
pub mod segmenter;
pub mod stochastic;
pub mod weights;

pub use config::{Backbone, Decoder, InputNorm, ModelConfig, GRID_STRIDE, OUTPUT_STRIDE};
pub use deeplab::DeepLabV2;
pub use projector::Projector;
pub use segmenter::{MitSegmenter, SegOutput, Segmenter};

use std::path::PathBuf;
use tch::nn;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config value out of range.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A device that cannot be used.
    #[error("{0}")]
    Device(String),
    /// A file that could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A file whose content is not what was expected.
    #[error("{0}")]
    Format(String),
    /// A stored tensor whose shape differs from the model's variable.
    #[error("{}: tensor `{tensor}` has shape {found:?} but the model expects {expected:?} (wrong backbone or number of classes?)", path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The model's shape.
        expected: Vec<i64>,
        /// The file's shape.
        found: Vec<i64>,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// One full network of the method: encoder + segmentation head (DeepLabv2 or MiT) and the
/// projector head. The student and the teacher are each one of these, in their own
/// VarStore, with identical variable names.
#[derive(Debug)]
pub struct RccrNet {
    /// F_enc + F_seg.
    pub seg: Segmenter,
    /// F_proj.
    pub projector: Projector,
}

impl RccrNet {
    /// Builds under `p`: encoder at the root, classifier at `layer5` (DeepLabv2) or decoder
    /// at `decode_head` (MiT), projector at `projector`. `config` should be validated
    /// ([`ModelConfig::validate`]).
    pub fn new(p: &nn::Path, config: &ModelConfig) -> RccrNet {
        RccrNet {
            seg: Segmenter::new(p, config),
            projector: Projector::new(&(p / "projector"), config),
        }
    }
}

/// Whether a variable is a batch-norm running statistic (a buffer, not a parameter).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Parameter counts of a network (BN affine parameters included, running statistics not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    /// Encoder + classifier / decoder.
    pub parameters: i64,
    /// The encoder alone (ResNet or MiT; the SegFormer paper's counts for MiT).
    pub encoder_parameters: i64,
    /// The classifier (`layer5`) or decoder (`decode_head`) alone.
    pub decoder_parameters: i64,
    /// The projector head alone.
    pub projector_parameters: i64,
}

/// Whether a variable belongs to the segmentation head (DeepLabv2's `layer5`, MiT's
/// `decode_head`) rather than the encoder or the projector.
pub fn is_head_var(name: &str) -> bool {
    name.starts_with("layer5.") || name.starts_with("decode_head.")
}

/// Counts the parameters of the variables in `vs` built by [`RccrNet::new`] at the root.
pub fn count_parameters(vs: &nn::VarStore) -> ParamCounts {
    let mut counts = ParamCounts {
        parameters: 0,
        encoder_parameters: 0,
        decoder_parameters: 0,
        projector_parameters: 0,
    };
    for (name, t) in vs.variables() {
        if is_buffer(&name) {
            continue;
        }
        let n = t.numel() as i64;
        if name.starts_with("projector.") {
            counts.projector_parameters += n;
        } else if is_head_var(&name) {
            counts.decoder_parameters += n;
        } else {
            counts.encoder_parameters += n;
        }
    }
    counts.parameters = counts.encoder_parameters + counts.decoder_parameters;
    counts
}
