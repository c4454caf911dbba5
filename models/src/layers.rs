//! The building blocks of the encoder: a convolution followed by batch norm, and the
//! two residual block types (Caffe-style bottleneck, basic block). Fields are public so
//! the exporter can walk the structure and emit the same graph in ONNX.

use tch::{nn, Tensor};

/// Batch-norm epsilon used everywhere (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Batch-norm momentum for the running statistics (PyTorch's default 0.1).
pub const BN_MOMENTUM: f64 = 0.1;

/// A bias-free convolution followed by batch norm (no activation).
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution (`<prefix conv>.weight`, no bias).
    pub conv: nn::Conv2D,
    /// The batch norm (`<prefix bn>.{weight,bias,running_mean,running_var}`).
    pub bn: nn::BatchNorm,
    /// Square kernel size.
    pub kernel: i64,
    /// Stride.
    pub stride: i64,
    /// Zero padding on each side.
    pub padding: i64,
    /// Dilation.
    pub dilation: i64,
}

impl ConvBn {
    /// Creates `conv_path` (conv) and `bn_path` (bn), torchvision-style names.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conv_path: nn::Path,
        bn_path: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        dilation: i64,
    ) -> ConvBn {
        let cfg = nn::ConvConfig {
            stride,
            padding,
            dilation,
            bias: false,
            ..Default::default()
        };
        let conv = nn::conv2d(conv_path, c_in, c_out, kernel, cfg);
        let bn = nn::batch_norm2d(
            bn_path,
            c_out,
            nn::BatchNormConfig {
                eps: BN_EPS,
                momentum: BN_MOMENTUM,
                ..Default::default()
            },
        );
        ConvBn {
            conv,
            bn,
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// conv -> bn. `train` selects batch statistics (and updates the running ones).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        crate::batch_norm::forward_t(&self.bn, &xs.apply(&self.conv), train)
    }
}

/// A residual block of either family.
// The variants differ by one ConvBn; blocks are built once per network, so boxing would
// only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Block {
    /// 1x1 (stride here, Caffe style) -> 3x3 (dilated) -> 1x1 x4, each with BN.
    Bottleneck {
        /// 1x1 reduce, carries the stride.
        conv1: ConvBn,
        /// 3x3, padding = dilation.
        conv2: ConvBn,
        /// 1x1 expand.
        conv3: ConvBn,
        /// 1x1 conv + BN on the shortcut, when shapes change or the layer is dilated.
        downsample: Option<ConvBn>,
    },
    /// 3x3 (stride) -> 3x3, each with BN.
    Basic {
        /// First 3x3, carries the stride and dilation.
        conv1: ConvBn,
        /// Second 3x3, dilated.
        conv2: ConvBn,
        /// Shortcut projection.
        downsample: Option<ConvBn>,
    },
}

impl Block {
    /// The block's convolutions in order, followed by the shortcut's if any.
    pub fn convs(&self) -> (Vec<&ConvBn>, Option<&ConvBn>) {
        match self {
            Block::Bottleneck {
                conv1,
                conv2,
                conv3,
                downsample,
            } => (vec![conv1, conv2, conv3], downsample.as_ref()),
            Block::Basic {
                conv1,
                conv2,
                downsample,
            } => (vec![conv1, conv2], downsample.as_ref()),
        }
    }

    /// relu(main(x) + shortcut(x)); every inner conv but the last is followed by a ReLU.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (convs, downsample) = self.convs();
        let mut ys = xs.shallow_clone();
        let last = convs.len() - 1;
        for (i, c) in convs.into_iter().enumerate() {
            ys = c.forward_t(&ys, train);
            if i != last {
                ys = ys.relu();
            }
        }
        let shortcut = match downsample {
            Some(d) => d.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}
