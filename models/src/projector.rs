//! The projector head F_proj (paper Sec. 3.2.1): two 1x1 convolutions D -> D_hidden -> K
//! with a ReLU between, then L2 normalisation per location, mapping the features M
//! (h x w x D: layer4 for DeepLabv2, the fused decoder feature on the 1/8 grid for MiT,
//! see [`crate::segmenter`]) to the embeddings E (h x w x K). Student and teacher each own one; the
//! teacher's is the EMA of the student's (Eq. 2).

use crate::config::ModelConfig;
use tch::{nn, Tensor};

/// `projector.0` (1x1 conv, bias) -> ReLU -> `projector.2` (1x1 conv, bias) -> L2 norm.
#[derive(Debug)]
pub struct Projector {
    /// D -> hidden.
    pub conv1: nn::Conv2D,
    /// hidden -> K.
    pub conv2: nn::Conv2D,
}

impl Projector {
    /// Builds under `p` (`p / "0"` and `p / "2"`, PyTorch nn.Sequential names).
    pub fn new(p: &nn::Path, config: &ModelConfig) -> Projector {
        let d = config.feature_width();
        let hidden = config.projector_hidden_width();
        let cfg = nn::ConvConfig::default();
        Projector {
            conv1: nn::conv2d(p / "0", d, hidden, 1, cfg),
            conv2: nn::conv2d(p / "2", hidden, config.projector_dim, 1, cfg),
        }
    }

    /// Unit-length embeddings `N x K x h x w`.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        let e = features.apply(&self.conv1).relu().apply(&self.conv2);
        l2_normalize(&e, 1)
    }
}

/// x / max(||x||_2, 1e-12) along `dim` (torch.nn.functional.normalize).
pub fn l2_normalize(xs: &Tensor, dim: i64) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [dim], true).clamp_min(1e-12);
    xs / norm
}
