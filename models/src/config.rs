//! Network configuration: which backbone, how many classes, the classifier variant,
//! the projector head and the input normalisation. Serde-serialisable: it travels
//! inside every checkpoint and into the exported ONNX metadata.

use serde::{Deserialize, Serialize};

/// The encoder family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    /// ResNet-101, Caffe-style bottlenecks, blocks 3-4-23-3 (the paper's network). Default.
    #[default]
    Resnet101,
    /// ResNet-50, blocks 3-4-6-3.
    Resnet50,
    /// A narrow ResNet with basic blocks (1-1-1-1, widths 16-32-64-128) and the same
    /// stem, dilations and output stride 8; for CPU tests and the demo.
    Small,
}

impl Backbone {
    /// All backbones, in the order the CLI lists them.
    pub const ALL: [Backbone; 3] = [Backbone::Resnet101, Backbone::Resnet50, Backbone::Small];

    /// The lowercase name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Resnet101 => "resnet101",
            Backbone::Resnet50 => "resnet50",
            Backbone::Small => "small",
        }
    }

    /// Blocks per layer (layer1..layer4).
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Backbone::Resnet101 => [3, 4, 23, 3],
            Backbone::Resnet50 => [3, 4, 6, 3],
            Backbone::Small => [1, 1, 1, 1],
        }
    }

    /// Stem output width.
    pub fn stem_width(self) -> i64 {
        match self {
            Backbone::Small => 16,
            _ => 64,
        }
    }

    /// Base ("planes") width of layer1..layer4.
    pub fn planes(self) -> [i64; 4] {
        match self {
            Backbone::Small => [16, 32, 64, 128],
            _ => [64, 128, 256, 512],
        }
    }

    /// Channel expansion of a block: 4 for bottlenecks, 1 for basic blocks.
    pub fn expansion(self) -> i64 {
        match self {
            Backbone::Small => 1,
            _ => 4,
        }
    }

    /// Whether the blocks are Caffe-style bottlenecks (true) or basic blocks (false).
    pub fn bottleneck(self) -> bool {
        self.expansion() == 4
    }

    /// Width of the layer4 features (2048 for the ResNets, 128 for `small`).
    pub fn feature_width(self) -> i64 {
        self.planes()[3] * self.expansion()
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backbone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backbone::ALL
            .into_iter()
            .find(|b| b.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown backbone `{s}` (expected resnet101, resnet50 or small)")
            })
    }
}

/// How the pixels are normalised before the network. Recorded with the checkpoint and
/// baked into the exported graph so that deployment never guesses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputNorm {
    /// Feed the channels as BGR (true, DACS/Caffe) or RGB. Default: true.
    pub bgr: bool,
    /// Per-channel mean subtracted from 0..255 pixels, in the fed channel order.
    /// Default: DACS's (104.008, 116.669, 122.675) (BGR).
    pub mean: [f32; 3],
    /// Per-channel divisor applied after mean subtraction. Default: 1 (DACS: no std).
    pub std: [f32; 3],
}

impl Default for InputNorm {
    fn default() -> Self {
        InputNorm {
            bgr: true,
            mean: [104.008, 116.669, 122.675],
            std: [1.0, 1.0, 1.0],
        }
    }
}

/// Everything that fixes the network's shape. Defaults are the paper's network. An
/// unknown key is an error (usually a typo that would otherwise be ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Encoder. Default and paper: `resnet101`.
    pub backbone: Backbone,
    /// Number of output classes. Default: 19 (Cityscapes train ids); SYNTHIA runs also use 19
    /// and are scored on 16 / 13.
    pub num_classes: i64,
    /// ASPP branches summed by the classifier: 4 (dilations 6, 12, 18, 24; the paper's
    /// network, default) or 2 (dilations 6 and 12 only; the DACS/RCCR release bug, to
    /// reproduce published numbers).
    pub aspp_branches: usize,
    /// Projector hidden width. `None` (default) follows the backbone's feature width:
    /// 2048 for the ResNets, as in the paper.
    pub projector_hidden: Option<i64>,
    /// Projector output width K. Default and paper: 128.
    pub projector_dim: i64,
    /// Input normalisation. Default: DACS (BGR, mean subtraction, no std).
    pub input: InputNorm,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: Backbone::Resnet101,
            num_classes: 19,
            aspp_branches: 4,
            projector_hidden: None,
            projector_dim: 128,
            input: InputNorm::default(),
        }
    }
}

/// The dilations of the ASPP branches in the paper's classifier.
pub const ASPP_DILATIONS: [i64; 4] = [6, 12, 18, 24];

/// Output stride of every backbone: logits and features are at 1/8 of the input.
pub const OUTPUT_STRIDE: i64 = 8;

impl ModelConfig {
    /// The paper's network with `backbone` and `num_classes`.
    pub fn new(backbone: Backbone, num_classes: i64) -> Self {
        ModelConfig {
            backbone,
            num_classes,
            ..Default::default()
        }
    }

    /// Projector hidden width actually used.
    pub fn projector_hidden_width(&self) -> i64 {
        self.projector_hidden
            .unwrap_or_else(|| self.backbone.feature_width())
    }

    /// The dilations of the ASPP branches in use.
    pub fn aspp_dilations(&self) -> &'static [i64] {
        &ASPP_DILATIONS[..self.aspp_branches]
    }

    /// Checks the values a config file could get wrong.
    pub fn validate(&self) -> Result<(), crate::ModelError> {
        if !(self.aspp_branches == 4 || self.aspp_branches == 2) {
            return Err(crate::ModelError::Config(format!(
                "aspp_branches must be 4 (paper) or 2 (DACS release), got {}",
                self.aspp_branches
            )));
        }
        if self.num_classes < 1 || self.num_classes > 255 {
            return Err(crate::ModelError::Config(format!(
                "num_classes must be in 1..=255, got {}",
                self.num_classes
            )));
        }
        if self.projector_dim < 1 || self.projector_hidden.is_some_and(|h| h < 1) {
            return Err(crate::ModelError::Config(
                "projector widths must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Logit / feature size for an input of `h x w` pixels: each stride-2 stage of the
    /// stem and layer2 maps n -> floor((n + 2p - k) / s) + 1, the max-pool with ceil mode.
    pub fn output_size(h: i64, w: i64) -> (i64, i64) {
        fn f(n: i64) -> i64 {
            let conv1 = (n + 2 * 3 - 7) / 2 + 1;
            let pool = (conv1 + 2 - 3 + 1) / 2 + 1; // ceil((conv1 + 2 - 3) / 2) + 1
            (pool - 1) / 2 + 1
        }
        (f(h), f(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_json_reads_back_and_missing_keys_take_defaults() {
        let cfg = ModelConfig {
            aspp_branches: 2,
            projector_hidden: Some(256),
            ..ModelConfig::new(Backbone::Small, 5)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), cfg);
        let partial: ModelConfig = serde_json::from_str(r#"{"num_classes": 7}"#).unwrap();
        assert_eq!(partial, ModelConfig::new(Backbone::Resnet101, 7));
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it() {
        let e = serde_json::from_str::<ModelConfig>(r#"{"num_clases": 7}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `num_clases`"), "{e}");
        let e = serde_json::from_str::<ModelConfig>(
            r#"{"input": {"bgr": true, "mean": [0, 0, 0], "std": [1, 1, 1], "sdt": 1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `sdt`"), "{e}");
    }
}
