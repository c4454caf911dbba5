//! Static int8 quantization of an exported fp32 model into the QDQ format
//! (`QuantizeLinear` / `DequantizeLinear` pairs) that ONNX Runtime's CPU provider fuses
//! into `QLinearConv` / `QLinearAdd` / `QGemm` / `QLinearMatMul` and runs with integer
//! GEMMs (AVX-512 VNNI / AMX in
//! MLAS). It is a deployment-only transformation of the teacher's forward pass (paper
//! Sec. 3.1: the prediction `argmax_c p(c | x)`); training is untouched.
//!
//! - Weights: per-output-channel symmetric int8 in the 7-bit range [-63, 63] (ONNX
//!   Runtime's `reduce_range`), `scale_c = max |w_c| / 63`, zero point 0: x86 kernels
//!   without VNNI (AVX2, AVX-512F) sum pairs of u8 x s8 products in 16 bits, which
//!   255 x 127 x 2 overflows (measured on an AMD EPYC without VNNI: argmax agreement with
//!   fp32 fell to 88 %); 255 x 63 x 2 cannot;
//!   biases int32 with `scale_c = s_x * s_w,c` (the scale of the integer accumulator).
//! - Activations: per-tensor asymmetric uint8, `scale = (hi - lo) / 255`, zero point
//!   `round(-lo / scale)`, `[lo, hi]` calibrated on images ([`calibrate`]): every
//!   non-constant input of a `Conv`, `Gemm` (MiT's linear layers: weights per output
//!   channel as for `Conv`), `MatMul` (MiT's attention products, both inputs
//!   activations), `MaxPool`, of an `Add` or `Sum` of activations only, and of a `Concat`
//!   read only by quantized ops ([`quantized_nodes`]). Where such a tensor is a
//!   `Relu` output, the `Relu` is dropped and the `QuantizeLinear` reads its input:
//!   with `lo = 0` the zero point is 0 and saturation at 0 *is* the Relu (bit-identical),
//!   which gives ORT the `DQ -> Conv -> Q` / `DQ -> Add -> Q` groups it fuses.
//! - Calibration runs the float model in ONNX Runtime with the tensors to quantize added
//!   as extra outputs; ranges are min/max or a percentile of |x| (per image, then the
//!   widest over images), see [`CalibrationMethod`].
//!
//! What stays float: input normalisation, the bilinear upsampling and the argmax; in MiT
//! also LayerNorm, Softmax, GELU, the attention scale and the reshapes.

mod calibrate;
mod rewrite;

pub use calibrate::{calibrate, calibration_batches};

use crate::onnx::{GraphProto, ModelProto, NodeProto, StringStringEntryProto};
use crate::ExportError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

/// The `rccr.weights` metadata value of a quantized model.
pub(crate) const WEIGHTS_INT8_QDQ: &str = "int8-qdq";
/// Metadata key: the calibration that produced the activation ranges (JSON).
pub(crate) const CALIBRATION_KEY: &str = "rccr.calibration";
/// Ops whose non-constant inputs are quantized (an `Add` or `Sum` only when all its
/// inputs are activations, see [`is_quantized`]).
pub const QUANTIZED_OPS: [&str; 6] = ["Conv", "Gemm", "MatMul", "Add", "MaxPool", "Sum"];
/// Ops whose inputs 1 (weight, output channels first) and 2 (bias) are constants,
/// quantized per output channel.
pub const WEIGHTED_OPS: [&str; 2] = ["Conv", "Gemm"];

/// Whether node `n` is quantized: its op is one of [`QUANTIZED_OPS`], and an `Add` or
/// `Sum` reads no initialiser (an offset by a constant, such as the `+ 1` of GELU's erf
/// form, stays float: quantizing its one activation would add error and save nothing).
pub fn is_quantized(n: &NodeProto, inits: &HashSet<&str>) -> bool {
    let op = n.op_type.as_str();
    QUANTIZED_OPS.contains(&op)
        && !(matches!(op, "Add" | "Sum") && n.input.iter().any(|x| inits.contains(x.as_str())))
}

/// Which nodes of `graph` are quantized, in node order: those [`is_quantized`] accepts,
/// and a `Concat` whose output is no graph output and is read only by such nodes (it
/// then joins activations that are quantized anyway, e.g. DAFormer's ASPP branches before
/// the bottleneck conv: its inputs' `Relu`s fold and the branch convs become integer
/// convs; a `Concat` of int64 shapes feeds `Reshape` / `Resize` and stays as it is).
pub fn quantized_nodes(graph: &GraphProto) -> Vec<bool> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let base: Vec<bool> = graph.node.iter().map(|n| is_quantized(n, &inits)).collect();
    let consumers = consumers(graph);
    let joins_quantized = |n: &NodeProto| {
        n.op_type == "Concat"
            && n.output.len() == 1
            && !outputs.contains(n.output[0].as_str())
            && !n.input.iter().any(|x| inits.contains(x.as_str()))
            && consumers
                .get(n.output[0].as_str())
                .is_some_and(|c| c.iter().all(|&j| base[j]))
    };
    graph
        .node
        .iter()
        .zip(&base)
        .map(|(n, &b)| b || joins_quantized(n))
        .collect()
}

/// The indices of the nodes that read each tensor of `graph`, by tensor name.
pub(crate) fn consumers(graph: &GraphProto) -> HashMap<&str, Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, n) in graph.node.iter().enumerate() {
        for x in &n.input {
            out.entry(x.as_str()).or_default().push(k);
        }
    }
    out
}

/// Whether input `i` of node `n` is a constant (an initialiser, or the weight or bias of
/// a [`WEIGHTED_OPS`] node).
pub fn is_constant_input(n: &NodeProto, i: usize, inits: &HashSet<&str>) -> bool {
    inits.contains(n.input[i].as_str()) || (WEIGHTED_OPS.contains(&n.op_type.as_str()) && i > 0)
}
/// Default `--min-agreement` for verifying an int8 model: the share of pixels whose
/// argmax equals the fp32 libtorch teacher's.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.99;

/// One calibration input: its shape `[N, 3, H, W]` and values (the model's input format).
pub type Batch = (Vec<i64>, Vec<f32>);

/// How an activation range is chosen from calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "method", content = "value")]
pub enum CalibrationMethod {
    /// `[min, max]` over every calibration value.
    MinMax,
    /// Per image, |x| clipped at its `p`-th percentile (a 4096-bin histogram of |x| up to
    /// max |x|; the bin's upper edge); the widest clip over the images is kept.
    Percentile(f64),
}

impl Default for CalibrationMethod {
    /// `percentile 99.999`.
    fn default() -> Self {
        CalibrationMethod::Percentile(99.999)
    }
}

impl FromStr for CalibrationMethod {
    type Err = String;
    /// `minmax` or `percentile[:P]` (P in (0, 100], default 99.999).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown calibration `{s}`: use minmax or percentile[:P], e.g. percentile:99.99"
            )
        };
        match s.split_once(':') {
            None if s == "minmax" => Ok(CalibrationMethod::MinMax),
            None if s == "percentile" => Ok(CalibrationMethod::default()),
            Some(("percentile", p)) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(CalibrationMethod::Percentile(p)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// A calibrated real range `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    /// Lower end.
    pub lo: f32,
    /// Upper end.
    pub hi: f32,
}

/// The activation ranges of a model, by tensor name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// How the ranges were chosen.
    pub method: CalibrationMethod,
    /// Calibration batches seen.
    pub batches: usize,
    /// Range of each tensor of [`activation_tensors`].
    pub ranges: BTreeMap<String, Range>,
}

/// uint8 quantization parameters of a range: `scale = (hi - lo) / 255` over the range
/// widened to contain 0, `zero_point = round(-lo / scale)`. An empty range gets scale 1.
pub(crate) fn activation_params(r: Range) -> (f32, u8) {
    let lo = r.lo.min(0.0);
    let hi = r.hi.max(0.0);
    let scale = (hi - lo) / 255.0;
    if !scale.is_normal() || scale.is_sign_negative() {
        return (1.0, 0);
    }
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Largest weight magnitude in the integer domain (see the module documentation).
pub(crate) const WEIGHT_QMAX: f32 = 63.0;

/// Per-output-channel symmetric int8 quantization of a weight tensor whose first
/// dimension has `channels` entries: `scale_c = max |w_c| / 63` (1 for an all-zero
/// channel), `q = clamp(round(w / scale_c), -63, 63)`.
pub(crate) fn quantize_weights(w: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for c in w.chunks(per.max(1)) {
        let m = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 { m / WEIGHT_QMAX } else { 1.0 };
        scales.push(s);
        q.extend(
            c.iter()
                .map(|v| (v / s).round().clamp(-WEIGHT_QMAX, WEIGHT_QMAX) as i8),
        );
    }
    (q, scales)
}

/// The tensors whose ranges calibration must find: every non-constant input of a
/// quantized node ([`quantized_nodes`], [`is_constant_input`]), in graph order, each once.
pub fn activation_tensors(model: &ModelProto) -> Result<Vec<String>, ExportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let quantized = quantized_nodes(graph);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (n, _) in graph.node.iter().zip(&quantized).filter(|(_, &q)| q) {
        for (i, x) in n.input.iter().enumerate() {
            // Weights and biases are constants (quantized separately).
            if !x.is_empty() && !is_constant_input(n, i, &inits) && seen.insert(x.clone()) {
                out.push(x.clone());
            }
        }
    }
    Ok(out)
}

/// The QDQ int8 model of the fp32 `model` with the activation ranges of `calibration`
/// (see the module docs). The metadata's `rccr.weights` becomes `WEIGHTS_INT8_QDQ` and
/// `rccr.calibration` records the method; inputs and outputs are unchanged.
pub fn quantize(model: &ModelProto, calibration: &Calibration) -> Result<ModelProto, ExportError> {
    let acts = activation_tensors(model)?;
    let mut m = model.clone();
    let graph = m
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    rewrite::rewrite_graph(graph, &acts, calibration)?;
    record_quantization(&mut m, calibration);
    Ok(m)
}

/// Marks `m` as quantized: `rccr.weights`, `rccr.calibration` and the doc strings.
fn record_quantization(m: &mut ModelProto, calibration: &Calibration) {
    let calib = serde_json::json!({
        "method": calibration.method,
        "batches": calibration.batches,
        "activations": "uint8 per-tensor asymmetric",
        "weights": "int8 per-channel symmetric, 7-bit range (max|w|/63)",
        "bias": "int32 (scale s_x * s_w)",
    })
    .to_string();
    set_metadata(m, rccr_infer::contract::WEIGHTS, WEIGHTS_INT8_QDQ);
    set_metadata(m, CALIBRATION_KEY, &calib);
    m.doc_string = format!("{} Weights: int8 QDQ (static quantization).", m.doc_string);
    if let Some(g) = m.graph.as_mut() {
        g.doc_string = m.doc_string.clone();
    }
}

/// Sets the `metadata_props` entry `key` to `value`, adding it when absent.
fn set_metadata(m: &mut ModelProto, key: &str, value: &str) {
    match m.metadata_props.iter_mut().find(|p| p.key == key) {
        Some(p) => p.value = value.to_string(),
        None => m.metadata_props.push(StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::calibrate::image_range;
    use super::*;

    #[test]
    fn parses_methods() {
        assert_eq!(
            "minmax".parse::<CalibrationMethod>(),
            Ok(CalibrationMethod::MinMax)
        );
        assert_eq!(
            "percentile:99.9".parse::<CalibrationMethod>(),
            Ok(CalibrationMethod::Percentile(99.9))
        );
        assert_eq!(
            "percentile".parse::<CalibrationMethod>(),
            Ok(CalibrationMethod::Percentile(99.999))
        );
        for bad in ["", "max", "percentile:0", "percentile:101", "percentile:x"] {
            assert!(bad.parse::<CalibrationMethod>().is_err(), "{bad}");
        }
    }

    #[test]
    fn activation_params_by_hand() {
        // [0, 2.55]: scale 0.01, zero point 0.
        let (s, z) = activation_params(Range { lo: 0.0, hi: 2.55 });
        assert!((s - 0.01).abs() < 1e-7);
        assert_eq!(z, 0);
        // [-1, 1.55]: scale 0.01, zero point 100.
        let (s, z) = activation_params(Range { lo: -1.0, hi: 1.55 });
        assert!((s - 0.01).abs() < 1e-7);
        assert_eq!(z, 100);
        // A range not containing 0 is widened to it: [1, 2.55] -> [0, 2.55].
        assert_eq!(activation_params(Range { lo: 1.0, hi: 2.55 }).1, 0);
        assert_eq!(activation_params(Range { lo: 0.0, hi: 0.0 }), (1.0, 0));
    }

    #[test]
    fn percentile_clips_outliers() {
        // 9999 values in [0, 1) and one outlier at 1000: the 99.9th percentile of |x|
        // lies below 1 (plus one histogram bin of 1000 / 4096).
        let mut v: Vec<f32> = (0..9999).map(|i| i as f32 / 9999.0).collect();
        v.push(1000.0);
        let r = image_range("t", &v, CalibrationMethod::Percentile(99.9)).unwrap();
        assert_eq!(r.lo, 0.0);
        assert!(r.hi <= 1.0 + 1000.0 / 4096.0 + 1e-6, "{r:?}");
        assert!(r.hi > 0.99, "{r:?}");
        let r = image_range("t", &v, CalibrationMethod::MinMax).unwrap();
        assert_eq!((r.lo, r.hi), (0.0, 1000.0));
        assert!(image_range("t", &[f32::NAN], CalibrationMethod::MinMax).is_err());
    }
}
