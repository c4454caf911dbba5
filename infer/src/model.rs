//! The rccr ONNX model contract, as `rccr-export` writes it, read back from a session.
//!
//! - Input `image`: float32 `N x 3 x H x W`, RGB, 0..255 un-normalised (the network's
//!   mean subtraction and channel order are inside the graph). Dimensions are dynamic
//!   unless the model was exported with a fixed shape.
//! - Outputs: `labels` int64 `N x H x W` (argmax train ids at the input resolution) and/or
//!   `logits` float32 `N x C x H x W` (bilinearly upsampled, paper Eq. (1)'s segmentation
//!   output); `labels` is preferred, otherwise the argmax over `logits` is taken here.
//! - `metadata_props`: `rccr.num_classes`, `rccr.class_names` (JSON array),
//!   `rccr.label_set`, `rccr.palette` (JSON array of `[r, g, b]`), `rccr.input_format`,
//!   `rccr.backbone`, `rccr.checkpoint`, `rccr.iteration`, `rccr.outputs`.
//!
//! A file without the `image` input or `rccr.num_classes` is not an rccr model.

use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use crate::error::{InferError, Result};
use crate::taxonomy;

/// Name of the model's input.
pub const INPUT_NAME: &str = "image";
/// Name of the argmax output.
pub const LABELS_OUTPUT: &str = "labels";
/// Name of the logits output.
pub const LOGITS_OUTPUT: &str = "logits";

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
        let get = |k: &str| meta.custom(k).filter(|v| !v.is_empty());
        let num_classes: usize = get("rccr.num_classes")
            .ok_or_else(|| not("metadata `rccr.num_classes` is missing".into()))?
            .trim()
            .parse()
            .ok()
            .filter(|&n| (1..=255).contains(&n))
            .ok_or_else(|| not("metadata `rccr.num_classes` is not a number in 1..=255".into()))?;
        let class_names: Vec<String> = match get("rccr.class_names") {
            Some(s) => serde_json::from_str(&s).map_err(|e| {
                not(format!(
                    "metadata `rccr.class_names` is not a JSON array of strings ({e})"
                ))
            })?,
            None => default_names(num_classes),
        };
        if class_names.len() != num_classes {
            return Err(not(format!(
                "metadata lists {} class names for {num_classes} classes",
                class_names.len()
            )));
        }
        let palette: Vec<[u8; 3]> = match get("rccr.palette") {
            Some(s) => serde_json::from_str(&s).map_err(|e| {
                not(format!(
                    "metadata `rccr.palette` is not a JSON array of [r, g, b] ({e})"
                ))
            })?,
            None => default_palette(num_classes),
        };
        if palette.len() != num_classes {
            return Err(not(format!(
                "metadata has {} palette colours for {num_classes} classes",
                palette.len()
            )));
        }
        Ok(ModelInfo {
            num_classes,
            class_names,
            label_set: get("rccr.label_set").unwrap_or_else(|| "unknown".into()),
            palette,
            input_format: get("rccr.input_format")
                .unwrap_or_else(|| "float32 RGB 0..255 NCHW".into()),
            backbone: get("rccr.backbone"),
            checkpoint: get("rccr.checkpoint"),
            iteration: get("rccr.iteration").and_then(|s| s.trim().parse().ok()),
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

fn default_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            taxonomy::CLASSES
                .get(i)
                .filter(|_| n == taxonomy::NUM_CLASSES)
                .map_or_else(|| format!("class{i}"), |c| c.name.to_string())
        })
        .collect()
}

fn default_palette(n: usize) -> Vec<[u8; 3]> {
    (0..n)
        .map(|i| {
            taxonomy::CLASSES.get(i).map_or_else(
                || {
                    let v = (i as u32).wrapping_mul(2654435761);
                    [(v >> 24) as u8, (v >> 16) as u8, (v >> 8) as u8]
                },
                |c| c.color,
            )
        })
        .collect()
}
