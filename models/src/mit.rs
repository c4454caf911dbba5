//! The Mix Transformer encoder MiT-B0..B5 (Xie et al., "SegFormer: Simple and Efficient
//! Design for Semantic Segmentation with Transformers", NeurIPS 2021, Sec. 3.1), the
//! encoder of DAFormer (Hoyer et al., CVPR 2022) and its successors.
//!
//! Four stages; stage i embeds its input with an overlapping patch embedding (a strided
//! convolution, 7x7 / 4 padding 3 for stage 1, 3x3 / 2 padding 1 after, then LayerNorm)
//! and runs L_i transformer blocks on the tokens, each
//! `x + DropPath(Attn(LN(x)))` then `x + DropPath(MixFFN(LN(x)))`:
//!
//! - efficient self-attention: keys and values come from the tokens reduced by a
//!   R_i x R_i / R_i convolution and a LayerNorm (R = 8, 4, 2, 1), so the cost is
//!   O(N^2 / R^2) (Eq. 2);
//! - Mix-FFN: Linear -> 3x3 depthwise convolution -> GELU -> Linear (Eq. 3), which gives
//!   the positional information instead of a positional encoding.
//!
//! Each stage ends with a LayerNorm and gives a `N x C_i x H/2^(i+1) x W/2^(i+1)` map
//! (strides 4, 8, 16, 32). Stochastic depth (drop path) is applied in training only, at
//! rates rising linearly from 0 to `drop_path_rate` over all blocks.
//!
//! Variable names are those of the official checkpoints (`patch_embed1.proj.weight`,
//! `block1.0.attn.sr.weight`, `block1.0.mlp.dwconv.dwconv.weight`, `norm1.weight`, ...),
//! at the root of the VarStore as the ResNet encoder is. LayerNorm epsilons follow the
//! released models: 1e-6 in the blocks and the stage norms, PyTorch's 1e-5 in the patch
//! embeddings and the attention's reduction norm. Initialisation follows the release:
//! Linear weights N(0, 0.02) (its truncation at +-2 is 100 standard deviations away, so
//! a plain normal is the same law), biases 0, convolutions N(0, sqrt(2 / fan_out)) with
//! fan_out = k * k * C_out / groups, LayerNorm 1 / 0.

use crate::config::MitSpec;
use tch::{nn, Kind, Tensor};

/// LayerNorm epsilon of the blocks and stage norms.
pub const BLOCK_LN_EPS: f64 = 1e-6;
/// LayerNorm epsilon of the patch embeddings and the attention's reduction norm.
pub const EMBED_LN_EPS: f64 = 1e-5;

/// Linear layer initialised as the release (weights N(0, 0.02), bias 0).
pub fn linear(p: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, c_in, c_out, cfg)
}

/// LayerNorm over the last dimension, weight 1 and bias 0.
pub fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    let cfg = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![dim], cfg)
}

/// Convolution with bias, N(0, sqrt(2 / fan_out)) weights (fan_out = k^2 C_out / groups).
pub fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, cfg: nn::ConvConfig) -> nn::Conv2D {
    let fan_out = (k * k * c_out / cfg.groups) as f64;
    let cfg = nn::ConvConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_out).sqrt(),
        },
        bs_init: nn::Init::Const(0.0),
        bias: true,
        ..cfg
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// `[N, C, H, W]` -> `[N, H*W, C]`.
pub fn to_tokens(xs: &Tensor) -> Tensor {
    xs.flatten(2, -1).transpose(1, 2)
}

/// `[N, H*W, C]` -> `[N, C, H, W]`.
pub fn to_map(xs: &Tensor, h: i64, w: i64) -> Tensor {
    let (n, c) = (xs.size()[0], xs.size()[2]);
    xs.transpose(1, 2).reshape([n, c, h, w])
}

/// Overlapping patch embedding: strided convolution `proj` then LayerNorm `norm`.
#[derive(Debug)]
pub struct PatchEmbed {
    /// k x k, stride s, padding k / 2.
    pub proj: nn::Conv2D,
    /// LayerNorm over the channels (eps 1e-5).
    pub norm: nn::LayerNorm,
    /// Kernel size (7 for stage 1, 3 after).
    pub kernel: i64,
    /// Stride (4 for stage 1, 2 after).
    pub stride: i64,
}

impl PatchEmbed {
    /// `patch_size` x `patch_size` / `stride` embedding from `c_in` to `c_out` channels.
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> PatchEmbed {
        let cfg = nn::ConvConfig {
            stride,
            padding: kernel / 2,
            ..Default::default()
        };
        PatchEmbed {
            proj: conv(p / "proj", c_in, c_out, kernel, cfg),
            norm: layer_norm(p / "norm", c_out, EMBED_LN_EPS),
            kernel,
            stride,
        }
    }

    /// `[N, C_in, H, W]` -> (`[N, h*w, C]`, h, w).
    pub fn forward(&self, xs: &Tensor) -> (Tensor, i64, i64) {
        let map = xs.apply(&self.proj); // [N, C, h, w]
        let (h, w) = (map.size()[2], map.size()[3]);
        (to_tokens(&map).apply(&self.norm), h, w)
    }
}

/// Efficient self-attention (SegFormer Eq. 1-2) with spatial reduction `sr` + `norm`.
#[derive(Debug)]
pub struct Attention {
    /// Queries, C -> C.
    pub q: nn::Linear,
    /// Keys and values together, C -> 2C (keys first).
    pub kv: nn::Linear,
    /// Output projection.
    pub proj: nn::Linear,
    /// R x R / R convolution and LayerNorm (eps 1e-5) on the key / value tokens, R > 1.
    pub sr: Option<(nn::Conv2D, nn::LayerNorm)>,
    /// Heads.
    pub heads: i64,
    /// Reduction ratio R.
    pub sr_ratio: i64,
}

impl Attention {
    /// Width `dim`, `heads` heads, reduction ratio `sr_ratio`.
    pub fn new(p: &nn::Path, dim: i64, heads: i64, sr_ratio: i64) -> Attention {
        let sr = (sr_ratio > 1).then(|| {
            let cfg = nn::ConvConfig {
                stride: sr_ratio,
                ..Default::default()
            };
            (
                conv(p / "sr", dim, dim, sr_ratio, cfg),
                layer_norm(p / "norm", dim, EMBED_LN_EPS),
            )
        });
        Attention {
            q: linear(p / "q", dim, dim),
            kv: linear(p / "kv", dim, 2 * dim),
            proj: linear(p / "proj", dim, dim),
            sr,
            heads,
            sr_ratio,
        }
    }

    /// `[N, h*w, C]` -> `[N, h*w, C]`.
    pub fn forward(&self, xs: &Tensor, h: i64, w: i64) -> Tensor {
        let (n, l, c) = (xs.size()[0], xs.size()[1], xs.size()[2]);
        let dh = c / self.heads;
        let q = xs
            .apply(&self.q)
            .view([n, l, self.heads, dh])
            .transpose(1, 2); // [N, heads, L, dh]
        let reduced = match &self.sr {
            Some((sr, norm)) => to_tokens(&to_map(xs, h, w).apply(sr)).apply(norm), // [N, L/R^2, C]
            None => xs.shallow_clone(),
        };
        let kv = reduced
            .apply(&self.kv)
            .view([n, -1, 2, self.heads, dh])
            .permute([2, 0, 3, 1, 4]); // [2, N, heads, L', dh]
        let scale = (dh as f64).powf(-0.5);
        let attn = (q.matmul(&kv.get(0).transpose(-2, -1)) * scale).softmax(-1, None::<Kind>); // [N, heads, L, L']
        let out = attn.matmul(&kv.get(1)); // [N, heads, L, dh]
        out.transpose(1, 2).reshape([n, l, c]).apply(&self.proj)
    }
}

/// Mix-FFN (SegFormer Eq. 3): `fc1` -> 3x3 depthwise `dwconv.dwconv` -> GELU -> `fc2`.
#[derive(Debug)]
pub struct MixFfn {
    /// C -> E C.
    pub fc1: nn::Linear,
    /// 3x3 depthwise convolution with bias, padding 1, on the E C channels.
    pub dwconv: nn::Conv2D,
    /// E C -> C.
    pub fc2: nn::Linear,
}

impl MixFfn {
    /// Width `dim`, hidden width `hidden`.
    pub fn new(p: &nn::Path, dim: i64, hidden: i64) -> MixFfn {
        let cfg = nn::ConvConfig {
            padding: 1,
            groups: hidden,
            ..Default::default()
        };
        MixFfn {
            fc1: linear(p / "fc1", dim, hidden),
            dwconv: conv(p / "dwconv" / "dwconv", hidden, hidden, 3, cfg),
            fc2: linear(p / "fc2", hidden, dim),
        }
    }

    /// `[N, h*w, C]` -> `[N, h*w, C]`; GELU is the exact (erf) one.
    pub fn forward(&self, xs: &Tensor, h: i64, w: i64) -> Tensor {
        let hidden = xs.apply(&self.fc1); // [N, L, EC]
        let mixed = to_tokens(&to_map(&hidden, h, w).apply(&self.dwconv)); // [N, L, EC]
        mixed.gelu("none").apply(&self.fc2)
    }
}

/// Stochastic depth (Huang et al. 2016): in training, each sample's residual branch is
/// dropped with probability `p` and the kept ones scaled by 1 / (1 - p) (masks from
/// [`crate::stochastic`]).
pub fn drop_path(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    let keep = 1.0 - p;
    let mut shape = vec![1i64; xs.dim()];
    shape[0] = xs.size()[0];
    xs * (crate::stochastic::keep_mask(&shape, keep, xs) / keep)
}

/// One transformer block: pre-norm attention and Mix-FFN, each residual.
#[derive(Debug)]
pub struct Block {
    /// LayerNorm before the attention (eps 1e-6).
    pub norm1: nn::LayerNorm,
    /// Efficient self-attention.
    pub attn: Attention,
    /// LayerNorm before the Mix-FFN (eps 1e-6).
    pub norm2: nn::LayerNorm,
    /// Mix-FFN.
    pub mlp: MixFfn,
    /// This block's drop-path rate.
    pub drop_path: f64,
}

impl Block {
    /// Block of width `dim` in a stage with `heads`, `sr_ratio` and `mlp_ratio`.
    pub fn new(
        p: &nn::Path,
        dim: i64,
        heads: i64,
        sr_ratio: i64,
        mlp_ratio: i64,
        dp: f64,
    ) -> Block {
        Block {
            norm1: layer_norm(p / "norm1", dim, BLOCK_LN_EPS),
            attn: Attention::new(&(p / "attn"), dim, heads, sr_ratio),
            norm2: layer_norm(p / "norm2", dim, BLOCK_LN_EPS),
            mlp: MixFfn::new(&(p / "mlp"), dim, dim * mlp_ratio),
            drop_path: dp,
        }
    }

    /// `[N, h*w, C]` -> `[N, h*w, C]`.
    pub fn forward_t(&self, xs: &Tensor, h: i64, w: i64, train: bool) -> Tensor {
        let a = self.attn.forward(&xs.apply(&self.norm1), h, w);
        let xs = xs + drop_path(&a, self.drop_path, train);
        let m = self.mlp.forward(&xs.apply(&self.norm2), h, w);
        &xs + drop_path(&m, self.drop_path, train)
    }
}

/// One stage: `patch_embed{i}`, `block{i}.{j}`, `norm{i}`.
#[derive(Debug)]
pub struct Stage {
    /// The overlapping patch embedding.
    pub patch_embed: PatchEmbed,
    /// The transformer blocks.
    pub blocks: Vec<Block>,
    /// The stage's final LayerNorm (eps 1e-6).
    pub norm: nn::LayerNorm,
}

impl Stage {
    /// `[N, C_in, H, W]` -> `[N, C, H/s, W/s]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (mut tokens, h, w) = self.patch_embed.forward(xs); // [N, h*w, C]
        for block in &self.blocks {
            tokens = block.forward_t(&tokens, h, w, train);
        }
        to_map(&tokens.apply(&self.norm), h, w)
    }
}

/// The MiT encoder: four stages.
#[derive(Debug)]
pub struct MitEncoder {
    /// Its shape.
    pub spec: MitSpec,
    /// Stages 1..4.
    pub stages: Vec<Stage>,
}

/// The drop-path rate of every block: linear from 0 to `rate` over all blocks.
pub fn drop_path_rates(depths: [usize; 4], rate: f64) -> Vec<f64> {
    let total: usize = depths.iter().sum();
    (0..total)
        .map(|i| match total {
            1 => 0.0,
            _ => rate * i as f64 / (total - 1) as f64,
        })
        .collect()
}

impl MitEncoder {
    /// Builds the stages at `p` (the VarStore root for the official names).
    pub fn new(p: &nn::Path, spec: MitSpec, drop_path_rate: f64) -> MitEncoder {
        let mut rates = drop_path_rates(spec.depths, drop_path_rate).into_iter();
        let mut c_in = 3;
        let stages = (0..4)
            .map(|i| {
                let (c, s) = (spec.widths[i], i + 1);
                let (k, stride) = if i == 0 { (7, 4) } else { (3, 2) };
                let patch_embed =
                    PatchEmbed::new(&(p / format!("patch_embed{s}")), c_in, c, k, stride);
                let bp = p / format!("block{s}");
                let blocks = (0..spec.depths[i])
                    .map(|j| {
                        let dp = rates.next().unwrap_or(0.0);
                        Block::new(
                            &(&bp / j),
                            c,
                            spec.heads[i],
                            spec.sr_ratios[i],
                            spec.mlp_ratio,
                            dp,
                        )
                    })
                    .collect();
                c_in = c;
                let norm = layer_norm(p / format!("norm{s}"), c, BLOCK_LN_EPS);
                Stage {
                    patch_embed,
                    blocks,
                    norm,
                }
            })
            .collect();
        MitEncoder { spec, stages }
    }

    /// `[N, 3, H, W]` -> the four stage maps `[N, C_i, ceil(H / 2^(i+2)), ...]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(4);
        for stage in &self.stages {
            let input = outs.last().unwrap_or(xs);
            let out = stage.forward_t(input, train);
            outs.push(out);
        }
        outs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn drop_path_keeps_or_drops_whole_samples_in_training_only() {
        let x = Tensor::ones([64, 3, 4], (Kind::Float, Device::Cpu));
        assert!(drop_path(&x, 0.5, false).equal(&x));
        let y = drop_path(&x, 0.5, true);
        let per_sample: Vec<f32> =
            Vec::try_from(y.mean_dim(&[1i64, 2][..], false, Kind::Float)).unwrap();
        let flat: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        // Each sample is all 0 (dropped) or all 1 / (1 - 0.5) = 2 (kept and rescaled).
        assert!(flat.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(per_sample.iter().all(|&m| m == 0.0 || m == 2.0));
        assert!(per_sample.contains(&0.0) && per_sample.contains(&2.0));
    }

    #[test]
    fn drop_path_rates_rise_linearly_from_zero_to_the_rate() {
        let r = drop_path_rates([2, 2, 2, 2], 0.7);
        assert_eq!(r.len(), 8);
        for (i, v) in r.iter().enumerate() {
            assert!((v - 0.1 * i as f64).abs() < 1e-12, "{i}: {v}");
        }
    }
}
