//! The `metadata_props` of an exported model: everything `rccr-infer` needs to run and
//! score it without guessing (classes, label set, palette, input format) and where it came
//! from (backbone, checkpoint, iteration, the full model config).

use rccr_infer::taxonomy;
use rccr_models::ModelConfig;
use serde::{Deserialize, Serialize};

/// Key: number of classes (decimal).
pub const NUM_CLASSES: &str = "rccr.num_classes";
/// Key: class names, a JSON array of strings in class-index (trainId) order.
pub const CLASS_NAMES: &str = "rccr.class_names";
/// Key: the label set: `cityscapes19` for 19 classes, else `custom<N>`.
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
/// Key: the [`ModelConfig`] as JSON (includes the input normalisation baked into the graph).
pub const MODEL_CONFIG: &str = "rccr.model_config";
/// Key: the storage type of the weights: `float32` or `float16` (extra, informative).
pub const WEIGHTS: &str = "rccr.weights";

/// The one input format of every exported model.
pub const INPUT_FORMAT: &str = "float32 RGB 0..255 NCHW";
/// The label set name of the 19 Cityscapes train ids.
pub const CITYSCAPES19: &str = "cityscapes19";

/// The metadata of an exported model, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Number of classes C.
    pub num_classes: usize,
    /// C class names.
    pub class_names: Vec<String>,
    /// `cityscapes19` or `custom<C>`.
    pub label_set: String,
    /// C colours.
    pub palette: Vec<[u8; 3]>,
    /// [`INPUT_FORMAT`].
    pub input_format: String,
    /// Backbone name.
    pub backbone: String,
    /// Source checkpoint path.
    pub checkpoint: String,
    /// Training iteration of the checkpoint.
    pub iteration: u64,
    /// Output names of the graph.
    pub outputs: Vec<String>,
    /// The network configuration.
    pub model_config: ModelConfig,
    /// `float32` or `float16`.
    pub weights: String,
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

impl Metadata {
    /// The metadata of `config` exported from `checkpoint` at `iteration`.
    pub fn new(
        config: &ModelConfig,
        checkpoint: &str,
        iteration: u64,
        outputs: &[&str],
        fp16: bool,
    ) -> Metadata {
        let c = config.num_classes as usize;
        let (class_names, label_set, palette) = if c == taxonomy::NUM_CLASSES {
            (
                taxonomy::class_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                CITYSCAPES19.to_string(),
                taxonomy::palette(),
            )
        } else {
            (
                (0..c).map(|i| format!("class_{i}")).collect(),
                format!("custom{c}"),
                (0..c).map(custom_colour).collect(),
            )
        };
        Metadata {
            num_classes: c,
            class_names,
            label_set,
            palette,
            input_format: INPUT_FORMAT.to_string(),
            backbone: config.backbone.name().to_string(),
            checkpoint: checkpoint.to_string(),
            iteration,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            model_config: config.clone(),
            weights: if fp16 { "float16" } else { "float32" }.to_string(),
        }
    }

    /// The `(key, value)` pairs written to `metadata_props`.
    pub fn to_props(&self) -> Vec<(String, String)> {
        vec![
            (NUM_CLASSES.into(), self.num_classes.to_string()),
            (CLASS_NAMES.into(), json(&self.class_names)),
            (LABEL_SET.into(), self.label_set.clone()),
            (PALETTE.into(), json(&self.palette)),
            (INPUT_FORMAT_KEY.into(), self.input_format.clone()),
            (BACKBONE.into(), self.backbone.clone()),
            (CHECKPOINT.into(), self.checkpoint.clone()),
            (ITERATION.into(), self.iteration.to_string()),
            (OUTPUTS.into(), json(&self.outputs)),
            (MODEL_CONFIG.into(), json(&self.model_config)),
            (WEIGHTS.into(), self.weights.clone()),
        ]
    }

    /// Parses the pairs back; `get` looks a key up. Errors name the key.
    pub fn from_props(get: impl Fn(&str) -> Option<String>) -> Result<Metadata, String> {
        let need = |k: &str| get(k).ok_or_else(|| format!("metadata key `{k}` is missing"));
        fn parse<T: serde::de::DeserializeOwned>(k: &str, v: String) -> Result<T, String> {
            serde_json::from_str(&v).map_err(|e| format!("metadata key `{k}`: {e} in `{v}`"))
        }
        Ok(Metadata {
            num_classes: parse(NUM_CLASSES, need(NUM_CLASSES)?)?,
            class_names: parse(CLASS_NAMES, need(CLASS_NAMES)?)?,
            label_set: need(LABEL_SET)?,
            palette: parse(PALETTE, need(PALETTE)?)?,
            input_format: need(INPUT_FORMAT_KEY)?,
            backbone: need(BACKBONE)?,
            checkpoint: need(CHECKPOINT)?,
            iteration: parse(ITERATION, need(ITERATION)?)?,
            outputs: parse(OUTPUTS, need(OUTPUTS)?)?,
            model_config: parse(MODEL_CONFIG, need(MODEL_CONFIG)?)?,
            weights: need(WEIGHTS)?,
        })
    }
}

/// Compact JSON of a metadata value (strings, colours and the model config always serialise).
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
    fn cityscapes_and_custom_label_sets() {
        let m = Metadata::new(&ModelConfig::default(), "c.st", 7, &["labels"], false);
        assert_eq!(m.label_set, "cityscapes19");
        assert_eq!(m.class_names[0], "road");
        assert_eq!(m.class_names[18], "bicycle");
        assert_eq!(m.palette[0], [128, 64, 128]);
        let cfg = ModelConfig::new(rccr_models::Backbone::Small, 5);
        let m = Metadata::new(&cfg, "c.st", 7, &["logits"], true);
        assert_eq!(m.label_set, "custom5");
        assert_eq!(m.class_names[4], "class_4");
        assert_eq!(m.weights, "float16");
    }
}
