//! The DeepLabv2 parts around the encoder as ONNX nodes, mirroring
//! `rccr_models::deeplab`: the input normalisation, the ASPP classifier F_seg
//! (`layer5`), the bilinear upsampling of the 1/8 logits and the argmax.

use super::emitter::Emitter;
use crate::fold::{self, FoldedConv};
use crate::graph::Attr;
use crate::ExportError;
use rccr_infer::contract::{INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use rccr_models::config::InputNorm;
use rccr_models::deeplab::Aspp;

impl Emitter {
    /// Channel order, mean and std of the graph input (`deeplab::normalize`): a
    /// `Gather [2, 1, 0]` on the channels when the config feeds BGR, `Sub`, `Div`.
    pub(super) fn normalize(&mut self, input: &InputNorm) -> String {
        let mut x = INPUT_NAME.to_string();
        if input.bgr {
            let idx = self.g.init_i64("input.bgr_indices", &[3], &[2, 1, 0]);
            x = self.g.op(
                "Gather",
                "input.to_bgr",
                &[&x, &idx],
                vec![("axis", Attr::Int(1))],
            );
        }
        let mean = self.g.init_f32("input.mean", &[1, 3, 1, 1], &input.mean);
        x = self.g.op("Sub", "input.sub_mean", &[&x, &mean], vec![]);
        let std = self.g.init_f32("input.std", &[1, 3, 1, 1], &input.std);
        self.g.op("Div", "input.div_std", &[&x, &std], vec![])
    }

    /// The 1/8 logits P of `features` (`Aspp::forward`): one dilated 3x3 `Conv` with bias
    /// per branch (`layer5.conv2d_list.{i}`), summed.
    pub(super) fn aspp(&mut self, aspp: &Aspp, features: &str) -> Result<String, ExportError> {
        if aspp.branches.len() != aspp.dilations.len() || aspp.branches.is_empty() {
            return Err(ExportError::Network(format!(
                "the classifier has {} branches and {} dilations",
                aspp.branches.len(),
                aspp.dilations.len()
            )));
        }
        let mut branches = Vec::new();
        for (i, (conv, &d)) in aspp.branches.iter().zip(&aspp.dilations).enumerate() {
            let f = biased_conv(conv)?;
            branches.push(self.conv(&format!("layer5.conv2d_list.{i}"), features, &f, 1, d, d));
        }
        let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
        Ok(self.g.op("Sum", "layer5.sum", &refs, vec![]))
    }

    /// `logits` = the network's logits resized to the input's H x W, bilinear, with the
    /// Resize `coordinate_transformation_mode` of its training: `align_corners` for
    /// DeepLabv2 (`deeplab::upsample_logits`), `half_pixel` (PyTorch's align_corners
    /// false) for MiT (`Segmenter::upsample_logits`); the output size is computed in the
    /// graph.
    pub(super) fn upsample_logits(&mut self, logits8: &str, coordinates: &str) {
        let nc = self.g.op(
            "Shape",
            "upsample.logits_nc",
            &[logits8],
            vec![("start", Attr::Int(0)), ("end", Attr::Int(2))],
        );
        let hw = self.g.op(
            "Shape",
            "upsample.input_hw",
            &[INPUT_NAME],
            vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
        );
        let sizes = self.g.op(
            "Concat",
            "upsample.sizes",
            &[&nc, &hw],
            vec![("axis", Attr::Int(0))],
        );
        self.g.node(
            "Resize",
            "upsample",
            &[logits8, "", "", &sizes],
            &[LOGITS_OUTPUT],
            vec![
                ("mode", Attr::Str("linear".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::Str(coordinates.into()),
                ),
            ],
        );
    }

    /// `labels` = the first maximum of `logits` over the classes.
    pub(super) fn argmax(&mut self) {
        self.g.node(
            "ArgMax",
            "argmax",
            &[LOGITS_OUTPUT],
            &[LABELS_OUTPUT],
            vec![
                ("axis", Attr::Int(1)),
                ("keepdims", Attr::Int(0)),
                ("select_last_index", Attr::Int(0)),
            ],
        );
    }
}

/// A convolution's weight and bias (0 where it has none) as a [`FoldedConv`]: an ASPP
/// branch, or a MiT convolution with bias.
pub(super) fn biased_conv(conv: &tch::nn::Conv2D) -> Result<FoldedConv, ExportError> {
    let dims = fold::conv_dims(&conv.ws)?;
    let bias = match &conv.bs {
        Some(b) => fold::to_vec(b)?,
        None => vec![0.0; dims[0] as usize],
    };
    Ok(FoldedConv {
        dims,
        weight: fold::to_vec(&conv.ws)?,
        bias,
    })
}
