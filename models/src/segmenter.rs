//! The segmentation network of either family behind one interface: DeepLabv2 (the
//! paper's, [`crate::deeplab`]) or the Mix Transformer (SegFormer, Xie et al. 2021) with
//! DAFormer's or SegFormer's decoder ([`crate::mit`], [`crate::decoder`]).
//!
//! # What RCCR reads from a MiT network
//!
//! RCCR's regions, anchors and embeddings live on the 1/8 feature grid of DeepLabv2
//! (paper Sec. 3.2: cell (i, j) of the grid sees crop pixel (8i, 8j)). A MiT network
//! keeps that grid: the projector reads DAFormer's fused decoder feature (the output of
//! the fusion's bottleneck, before dropout and `conv_seg`; SegFormer's `linear_fuse`
//! output for that decoder) subsampled `[:, :, ::2, ::2]` from stride 4 to stride 8
//! (cell 2i of a stride-4 map is centred on pixel 8i, so cell i of the result sees pixel
//! 8i as DeepLabv2's does), and the grid logits are the stride-4 logits subsampled the
//! same way. The alternatives cost more or see less: the stride-4 map would hold 4x the
//! anchors, and L_cont's anchors x negatives similarity matrix would take 4x the memory;
//! the last encoder stage, at stride 32, gives only a 16 x 16 grid on a 512 px crop,
//! too coarse for the class regions of the paper's 1/8 grid. The segmentation loss and
//! the pseudo-labels use the full stride-4 logits.

use crate::config::{MitSpec, ModelConfig};
use crate::decoder::MitHead;
use crate::deeplab::{self, DeepLabV2};
use crate::mit::MitEncoder;
use tch::{nn, Tensor};

/// What one forward pass gives.
#[derive(Debug)]
pub struct SegOutput {
    /// Logits at the network's native stride (8 for DeepLabv2, 4 for MiT), `N x C x h x w`.
    pub logits: Tensor,
    /// The projector's input on the stride-8 grid (cell (i, j) sees crop pixel (8i, 8j)):
    /// layer4 for DeepLabv2, the subsampled fused decoder feature for MiT.
    pub features: Tensor,
    /// The logits on the grid of `features`.
    pub grid_logits: Tensor,
    /// The encoder's last features (layer4; MiT's stage 4 at stride 32), for a feature
    /// distance.
    pub encoder: Tensor,
}

/// Every second row and column, from the first: stride 4 -> stride 8.
pub fn to_grid(xs: &Tensor) -> Tensor {
    xs.slice(2, 0, None, 2).slice(3, 0, None, 2)
}

/// MiT encoder + DAFormer or SegFormer decoder.
#[derive(Debug)]
pub struct MitSegmenter {
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// The encoder, at the VarStore root.
    pub encoder: MitEncoder,
    /// The decoder, at `decode_head`.
    pub head: MitHead,
}

impl MitSegmenter {
    /// Builds `spec`'s encoder under `p` and `config`'s decoder at `decode_head`.
    pub fn new(p: &nn::Path, config: &ModelConfig, spec: MitSpec) -> MitSegmenter {
        MitSegmenter {
            config: config.clone(),
            encoder: MitEncoder::new(p, spec, config.drop_path()),
            head: MitHead::new(&(p / "decode_head"), config, spec.widths),
        }
    }

    /// Forward on normalised input `[N, 3, H, W]`; `train` selects both batch
    /// statistics and the stochastic layers ([`MitSegmenter::forward_with`]).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SegOutput {
        self.forward_with(xs, train, train)
    }

    /// Forward with the batch-norm mode (`batch_stats`) and the stochastic layers (drop
    /// path, decoder dropout: `stochastic`) chosen apart. DAFormer's EMA teacher runs
    /// with batch statistics and without the stochastic layers (`true, false`).
    pub fn forward_with(&self, xs: &Tensor, batch_stats: bool, stochastic: bool) -> SegOutput {
        // The encoder has no batch norm: its mode is drop path alone.
        let mut feats = self.encoder.forward_t(xs, stochastic); // 4 x [N, C_i, H/2^(i+2), ..]
        let fused = self.head.fused_t(&feats, batch_stats); // [N, D, H/4, W/4]
        let logits = self.head.classify_t(&fused, stochastic); // [N, K, H/4, W/4]
        SegOutput {
            features: to_grid(&fused),
            grid_logits: to_grid(&logits),
            logits,
            encoder: feats.pop().expect("four stages"),
        }
    }

    /// The projector's input alone: `[N, D, ceil(H/8), ceil(W/8)]`.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let feats = self.encoder.forward_t(xs, train);
        to_grid(&self.head.fused_t(&feats, train))
    }
}

/// The segmentation network F_enc + F_seg of either family.
// Built once per network; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Segmenter {
    /// DeepLabv2 on a ResNet.
    DeepLab(DeepLabV2),
    /// MiT with DAFormer's or SegFormer's decoder.
    Mit(MitSegmenter),
}

impl Segmenter {
    /// The network `config` names (a MiT backbone: [`MitSegmenter`], else DeepLabv2).
    pub fn new(p: &nn::Path, config: &ModelConfig) -> Segmenter {
        match config.backbone.mit() {
            Some(spec) => Segmenter::Mit(MitSegmenter::new(p, config, spec)),
            None => Segmenter::DeepLab(DeepLabV2::new(p, config)),
        }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Segmenter::DeepLab(n) => &n.config,
            Segmenter::Mit(n) => &n.config,
        }
    }

    /// DeepLabv2, when it is one.
    pub fn as_deeplab(&self) -> Option<&DeepLabV2> {
        match self {
            Segmenter::DeepLab(n) => Some(n),
            Segmenter::Mit(_) => None,
        }
    }

    /// The MiT network, when it is one.
    pub fn as_mit(&self) -> Option<&MitSegmenter> {
        match self {
            Segmenter::DeepLab(_) => None,
            Segmenter::Mit(n) => Some(n),
        }
    }

    /// RGB 0..255 `[N, 3, H, W]` normalised as the config says ([`deeplab::normalize`]).
    pub fn normalize(&self, rgb255: &Tensor) -> Tensor {
        deeplab::normalize(self.config(), rgb255)
    }

    /// Forward on normalised input (see [`SegOutput`]).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SegOutput {
        match self {
            Segmenter::DeepLab(n) => n.forward_t(xs, train),
            Segmenter::Mit(n) => n.forward_t(xs, train),
        }
    }

    /// Forward with batch-norm mode and stochastic layers chosen apart (see
    /// [`MitSegmenter::forward_with`]); DeepLabv2 has no stochastic layer, so
    /// `stochastic` changes nothing there.
    pub fn forward_with(&self, xs: &Tensor, batch_stats: bool, stochastic: bool) -> SegOutput {
        match self {
            Segmenter::DeepLab(n) => n.forward_t(xs, batch_stats),
            Segmenter::Mit(n) => n.forward_with(xs, batch_stats, stochastic),
        }
    }

    /// The final encoder stage alone (`SegOutput::encoder`: layer4 of DeepLabv2, stage 4 of
    /// MiT), without the decoder or classifier; `train` selects BN batch statistics
    /// (DeepLabv2) or drop path (MiT).
    pub fn encoder_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Segmenter::DeepLab(n) => n.encoder.forward_t(xs, train),
            Segmenter::Mit(n) => {
                let mut stages = n.encoder.forward_t(xs, train);
                stages.pop().expect("four stages")
            }
        }
    }

    /// The projector's input on the stride-8 grid, without the classifier.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Segmenter::DeepLab(n) => n.encoder.forward_t(xs, train),
            Segmenter::Mit(n) => n.features_t(xs, train),
        }
    }

    /// Logits bilinearly resized to `h x w` as each family's training does:
    /// align_corners true for DeepLabv2 (DACS), false for MiT (mmseg's `resize`).
    pub fn upsample_logits(&self, logits: &Tensor, h: i64, w: i64) -> Tensor {
        match self {
            Segmenter::DeepLab(_) => deeplab::upsample_logits(logits, h, w),
            Segmenter::Mit(_) => logits.upsample_bilinear2d([h, w], false, None, None),
        }
    }

    /// Logits at the input's size.
    pub fn forward_upsampled(&self, xs: &Tensor, train: bool) -> Tensor {
        let (h, w) = (xs.size()[2], xs.size()[3]);
        self.upsample_logits(&self.forward_t(xs, train).logits, h, w)
    }
}
