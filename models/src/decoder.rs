//! The two decoders on the Mix Transformer's four stage maps, at `decode_head.` under
//! mmseg's names so that DAFormer / MIC checkpoints load by name.
//!
//! - [`DaformerHead`], DAFormer's context-aware feature fusion (Hoyer et al., "DAFormer:
//!   Improving Network Architectures and Training Strategies for Domain-Adaptive Semantic
//!   Segmentation", CVPR 2022, Sec. 3.2 and Fig. 3; the `daformer_sepaspp_mitb5` model
//!   of its release): each stage's map is embedded to 256 channels by a linear layer
//!   (`embed_layers.{i}.proj`), resized bilinearly to stride 4 (align_corners false) and
//!   concatenated; the fusion is an ASPP (`fuse_layer`) of four branches, a 1x1 conv for
//!   dilation 1 and depthwise-separable 3x3 convs (depthwise, BN, ReLU, then pointwise,
//!   BN, ReLU) for dilations 6, 12, 18, each with BN and ReLU, whose concatenation a
//!   3x3 `bottleneck` conv with BN and ReLU fuses to 256 channels; then dropout of whole
//!   channels (training only) and the 1x1 classifier `conv_seg`.
//! - [`SegformerHead`], SegFormer's all-MLP decoder (Xie et al., NeurIPS 2021, Sec. 3.2,
//!   Eq. 4): per-stage linear embedding to C (`linear_c.{i}.proj`), resize to stride 4,
//!   concatenation in stage order (DAFormer's re-implementation; NVlabs' own release
//!   names the layers `linear_c4..1` and concatenates stage 4 first), a 1x1 conv + BN +
//!   ReLU (`linear_fuse`), dropout and the 1x1 classifier `linear_pred`. C = 256 for
//!   MiT-B0 / B1, 768 for B2..B5 (Sec. 4.1).
//!
//! Every batch norm goes through [`crate::batch_norm::forward_t`], so the trainer's
//! synchronised batch norm covers the decoders as it covers the ResNet. Initialisation
//! follows mmcv: conv + BN modules He-normal with fan_out (k^2 C_out) and BN 1 / 0, the
//! embeddings PyTorch's Linear default, `conv_seg` N(0, 0.01) with bias 0.

use crate::config::{Decoder, ModelConfig};
use crate::layers::{BN_EPS, BN_MOMENTUM};
use crate::mit::{to_map, to_tokens};
use tch::{nn, Tensor};

/// The dilations of DAFormer's fusion ASPP (its `daformer_sepaspp` model).
pub const DAFORMER_DILATIONS: [i64; 4] = [1, 6, 12, 18];

/// mmcv's `ConvModule` with BN and ReLU: bias-free conv (`conv`), BN (`bn`), ReLU.
#[derive(Debug)]
pub struct ConvBnRelu {
    /// The convolution, padding = dilation * (k / 2).
    pub conv: nn::Conv2D,
    /// Its batch norm.
    pub bn: nn::BatchNorm,
    /// Square kernel size.
    pub kernel: i64,
    /// Dilation (= padding for 3x3).
    pub dilation: i64,
    /// Groups (C_in for a depthwise conv, else 1).
    pub groups: i64,
}

impl ConvBnRelu {
    /// `k` x `k` conv from `c_in` to `c_out` with `dilation` and `groups`.
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, k: i64, dilation: i64, groups: i64) -> Self {
        let fan_out = (k * k * c_out) as f64;
        let cfg = nn::ConvConfig {
            padding: dilation * (k / 2),
            dilation,
            groups,
            bias: false,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_out).sqrt(),
            },
            ..Default::default()
        };
        let bn_cfg = nn::BatchNormConfig {
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            ..Default::default()
        };
        ConvBnRelu {
            conv: nn::conv2d(p / "conv", c_in, c_out, k, cfg),
            bn: nn::batch_norm2d(p / "bn", c_out, bn_cfg),
            kernel: k,
            dilation,
            groups,
        }
    }

    /// conv -> BN (batch statistics when `train`) -> ReLU.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        crate::batch_norm::forward_t(&self.bn, &xs.apply(&self.conv), train).relu()
    }
}

/// One ASPP branch of DAFormer's fusion.
// Four branches per network, built once; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AsppBranch {
    /// Dilation 1: a 1x1 [`ConvBnRelu`] (`aspp_modules.0.{conv,bn}`).
    Pointwise(ConvBnRelu),
    /// Dilation > 1: mmcv's `DepthwiseSeparableConvModule`, a dilated 3x3 depthwise
    /// [`ConvBnRelu`] (`depthwise_conv`) then a 1x1 one (`pointwise_conv`).
    Separable {
        /// 3x3 depthwise, dilation = padding.
        depthwise_conv: ConvBnRelu,
        /// 1x1 to the output width.
        pointwise_conv: ConvBnRelu,
    },
}

impl AsppBranch {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, dilation: i64) -> AsppBranch {
        if dilation == 1 {
            return AsppBranch::Pointwise(ConvBnRelu::new(p, c_in, c_out, 1, 1, 1));
        }
        AsppBranch::Separable {
            depthwise_conv: ConvBnRelu::new(&(p / "depthwise_conv"), c_in, c_in, 3, dilation, c_in),
            pointwise_conv: ConvBnRelu::new(&(p / "pointwise_conv"), c_in, c_out, 1, 1, 1),
        }
    }

    /// `[N, C_in, h, w]` -> `[N, C_out, h, w]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            AsppBranch::Pointwise(c) => c.forward_t(xs, train),
            AsppBranch::Separable {
                depthwise_conv,
                pointwise_conv,
            } => pointwise_conv.forward_t(&depthwise_conv.forward_t(xs, train), train),
        }
    }
}

/// Per-stage linear embeddings at `p / "{i}" / "proj"`, PyTorch's Linear initialisation.
fn embeddings(p: &nn::Path, widths: [i64; 4], dim: i64) -> Vec<nn::Linear> {
    widths
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let bound = 1.0 / (c as f64).sqrt();
            let init = nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let cfg = nn::LinearConfig {
                ws_init: init,
                bs_init: Some(init),
                bias: true,
            };
            nn::linear(p / i / "proj", c, dim, cfg)
        })
        .collect()
}

/// Each stage map embedded by its linear layer and resized to stage 1's size (bilinear,
/// align_corners false), concatenated in stage order: `[N, 4 D, H/4, W/4]`.
fn embed_and_concat(embed: &[nn::Linear], feats: &[Tensor]) -> Tensor {
    let size = feats[0].size();
    let (h, w) = (size[2], size[3]);
    let maps: Vec<Tensor> = embed
        .iter()
        .zip(feats)
        .map(|(linear, f)| {
            let (fh, fw) = (f.size()[2], f.size()[3]);
            let e = to_map(&to_tokens(f).apply(linear), fh, fw); // [N, D, fh, fw]
            if (fh, fw) == (h, w) {
                e
            } else {
                e.upsample_bilinear2d([h, w], false, None, None)
            }
        })
        .collect();
    Tensor::cat(&maps, 1)
}

/// The 1x1 classifier `conv_seg`: N(0, 0.01) weights, bias 0 (mmseg's BaseDecodeHead).
fn classifier(p: nn::Path, c_in: i64, num_classes: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.01,
        },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, c_in, num_classes, 1, cfg)
}

/// DAFormer's context-aware fusion decoder (see the module docs).
#[derive(Debug)]
pub struct DaformerHead {
    /// `embed_layers.{i}.proj`, C_i -> 256.
    pub embed_layers: Vec<nn::Linear>,
    /// `fuse_layer.aspp_modules.{j}`, 1024 -> 256 each.
    pub aspp_modules: Vec<AsppBranch>,
    /// `fuse_layer.bottleneck`, 3x3, 1024 -> 256.
    pub bottleneck: ConvBnRelu,
    /// `conv_seg`, 256 -> classes.
    pub conv_seg: nn::Conv2D,
    /// Channel dropout before `conv_seg` (training only).
    pub dropout: f64,
}

impl DaformerHead {
    /// Builds at `p` (`decode_head`) for stage widths `widths`.
    pub fn new(p: &nn::Path, widths: [i64; 4], dim: i64, num_classes: i64, dropout: f64) -> Self {
        let fuse = p / "fuse_layer";
        let aspp = &fuse / "aspp_modules";
        let n = DAFORMER_DILATIONS.len() as i64;
        DaformerHead {
            embed_layers: embeddings(&(p / "embed_layers"), widths, dim),
            aspp_modules: DAFORMER_DILATIONS
                .iter()
                .enumerate()
                .map(|(j, &d)| AsppBranch::new(&(&aspp / j), 4 * dim, dim, d))
                .collect(),
            bottleneck: ConvBnRelu::new(&(&fuse / "bottleneck"), n * dim, dim, 3, 1, 1),
            conv_seg: classifier(p / "conv_seg", dim, num_classes),
            dropout,
        }
    }

    /// The fused feature `[N, 256, H/4, W/4]` (before dropout and `conv_seg`).
    pub fn fused_t(&self, feats: &[Tensor], train: bool) -> Tensor {
        let x = embed_and_concat(&self.embed_layers, feats); // [N, 1024, H/4, W/4]
        let branches: Vec<Tensor> = self
            .aspp_modules
            .iter()
            .map(|b| b.forward_t(&x, train))
            .collect();
        self.bottleneck.forward_t(&Tensor::cat(&branches, 1), train)
    }
}

/// SegFormer's all-MLP decoder (see the module docs).
#[derive(Debug)]
pub struct SegformerHead {
    /// `linear_c.{i}.proj`, C_i -> C.
    pub linear_c: Vec<nn::Linear>,
    /// `linear_fuse`, 1x1 conv + BN + ReLU, 4 C -> C.
    pub linear_fuse: ConvBnRelu,
    /// `linear_pred`, C -> classes.
    pub linear_pred: nn::Conv2D,
    /// Channel dropout before `linear_pred` (training only).
    pub dropout: f64,
}

impl SegformerHead {
    /// Builds at `p` (`decode_head`) for stage widths `widths` and decoder width `dim`.
    pub fn new(p: &nn::Path, widths: [i64; 4], dim: i64, num_classes: i64, dropout: f64) -> Self {
        SegformerHead {
            linear_c: embeddings(&(p / "linear_c"), widths, dim),
            linear_fuse: ConvBnRelu::new(&(p / "linear_fuse"), 4 * dim, dim, 1, 1, 1),
            linear_pred: classifier(p / "linear_pred", dim, num_classes),
            dropout,
        }
    }

    /// The fused feature `[N, C, H/4, W/4]` (before dropout and `linear_pred`).
    pub fn fused_t(&self, feats: &[Tensor], train: bool) -> Tensor {
        let x = embed_and_concat(&self.linear_c, feats); // [N, 4C, H/4, W/4]
        self.linear_fuse.forward_t(&x, train)
    }
}

/// One of the two MiT decoders.
#[derive(Debug)]
pub enum MitHead {
    /// DAFormer's (default).
    Daformer(DaformerHead),
    /// SegFormer's.
    Segformer(SegformerHead),
}

impl MitHead {
    /// The decoder `config` names, at `p` (`decode_head`): SegFormer's for `segformer`,
    /// else DAFormer's (`aspp` on a MiT is refused by [`ModelConfig::validate`]).
    pub fn new(p: &nn::Path, config: &ModelConfig, widths: [i64; 4]) -> MitHead {
        let (dim, k, drop) = (config.decoder_width(), config.num_classes, config.dropout());
        match config.decoder() {
            Decoder::Segformer => MitHead::Segformer(SegformerHead::new(p, widths, dim, k, drop)),
            Decoder::Aspp | Decoder::Daformer => {
                MitHead::Daformer(DaformerHead::new(p, widths, dim, k, drop))
            }
        }
    }

    /// The fused feature at stride 4, before dropout and the classifier.
    pub fn fused_t(&self, feats: &[Tensor], train: bool) -> Tensor {
        match self {
            MitHead::Daformer(h) => h.fused_t(feats, train),
            MitHead::Segformer(h) => h.fused_t(feats, train),
        }
    }

    /// Dropout (training only) and the classifier on a fused feature: logits at stride 4.
    pub fn classify_t(&self, fused: &Tensor, train: bool) -> Tensor {
        let (conv, p) = match self {
            MitHead::Daformer(h) => (&h.conv_seg, h.dropout),
            MitHead::Segformer(h) => (&h.linear_pred, h.dropout),
        };
        crate::stochastic::channel_dropout(fused, p, train).apply(conv)
    }
}
