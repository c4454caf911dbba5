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
    /// Mix Transformer MiT-B0 (SegFormer, Xie et al. 2021, Tab. 6): widths 32-64-160-256.
    #[serde(rename = "mit-b0")]
    MitB0,
    /// MiT-B1: widths 64-128-320-512, depths 2-2-2-2.
    #[serde(rename = "mit-b1")]
    MitB1,
    /// MiT-B2: depths 3-4-6-3.
    #[serde(rename = "mit-b2")]
    MitB2,
    /// MiT-B3: depths 3-4-18-3.
    #[serde(rename = "mit-b3")]
    MitB3,
    /// MiT-B4: depths 3-8-27-3.
    #[serde(rename = "mit-b4")]
    MitB4,
    /// MiT-B5: depths 3-6-40-3 (DAFormer's encoder).
    #[serde(rename = "mit-b5")]
    MitB5,
}

impl Backbone {
    /// All backbones, in the order the CLI lists them.
    pub const ALL: [Backbone; 9] = [
        Backbone::Resnet101,
        Backbone::Resnet50,
        Backbone::Small,
        Backbone::MitB0,
        Backbone::MitB1,
        Backbone::MitB2,
        Backbone::MitB3,
        Backbone::MitB4,
        Backbone::MitB5,
    ];

    /// The lowercase name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Resnet101 => "resnet101",
            Backbone::Resnet50 => "resnet50",
            Backbone::Small => "small",
            Backbone::MitB0 => "mit-b0",
            Backbone::MitB1 => "mit-b1",
            Backbone::MitB2 => "mit-b2",
            Backbone::MitB3 => "mit-b3",
            Backbone::MitB4 => "mit-b4",
            Backbone::MitB5 => "mit-b5",
        }
    }

    /// The Mix Transformer's shape, `None` for the ResNets.
    pub fn mit(self) -> Option<MitSpec> {
        let depths = match self {
            Backbone::Resnet101 | Backbone::Resnet50 | Backbone::Small => return None,
            Backbone::MitB0 | Backbone::MitB1 => [2, 2, 2, 2],
            Backbone::MitB2 => [3, 4, 6, 3],
            Backbone::MitB3 => [3, 4, 18, 3],
            Backbone::MitB4 => [3, 8, 27, 3],
            Backbone::MitB5 => [3, 6, 40, 3],
        };
        let widths = match self {
            Backbone::MitB0 => [32, 64, 160, 256],
            _ => [64, 128, 320, 512],
        };
        Some(MitSpec {
            widths,
            depths,
            heads: [1, 2, 5, 8],
            mlp_ratio: 4,
            sr_ratios: [8, 4, 2, 1],
        })
    }

    /// Whether this is a Mix Transformer.
    pub fn is_mit(self) -> bool {
        self.mit().is_some()
    }

    /// Blocks per layer (layer1..layer4) of a ResNet; a MiT's blocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Backbone::Resnet101 => [3, 4, 23, 3],
            Backbone::Resnet50 => [3, 4, 6, 3],
            Backbone::Small => [1, 1, 1, 1],
            mit => mit.mit().map_or([1; 4], |m| m.depths),
        }
    }

    /// Stem output width of a ResNet (a MiT: its first stage's width).
    pub fn stem_width(self) -> i64 {
        match self {
            Backbone::Small => 16,
            Backbone::Resnet101 | Backbone::Resnet50 => 64,
            mit => mit.planes()[0],
        }
    }

    /// Base ("planes") width of layer1..layer4 (a MiT: the stage widths).
    pub fn planes(self) -> [i64; 4] {
        match self {
            Backbone::Small => [16, 32, 64, 128],
            Backbone::Resnet101 | Backbone::Resnet50 => [64, 128, 256, 512],
            mit => mit.mit().map_or([0; 4], |m| m.widths),
        }
    }

    /// Channel expansion of a block: 4 for bottlenecks, 1 for basic blocks and MiT.
    pub fn expansion(self) -> i64 {
        match self {
            Backbone::Resnet101 | Backbone::Resnet50 => 4,
            _ => 1,
        }
    }

    /// Whether the blocks are Caffe-style bottlenecks (true) or basic blocks (false).
    pub fn bottleneck(self) -> bool {
        self.expansion() == 4
    }

    /// Width of the encoder's last features: layer4 (2048 for the ResNets, 128 for
    /// `small`) or MiT's stage 4 (256 for B0, 512 otherwise).
    pub fn feature_width(self) -> i64 {
        self.planes()[3] * self.expansion()
    }

    /// The decoder used when the config names none: ASPP for the ResNets, DAFormer's
    /// for MiT.
    pub fn default_decoder(self) -> Decoder {
        if self.is_mit() {
            Decoder::Daformer
        } else {
            Decoder::Aspp
        }
    }

    /// The input normalisation used when the config names none: DACS's BGR mean for the
    /// ResNets, the ImageNet RGB mean / std the MiT checkpoints were trained with.
    pub fn default_input(self) -> InputNorm {
        if self.is_mit() {
            InputNorm::imagenet_rgb()
        } else {
            InputNorm::default()
        }
    }
}

/// The shape of a Mix Transformer (SegFormer Sec. 3.1 and Tab. 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MitSpec {
    /// Hidden width C_i of stages 1..4.
    pub widths: [i64; 4],
    /// Transformer blocks L_i per stage.
    pub depths: [usize; 4],
    /// Attention heads N_i per stage.
    pub heads: [i64; 4],
    /// Mix-FFN expansion E_i (4 in every stage and variant).
    pub mlp_ratio: i64,
    /// Spatial-reduction ratio R_i of the efficient self-attention.
    pub sr_ratios: [i64; 4],
}

/// The segmentation head after the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// DeepLabv2's ASPP classifier (`layer5`), ResNets only.
    Aspp,
    /// DAFormer's context-aware fusion decoder (Hoyer et al. 2022, Sec. 3.2), MiT only.
    Daformer,
    /// SegFormer's all-MLP decoder (Xie et al. 2021, Sec. 3.2), MiT only.
    Segformer,
}

impl Decoder {
    /// All decoders, in the order the CLI lists them.
    pub const ALL: [Decoder; 3] = [Decoder::Aspp, Decoder::Daformer, Decoder::Segformer];

    /// The lowercase name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Decoder::Aspp => "aspp",
            Decoder::Daformer => "daformer",
            Decoder::Segformer => "segformer",
        }
    }
}

impl std::fmt::Display for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Decoder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decoder::ALL
            .into_iter()
            .find(|d| d.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown decoder `{s}` (expected aspp, daformer or segformer)"))
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
                format!(
                    "unknown backbone `{s}` (expected resnet101, resnet50, small or mit-b0 .. mit-b5)"
                )
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

impl InputNorm {
    /// RGB, ImageNet mean and std in 0..255 units: what the MiT ImageNet checkpoints and
    /// DAFormer / MIC were trained with (mmseg's `img_norm_cfg`).
    pub fn imagenet_rgb() -> InputNorm {
        InputNorm {
            bgr: false,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        }
    }
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
/// unknown key is an error (usually a typo that would otherwise be ignored). Keys that
/// are absent take the defaults of the named backbone (decoder, input normalisation);
/// the MiT-only keys are written only when set, so a DeepLabv2 config reads and writes
/// exactly as before they existed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ConfigFile")]
pub struct ModelConfig {
    /// Encoder. Default and paper: `resnet101`.
    pub backbone: Backbone,
    /// Number of output classes. Default: 19 (Cityscapes train ids); SYNTHIA runs also use 19
    /// and are scored on 16 / 13.
    pub num_classes: i64,
    /// ASPP branches summed by the classifier: 4 (dilations 6, 12, 18, 24; the paper's
    /// network, default) or 2 (dilations 6 and 12 only; the DACS/RCCR release bug, to
    /// reproduce published numbers). Only read by the `aspp` decoder.
    pub aspp_branches: usize,
    /// Projector hidden width. `None` (default) follows the projector's input width:
    /// 2048 for the ResNets, as in the paper; the decoder's width for MiT.
    pub projector_hidden: Option<i64>,
    /// Projector output width K. Default and paper: 128.
    pub projector_dim: i64,
    /// Input normalisation. Default: the backbone's ([`Backbone::default_input`]).
    pub input: InputNorm,
    /// Segmentation head. `None` (default): the backbone's ([`Backbone::default_decoder`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<Decoder>,
    /// MiT stochastic-depth rate of the last block (rates rise linearly from 0 over the
    /// blocks; SegFormer Sec. 4.1). `None`: 0.1, as DAFormer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_path_rate: Option<f64>,
    /// Dropout (whole channels) before the MiT decoders' classifier. `None`: 0.1, as
    /// DAFormer and SegFormer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_dropout: Option<f64>,
}

/// [`ModelConfig`] as a file spells it: every key optional, unknown keys refused.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ConfigFile {
    backbone: Backbone,
    num_classes: Option<i64>,
    aspp_branches: Option<usize>,
    projector_hidden: Option<i64>,
    projector_dim: Option<i64>,
    input: Option<InputNorm>,
    decoder: Option<Decoder>,
    drop_path_rate: Option<f64>,
    decoder_dropout: Option<f64>,
}

impl From<ConfigFile> for ModelConfig {
    fn from(f: ConfigFile) -> ModelConfig {
        let d = ModelConfig::new(f.backbone, f.num_classes.unwrap_or(19));
        ModelConfig {
            aspp_branches: f.aspp_branches.unwrap_or(d.aspp_branches),
            projector_hidden: f.projector_hidden,
            projector_dim: f.projector_dim.unwrap_or(d.projector_dim),
            input: f.input.unwrap_or(d.input),
            decoder: f.decoder,
            drop_path_rate: f.drop_path_rate,
            decoder_dropout: f.decoder_dropout,
            ..d
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::new(Backbone::Resnet101, 19)
    }
}

/// Width of the MiT decoders' embeddings and fused feature: DAFormer's 256 (its
/// `embed_dims` and `channels`), also SegFormer's C for B0 / B1.
pub const DAFORMER_WIDTH: i64 = 256;

/// SegFormer's decoder width C for B2..B5 (SegFormer Sec. 4.1: 768).
pub const SEGFORMER_WIDE: i64 = 768;

/// Default of [`ModelConfig::drop_path_rate`] (DAFormer's `drop_path_rate`).
pub const DEFAULT_DROP_PATH: f64 = 0.1;

/// Default of [`ModelConfig::decoder_dropout`] (mmseg's `dropout_ratio`).
pub const DEFAULT_DECODER_DROPOUT: f64 = 0.1;

/// The stride of the grid on which RCCR's regions, embeddings and grid logits live for
/// every network (paper Sec. 3.2: the 1/8 feature map).
pub const GRID_STRIDE: i64 = 8;

/// The dilations of the ASPP branches in the paper's classifier.
pub const ASPP_DILATIONS: [i64; 4] = [6, 12, 18, 24];

/// Output stride of DeepLabv2 (every ResNet backbone): logits and features are at 1/8 of
/// the input. MiT's logits are at 1/4 ([`ModelConfig::output_stride`]); its RCCR grid
/// is at [`GRID_STRIDE`] = 8 all the same.
pub const OUTPUT_STRIDE: i64 = 8;

impl ModelConfig {
    /// The paper's network with `backbone` and `num_classes` (a MiT gets its own input
    /// normalisation and the DAFormer decoder).
    pub fn new(backbone: Backbone, num_classes: i64) -> Self {
        ModelConfig {
            backbone,
            num_classes,
            aspp_branches: 4,
            projector_hidden: None,
            projector_dim: 128,
            input: backbone.default_input(),
            decoder: None,
            drop_path_rate: None,
            decoder_dropout: None,
        }
    }

    /// Switches to `backbone`; an input normalisation that was the old backbone's
    /// default becomes the new one's (an explicit one stays).
    pub fn set_backbone(&mut self, backbone: Backbone) {
        if self.input == self.backbone.default_input() {
            self.input = backbone.default_input();
        }
        self.backbone = backbone;
    }

    /// The decoder in use (the backbone's default when the config names none).
    pub fn decoder(&self) -> Decoder {
        self.decoder
            .unwrap_or_else(|| self.backbone.default_decoder())
    }

    /// The stochastic-depth rate in use.
    pub fn drop_path(&self) -> f64 {
        self.drop_path_rate.unwrap_or(DEFAULT_DROP_PATH)
    }

    /// The decoder dropout in use.
    pub fn dropout(&self) -> f64 {
        self.decoder_dropout.unwrap_or(DEFAULT_DECODER_DROPOUT)
    }

    /// Width of a MiT decoder's embeddings and fused feature: 256 for DAFormer's and for
    /// SegFormer's on B0 / B1, 768 for SegFormer's on B2..B5 (SegFormer Sec. 4.1).
    pub fn decoder_width(&self) -> i64 {
        match (self.decoder(), self.backbone) {
            (Decoder::Segformer, Backbone::MitB0 | Backbone::MitB1) => DAFORMER_WIDTH,
            (Decoder::Segformer, _) => SEGFORMER_WIDE,
            _ => DAFORMER_WIDTH,
        }
    }

    /// Width of the projector's input: layer4's for DeepLabv2, the decoder's fused
    /// feature for MiT.
    pub fn feature_width(&self) -> i64 {
        match self.decoder() {
            Decoder::Aspp => self.backbone.feature_width(),
            _ => self.decoder_width(),
        }
    }

    /// Projector hidden width actually used.
    pub fn projector_hidden_width(&self) -> i64 {
        self.projector_hidden
            .unwrap_or_else(|| self.feature_width())
    }

    /// Stride of the logits: 8 for DeepLabv2, 4 for the MiT decoders.
    pub fn output_stride(&self) -> i64 {
        match self.decoder() {
            Decoder::Aspp => OUTPUT_STRIDE,
            _ => 4,
        }
    }

    /// Logit size for an `h x w` input: [`ModelConfig::output_size`] for DeepLabv2;
    /// ceil(n / 4) for MiT (the 7x7 / 4 patch embedding with padding 3).
    pub fn logits_size(&self, h: i64, w: i64) -> (i64, i64) {
        match self.decoder() {
            Decoder::Aspp => ModelConfig::output_size(h, w),
            _ => ((h + 3) / 4, (w + 3) / 4),
        }
    }

    /// Size of the RCCR grid (features, grid logits) for an `h x w` input: the logits'
    /// for DeepLabv2, every second stride-4 cell for MiT.
    pub fn grid_size(&self, h: i64, w: i64) -> (i64, i64) {
        let (lh, lw) = self.logits_size(h, w);
        match self.decoder() {
            Decoder::Aspp => (lh, lw),
            _ => ((lh + 1) / 2, (lw + 1) / 2),
        }
    }

    /// The dilations of the ASPP branches in use.
    pub fn aspp_dilations(&self) -> &'static [i64] {
        &ASPP_DILATIONS[..self.aspp_branches]
    }

    /// Checks the values a config file could get wrong.
    pub fn validate(&self) -> Result<(), crate::ModelError> {
        self.validate_decoder()?;
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

    fn validate_decoder(&self) -> Result<(), crate::ModelError> {
        let (mit, decoder) = (self.backbone.is_mit(), self.decoder());
        if mit == (decoder == Decoder::Aspp) {
            let fit = if mit { "daformer or segformer" } else { "aspp" };
            return Err(crate::ModelError::Config(format!(
                "decoder `{decoder}` does not fit backbone `{}`: use {fit} (or leave the \
                 decoder out for the backbone's default)",
                self.backbone
            )));
        }
        for (what, p) in [
            ("drop_path_rate", self.drop_path()),
            ("decoder_dropout", self.dropout()),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(crate::ModelError::Config(format!(
                    "{what} must be in [0, 1), got {p}"
                )));
            }
        }
        Ok(())
    }

    /// DeepLabv2's logit / feature size for an input of `h x w` pixels: each stride-2 stage of the
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

    #[test]
    fn a_mit_config_takes_its_backbone_defaults_and_writes_only_what_is_set() {
        let cfg: ModelConfig = serde_json::from_str(r#"{"backbone": "mit-b0"}"#).unwrap();
        assert_eq!(cfg.decoder(), Decoder::Daformer);
        assert_eq!(cfg.input.mean, [123.675, 116.28, 103.53]);
        assert!(!cfg.input.bgr);
        assert_eq!((cfg.feature_width(), cfg.output_stride()), (256, 4));
        assert_eq!(cfg.grid_size(57, 70), (8, 9));
        let json = serde_json::to_string(&ModelConfig::new(Backbone::Small, 5)).unwrap();
        assert!(
            !json.contains("decoder") && !json.contains("drop_path"),
            "{json}"
        );
        let seg = ModelConfig {
            decoder: Some(Decoder::Segformer),
            drop_path_rate: Some(0.2),
            ..ModelConfig::new(Backbone::MitB2, 19)
        };
        let json = serde_json::to_string(&seg).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), seg);
        assert_eq!(seg.feature_width(), 768);
    }

    #[test]
    fn a_decoder_that_does_not_fit_the_backbone_is_refused() {
        for (backbone, decoder) in [
            (Backbone::MitB1, Decoder::Aspp),
            (Backbone::Resnet50, Decoder::Daformer),
            (Backbone::Small, Decoder::Segformer),
        ] {
            let cfg = ModelConfig {
                decoder: Some(decoder),
                ..ModelConfig::new(backbone, 5)
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(
                e.contains(&format!("decoder `{decoder}` does not fit")),
                "{e}"
            );
        }
        let cfg = ModelConfig {
            drop_path_rate: Some(1.0),
            ..ModelConfig::new(Backbone::MitB0, 5)
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("drop_path_rate"));
    }

    #[test]
    fn switching_backbone_moves_a_default_input_normalisation_only() {
        let mut cfg = ModelConfig::default();
        cfg.set_backbone(Backbone::MitB1);
        assert_eq!(cfg.input, InputNorm::imagenet_rgb());
        cfg.set_backbone(Backbone::Small);
        assert_eq!(cfg.input, InputNorm::default());
        let custom = InputNorm {
            bgr: false,
            mean: [1.0, 2.0, 3.0],
            std: [4.0, 5.0, 6.0],
        };
        cfg.input = custom.clone();
        cfg.set_backbone(Backbone::MitB0);
        assert_eq!(cfg.input, custom);
    }
}
