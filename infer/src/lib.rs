//! rccr-infer: batched semantic segmentation and Cityscapes mIoU scoring on ONNX
//! Runtime. A library first (embeddable, no libtorch), with the `rccr-infer` CLI on top.
//!
//! - [`taxonomy`]: Cityscapes labelId / trainId / name / colour, SYNTHIA map, protocols.
//! - [`metrics`]: confusion matrix, per-class IoU, mIoU, pixel accuracy.
//! - [`runtime`]: finding and loading the ONNX Runtime library.

pub mod metrics;
pub mod runtime;
pub mod taxonomy;
