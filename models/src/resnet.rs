//! The DeepLabv2 encoder in the DACS layout: a ResNet with a 7x7/2 stem, ceil-mode
//! max-pool, Caffe-style bottlenecks (stride on the first 1x1), and layer3 / layer4
//! dilated by 2 / 4 at stride 1, so the output stride is 8 (paper Sec. 4.1; DeepLab, ref. 6).
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

/// The shape of one residual block: input and inner widths, output width, stride of its
/// first convolution and dilation of its 3x3 convolutions.
#[derive(Debug, Clone, Copy)]
struct BlockShape {
    inplanes: i64,
    planes: i64,
    out: i64,
    stride: i64,
    dilation: i64,
}

/// `conv{n}` + `bn{n}` under `bp`: a `kernel` x `kernel` convolution padded by
/// `dilation * (kernel - 1) / 2`, so a stride of 1 keeps the size.
fn conv_bn(
    bp: &nn::Path,
    n: u8,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    dilation: i64,
) -> ConvBn {
    let (conv, bn) = (bp / format!("conv{n}"), bp / format!("bn{n}"));
    let padding = dilation * (kernel - 1) / 2;
    ConvBn::new(conv, bn, c_in, c_out, kernel, stride, padding, dilation)
}

/// A Caffe-style bottleneck (1x1 with the stride, dilated 3x3, 1x1) under `bp`.
fn bottleneck(bp: &nn::Path, g: BlockShape, downsample: Option<ConvBn>) -> Block {
    Block::Bottleneck {
        conv1: conv_bn(bp, 1, g.inplanes, g.planes, 1, g.stride, 1),
        conv2: conv_bn(bp, 2, g.planes, g.planes, 3, 1, g.dilation),
        conv3: conv_bn(bp, 3, g.planes, g.out, 1, 1, 1),
        downsample,
    }
}

/// A basic block (two dilated 3x3, the first with the stride) under `bp`.
fn basic(bp: &nn::Path, g: BlockShape, downsample: Option<ConvBn>) -> Block {
    Block::Basic {
        conv1: conv_bn(bp, 1, g.inplanes, g.planes, 3, g.stride, g.dilation),
        conv2: conv_bn(bp, 2, g.planes, g.out, 3, 1, g.dilation),
        downsample,
    }
}

/// Block `b` of a layer under `bp`. DACS: a shortcut projection (`downsample.0/1`) on the
/// first block when the stride or width changes, or the layer is dilated.
fn block(bp: &nn::Path, backbone: Backbone, b: usize, g: BlockShape) -> Block {
    let project = b == 0 && (g.stride != 1 || g.inplanes != g.out || g.dilation > 1);
    let downsample = project.then(|| {
        let dp = bp / "downsample";
        ConvBn::new(&dp / 0, &dp / 1, g.inplanes, g.out, 1, g.stride, 0, 1)
    });
    if backbone.bottleneck() {
        bottleneck(bp, g, downsample)
    } else {
        basic(bp, g, downsample)
    }
}

impl Encoder {
    /// Builds the encoder under `p` (names at the root of `p`: `p / "conv1"`, ...).
    pub fn new(p: &nn::Path, backbone: Backbone) -> Encoder {
        let stem_w = backbone.stem_width();
        let stem = conv_bn(p, 1, 3, stem_w, 7, 2, 1);
        let mut inplanes = stem_w;
        let (blocks, planes) = (backbone.blocks(), backbone.planes());
        let layers: [Vec<Block>; 4] = std::array::from_fn(|l| {
            let lp = p / format!("layer{}", l + 1);
            let out = planes[l] * backbone.expansion();
            (0..blocks[l])
                .map(|b| {
                    let shape = BlockShape {
                        inplanes,
                        planes: planes[l],
                        out,
                        stride: if b == 0 { LAYER_STRIDES[l] } else { 1 },
                        dilation: LAYER_DILATIONS[l],
                    };
                    inplanes = out;
                    block(&(&lp / b), backbone, b, shape)
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
