//! The rccr ONNX model contract, stated once: `rccr-export` writes it with
//! [`ModelMetadata::to_props`], `rccr-infer` reads it back with
//! [`ModelMetadata::from_props`].
//!
//! - Input [`INPUT_NAME`] (`image`): float32 `N x 3 x H x W`, RGB, 0..255 un-normalised
//!   (the network's mean subtraction and channel order are inside the graph).
//! - Outputs [`LABELS_OUTPUT`] (`labels`, int64 `N x H x W` argmax train ids) and/or
//!   [`LOGITS_OUTPUT`] (`logits`, float32 `N x C x H x W`, paper Eq. (1)'s segmentation
//!   output upsampled to the input).
//! - `metadata_props` under the `rccr.` keys below. Only [`NUM_CLASSES`] is required to
//!   read a model; every other key has a fallback: the Cityscapes names and palette for
//!   19 classes, otherwise `class_{i}` and the PASCAL VOC palette ([`custom_colour`]).

use std::collections::HashMap;

use serde::Serialize;

use crate::error::InferError;
use crate::taxonomy;

/// Name of the model's input.
pub const INPUT_NAME: &str = "image";
/// Name of the argmax output.
pub const LABELS_OUTPUT: &str = "labels";
/// Name of the logits output.
pub const LOGITS_OUTPUT: &str = "logits";

/// Key: number of classes (decimal, 1..=255 so train ids fit 8-bit label maps).
pub const NUM_CLASSES: &str = "rccr.num_classes";
/// Key: class names, a JSON array of strings in class-index (trainId) order.
pub const CLASS_NAMES: &str = "rccr.class_names";
/// Key: the label set: [`CITYSCAPES19`] for 19 classes, else `custom<N>`.
pub const LABEL_SET: &str = "rccr.label_set";
/// Key: colours, a JSON array of `[r, g, b]` in class-index order.
pub const PALETTE: &str = "rccr.palette";
/// Key: the input format, always [`INPUT_FORMAT`].
pub const INPUT_FORMAT_KEY: &str = "rccr.input_format";
/// Key: the backbone name (`resnet101`, `resnet50`, `small`).
pub const BACKBONE: &str = "rccr.backbone";
/// Key: the source checkpoint's path as given to the exporter.
pub const CHECKPOINT: &str = "rccr.checkpoint";
/// Key: the training iteration the checkpoint was written at (decimal).
pub const ITERATION: &str = "rccr.iteration";
/// Key: the graph's output names, a JSON array (`["labels"]`, `["logits"]` or both).
pub const OUTPUTS: &str = "rccr.outputs";
/// Key: the network configuration as JSON (rccr-models' `ModelConfig`, including the
/// input normalisation baked into the graph).
pub const MODEL_CONFIG: &str = "rccr.model_config";
/// Key: the storage type of the weights: `float32` or `float16` (informative).
pub const WEIGHTS: &str = "rccr.weights";

/// The one input format of every exported model.
pub const INPUT_FORMAT: &str = "float32 RGB 0..255 NCHW";
/// The label set name of the 19 Cityscapes train ids.
pub const CITYSCAPES19: &str = "cityscapes19";
/// The label set recorded when a model's metadata names none.
pub const UNKNOWN_LABEL_SET: &str = "unknown";
/// The most classes a model may have (train ids are `u8`, 255 is [`taxonomy::IGNORE`]).
pub const MAX_CLASSES: usize = 255;

/// The fallback name of class `i` of a label set that is not Cityscapes.
pub fn custom_class_name(i: usize) -> String {
    format!("class_{i}")
}

/// A deterministic colour for class `i` of a custom label set (the PASCAL VOC palette:
/// the bits of `i` spread over the high bits of r, g, b).
pub fn custom_colour(i: usize) -> [u8; 3] {
    let mut c = [0u8; 3];
    let mut id = i;
    let mut shift = 7;
    while id > 0 && shift >= 0 {
        for (k, ch) in c.iter_mut().enumerate() {
            *ch |= (((id >> k) & 1) as u8) << shift;
        }
        id >>= 3;
        shift -= 1;
    }
    c
}

/// Whether `n` classes are the 19 Cityscapes train ids.
fn is_cityscapes(n: usize) -> bool {
    n == taxonomy::NUM_CLASSES
}

/// Class names of `n` classes: the Cityscapes names for 19, else `class_{i}`.
pub fn default_class_names(n: usize) -> Vec<String> {
    if is_cityscapes(n) {
        taxonomy::class_names().into_iter().map(String::from).collect()
    } else {
        (0..n).map(custom_class_name).collect()
    }
}

/// Colours of `n` classes: the Cityscapes palette for 19, else [`custom_colour`].
pub fn default_palette(n: usize) -> Vec<[u8; 3]> {
    if is_cityscapes(n) {
        taxonomy::palette()
    } else {
        (0..n).map(custom_colour).collect()
    }
}

/// The label set name of `n` classes: [`CITYSCAPES19`] for 19, else `custom<n>`.
pub fn default_label_set(n: usize) -> String {
    if is_cityscapes(n) {
        CITYSCAPES19.to_string()
    } else {
        format!("custom{n}")
    }
}

fn bad(key: &'static str, problem: impl Into<String>) -> InferError {
    InferError::Metadata {
        key,
        problem: problem.into(),
    }
}

/// The `metadata_props` of an rccr model, typed. Optional fields are the provenance keys
/// a reader can do without.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetadata {
    /// Number of classes C ([`NUM_CLASSES`]).
    pub num_classes: usize,
    /// C class names in train-id order ([`CLASS_NAMES`]).
    pub class_names: Vec<String>,
    /// The label set ([`LABEL_SET`]).
    pub label_set: String,
    /// C colours in train-id order ([`PALETTE`]).
    pub palette: Vec<[u8; 3]>,
    /// The input format ([`INPUT_FORMAT_KEY`]).
    pub input_format: String,
    /// Backbone name ([`BACKBONE`]).
    pub backbone: Option<String>,
    /// Source checkpoint path ([`CHECKPOINT`]).
    pub checkpoint: Option<String>,
    /// Training iteration of the checkpoint ([`ITERATION`]).
    pub iteration: Option<u64>,
    /// Output names of the graph ([`OUTPUTS`]); empty when not recorded.
    pub outputs: Vec<String>,
    /// The network configuration as JSON text ([`MODEL_CONFIG`]).
    pub model_config: Option<String>,
    /// `float32` or `float16` ([`WEIGHTS`]).
    pub weights: Option<String>,
}

impl ModelMetadata {
    /// The metadata of a model of `num_classes` classes with every fallback applied and
    /// no provenance.
    pub fn for_classes(num_classes: usize) -> ModelMetadata {
        ModelMetadata {
            num_classes,
            class_names: default_class_names(num_classes),
            label_set: default_label_set(num_classes),
            palette: default_palette(num_classes),
            input_format: INPUT_FORMAT.to_string(),
            backbone: None,
            checkpoint: None,
            iteration: None,
            outputs: Vec::new(),
            model_config: None,
            weights: None,
        }
    }

    /// The `(key, value)` pairs to write to `metadata_props` (absent optional fields are
    /// left out).
    pub fn to_props(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (NUM_CLASSES.into(), self.num_classes.to_string()),
            (CLASS_NAMES.into(), json(&self.class_names)),
            (LABEL_SET.into(), self.label_set.clone()),
            (PALETTE.into(), json(&self.palette)),
            (INPUT_FORMAT_KEY.into(), self.input_format.clone()),
        ];
        let optional = [
            (BACKBONE, self.backbone.clone()),
            (CHECKPOINT, self.checkpoint.clone()),
            (ITERATION, self.iteration.map(|i| i.to_string())),
            (OUTPUTS, (!self.outputs.is_empty()).then(|| json(&self.outputs))),
            (MODEL_CONFIG, self.model_config.clone()),
            (WEIGHTS, self.weights.clone()),
        ];
        props.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        props
    }

    /// Parses the pairs back from a map (see [`ModelMetadata::from_props`]).
    pub fn from_map(props: &HashMap<String, String>) -> Result<ModelMetadata, InferError> {
        ModelMetadata::from_props(|k| props.get(k).cloned())
    }

    /// Parses the pairs back; `get` looks a key up (an empty value counts as absent).
    /// Only [`NUM_CLASSES`] is required; names, palette and label set fall back to
    /// [`default_class_names`], [`default_palette`] and [`default_label_set`].
    pub fn from_props(get: impl Fn(&str) -> Option<String>) -> Result<ModelMetadata, InferError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let num_classes = parse_num_classes(get(NUM_CLASSES))?;
        let mut meta = ModelMetadata::for_classes(num_classes);
        if let Some(s) = get(CLASS_NAMES) {
            meta.class_names = parse_json(CLASS_NAMES, &s, "a JSON array of strings")?;
        }
        check_len(CLASS_NAMES, meta.class_names.len(), num_classes, "class names")?;
        if let Some(s) = get(PALETTE) {
            meta.palette = parse_json(PALETTE, &s, "a JSON array of [r, g, b]")?;
        }
        check_len(PALETTE, meta.palette.len(), num_classes, "palette colours")?;
        if let Some(s) = get(OUTPUTS) {
            meta.outputs = parse_json(OUTPUTS, &s, "a JSON array of strings")?;
        }
        // Models written before the label set was recorded read as `unknown`.
        meta.label_set = get(LABEL_SET).unwrap_or_else(|| UNKNOWN_LABEL_SET.into());
        meta.input_format = get(INPUT_FORMAT_KEY).unwrap_or_else(|| INPUT_FORMAT.into());
        meta.backbone = get(BACKBONE);
        meta.checkpoint = get(CHECKPOINT);
        meta.iteration = get(ITERATION).and_then(|s| s.trim().parse().ok());
        meta.model_config = get(MODEL_CONFIG);
        meta.weights = get(WEIGHTS);
        Ok(meta)
    }
}

fn parse_num_classes(value: Option<String>) -> Result<usize, InferError> {
    value
        .ok_or_else(|| bad(NUM_CLASSES, "is missing"))?
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_CLASSES).contains(n))
        .ok_or_else(|| bad(NUM_CLASSES, format!("is not a number in 1..={MAX_CLASSES}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    key: &'static str,
    value: &str,
    what: &str,
) -> Result<T, InferError> {
    serde_json::from_str(value).map_err(|e| bad(key, format!("is not {what} ({e})")))
}

fn check_len(key: &'static str, len: usize, n: usize, what: &str) -> Result<(), InferError> {
    if len == n {
        Ok(())
    } else {
        Err(bad(key, format!("lists {len} {what} for {n} classes")))
    }
}

/// Compact JSON of a metadata value (strings and colours always serialise).
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("metadata values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_palette_by_hand() {
        assert_eq!(custom_colour(0), [0, 0, 0]);
        assert_eq!(custom_colour(1), [128, 0, 0]);
        assert_eq!(custom_colour(2), [0, 128, 0]);
        assert_eq!(custom_colour(3), [128, 128, 0]);
        assert_eq!(custom_colour(4), [0, 0, 128]);
        assert_eq!(custom_colour(8), [64, 0, 0]);
        assert_eq!(custom_colour(15), [192, 128, 128]); // VOC "person"
    }

    #[test]
    fn fallbacks_are_cityscapes_for_19_and_custom_otherwise() {
        let m = ModelMetadata::for_classes(19);
        assert_eq!((m.class_names[0].as_str(), m.palette[0]), ("road", [128, 64, 128]));
        assert_eq!(m.label_set, "cityscapes19");
        let m = ModelMetadata::for_classes(5);
        assert_eq!(m.class_names[4], "class_4");
        assert_eq!(m.palette[1], [128, 0, 0]);
        assert_eq!(m.label_set, "custom5");
    }

    #[test]
    fn props_round_trip() {
        let mut m = ModelMetadata::for_classes(3);
        m.backbone = Some("small".into());
        m.iteration = Some(42);
        m.outputs = vec!["labels".into(), "logits".into()];
        m.model_config = Some("{\"num_classes\":3}".into());
        let map: HashMap<String, String> = m.to_props().into_iter().collect();
        assert_eq!(map[NUM_CLASSES], "3");
        assert!(!map.contains_key(CHECKPOINT));
        assert_eq!(ModelMetadata::from_map(&map).unwrap(), m);
    }

    #[test]
    fn only_the_class_count_is_required() {
        let map = HashMap::from([(NUM_CLASSES.to_string(), "19".to_string())]);
        let m = ModelMetadata::from_map(&map).unwrap();
        assert_eq!(m.class_names, default_class_names(19));
        assert_eq!(m.label_set, UNKNOWN_LABEL_SET);
        let e = ModelMetadata::from_map(&HashMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "metadata `rccr.num_classes` is missing");
        let map = HashMap::from([
            (NUM_CLASSES.to_string(), "2".to_string()),
            (CLASS_NAMES.to_string(), "[\"a\"]".to_string()),
        ]);
        let e = ModelMetadata::from_map(&map).unwrap_err();
        assert_eq!(e.to_string(), "metadata `rccr.class_names` lists 1 class names for 2 classes");
        let map = HashMap::from([(NUM_CLASSES.to_string(), "256".to_string())]);
        assert!(ModelMetadata::from_map(&map).is_err());
    }
}
