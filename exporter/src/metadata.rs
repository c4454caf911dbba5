//! The metadata of an exported teacher, written through the ONNX model contract
//! (`rccr_infer::contract`, whose keys, fallbacks and reader `rccr-infer` uses): the
//! contract's class names, label set and palette for the class count (Cityscapes for 19
//! classes, else `class_{i}` and the PASCAL VOC palette), and what only the exporter
//! knows: the backbone, the checkpoint and its iteration, the graph outputs, the full
//! model config and how the weights are stored.

use crate::options::Source;
use rccr_infer::contract::ModelMetadata;
use rccr_models::ModelConfig;

/// `rccr.weights` of a model with float32 weights.
pub(crate) const WEIGHTS_FLOAT32: &str = "float32";
/// `rccr.weights` of a model with float16 weights (cast to float32 in the graph).
pub(crate) const WEIGHTS_FLOAT16: &str = "float16";

/// The metadata of `config` exported from `source` with the graph outputs `outputs`,
/// its weights stored as float16 when `fp16`.
pub fn export_metadata(
    config: &ModelConfig,
    source: &Source,
    outputs: &[&str],
    fp16: bool,
) -> ModelMetadata {
    let mut m = ModelMetadata::for_classes(config.num_classes as usize);
    m.backbone = Some(config.backbone.name().to_string());
    m.checkpoint = Some(source.checkpoint.clone());
    m.iteration = Some(source.iteration);
    m.outputs = outputs.iter().map(|s| s.to_string()).collect();
    m.model_config = Some(serde_json::to_string(config).expect("a ModelConfig serialises"));
    m.weights = Some(
        if fp16 {
            WEIGHTS_FLOAT16
        } else {
            WEIGHTS_FLOAT32
        }
        .to_string(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            checkpoint: "c.st".into(),
            iteration: 7,
        }
    }

    #[test]
    fn cityscapes_and_custom_label_sets() {
        let m = export_metadata(&ModelConfig::default(), &source(), &["labels"], false);
        assert_eq!(m.label_set, "cityscapes19");
        assert_eq!(m.class_names[0], "road");
        assert_eq!(m.class_names[18], "bicycle");
        assert_eq!(m.palette[0], [128, 64, 128]);
        assert_eq!(m.weights.as_deref(), Some("float32"));
        let cfg = ModelConfig::new(rccr_models::Backbone::Small, 5);
        let m = export_metadata(&cfg, &source(), &["logits"], true);
        assert_eq!(m.label_set, "custom5");
        assert_eq!(m.class_names[4], "class_4");
        assert_eq!(m.palette[1], [128, 0, 0]);
        assert_eq!(m.weights.as_deref(), Some("float16"));
        assert_eq!(
            (m.iteration, m.backbone.as_deref()),
            (Some(7), Some("small"))
        );
    }
}
