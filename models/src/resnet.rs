//! The DeepLabv2 encoder in the DACS layout: a ResNet with a 7x7/2 stem, ceil-mode
//! max-pool, Caffe-style bottlenecks (stride on the first 1x1), and layer3 / layer4
//! dilated by 2 / 4 at stride 1, so the output stride is 8 (paper Sec. 4.1; DeepLab [6]).
//! Parameter names mirror torchvision (`conv1`, `bn1`, `layer3.0.downsample.0`, ...)
//! so ImageNet weights load by name.

use crate::config::Backbone;
use crate::layers::{Block, ConvBn};
use tch::{nn, Tensor};

/// The encoder F_enc.
#[derive(Debug)]
pub struct Encoder {
    /// Which backbone this is.
    pub backbone: Backbone,
    /// `conv1` + `bn1` (7x7, stride 2, padding 3), followed by ReLU and the max-pool.
    pub stem: ConvBn,
    /// `layer1`..`layer4`.
    pub layers: [Vec<Block>; 4],
}

/// Stride and dilation of layer1..layer4.
pub const LAYER_STRIDES: [i64; 4] = [1, 2, 1, 1];
/// Dilation of layer1..layer4.
pub const LAYER_DILATIONS: [i64; 4] = [1, 1, 2, 4];

impl Encoder {
    /// Builds the encoder under `p` (names at the root of `p`: `p / "conv1"`, ...).
    pub fn new(p: &nn::Path, backbone: Backbone) -> Encoder {
        let stem_w = backbone.stem_width();
        let stem = ConvBn::new(p / "conv1", p / "bn1", 3, stem_w, 7, 2, 3, 1);
        let mut inplanes = stem_w;
        let blocks = backbone.blocks();
        let planes = backbone.planes();
        let exp = backbone.expansion();
        let layers: [Vec<Block>; 4] = std::array::from_fn(|l| {
            let lp = p / format!("layer{}", l + 1);
            let (stride, dilation) = (LAYER_STRIDES[l], LAYER_DILATIONS[l]);
            (0..blocks[l])
                .map(|b| {
                    let bp = &lp / b;
                    let s = if b == 0 { stride } else { 1 };
                    let out = planes[l] * exp;
                    // DACS: a shortcut projection on the first block when the stride or
                    // width changes, or the layer is dilated.
                    let downsample =
                        (b == 0 && (s != 1 || inplanes != out || dilation > 1)).then(|| {
                            let dp = &bp / "downsample";
                            ConvBn::new(&dp / 0, &dp / 1, inplanes, out, 1, s, 0, 1)
                        });
                    let block = if backbone.bottleneck() {
                        Block::Bottleneck {
                            conv1: ConvBn::new(
                                &bp / "conv1",
                                &bp / "bn1",
                                inplanes,
                                planes[l],
                                1,
                                s,
                                0,
                                1,
                            ),
                            conv2: ConvBn::new(
                                &bp / "conv2",
                                &bp / "bn2",
                                planes[l],
                                planes[l],
                                3,
                                1,
                                dilation,
                                dilation,
                            ),
                            conv3: ConvBn::new(
                                &bp / "conv3",
                                &bp / "bn3",
                                planes[l],
                                out,
                                1,
                                1,
                                0,
                                1,
                            ),
                            downsample,
                        }
                    } else {
                        Block::Basic {
                            conv1: ConvBn::new(
                                &bp / "conv1",
                                &bp / "bn1",
                                inplanes,
                                planes[l],
                                3,
                                s,
                                dilation,
                                dilation,
                            ),
                            conv2: ConvBn::new(
                                &bp / "conv2",
                                &bp / "bn2",
                                planes[l],
                                out,
                                3,
                                1,
                                dilation,
                                dilation,
                            ),
                            downsample,
                        }
                    };
                    inplanes = out;
                    block
                })
                .collect()
        });
        Encoder {
            backbone,
            stem,
            layers,
        }
    }

    /// Stem: conv1 -> bn1 -> ReLU -> max-pool 3x3/2, padding 1, ceil mode.
    pub fn stem_forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.stem
            .forward_t(xs, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], true)
    }

    /// The layer4 feature map M (1/8 of the input, `feature_width` channels).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem_forward_t(xs, train);
        for layer in &self.layers {
            for block in layer {
                ys = block.forward_t(&ys, train);
            }
        }
        ys
    }
}
