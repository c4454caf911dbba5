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

/// What the model file says about itself: its `rccr.*` metadata and what the session
/// shows of its input and outputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// The `rccr.*` metadata with every fallback applied ([`ModelMetadata::from_props`]).
    #[serde(flatten)]
    pub metadata: ModelMetadata,
    /// Fixed input batch size, `None` when dynamic.
    pub fixed_batch: Option<usize>,
    /// Fixed input `(width, height)`, `None` when dynamic.
    pub fixed_size: Option<(u32, u32)>,
    /// Whether the `labels` output exists.
    pub has_labels: bool,
    /// Whether the `logits` output exists.
    pub has_logits: bool,
}

/// The `image` input's fixed dimensions: batch, and `(width, height)`; `None` = dynamic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputShape {
    /// Fixed batch size.
    pub batch: Option<usize>,
    /// Fixed `(width, height)`.
    pub size: Option<(u32, u32)>,
}

/// Which of the contract's outputs a model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outputs {
    /// `labels` (int64).
    pub labels: bool,
    /// `logits` (float32).
    pub logits: bool,
}

/// Checks the `image` input: a float32 `N x 3 x H x W` tensor with H and W both fixed or
/// both dynamic. The error is the reason the model breaks the contract.
fn input_shape(session: &Session) -> std::result::Result<InputShape, String> {
    let inputs = session.inputs();
    let Some(input) = inputs.iter().find(|i| i.name() == INPUT_NAME) else {
        let names: Vec<String> = inputs.iter().map(|i| i.name().to_string()).collect();
        return Err(format!(
            "it has no input named `{INPUT_NAME}` (inputs: {})",
            names.join(", ")
        ));
    };
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err("input `image` is not a tensor".into());
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!("input `image` is {ty:?}, expected float32"));
    }
    if shape.len() != 4 || !(shape[1] == 3 || shape[1] < 0) {
        return Err(format!(
            "input `image` has shape {shape:?}, expected N x 3 x H x W"
        ));
    }
    let dim = |i: usize| (shape[i] > 0).then_some(shape[i]);
    let size = match (dim(3), dim(2)) {
        (Some(w), Some(h)) => Some((w as u32, h as u32)),
        (None, None) => None,
        _ => {
            return Err(format!(
                "input `image` has shape {shape:?}: height and width must both be fixed or both dynamic"
            ))
        }
    };
    Ok(InputShape {
        batch: dim(0).map(|n| n as usize),
        size,
    })
}

/// Whether output `name` exists; an error when it exists with another element type
/// than `expected`.
fn has_output(
    session: &Session,
    name: &str,
    expected: TensorElementType,
) -> std::result::Result<bool, String> {
    match session
        .outputs()
        .iter()
        .find(|o| o.name() == name)
        .map(|o| o.dtype())
    {
        None => Ok(false),
        Some(ValueType::Tensor { ty, .. }) if *ty == expected => Ok(true),
        Some(other) => Err(format!(
            "output `{name}` is {other:?}, expected {}",
            match expected {
                TensorElementType::Int64 => "int64",
                _ => "float32",
            }
        )),
    }
}

/// Checks the outputs: `labels` int64 and / or `logits` float32, at least one.
fn outputs(session: &Session) -> std::result::Result<Outputs, String> {
    let outputs = Outputs {
        labels: has_output(session, LABELS_OUTPUT, TensorElementType::Int64)?,
        logits: has_output(session, LOGITS_OUTPUT, TensorElementType::Float32)?,
    };
    if !outputs.labels && !outputs.logits {
        return Err("it has neither a `labels` nor a `logits` output".into());
    }
    Ok(outputs)
}

impl ModelInfo {
    /// Reads and validates the contract from a session created from `path`.
    pub fn from_session(session: &Session, path: &Path) -> Result<ModelInfo> {
        let not = |reason: String| InferError::NotRccrModel {
            path: path.to_path_buf(),
            reason,
        };
        let shape = input_shape(session).map_err(not)?;
        let outputs = outputs(session).map_err(not)?;
        let meta = session
            .metadata()
            .map_err(|e| not(format!("its metadata cannot be read ({e})")))?;
        let meta = ModelMetadata::from_props(|k| meta.custom(k)).map_err(|e| not(e.to_string()))?;
        Ok(ModelInfo::from_parts(meta, shape, outputs))
    }

    /// The info of a model with metadata `meta`, input `shape` and `outputs`.
    pub fn from_parts(meta: ModelMetadata, shape: InputShape, outputs: Outputs) -> ModelInfo {
        ModelInfo {
            metadata: meta,
            fixed_batch: shape.batch,
            fixed_size: shape.size,
            has_labels: outputs.labels,
            has_logits: outputs.logits,
        }
    }

    /// Whether the model's train ids are the 19 Cityscapes classes (so labelId outputs and
    /// Cityscapes scoring apply).
    pub fn is_cityscapes(&self) -> bool {
        self.metadata.num_classes == taxonomy::NUM_CLASSES
            && self
                .metadata
                .class_names
                .iter()
                .zip(taxonomy::CLASSES.iter())
                .all(|(a, c)| a == c.name)
    }
}
