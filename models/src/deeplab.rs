//! DeepLabv2: the encoder F_enc followed by the ASPP classifier F_seg ("layer5"), four
//! (or, to reproduce the DACS release, two) dilated 3x3 convolutions whose outputs are
//! summed. `forward_t` gives the 1/8 logits P and the layer4 features M that the
//! projector maps to embeddings (paper Sec. 3.2.1, Fig. 2).

use crate::config::ModelConfig;
use crate::resnet::Encoder;
pub use crate::segmenter::SegOutput;
use tch::{nn, Kind, Tensor};

/// The ASPP classifier: `layer5.conv2d_list.{i}` 3x3 convs with bias, dilation = padding.
#[derive(Debug)]
pub struct Aspp {
    /// One convolution per branch.
    pub branches: Vec<nn::Conv2D>,
    /// The dilation (and padding) of each branch.
    pub dilations: Vec<i64>,
}

impl Aspp {
    /// Weights N(0, 0.01), bias 0, as DACS initialises them.
    pub fn new(p: &nn::Path, c_in: i64, num_classes: i64, dilations: &[i64]) -> Aspp {
        let list = p / "conv2d_list";
        let branches = dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let cfg = nn::ConvConfig {
                    padding: d,
                    dilation: d,
                    bias: true,
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.01,
                    },
                    bs_init: nn::Init::Const(0.0),
                    ..Default::default()
                };
                nn::conv2d(&list / i, c_in, num_classes, 3, cfg)
            })
            .collect();
        Aspp {
            branches,
            dilations: dilations.to_vec(),
        }
    }

    /// Sum of the branch outputs.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let mut out: Option<Tensor> = None;
        for conv in &self.branches {
            let y = xs.apply(conv);
            out = Some(match out {
                None => y,
                Some(acc) => acc + y,
            });
        }
        out.expect("ASPP has at least one branch")
    }
}

/// DeepLabv2 = encoder + ASPP classifier. The projector is separate (see `projector`).
#[derive(Debug)]
pub struct DeepLabV2 {
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// F_enc.
    pub encoder: Encoder,
    /// F_seg (`layer5`).
    pub classifier: Aspp,
}

impl DeepLabV2 {
    /// Builds the network under `p`: encoder names at the root, classifier at `layer5`.
    pub fn new(p: &nn::Path, config: &ModelConfig) -> DeepLabV2 {
        let encoder = Encoder::new(p, config.backbone);
        let classifier = Aspp::new(
            &(p / "layer5"),
            config.backbone.feature_width(),
            config.num_classes,
            config.aspp_dilations(),
        );
        DeepLabV2 {
            config: config.clone(),
            encoder,
            classifier,
        }
    }

    /// Normalises `N x 3 x H x W` RGB pixels in 0..255 (any float kind) the way the
    /// config says: channel order, mean, std. The exported graph does the same.
    pub fn normalize(&self, rgb255: &Tensor) -> Tensor {
        normalize(&self.config, rgb255)
    }

    /// Forward on already-normalised input: 1/8 logits; `features` and `encoder` are both
    /// layer4, `grid_logits` the logits themselves.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SegOutput {
        let features = self.encoder.forward_t(xs, train);
        let logits = self.classifier.forward(&features);
        SegOutput {
            grid_logits: logits.shallow_clone(),
            encoder: features.shallow_clone(),
            logits,
            features,
        }
    }

    /// Logits bilinearly upsampled to the input size (align_corners = true, as in training).
    pub fn forward_upsampled(&self, xs: &Tensor, train: bool) -> Tensor {
        let (h, w) = (xs.size()[2], xs.size()[3]);
        upsample_logits(&self.forward_t(xs, train).logits, h, w)
    }
}

/// Bilinear upsampling of 1/8 logits to `h x w`, align_corners = true (DACS).
pub fn upsample_logits(logits: &Tensor, h: i64, w: i64) -> Tensor {
    logits.upsample_bilinear2d([h, w], true, None, None)
}

/// See [`DeepLabV2::normalize`].
pub fn normalize(config: &ModelConfig, rgb255: &Tensor) -> Tensor {
    let device = rgb255.device();
    let xs = rgb255.to_kind(Kind::Float);
    let xs = if config.input.bgr { xs.flip([1]) } else { xs };
    // Non-blocking: a plain copy to CUDA would wait for the device's whole queue.
    let mean = Tensor::from_slice(&config.input.mean)
        .to_device_(device, Kind::Float, true, false)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&config.input.std)
        .to_device_(device, Kind::Float, true, false)
        .view([1, 3, 1, 1]);
    (xs - mean) / std
}
