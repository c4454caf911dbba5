#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! rccr-infer: batched semantic segmentation and Cityscapes mIoU scoring on ONNX
//! Runtime. A library first (embeddable, no libtorch), with the `rccr-infer` CLI on top.
//!
//! - [`segmenter`]: [`Segmenter`], an rccr ONNX model ([`model`] contract) on a chosen
//!   execution [`provider`], images in, train-id [`LabelMap`]s out.
//! - [`pipeline`]: the CLI's pipelined folder run (decode workers, model, writers).
//! - [`score`]: official-Cityscapes scoring of prediction folders; [`merge`]: shard
//!   reports merged into one; [`metrics`]: the
//!   confusion matrix, IoU, mIoU, pixel accuracy; [`taxonomy`]: labelId / trainId / name /
//!   colour, SYNTHIA map, 19 / 16 / 13-class protocols.
//! - [`files`], [`imageio`], [`labelmap`], [`resample`], [`report`]: folders and pairing,
//!   PNG I/O, label-map operations, resizing into the model input, the JSON report.
//! - [`contract`]: the ONNX model contract (tensor names, `rccr.*` metadata and its
//!   fallbacks), written by `rccr-export` and read by [`model`].
//! - [`size`], [`seed`]: `WxH` sizes and the SplitMix64 seed mixer shared by the workspace.
//! - [`runtime`]: finding and loading the ONNX Runtime library.
//! - [`capi`]: the C ABI (`librccr_infer.so` / `.a`, header `include/rccr_infer.h`).
//! - [`latency`]: per-call latency percentiles (`rccr-infer bench`).
//! - [`logging`]: the CLI programs' tracing set-up. [`bench`](mod@bench): the scoring
//!   benchmark and its synthetic Cityscapes-layout split.
//!
//! The default feature `runtime` brings ONNX Runtime and the modules that run a model
//! ([`segmenter`], [`pipeline`], [`provider`], [`runtime`], [`model`], [`capi`],
//! [`latency`]) and the CLI. Without it (`default-features = false`, as the trainer and
//! rccr-models use it) the crate is a light core: taxonomy, metrics, scoring, label-map
//! and PNG I/O, files and atomic writes, the model contract, sizes, seeds, reports and
//! logging.
//!
//! ```no_run
//! use rccr_infer::{Segmenter, SegmenterOptions};
//! # fn main() -> Result<(), rccr_infer::InferError> {
//! let mut seg = Segmenter::open("model.onnx".as_ref(), &SegmenterOptions::default())?;
//! let image = rccr_infer::imageio::read_rgb("frame.png".as_ref())?;
//! let labels = seg.segment_original(&[image])?; // train ids at the image's own size
//! println!("{} classes, pixel 0 is class {}", seg.info().metadata.num_classes, labels[0].data[0]);
//! # Ok(())
//! # }
//! ```

pub mod bench;
#[cfg(feature = "runtime")]
pub mod capi;
pub mod contract;
pub mod error;
pub mod files;
pub mod imageio;
pub mod labelmap;
#[cfg(feature = "runtime")]
pub mod latency;
pub mod logging;
pub mod merge;
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod model;
#[cfg(feature = "runtime")]
pub mod pipeline;
#[cfg(feature = "runtime")]
pub mod provider;
pub mod report;
pub mod resample;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod score;
pub mod seed;
#[cfg(feature = "runtime")]
pub mod segmenter;
pub mod size;
pub mod taxonomy;

pub use error::InferError;
pub use labelmap::LabelMap;
#[cfg(feature = "runtime")]
pub use model::ModelInfo;
#[cfg(feature = "runtime")]
pub use provider::{Provider, SessionOptions};
#[cfg(feature = "runtime")]
pub use segmenter::{Batch, Segmenter, SegmenterOptions};
pub use size::Size;
