//! Static int8 quantization of an exported fp32 model into the QDQ format
//! (`QuantizeLinear` / `DequantizeLinear` pairs) that ONNX Runtime's CPU provider fuses
//! into `QLinearConv` / `QLinearAdd` and runs with integer GEMMs (AVX-512 VNNI / AMX in
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
//!   non-constant input of a `Conv`, `Add`, `MaxPool` or `Sum`. Where such a tensor is a
//!   `Relu` output, the `Relu` is dropped and the `QuantizeLinear` reads its input:
//!   with `lo = 0` the zero point is 0 and saturation at 0 *is* the Relu (bit-identical),
//!   which gives ORT the `DQ -> Conv -> Q` / `DQ -> Add -> Q` groups it fuses.
//! - Calibration runs the float model in ONNX Runtime with the tensors to quantize added
//!   as extra outputs; ranges are min/max or a percentile of |x| (per image, then the
//!   widest over images), see [`CalibrationMethod`].
//!
//! What stays float: input normalisation, the sum of the ASPP branches, the bilinear
//! upsampling and the argmax.

use crate::graph::{attribute, Attr};
use crate::onnx::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::ExportError;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

/// The `rccr.weights` metadata value of a quantized model.
pub const WEIGHTS_INT8_QDQ: &str = "int8-qdq";
/// Metadata key: the calibration that produced the activation ranges (JSON).
pub const CALIBRATION_KEY: &str = "rccr.calibration";
/// Ops whose non-constant inputs are quantized.
pub const QUANTIZED_OPS: [&str; 4] = ["Conv", "Add", "MaxPool", "Sum"];
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
pub fn activation_params(r: Range) -> (f32, u8) {
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
pub const WEIGHT_QMAX: f32 = 63.0;

/// Per-output-channel symmetric int8 quantization of a weight tensor whose first
/// dimension has `channels` entries: `scale_c = max |w_c| / 63` (1 for an all-zero
/// channel), `q = clamp(round(w / scale_c), -63, 63)`.
pub fn quantize_weights(w: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
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

/// The tensors whose ranges calibration must find: every input of a [`QUANTIZED_OPS`]
/// node that is not an initialiser, in graph order, each once.
pub fn activation_tensors(model: &ModelProto) -> Result<Vec<String>, ExportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for n in &graph.node {
        if !QUANTIZED_OPS.contains(&n.op_type.as_str()) {
            continue;
        }
        for (i, x) in n.input.iter().enumerate() {
            // Conv's weight and bias are constants (quantized separately).
            let constant = inits.contains(x.as_str()) || (n.op_type == "Conv" && i > 0);
            if !x.is_empty() && !constant && seen.insert(x.clone()) {
                out.push(x.clone());
            }
        }
    }
    Ok(out)
}

/// Running statistics of one tensor during calibration.
#[derive(Debug, Clone, Copy)]
struct Stats {
    lo: f32,
    hi: f32,
}

/// Per-image range of `data` under `method`.
fn image_range(name: &str, data: &[f32], method: CalibrationMethod) -> Result<Range, ExportError> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in data {
        if v.is_nan() {
            return Err(ExportError::Network(format!(
                "calibration: tensor `{name}` holds NaN"
            )));
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if data.is_empty() {
        return Ok(Range { lo: 0.0, hi: 0.0 });
    }
    match method {
        CalibrationMethod::MinMax => Ok(Range { lo, hi }),
        CalibrationMethod::Percentile(p) => {
            const BINS: usize = 4096;
            let amax = lo.abs().max(hi.abs());
            if !amax.is_normal() {
                return Ok(Range { lo, hi });
            }
            let mut hist = vec![0u64; BINS];
            let k = BINS as f32 / amax;
            for &v in data {
                let b = ((v.abs() * k) as usize).min(BINS - 1);
                hist[b] += 1;
            }
            let target = (p / 100.0 * data.len() as f64).ceil() as u64;
            let mut acc = 0u64;
            let mut clip = amax;
            for (b, &c) in hist.iter().enumerate() {
                acc += c;
                if acc >= target {
                    clip = (b + 1) as f32 / k;
                    break;
                }
            }
            Ok(Range {
                lo: lo.max(-clip),
                hi: hi.min(clip),
            })
        }
    }
}

/// Calibrates the activation ranges of the fp32 `model` on `batches` (each `(shape
/// [N, 3, H, W], values)` in the model's input format, fed to its first input) by running it in ONNX Runtime
/// (CPU) with every tensor of [`activation_tensors`] as an extra output.
///
/// Memory: all those tensors of one batch are held at once (about 3 GB for ResNet-101 at
/// 1024 x 512).
pub fn calibrate(
    model: &ModelProto,
    batches: &[Batch],
    method: CalibrationMethod,
    progress: bool,
) -> Result<Calibration, ExportError> {
    if batches.is_empty() {
        return Err(ExportError::Options(
            "calibration needs at least one image".into(),
        ));
    }
    let names = activation_tensors(model)?;
    let mut m = model.clone();
    let graph = m
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    let input_name = graph
        .input
        .first()
        .map(|i| i.name.clone())
        .ok_or_else(|| ExportError::Network("the model has no input".into()))?;
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for n in &names {
        if !outputs.contains(n) {
            graph.output.push(ValueInfoProto {
                name: n.clone(),
                ..Default::default()
            });
        }
    }
    let bytes = m.encode_to_vec();
    rccr_infer::runtime::ensure_loaded()?;
    let env = rccr_infer::runtime::environment()?;
    let ort_err =
        |e: ort::Error<ort::session::builder::SessionBuilder>| ExportError::Ort(e.to_string());
    let mut session = ort::session::Session::builder(&env)?
        .with_intra_threads(rccr_infer::provider::physical_cores())
        .map_err(ort_err)?
        .commit_from_memory(&bytes)?;

    let bar = if progress {
        ProgressBar::new(batches.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("calibrate {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut stats: HashMap<String, Stats> = HashMap::new();
    for (shape, data) in batches {
        let input = ort::value::TensorRef::from_array_view((shape.clone(), data.as_slice()))?;
        let out = session.run(ort::inputs![input_name.as_str() => input])?;
        for n in &names {
            let v = out
                .get(n.as_str())
                .ok_or_else(|| ExportError::Ort(format!("calibration: no output `{n}`")))?;
            let (_, values) = v.try_extract_tensor::<f32>()?;
            let r = image_range(n, values, method)?;
            let s = stats.entry(n.clone()).or_insert(Stats {
                lo: f32::INFINITY,
                hi: f32::NEG_INFINITY,
            });
            s.lo = s.lo.min(r.lo);
            s.hi = s.hi.max(r.hi);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Calibration {
        method,
        batches: batches.len(),
        ranges: names
            .into_iter()
            .map(|n| {
                let s = stats[&n];
                (n, Range { lo: s.lo, hi: s.hi })
            })
            .collect(),
    })
}

fn tensor_f32(t: &TensorProto) -> Result<Vec<f32>, ExportError> {
    if t.data_type != DataType::Float as i32 {
        return Err(ExportError::Network(format!(
            "initialiser `{}` is not float32 (quantize an fp32 export, not --fp16)",
            t.name
        )));
    }
    if !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}

fn raw_tensor(name: &str, dims: &[i64], dtype: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: dtype as i32,
        name: name.to_string(),
        raw_data: raw,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Float,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<(&str, Attr)>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op.to_string(),
        attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
        ..Default::default()
    }
}

/// The QDQ int8 model of the fp32 `model` with the activation ranges of `calibration`
/// (see the module docs). The metadata's `rccr.weights` becomes [`WEIGHTS_INT8_QDQ`] and
/// `rccr.calibration` records the method; inputs and outputs are unchanged.
pub fn quantize(model: &ModelProto, calibration: &Calibration) -> Result<ModelProto, ExportError> {
    let acts = activation_tensors(model)?;
    let mut m = model.clone();
    let graph = m
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();

    // Activation quantization parameters.
    let mut params: HashMap<String, (f32, u8)> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    for a in &acts {
        let r = calibration.ranges.get(a).ok_or_else(|| {
            ExportError::Network(format!("calibration has no range for tensor `{a}`"))
        })?;
        if !(r.lo.is_finite() && r.hi.is_finite()) {
            return Err(ExportError::Network(format!(
                "calibration range of `{a}` is not finite: [{}, {}]",
                r.lo, r.hi
            )));
        }
        params.insert(a.clone(), activation_params(*r));
    }
    // MaxPool commutes with a monotone quantizer: its output keeps its input's parameters
    // (exact, and what ORT needs to run it on uint8 without requantizing).
    for n in &graph.node {
        if n.op_type == "MaxPool" && n.input.len() == 1 && n.output.len() == 1 {
            if let (Some(&p), true) = (params.get(&n.input[0]), params.contains_key(&n.output[0])) {
                params.insert(n.output[0].clone(), p);
            }
        }
    }
    for a in &acts {
        let (s, zp) = params[a];
        new_inits.push(f32_tensor(&format!("{a}.q_scale"), &[], &[s]));
        new_inits.push(raw_tensor(
            &format!("{a}.q_zero"),
            &[],
            DataType::Uint8,
            vec![zp],
        ));
    }

    // Consumers of each tensor; Relu outputs that can fold into their QuantizeLinear.
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in &graph.node {
        for x in &n.input {
            consumers
                .entry(x.as_str())
                .or_default()
                .push(n.op_type.as_str());
        }
    }
    let mut fold_relu: HashSet<String> = HashSet::new();
    for n in &graph.node {
        if n.op_type == "Relu" && n.output.len() == 1 {
            let y = &n.output[0];
            let only_quantized = consumers
                .get(y.as_str())
                .is_some_and(|c| c.iter().all(|op| QUANTIZED_OPS.contains(op)));
            if only_quantized
                && !graph_outputs.contains(y)
                && params.get(y).is_some_and(|&(_, zp)| zp == 0)
            {
                fold_relu.insert(n.name.clone());
            }
        }
    }

    let inits: HashMap<String, TensorProto> = graph
        .initializer
        .drain(..)
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut used_inits: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(graph.node.len() * 3);
    let quantize_node = |x_src: &str, a: &str| {
        node(
            "QuantizeLinear",
            &format!("{a}.quantize"),
            &[x_src, &format!("{a}.q_scale"), &format!("{a}.q_zero")],
            &[&format!("{a}.q")],
            vec![],
        )
    };
    // Graph inputs that need quantizing (not the case for rccr models, handled anyway).
    for i in &graph.input {
        if params.contains_key(&i.name) {
            nodes.push(quantize_node(&i.name, &i.name));
        }
    }
    let old_nodes = std::mem::take(&mut graph.node);
    for (k, mut n) in old_nodes.into_iter().enumerate() {
        if fold_relu.contains(&n.name) {
            let y = n.output[0].clone();
            nodes.push(quantize_node(&n.input[0], &y));
            continue;
        }
        let op = n.op_type.clone();
        if QUANTIZED_OPS.contains(&op.as_str()) {
            let conv_src = n.input.first().cloned().unwrap_or_default();
            for i in 0..n.input.len() {
                let x = n.input[i].clone();
                if x.is_empty() {
                    continue;
                }
                if op == "Conv" && i > 0 {
                    continue; // weights and bias below
                }
                if params.contains_key(&x) {
                    let dq = format!("{x}.dq.{k}");
                    nodes.push(node(
                        "DequantizeLinear",
                        &dq,
                        &[
                            &format!("{x}.q"),
                            &format!("{x}.q_scale"),
                            &format!("{x}.q_zero"),
                        ],
                        &[&dq],
                        vec![],
                    ));
                    n.input[i] = dq;
                }
            }
            if op == "Conv" {
                let &(sx, _) = params.get(&conv_src).ok_or_else(|| {
                    ExportError::Network(format!(
                        "conv `{}`: input `{conv_src}` not calibrated",
                        n.name
                    ))
                })?;
                let wname = n.input.get(1).cloned().unwrap_or_default();
                let w = inits.get(&wname).ok_or_else(|| {
                    ExportError::Network(format!(
                        "conv `{}`: weight `{wname}` is not an initialiser",
                        n.name
                    ))
                })?;
                let wv = tensor_f32(w)?;
                let o = *w.dims.first().unwrap_or(&0);
                if o <= 0 {
                    return Err(ExportError::Network(format!(
                        "conv `{}`: empty weight",
                        n.name
                    )));
                }
                let (qw, sw) = quantize_weights(&wv, o as usize);
                used_inits.insert(wname.clone());
                let wq = format!("{wname}.int8");
                new_inits.push(raw_tensor(
                    &wq,
                    &w.dims,
                    DataType::Int8,
                    qw.iter().map(|&v| v as u8).collect(),
                ));
                new_inits.push(f32_tensor(&format!("{wq}.scale"), &[o], &sw));
                new_inits.push(raw_tensor(
                    &format!("{wq}.zero"),
                    &[o],
                    DataType::Int8,
                    vec![0; o as usize],
                ));
                let wdq = format!("{wname}.dq");
                nodes.push(node(
                    "DequantizeLinear",
                    &wdq,
                    &[&wq, &format!("{wq}.scale"), &format!("{wq}.zero")],
                    &[&wdq],
                    vec![("axis", Attr::Int(0))],
                ));
                n.input[1] = wdq;
                if let Some(bname) = n.input.get(2).cloned().filter(|b| !b.is_empty()) {
                    let b = inits.get(&bname).ok_or_else(|| {
                        ExportError::Network(format!(
                            "conv `{}`: bias `{bname}` is not an initialiser",
                            n.name
                        ))
                    })?;
                    let bv = tensor_f32(b)?;
                    if bv.len() != o as usize {
                        return Err(ExportError::Network(format!(
                            "conv `{}`: bias has {} values for {o} channels",
                            n.name,
                            bv.len()
                        )));
                    }
                    used_inits.insert(bname.clone());
                    let bs: Vec<f32> = sw.iter().map(|s| s * sx).collect();
                    let qb: Vec<i32> = bv
                        .iter()
                        .zip(&bs)
                        .map(|(v, s)| {
                            (*v as f64 / *s as f64)
                                .round()
                                .clamp(i32::MIN as f64, i32::MAX as f64)
                                as i32
                        })
                        .collect();
                    let bq = format!("{bname}.int32");
                    new_inits.push(raw_tensor(
                        &bq,
                        &[o],
                        DataType::Int32,
                        qb.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                    new_inits.push(f32_tensor(&format!("{bq}.scale"), &[o], &bs));
                    new_inits.push(raw_tensor(
                        &format!("{bq}.zero"),
                        &[o],
                        DataType::Int32,
                        vec![0; 4 * o as usize],
                    ));
                    let bdq = format!("{bname}.dq");
                    nodes.push(node(
                        "DequantizeLinear",
                        &bdq,
                        &[&bq, &format!("{bq}.scale"), &format!("{bq}.zero")],
                        &[&bdq],
                        vec![("axis", Attr::Int(0))],
                    ));
                    n.input[2] = bdq;
                }
            }
        }
        let outs = n.output.clone();
        nodes.push(n);
        for y in outs {
            if params.contains_key(&y) {
                nodes.push(quantize_node(&y, &y));
            }
        }
    }
    graph.node = nodes;
    // Keep the initialisers other nodes still read (normalisation constants, indices).
    let mut kept: Vec<TensorProto> = inits
        .into_iter()
        .filter(|(n, _)| !used_inits.contains(n))
        .map(|(_, t)| t)
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept.extend(new_inits);
    graph.initializer = kept;

    // Metadata.
    let calib = serde_json::json!({
        "method": calibration.method,
        "batches": calibration.batches,
        "activations": "uint8 per-tensor asymmetric",
        "weights": "int8 per-channel symmetric, 7-bit range (max|w|/63)",
        "bias": "int32 (scale s_x * s_w)",
    })
    .to_string();
    let mut has_calib = false;
    for p in &mut m.metadata_props {
        if p.key == crate::metadata::WEIGHTS {
            p.value = WEIGHTS_INT8_QDQ.to_string();
        }
        if p.key == CALIBRATION_KEY {
            p.value = calib.clone();
            has_calib = true;
        }
    }
    if !has_calib {
        m.metadata_props.push(crate::onnx::StringStringEntryProto {
            key: CALIBRATION_KEY.into(),
            value: calib,
        });
    }
    m.doc_string = format!("{} Weights: int8 QDQ (static quantization).", m.doc_string);
    if let Some(g) = m.graph.as_mut() {
        g.doc_string = m.doc_string.clone();
    }
    Ok(m)
}

/// Loads up to `count` images (`.png` / `.jpg`, sorted by name, recursively) of `dir`
/// for calibration, each resized (PIL-style bilinear, as `rccr-infer` does) to
/// `width x height` and returned as a `1 x 3 x H x W` batch in the model's input format.
pub fn calibration_batches(
    dir: &std::path::Path,
    count: usize,
    width: u32,
    height: u32,
) -> Result<Vec<Batch>, ExportError> {
    let files = crate::verify::image_files(
        dir,
        "calibration images (give a folder of images like those the model will see)",
    )?;
    // Spread the picks over the sorted list (consecutive frames look alike).
    let n = count.max(1).min(files.len());
    let picks: Vec<_> = (0..n).map(|i| files[i * files.len() / n].clone()).collect();
    picks
        .iter()
        .map(|p| {
            let img = image::open(p)
                .map_err(|e| ExportError::Image {
                    path: p.clone(),
                    reason: e.to_string(),
                })?
                .to_rgb8();
            Ok((
                vec![1, 3, height as i64, width as i64],
                rccr_infer::segmenter::preprocess(&img, width, height),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
