//! The MiT decoders as ONNX nodes, mirroring `rccr_models::decoder` in inference mode
//! (running batch-norm statistics folded into the convolutions, dropout off), with
//! mmseg's names under `decode_head.`:
//!
//! - both: each stage map embedded by its linear layer, written as the equal 1x1 `Conv`
//!   (a linear layer over the channels of every pixel), resized bilinearly to stage 1's
//!   size (`Resize` linear, `half_pixel` = PyTorch's align_corners false; stage 1 is not
//!   resized, as in the model) and concatenated;
//! - DAFormer (Hoyer et al. 2022, Sec. 3.2): the fusion ASPP (1x1 branch, and dilated 3x3
//!   depthwise `Conv`s with `group` = channels followed by 1x1 ones, each BN folded +
//!   `Relu`), `Concat`, the 3x3 bottleneck, the 1x1 classifier `conv_seg`;
//! - SegFormer (Xie et al. 2021, Eq. 4): `linear_fuse` (1x1, BN folded, `Relu`) and the
//!   classifier `linear_pred`.

use super::deeplab::biased_conv;
use super::emitter::{Emitter, Geom};
use super::mit::check_kernel;
use crate::fold::{self, FoldedConv};
use crate::graph::Attr;
use crate::ExportError;
use rccr_models::decoder::{AsppBranch, ConvBnRelu, MitHead};
use tch::nn;

impl Emitter {
    /// The stride-4 logits of the four stage `maps` (`MitHead::fused_t` then
    /// `classify_t`, inference mode).
    pub(super) fn mit_head(
        &mut self,
        head: &MitHead,
        maps: &[String],
    ) -> Result<String, ExportError> {
        let p = "decode_head";
        let (fused, classifier, name) = match head {
            MitHead::Daformer(h) => {
                let x =
                    self.embed_and_concat(&format!("{p}.embed_layers"), &h.embed_layers, maps)?;
                let fuse = format!("{p}.fuse_layer");
                let mut branches = Vec::with_capacity(h.aspp_modules.len());
                for (j, b) in h.aspp_modules.iter().enumerate() {
                    let name = format!("{fuse}.aspp_modules.{j}");
                    branches.push(self.aspp_branch(&name, b, &x)?);
                }
                let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
                let cat = self.g.op(
                    "Concat",
                    &format!("{fuse}.concat"),
                    &refs,
                    vec![("axis", Attr::Int(1))],
                );
                let bottleneck = format!("{fuse}.bottleneck");
                let fused = self.conv_bn_relu(&bottleneck, &cat, &h.bottleneck)?;
                (fused, &h.conv_seg, format!("{p}.conv_seg"))
            }
            MitHead::Segformer(h) => {
                let x = self.embed_and_concat(&format!("{p}.linear_c"), &h.linear_c, maps)?;
                let fused = self.conv_bn_relu(&format!("{p}.linear_fuse"), &x, &h.linear_fuse)?;
                (fused, &h.linear_pred, format!("{p}.linear_pred"))
            }
        };
        let f = biased_conv(classifier)?;
        check_kernel(&name, &f, 1, 0)?;
        Ok(self.conv(&name, &fused, &f, 1, 0, 1))
    }

    /// Each stage map through its embedding `{p}.{i}.proj` (a 1x1 `Conv`), resized to
    /// stage 1's size (`{p}.{i}.resize`), concatenated (`{p}.concat`).
    fn embed_and_concat(
        &mut self,
        p: &str,
        embeds: &[nn::Linear],
        maps: &[String],
    ) -> Result<String, ExportError> {
        if embeds.len() != maps.len() || maps.is_empty() {
            return Err(ExportError::Network(format!(
                "{p}: {} embeddings for {} stages",
                embeds.len(),
                maps.len()
            )));
        }
        let hw = self.g.op(
            "Shape",
            &format!("{p}.stride4_hw"),
            &[&maps[0]],
            vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
        );
        let mut outs = Vec::with_capacity(maps.len());
        for (i, (lin, map)) in embeds.iter().zip(maps).enumerate() {
            let name = format!("{p}.{i}.proj");
            let e = self.conv(&name, map, &linear_as_conv(&name, lin)?, 1, 0, 1);
            outs.push(match i {
                0 => e,
                _ => self.resize_like(&format!("{p}.{i}.resize"), &e, &hw),
            });
        }
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        Ok(self.g.op(
            "Concat",
            &format!("{p}.concat"),
            &refs,
            vec![("axis", Attr::Int(1))],
        ))
    }

    /// `x` resized bilinearly (align_corners false: `half_pixel`) to the H x W in `hw`.
    fn resize_like(&mut self, name: &str, x: &str, hw: &str) -> String {
        let nc = self.g.op(
            "Shape",
            &format!("{name}.nc"),
            &[x],
            vec![("start", Attr::Int(0)), ("end", Attr::Int(2))],
        );
        let sizes = self.g.op(
            "Concat",
            &format!("{name}.sizes"),
            &[&nc, hw],
            vec![("axis", Attr::Int(0))],
        );
        self.g.op(
            "Resize",
            name,
            &[x, "", "", &sizes],
            vec![
                ("mode", Attr::Str("linear".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::Str("half_pixel".into()),
                ),
            ],
        )
    }

    /// One branch of DAFormer's fusion ASPP (`AsppBranch::forward_t`).
    fn aspp_branch(&mut self, p: &str, b: &AsppBranch, x: &str) -> Result<String, ExportError> {
        match b {
            AsppBranch::Pointwise(c) => self.conv_bn_relu(p, x, c),
            AsppBranch::Separable {
                depthwise_conv,
                pointwise_conv,
            } => {
                let y = self.conv_bn_relu(&format!("{p}.depthwise_conv"), x, depthwise_conv)?;
                self.conv_bn_relu(&format!("{p}.pointwise_conv"), &y, pointwise_conv)
            }
        }
    }

    /// mmcv's `ConvModule` (`ConvBnRelu::forward_t`, inference mode): one `Conv` with the
    /// batch norm folded in (`name`), padding dilation * (k / 2), then `Relu`.
    fn conv_bn_relu(&mut self, name: &str, x: &str, c: &ConvBnRelu) -> Result<String, ExportError> {
        let f = fold::fold_conv_and_bn(&c.conv, &c.bn)?;
        let depthwise = if c.groups > 1 { c.groups } else { 0 };
        check_kernel(name, &f, c.kernel, depthwise)?;
        let geom = Geom {
            stride: 1,
            padding: c.dilation * (c.kernel / 2),
            dilation: c.dilation,
            group: c.groups,
        };
        let y = self.conv_geom(name, x, &f, geom);
        Ok(self.relu(&format!("{name}.relu"), &y))
    }
}

/// A linear layer `[out, in]` as the equal 1x1 convolution `[out, in, 1, 1]`.
fn linear_as_conv(name: &str, lin: &nn::Linear) -> Result<FoldedConv, ExportError> {
    let dims = lin.ws.size();
    let [out, inp] = <[i64; 2]>::try_from(dims.as_slice())
        .map_err(|_| ExportError::Network(format!("{name}: linear weight has shape {dims:?}")))?;
    let bias = match &lin.bs {
        Some(b) => fold::to_vec(b)?,
        None => vec![0.0; out as usize],
    };
    Ok(FoldedConv {
        dims: [out, inp, 1, 1],
        weight: fold::to_vec(&lin.ws)?,
        bias,
    })
}
