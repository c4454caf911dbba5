//! The teacher DeepLabv2 (encoder F_enc + ASPP classifier F_seg; the projector is a
//! training-only head and is left out) as an ONNX graph, by walking the public fields of
//! [`DeepLabV2`]:
//!
//! ```text
//! image (N x 3 x H x W, float32 RGB 0..255)
//!   -> Gather[2,1,0] on axis 1 (only when the config feeds BGR) -> Sub mean -> Div std
//!   -> Conv 7x7/2 (BN folded) -> Relu -> MaxPool 3x3/2 pad 1 ceil
//!   -> residual blocks (Conv+bias ... Relu, shortcut Conv or identity, Add, Relu)
//!   -> ASPP: one dilated 3x3 Conv per branch, Sum            (1/8 logits P, paper Fig. 2)
//!   -> Resize linear align_corners to H x W                   -> `logits` N x C x H x W
//!   -> ArgMax axis 1                                          -> `labels` N x H x W int64
//! ```
//!
//! This is exactly [`DeepLabV2::normalize`] followed by [`DeepLabV2::forward_upsampled`]
//! in inference mode (running batch-norm statistics).

use crate::fold::{self, FoldedConv};
use crate::graph::{tensor_value_info, Attr, Dim, GraphBuilder};
use crate::metadata::Metadata;
use crate::onnx::{tensor_proto::DataType, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::ExportError;
use rccr_models::layers::ConvBn;
use rccr_models::DeepLabV2;
use std::str::FromStr;

/// Name of the graph input.
pub const INPUT: &str = "image";
/// Name of the label-map output.
pub const LABELS: &str = "labels";
/// Name of the upsampled-logits output (always the name of that value inside the graph).
pub const LOGITS: &str = "logits";
/// Default opset: accepted by ONNX Runtime 1.31 and TensorRT 10.
pub const DEFAULT_OPSET: i64 = 17;
/// Opsets the exporter writes (every op used has the same semantics over this range).
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// The IR version that goes with `opset` (the lowest that supports it).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// Which outputs the graph has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outputs {
    /// `labels` only (default).
    #[default]
    Labels,
    /// `logits` only.
    Logits,
    /// `labels` and `logits`.
    Both,
}

impl Outputs {
    /// The output names in graph order.
    pub fn names(self) -> Vec<&'static str> {
        match self {
            Outputs::Labels => vec![LABELS],
            Outputs::Logits => vec![LOGITS],
            Outputs::Both => vec![LABELS, LOGITS],
        }
    }
}

impl FromStr for Outputs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "labels" => Ok(Outputs::Labels),
            "logits" => Ok(Outputs::Logits),
            "both" => Ok(Outputs::Both),
            _ => Err(format!(
                "unknown outputs `{s}` (expected labels, logits or both)"
            )),
        }
    }
}

/// A batch and image size: `N x H x W` (3 channels implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// Batch size N.
    pub n: i64,
    /// Height H.
    pub h: i64,
    /// Width W.
    pub w: i64,
}

impl Shape {
    /// `[N, 3, H, W]`.
    pub fn nchw(self) -> [i64; 4] {
        [self.n, 3, self.h, self.w]
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x3x{}x{}", self.n, self.h, self.w)
    }
}

impl FromStr for Shape {
    type Err = String;
    /// `NxHxW` or `Nx3xHxW`, every number positive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad shape `{s}`: expected NxHxW or Nx3xHxW, e.g. 1x512x1024");
        let v: Vec<i64> = s
            .split(['x', 'X'])
            .map(|p| p.trim().parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let (n, h, w) = match v.as_slice() {
            [n, h, w] => (*n, *h, *w),
            [n, 3, h, w] => (*n, *h, *w),
            _ => return Err(bad()),
        };
        if n < 1 || h < 1 || w < 1 {
            return Err(bad());
        }
        Ok(Shape { n, h, w })
    }
}

/// How to export.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportOptions {
    /// Graph outputs. Default: labels.
    pub outputs: Outputs,
    /// Store the weights as float16 (each followed by a Cast to float32, so inputs,
    /// outputs and arithmetic stay float32; halves the file). Default: false.
    pub fp16: bool,
    /// A fixed input shape instead of dynamic N, H, W (for TensorRT engines built ahead
    /// of time). Default: dynamic.
    pub fixed_shape: Option<Shape>,
    /// The ONNX opset, in [`OPSETS`]. Default: [`DEFAULT_OPSET`].
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            outputs: Outputs::Labels,
            fp16: false,
            fixed_shape: None,
            opset: DEFAULT_OPSET,
        }
    }
}

/// Where the exported network came from (recorded in the metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The checkpoint path as given.
    pub checkpoint: String,
    /// The training iteration it was written at.
    pub iteration: u64,
}

struct Emitter {
    g: GraphBuilder,
    fp16: bool,
}

impl Emitter {
    /// A float parameter tensor: an f32 initialiser, or an f16 one cast to f32.
    fn param(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        if self.fp16 {
            let half = self.g.init_f16(&format!("{name}.f16"), dims, values);
            self.g.op(
                "Cast",
                name,
                &[&half],
                vec![("to", Attr::Int(DataType::Float as i64))],
            )
        } else {
            self.g.init_f32(name, dims, values)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: &str,
        f: &FoldedConv,
        stride: i64,
        padding: i64,
        dilation: i64,
    ) -> String {
        let w = self.param(&format!("{name}.weight"), &f.dims, &f.weight);
        let b = self.param(&format!("{name}.bias"), &[f.dims[0]], &f.bias);
        self.g.op(
            "Conv",
            name,
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![f.dims[2], f.dims[3]])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![padding; 4])),
                ("dilations", Attr::Ints(vec![dilation, dilation])),
                ("group", Attr::Int(1)),
            ],
        )
    }

    fn conv_bn(&mut self, name: &str, x: &str, c: &ConvBn) -> Result<String, ExportError> {
        let f = fold::fold_conv_bn(c)?;
        if f.dims[2] != c.kernel || f.dims[3] != c.kernel {
            return Err(ExportError::Network(format!(
                "{name}: weight {:?} does not have the {k}x{k} kernel the layer declares",
                f.dims,
                k = c.kernel
            )));
        }
        Ok(self.conv(name, x, &f, c.stride, c.padding, c.dilation))
    }

    fn relu(&mut self, name: &str, x: &str) -> String {
        self.g.op("Relu", name, &[x], vec![])
    }
}

/// The ONNX model of `net` (inference mode) with metadata.
pub fn build_model(
    net: &DeepLabV2,
    source: &Source,
    opts: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    if !OPSETS.contains(&opts.opset) {
        return Err(ExportError::Options(format!(
            "opset {} is not supported: use {} to {} (default {DEFAULT_OPSET})",
            opts.opset,
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let config = &net.config;
    let mut e = Emitter {
        g: GraphBuilder::new(),
        fp16: opts.fp16,
    };

    // Input normalisation (models::deeplab::normalize): channel order, mean, std.
    let mut x = INPUT.to_string();
    if config.input.bgr {
        let idx = e.g.init_i64("input.bgr_indices", &[3], &[2, 1, 0]);
        x = e.g.op(
            "Gather",
            "input.to_bgr",
            &[&x, &idx],
            vec![("axis", Attr::Int(1))],
        );
    }
    let mean =
        e.g.init_f32("input.mean", &[1, 3, 1, 1], &config.input.mean);
    x = e.g.op("Sub", "input.sub_mean", &[&x, &mean], vec![]);
    let std = e.g.init_f32("input.std", &[1, 3, 1, 1], &config.input.std);
    x = e.g.op("Div", "input.div_std", &[&x, &std], vec![]);

    // Encoder stem.
    let enc = &net.encoder;
    x = e.conv_bn("conv1", &x, &enc.stem)?;
    x = e.relu("relu", &x);
    x = e.g.op(
        "MaxPool",
        "maxpool",
        &[&x],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("ceil_mode", Attr::Int(1)),
        ],
    );

    // Residual layers.
    for (l, layer) in enc.layers.iter().enumerate() {
        for (b, block) in layer.iter().enumerate() {
            let prefix = format!("layer{}.{b}", l + 1);
            let (convs, downsample) = block.convs();
            let last = convs.len() - 1;
            let mut y = x.clone();
            for (i, c) in convs.into_iter().enumerate() {
                y = e.conv_bn(&format!("{prefix}.conv{}", i + 1), &y, c)?;
                if i != last {
                    y = e.relu(&format!("{prefix}.relu{}", i + 1), &y);
                }
            }
            let shortcut = match downsample {
                Some(d) => e.conv_bn(&format!("{prefix}.downsample"), &x, d)?,
                None => x.clone(),
            };
            let sum =
                e.g.op("Add", &format!("{prefix}.add"), &[&y, &shortcut], vec![]);
            x = e.relu(&format!("{prefix}.relu"), &sum);
        }
    }

    // ASPP classifier: dilated 3x3 convolutions with bias, summed.
    let aspp = &net.classifier;
    if aspp.branches.len() != aspp.dilations.len() || aspp.branches.is_empty() {
        return Err(ExportError::Network(format!(
            "the classifier has {} branches and {} dilations",
            aspp.branches.len(),
            aspp.dilations.len()
        )));
    }
    let mut branches = Vec::new();
    for (i, (conv, &d)) in aspp.branches.iter().zip(&aspp.dilations).enumerate() {
        let name = format!("layer5.conv2d_list.{i}");
        let dims = fold::conv_dims(&conv.ws)?;
        let bias = match &conv.bs {
            Some(b) => fold::to_vec(b)?,
            None => vec![0.0; dims[0] as usize],
        };
        let f = FoldedConv {
            dims,
            weight: fold::to_vec(&conv.ws)?,
            bias,
        };
        branches.push(e.conv(&name, &x, &f, 1, d, d));
    }
    let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
    let logits8 = e.g.op("Sum", "layer5.sum", &refs, vec![]);

    // Bilinear upsampling to the input size, align_corners = true (deeplab::upsample_logits).
    let nc = e.g.op(
        "Shape",
        "upsample.logits_nc",
        &[&logits8],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(2))],
    );
    let hw = e.g.op(
        "Shape",
        "upsample.input_hw",
        &[INPUT],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let sizes = e.g.op(
        "Concat",
        "upsample.sizes",
        &[&nc, &hw],
        vec![("axis", Attr::Int(0))],
    );
    e.g.node(
        "Resize",
        "upsample",
        &[&logits8, "", "", &sizes],
        &[LOGITS],
        vec![
            ("mode", Attr::Str("linear".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("align_corners".into()),
            ),
        ],
    );
    if opts.outputs != Outputs::Logits {
        e.g.node(
            "ArgMax",
            "argmax",
            &[LOGITS],
            &[LABELS],
            vec![
                ("axis", Attr::Int(1)),
                ("keepdims", Attr::Int(0)),
                ("select_last_index", Attr::Int(0)),
            ],
        );
    }

    // Typed inputs / outputs.
    let (n, h, w) = match opts.fixed_shape {
        Some(s) => (Dim::Fixed(s.n), Dim::Fixed(s.h), Dim::Fixed(s.w)),
        None => (
            Dim::Param("N".into()),
            Dim::Param("H".into()),
            Dim::Param("W".into()),
        ),
    };
    let c = Dim::Fixed(config.num_classes);
    let input = tensor_value_info(
        INPUT,
        DataType::Float,
        &[n.clone(), Dim::Fixed(3), h.clone(), w.clone()],
        "float32 RGB pixels in 0..255, N x 3 x H x W (not normalised: the graph does it)",
    );
    let outputs = opts
        .outputs
        .names()
        .into_iter()
        .map(|name| match name {
            LABELS => tensor_value_info(
                LABELS,
                DataType::Int64,
                &[n.clone(), h.clone(), w.clone()],
                "int64 class index (train id) per pixel, N x H x W",
            ),
            _ => tensor_value_info(
                LOGITS,
                DataType::Float,
                &[n.clone(), c.clone(), h.clone(), w.clone()],
                "float32 class logits bilinearly upsampled to the input size, N x C x H x W",
            ),
        })
        .collect();
    let doc = format!(
        "RCCR teacher (DeepLabv2 {}, {} classes). Input `image`: {}. Outputs: {}.",
        config.backbone,
        config.num_classes,
        crate::metadata::INPUT_FORMAT,
        opts.outputs.names().join(", ")
    );
    let graph = e.g.finish("rccr_deeplabv2", vec![input], outputs, &doc);

    let meta = Metadata::new(
        config,
        &source.checkpoint,
        source.iteration,
        &opts.outputs.names(),
        opts.fp16,
    );
    Ok(ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "rccr-export".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: source.iteration as i64,
        doc_string: doc,
        graph: Some(graph),
        metadata_props: meta
            .to_props()
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes() {
        assert_eq!(
            "2x64x96".parse::<Shape>().unwrap(),
            Shape { n: 2, h: 64, w: 96 }
        );
        assert_eq!(
            "1x3x65x65".parse::<Shape>().unwrap(),
            Shape { n: 1, h: 65, w: 65 }
        );
        for bad in [
            "",
            "1x2",
            "1x4x5x6",
            "0x8x8",
            "1x-8x8",
            "axbxc",
            "1x2x3x4x5",
        ] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ir_versions_follow_the_onnx_table() {
        assert_eq!(ir_version(17), 8);
        assert_eq!(ir_version(18), 8);
        assert_eq!(ir_version(19), 9);
        assert_eq!(ir_version(20), 9);
        assert_eq!(ir_version(21), 10);
    }
}
