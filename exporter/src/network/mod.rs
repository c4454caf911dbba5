//! The teacher network (encoder F_enc + segmentation head F_seg; the projector is a
//! training-only head and is left out) as an ONNX graph, by walking the public fields of
//! the [`Segmenter`]. DeepLabv2 ([`DeepLabV2`](rccr_models::DeepLabV2)):
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
//! A Mix Transformer (`rccr_models::MitSegmenter`, SegFormer / DAFormer):
//!
//! ```text
//! image -> the same normalisation
//!   -> 4 stages: patch-embedding Conv, LayerNormalization, blocks (LayerNormalization,
//!      efficient self-attention: Gemm, Reshape/Transpose, spatial-reduction Conv,
//!      MatMul, Softmax; Mix-FFN: Gemm, depthwise Conv, GELU), LayerNormalization
//!   -> decoder: 1x1 embeddings, Resize half_pixel to stride 4, Concat, DAFormer's
//!      fusion ASPP (BN folded) or SegFormer's linear_fuse, 1x1 classifier (1/4 logits)
//!   -> Resize linear half_pixel (align_corners false) to H x W  -> `logits`
//!   -> ArgMax axis 1                                             -> `labels`
//! ```
//!
//! Both are exactly [`Segmenter::normalize`] followed by [`Segmenter::forward_upsampled`]
//! in inference mode (running batch-norm statistics, no dropout or drop path), H and W
//! dynamic. The nodes of each part are emitted where the part lives in `rccr-models`:
//! `resnet.rs` (stem, residual blocks), `deeplab.rs` (normalisation, ASPP, upsampling,
//! argmax), `mit.rs` (the MiT encoder), `decoder.rs` (the MiT decoders); `emitter.rs`
//! holds the layers they share (folded conv, ReLU, f16 parameters).

mod decoder;
mod deeplab;
mod emitter;
mod mit;
mod resnet;

use crate::graph::{tensor_value_info, Dim};
use crate::metadata::export_metadata;
use crate::onnx::{
    tensor_proto::DataType, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
    ValueInfoProto,
};
use crate::options::{ir_version, ExportOptions, Outputs, Shape, Source};
use crate::ExportError;
use emitter::Emitter;
use rccr_infer::contract::{self, INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use rccr_models::{ModelConfig, Segmenter};

/// The ONNX model of `net` (inference mode) with metadata.
pub fn build_model(
    net: &Segmenter,
    source: &Source,
    opts: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    opts.check()?;
    let config = net.config();
    let mut e = Emitter::new(opts.fp16, opts.opset);
    let x = e.normalize(&config.input);
    let graph_name = match net {
        Segmenter::DeepLab(net) => {
            let features = e.encoder(&net.encoder, &x)?;
            let logits8 = e.aspp(&net.classifier, &features)?;
            e.upsample_logits(&logits8, "align_corners");
            "rccr_deeplabv2"
        }
        Segmenter::Mit(net) => {
            let maps = e.mit_encoder(net, &x)?;
            let logits4 = e.mit_head(&net.head, &maps)?;
            e.upsample_logits(&logits4, "half_pixel");
            "rccr_mit"
        }
    };
    if opts.outputs != Outputs::Logits {
        e.argmax();
    }
    let doc = doc_string(config, opts.outputs);
    let graph = e.g.finish(
        graph_name,
        vec![input_info(opts.fixed_shape)],
        output_infos(opts, config.num_classes),
        &doc,
    );
    Ok(model_proto(graph, doc, config, source, opts))
}

/// N, H and W of the graph's inputs and outputs: fixed, or the dynamic `N`, `H`, `W`.
fn batch_dims(fixed: Option<Shape>) -> [Dim; 3] {
    match fixed {
        Some(s) => [Dim::Fixed(s.n), Dim::Fixed(s.h), Dim::Fixed(s.w)],
        None => ["N", "H", "W"].map(|p| Dim::Param(p.into())),
    }
}

/// The typed input `image`.
fn input_info(fixed: Option<Shape>) -> ValueInfoProto {
    let [n, h, w] = batch_dims(fixed);
    tensor_value_info(
        INPUT_NAME,
        DataType::Float,
        &[n, Dim::Fixed(3), h, w],
        "float32 RGB pixels in 0..255, N x 3 x H x W (not normalised: the graph does it)",
    )
}

/// The typed outputs, in [`Outputs::names`] order.
fn output_infos(opts: &ExportOptions, classes: i64) -> Vec<ValueInfoProto> {
    let [n, h, w] = batch_dims(opts.fixed_shape);
    let c = Dim::Fixed(classes);
    opts.outputs
        .names()
        .into_iter()
        .map(|name| match name {
            LABELS_OUTPUT => tensor_value_info(
                LABELS_OUTPUT,
                DataType::Int64,
                &[n.clone(), h.clone(), w.clone()],
                "int64 class index (train id) per pixel, N x H x W",
            ),
            _ => tensor_value_info(
                LOGITS_OUTPUT,
                DataType::Float,
                &[n.clone(), c.clone(), h.clone(), w.clone()],
                "float32 class logits bilinearly upsampled to the input size, N x C x H x W",
            ),
        })
        .collect()
}

/// The model's (and the graph's) doc string.
fn doc_string(config: &ModelConfig, outputs: Outputs) -> String {
    let network = match config.backbone.is_mit() {
        true => format!("{} + {} decoder", config.backbone, config.decoder()),
        false => format!("DeepLabv2 {}", config.backbone),
    };
    format!(
        "RCCR teacher ({network}, {} classes). Input `image`: {}. Outputs: {}.",
        config.num_classes,
        contract::INPUT_FORMAT,
        outputs.names().join(", ")
    )
}

/// The model around `graph`: opset and IR version, producer, version = iteration, and
/// the [`Metadata`] of `config` as `metadata_props`.
fn model_proto(
    graph: GraphProto,
    doc: String,
    config: &ModelConfig,
    source: &Source,
    opts: &ExportOptions,
) -> ModelProto {
    let meta = export_metadata(config, source, &opts.outputs.names(), opts.fp16);
    ModelProto {
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
    }
}
