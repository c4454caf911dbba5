//! The rccr ONNX model contract ([`crate::contract`]) read back from a session: the
//! `image` input's type and shape (dimensions are dynamic unless the model was exported
//! with a fixed shape), which of `labels` / `logits` exist (`labels` is preferred,
//! otherwise the argmax over `logits` is taken here) and the `rccr.*` metadata.
//!
//! A file without the `image` input or `rccr.num_classes` is not an rccr model.

use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use crate::contract::{ModelMetadata, INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use crate::error::{InferError, Result};
use crate::taxonomy;


/// What the model file says about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// Number of classes (`rccr.num_classes`).
    pub num_classes: usize,
    /// Class names in train-id order (`rccr.class_names`; Cityscapes names when absent).
    pub class_names: Vec<String>,
    /// Label set (`rccr.label_set`, e.g. `cityscapes19`).
    pub label_set: String,
    /// Colours in train-id order (`rccr.palette`; the Cityscapes palette when absent).
    pub palette: Vec<[u8; 3]>,
    /// Input format (`rccr.input_format`).
    pub input_format: String,
    /// Backbone (`rccr.backbone`), if recorded.
    pub backbone: Option<String>,
    /// Source checkpoint (`rccr.checkpoint`), if recorded.
    pub checkpoint: Option<String>,
    /// Training iteration (`rccr.iteration`), if recorded.
    pub iteration: Option<u64>,
    /// Fixed input batch size, `None` when dynamic.
    pub fixed_batch: Option<usize>,
    /// Fixed input `(width, height)`, `None` when dynamic.
    pub fixed_size: Option<(u32, u32)>,
    /// Whether the `labels` output exists.
    pub has_labels: bool,
    /// Whether the `logits` output exists.
    pub has_logits: bool,
}

impl ModelInfo {
    /// Reads and validates the contract from a session created from `path`.
    pub fn from_session(session: &Session, path: &Path) -> Result<ModelInfo> {
        let not = |reason: String| InferError::NotRccrModel {
            path: path.to_path_buf(),
            reason,
        };
        let input = session
            .inputs()
            .iter()
            .find(|i| i.name() == INPUT_NAME)
            .ok_or_else(|| {
                not(format!(
                    "it has no input named `{INPUT_NAME}` (inputs: {})",
                    session
                        .inputs()
                        .iter()
                        .map(|i| i.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(not("input `image` is not a tensor".into()));
        };
        if *ty != TensorElementType::Float32 {
            return Err(not(format!("input `image` is {ty:?}, expected float32")));
        }
        if shape.len() != 4 || !(shape[1] == 3 || shape[1] < 0) {
            return Err(not(format!(
                "input `image` has shape {shape:?}, expected N x 3 x H x W"
            )));
        }
        let dim = |i: usize| (shape[i] > 0).then_some(shape[i]);
        let fixed_batch = dim(0).map(|n| n as usize);
        let fixed_size = match (dim(3), dim(2)) {
            (Some(w), Some(h)) => Some((w as u32, h as u32)),
            (None, None) => None,
            _ => {
                return Err(not(format!(
                    "input `image` has shape {shape:?}: height and width must both be fixed or both dynamic"
                )))
            }
        };

        let out_type = |name: &str| {
            session
                .outputs()
                .iter()
                .find(|o| o.name() == name)
                .map(|o| o.dtype().clone())
        };
        let has_labels = match out_type(LABELS_OUTPUT) {
            Some(ValueType::Tensor {
                ty: TensorElementType::Int64,
                ..
            }) => true,
            Some(other) => {
                return Err(not(format!("output `labels` is {other:?}, expected int64")))
            }
            None => false,
        };
        let has_logits = match out_type(LOGITS_OUTPUT) {
            Some(ValueType::Tensor {
                ty: TensorElementType::Float32,
                ..
            }) => true,
            Some(other) => {
                return Err(not(format!(
                    "output `logits` is {other:?}, expected float32"
                )))
            }
            None => false,
        };
        if !has_labels && !has_logits {
            return Err(not("it has neither a `labels` nor a `logits` output".into()));
        }

        let meta = session
            .metadata()
            .map_err(|e| not(format!("its metadata cannot be read ({e})")))?;
        let meta = ModelMetadata::from_props(|k| meta.custom(k))
            .map_err(|e| not(e.to_string()))?;
        Ok(ModelInfo {
            num_classes: meta.num_classes,
            class_names: meta.class_names,
            label_set: meta.label_set,
            palette: meta.palette,
            input_format: meta.input_format,
            backbone: meta.backbone,
            checkpoint: meta.checkpoint,
            iteration: meta.iteration,
            fixed_batch,
            fixed_size,
            has_labels,
            has_logits,
        })
    }

    /// Whether the model's train ids are the 19 Cityscapes classes (so labelId outputs and
    /// Cityscapes scoring apply).
    pub fn is_cityscapes(&self) -> bool {
        self.num_classes == taxonomy::NUM_CLASSES
            && self
                .class_names
                .iter()
                .zip(taxonomy::CLASSES.iter())
                .all(|(a, c)| a == c.name)
    }
}
