//! Calibration of the activation ranges: the fp32 model runs in ONNX Runtime (CPU) on
//! images with every tensor to quantize as an extra output; each tensor's range is the
//! widest of its per-image ranges under a [`CalibrationMethod`].

use super::{activation_tensors, Batch, Calibration, CalibrationMethod, Range};
use crate::onnx::{ModelProto, ValueInfoProto};
use crate::ExportError;
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Histogram bins of the percentile rule.
const PERCENTILE_BINS: usize = 4096;

/// Calibrates the activation ranges of the fp32 `model` on `batches` (each `(shape
/// [N, 3, H, W], values)` in the model's input format, fed to its first input) by
/// running it in ONNX Runtime (CPU) with every tensor of [`activation_tensors`] as an
/// extra output.
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
    let (bytes, input_name) = with_extra_outputs(model, &names)?;
    let mut session = crate::verify::cpu_session(&bytes)?;
    let bar = crate::progress_bar(
        progress,
        batches.len(),
        "calibrate {bar:30} {pos}/{len} {elapsed}",
    );
    let mut ranges: BTreeMap<String, Range> = BTreeMap::new();
    for (shape, data) in batches {
        let input = ort::value::TensorRef::from_array_view((shape.clone(), data.as_slice()))?;
        let out = session.run(ort::inputs![input_name.as_str() => input])?;
        for n in &names {
            let v = out
                .get(n.as_str())
                .ok_or_else(|| ExportError::OrtOutput(format!("calibration: no output `{n}`")))?;
            let r = image_range(n, v.try_extract_tensor::<f32>()?.1, method)?;
            widen(ranges.entry(n.clone()).or_insert(EMPTY), r);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Calibration {
        method,
        batches: batches.len(),
        ranges,
    })
}

/// The range no value has widened yet.
const EMPTY: Range = Range {
    lo: f32::INFINITY,
    hi: f32::NEG_INFINITY,
};

/// Widens `acc` to contain `r`.
fn widen(acc: &mut Range, r: Range) {
    acc.lo = acc.lo.min(r.lo);
    acc.hi = acc.hi.max(r.hi);
}

/// `model` with every tensor of `names` as a graph output, serialised, and the name of
/// its first input.
fn with_extra_outputs(
    model: &ModelProto,
    names: &[String],
) -> Result<(Vec<u8>, String), ExportError> {
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
    for n in names.iter().filter(|n| !outputs.contains(*n)) {
        graph.output.push(ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        });
    }
    Ok((m.encode_to_vec(), input_name))
}

/// Per-image range of `data` under `method`; an error names a tensor holding NaN.
pub(super) fn image_range(
    name: &str,
    data: &[f32],
    method: CalibrationMethod,
) -> Result<Range, ExportError> {
    if data.iter().any(|v| v.is_nan()) {
        return Err(ExportError::Network(format!(
            "calibration: tensor `{name}` holds NaN"
        )));
    }
    if data.is_empty() {
        return Ok(Range { lo: 0.0, hi: 0.0 });
    }
    let mut r = EMPTY;
    for &v in data {
        widen(&mut r, Range { lo: v, hi: v });
    }
    match method {
        CalibrationMethod::MinMax => Ok(r),
        CalibrationMethod::Percentile(p) => {
            let amax = r.lo.abs().max(r.hi.abs());
            if !amax.is_normal() {
                return Ok(r);
            }
            let clip = percentile_of_abs(data, amax, p);
            Ok(Range {
                lo: r.lo.max(-clip),
                hi: r.hi.min(clip),
            })
        }
    }
}

/// The `p`-th percentile of |x| over `data` (|x| <= `amax`): the upper edge of the first
/// histogram bin at which the cumulative count reaches `p` % of the values.
fn percentile_of_abs(data: &[f32], amax: f32, p: f64) -> f32 {
    let mut hist = vec![0u64; PERCENTILE_BINS];
    let k = PERCENTILE_BINS as f32 / amax;
    for &v in data {
        hist[((v.abs() * k) as usize).min(PERCENTILE_BINS - 1)] += 1;
    }
    let target = (p / 100.0 * data.len() as f64).ceil() as u64;
    let mut acc = 0u64;
    for (b, &c) in hist.iter().enumerate() {
        acc += c;
        if acc >= target {
            return (b + 1) as f32 / k;
        }
    }
    amax
}

/// Loads up to `count` images (`.png` / `.jpg`, sorted by name, recursively) of `dir`
/// for calibration, each resized (PIL-style bilinear, as `rccr-infer` does) to
/// `width x height` and returned as a `1 x 3 x H x W` batch in the model's input format.
pub fn calibration_batches(
    dir: &Path,
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
    (0..n)
        .map(|i| {
            let img = crate::verify::open_rgb(&files[i * files.len() / n])?;
            Ok((
                vec![1, 3, height as i64, width as i64],
                rccr_infer::segmenter::preprocess(&img, width, height),
            ))
        })
        .collect()
}
