//! Verification of an exported model: the tch teacher of either family (inference mode,
//! running batch-norm statistics, no dropout or drop path; `Segmenter::normalize` then
//! `Segmenter::forward_upsampled`) and ONNX Runtime on the CPU run the
//! same inputs (random images of several sizes, and optionally real images); the report
//! gives the largest absolute logit difference and the share of pixels whose argmax agrees.
//!
//! The model is run as serialised. When it has no `logits` output, the graph's internal
//! `logits` value (the input to the final ArgMax) is exposed as an extra output for the
//! comparison; nothing else changes.

use crate::onnx::{ModelProto, ValueInfoProto};
use crate::options::Shape;
use crate::ExportError;
use image::RgbImage;
use ort::session::Session;
use prost::Message;
use rccr_infer::contract::{INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use rccr_infer::labelmap::argmax_planes;
use rccr_infer::seed::{SplitMix, GOLDEN_GAMMA};
use rccr_models::Segmenter;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Pass bound for fp32 weights: the largest absolute logit difference allowed.
pub(crate) const FP32_ABS_TOLERANCE: f32 = 1e-4;
/// Pass bound for fp16 weights, relative to the largest absolute reference logit: each
/// weight is rounded to 11 significant bits (relative error up to 2^-11 ~ 4.9e-4), and the
/// errors of ~100 layers add up; 1e-2 of the logit range leaves the argmax essentially
/// unchanged while catching any structural error (which gives O(1) relative differences).
pub(crate) const FP16_REL_TOLERANCE: f32 = 1e-2;

/// When a comparison passes: `max |diff| <= abs + rel * max |reference logit|`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f32,
    /// Part relative to the largest absolute reference logit of the case.
    pub rel: f32,
}

impl Tolerance {
    /// The default bound: `FP32_ABS_TOLERANCE` for fp32 weights, `FP16_REL_TOLERANCE`
    /// (relative) for fp16 weights.
    pub fn default_for(fp16: bool) -> Tolerance {
        if fp16 {
            Tolerance {
                abs: 0.0,
                rel: FP16_REL_TOLERANCE,
            }
        } else {
            Tolerance {
                abs: FP32_ABS_TOLERANCE,
                rel: 0.0,
            }
        }
    }

    /// The bound for a case whose largest absolute reference logit is `max_abs_logit`.
    pub(crate) fn bound(&self, max_abs_logit: f32) -> f32 {
        self.abs + self.rel * max_abs_logit
    }
}

/// What to verify on.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Random-input shapes. For a fixed-shape model only that shape is used.
    pub shapes: Vec<Shape>,
    /// Real images (PNG / JPEG), each run as a batch of one (or of the fixed N).
    pub images: Vec<PathBuf>,
    /// Images larger than this (longer side) are scaled down for a dynamic-shape model;
    /// a fixed-shape model gets every image resized to its H x W. Default: 512.
    pub max_side: u32,
    /// Seed of the random inputs (case i uses seed + i). Default: 0.
    pub seed: u64,
    /// Pass bound.
    pub tolerance: Tolerance,
    /// When set, the pass rule is instead "share of pixels whose argmax equals the tch
    /// teacher's >= this" (for int8 models, whose logits differ by design; see
    /// [`crate::quantize::DEFAULT_MIN_AGREEMENT`]). Default: none.
    pub min_agreement: Option<f64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The default random shapes: two sizes other than any training crop, one of them odd
/// (exercising the ceil-mode pool and the align-corners resize) and one batched.
pub fn default_shapes() -> Vec<Shape> {
    vec![
        Shape { n: 1, h: 64, w: 96 },
        Shape { n: 2, h: 80, w: 80 },
        Shape { n: 1, h: 65, w: 65 },
    ]
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            shapes: default_shapes(),
            images: Vec::new(),
            max_side: 512,
            seed: 0,
            tolerance: Tolerance::default_for(false),
            min_agreement: None,
            progress: false,
        }
    }
}

/// The comparison on one input batch.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// `random (seed S)` or the image path.
    pub input: String,
    /// `[N, 3, H, W]`.
    pub shape: [i64; 4],
    /// Largest |ORT logit - tch logit|.
    pub max_abs_diff: f32,
    /// Mean |ORT logit - tch logit|.
    pub mean_abs_diff: f64,
    /// Largest |tch logit| (the scale of the logits).
    pub max_abs_logit: f32,
    /// The bound this case had to meet.
    pub bound: f32,
    /// Share of pixels where the ORT label (the `labels` output, or the argmax of the
    /// ORT logits when the model has no `labels`) equals the tch argmax.
    pub argmax_agreement: f64,
    /// Whether `max_abs_diff <= bound` (false for NaN), or with
    /// [`VerifyOptions::min_agreement`], whether the agreement reaches it.
    pub passed: bool,
    /// tch forward time.
    pub tch_ms: f64,
    /// ONNX Runtime run time.
    pub ort_ms: f64,
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// One entry per input batch.
    pub cases: Vec<CaseReport>,
    /// Largest `max_abs_diff` over the cases.
    pub max_abs_diff: f32,
    /// Smallest `argmax_agreement` over the cases.
    pub min_argmax_agreement: f64,
    /// The pass rule.
    pub tolerance: Tolerance,
    /// The agreement pass rule, when it replaces the tolerance.
    pub min_agreement: Option<f64>,
    /// Every case passed.
    pub passed: bool,
    /// The ONNX Runtime library used.
    pub ort_library: String,
}

impl VerifyReport {
    /// One line per case plus a verdict, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for c in &self.cases {
            s.push_str(&format!(
                "  {:<40} {:>16}  max|diff| {:.3e} (bound {:.1e}, max|logit| {:.3})  argmax agree {:.4}%  tch {:.0} ms  ort {:.0} ms{}\n",
                c.input,
                format!("{}x{}x{}x{}", c.shape[0], c.shape[1], c.shape[2], c.shape[3]),
                c.max_abs_diff,
                c.bound,
                c.max_abs_logit,
                100.0 * c.argmax_agreement,
                c.tch_ms,
                c.ort_ms,
                if c.passed { "" } else { "  FAILED" }
            ));
        }
        s.push_str(&format!(
            "verify {}: max |logit diff| {:.3e}, min argmax agreement {:.4}% over {} cases",
            if self.passed { "passed" } else { "FAILED" },
            self.max_abs_diff,
            100.0 * self.min_argmax_agreement,
            self.cases.len()
        ));
        s
    }
}

/// The model's input shape if it is fixed (`None` for dynamic N, H, W).
pub(crate) fn fixed_input_shape(model: &ModelProto) -> Option<Shape> {
    use crate::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let input = model
        .graph
        .as_ref()?
        .input
        .iter()
        .find(|i| i.name == INPUT_NAME)?;
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims: Vec<i64> = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match dims.as_slice() {
        [n, 3, h, w] => Some(Shape {
            n: *n,
            h: *h,
            w: *w,
        }),
        _ => None,
    }
}

/// The image files (`.png`, `.jpg`, `.jpeg`) under `dir` (recursively, sorted), at most
/// `limit`; an error naming the folder when there is none.
pub fn list_images(dir: &Path, limit: usize) -> Result<Vec<PathBuf>, ExportError> {
    let mut files = image_files(dir, "images to verify on")?;
    files.truncate(limit);
    Ok(files)
}

/// The image files under `dir` (recursively, sorted by path, hidden files skipped), listed
/// by the same walker `rccr-infer` uses; `what` names them in the error when there is none.
pub fn image_files(dir: &Path, what: &str) -> Result<Vec<PathBuf>, ExportError> {
    match rccr_infer::files::list_images(dir) {
        Ok(list) => Ok(list.images),
        Err(rccr_infer::InferError::EmptyFolder { .. }) => Err(ExportError::Options(format!(
            "{}: no .png / .jpg {what}",
            dir.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// An image file decoded to RGB; an error names the file.
pub(crate) fn open_rgb(path: &Path) -> Result<RgbImage, ExportError> {
    Ok(image::open(path)
        .map_err(|cause| ExportError::Image {
            path: path.to_path_buf(),
            cause,
        })?
        .to_rgb8())
}

/// An image as `N x 3 x H x W` float RGB 0..255 (the model's input format), resized to
/// `fixed` (and repeated to its N) or scaled down to at most `max_side`.
fn load_image(path: &Path, fixed: Option<Shape>, max_side: u32) -> Result<Tensor, ExportError> {
    let (img, n) = fit_image(open_rgb(path)?, fixed, max_side);
    let (w, h) = img.dimensions();
    let hwc = Tensor::from_slice(img.as_raw()).view([h as i64, w as i64, 3]);
    let chw = hwc.permute([2, 0, 1]).to_kind(Kind::Float).unsqueeze(0);
    Ok(chw.repeat([n, 1, 1, 1]).contiguous())
}

/// `img` resized to `fixed`'s H x W (with its batch size N), or scaled down to at most
/// `max_side` pixels on the longer side (batch 1), PIL-style bilinear.
fn fit_image(img: RgbImage, fixed: Option<Shape>, max_side: u32) -> (RgbImage, i64) {
    use image::imageops::{resize, FilterType};
    let (w, h) = img.dimensions();
    match fixed {
        Some(s) => (
            resize(&img, s.w as u32, s.h as u32, FilterType::Triangle),
            s.n,
        ),
        None if w.max(h) > max_side => {
            let scale = max_side as f64 / w.max(h) as f64;
            let side = |v: u32| ((v as f64 * scale).round() as u32).max(1);
            (resize(&img, side(w), side(h), FilterType::Triangle), 1)
        }
        None => (img, 1),
    }
}

/// Uniform random pixels in [0, 255) of `shape`, from a local SplitMix64 generator
/// (`rccr_infer::seed`; not tch's global RNG, so that concurrent callers get reproducible
/// inputs).
pub fn random_image(shape: Shape, seed: u64) -> Tensor {
    let mut rng = SplitMix(seed ^ GOLDEN_GAMMA);
    let n = (shape.n * 3 * shape.h * shape.w) as usize;
    let v: Vec<f32> = (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 255.0)
        .collect();
    Tensor::from_slice(&v).view(shape.nchw())
}

/// Adds the internal `logits` value as a graph output when the model lacks it.
fn with_logits_output(model: &ModelProto) -> Result<(ModelProto, bool), ExportError> {
    let mut m = model.clone();
    let graph = m
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Network("the model has no graph".into()))?;
    let has = graph.output.iter().any(|o| o.name == LOGITS_OUTPUT);
    if !has {
        graph.output.push(ValueInfoProto {
            name: LOGITS_OUTPUT.into(),
            ..Default::default()
        });
    }
    let has_labels = graph.output.iter().any(|o| o.name == LABELS_OUTPUT);
    Ok((m, has_labels))
}

fn tensor_vec<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<T>, ExportError> {
    Ok(Vec::<T>::try_from(&t.contiguous().view(-1))?)
}

/// An ONNX Runtime session (CPU) of a serialised model, from rccr-infer's one session
/// builder (the thread count and options `rccr-infer` runs with).
pub(crate) fn cpu_session(model_bytes: &[u8]) -> Result<Session, ExportError> {
    Ok(rccr_infer::provider::session_builder(None)?.commit_from_memory(model_bytes)?)
}

/// Runs `net` (tch, CPU) and the serialised `model` (ONNX Runtime, CPU) on the inputs of
/// `opts` and compares them. Errors are for inputs or runtimes that fail; a numerical
/// mismatch is reported (`passed: false`), not an error.
pub fn verify(
    net: &Segmenter,
    model_bytes: &[u8],
    opts: &VerifyOptions,
) -> Result<VerifyReport, ExportError> {
    let model = ModelProto::decode(model_bytes)?;
    let fixed = fixed_input_shape(&model);
    let (run_model, has_labels) = with_logits_output(&model)?;
    let library = rccr_infer::runtime::ensure_loaded()?;
    let mut ort = OrtRunner {
        session: cpu_session(&run_model.encode_to_vec())?,
        has_labels,
    };
    let inputs = verify_inputs(opts, fixed)?;
    let bar = crate::progress_bar(
        opts.progress,
        inputs.len(),
        "verify {bar:30} {pos}/{len} {msg}",
    );
    let mut cases = Vec::new();
    for (name, x) in inputs {
        bar.set_message(name.clone());
        cases.push(compare_case(net, &mut ort, name, &x, opts)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(VerifyReport::from_cases(
        cases,
        opts,
        library.display().to_string(),
    ))
}

/// The inputs to compare on: random batches of `opts.shapes` (only `fixed` for a
/// fixed-shape model), then `opts.images`; each with its name in the report.
fn verify_inputs(
    opts: &VerifyOptions,
    fixed: Option<Shape>,
) -> Result<Vec<(String, Tensor)>, ExportError> {
    let shapes = match fixed {
        Some(s) => vec![s],
        None => opts.shapes.clone(),
    };
    let mut inputs = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let seed = opts.seed + i as u64;
        inputs.push((format!("random (seed {seed})"), random_image(*s, seed)));
    }
    for p in &opts.images {
        let x = load_image(p, fixed, opts.max_side)?;
        inputs.push((p.display().to_string(), x));
    }
    Ok(inputs)
}

/// The tch teacher's upsampled logits and argmax labels of `x`, flattened.
fn tch_reference(net: &Segmenter, x: &Tensor) -> Result<(Vec<f32>, Vec<i64>), ExportError> {
    let reference = tch::no_grad(|| net.forward_upsampled(&net.normalize(x), false));
    let labels = reference.argmax(1, false);
    Ok((tensor_vec(&reference)?, tensor_vec(&labels)?))
}

/// The model under test in ONNX Runtime, and whether it has a `labels` output.
struct OrtRunner {
    session: Session,
    has_labels: bool,
}

impl OrtRunner {
    /// `logits` (`N x C x H x W`) and labels (`N x H x W`: the `labels` output, else the
    /// argmax of the logits) of `x`, checked against those shapes; and the run time (ms).
    fn run(&mut self, x: &Tensor, c: i64) -> Result<(Vec<f32>, Vec<i64>, f64), ExportError> {
        let size = x.size();
        let (n, h, w) = (size[0], size[2], size[3]);
        let data: Vec<f32> = tensor_vec(x)?;
        let t0 = Instant::now();
        let input = ort::value::Tensor::from_array((size, data))?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => input])?;
        let ort_ms = t0.elapsed().as_secs_f64() * 1e3;
        let logits = output::<f32>(&outputs, LOGITS_OUTPUT, &[n, c, h, w])?;
        let labels = if self.has_labels {
            output::<i64>(&outputs, LABELS_OUTPUT, &[n, h, w])?
        } else {
            labels_of_logits(&logits, c as usize, (h * w) as usize)
        };
        Ok((logits, labels, ort_ms))
    }
}

/// The output `name` of shape `shape`; an error when it is missing or shaped otherwise.
fn output<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    outputs: &ort::session::SessionOutputs,
    name: &str,
    shape: &[i64],
) -> Result<Vec<T>, ExportError> {
    let v = outputs
        .get(name)
        .ok_or_else(|| ExportError::OrtOutput(format!("no `{name}` output")))?;
    let (got, values) = v.try_extract_tensor::<T>()?;
    if **got != *shape {
        return Err(ExportError::OrtOutput(format!(
            "`{name}` has shape {:?}, expected {shape:?}",
            &**got
        )));
    }
    Ok(values.to_vec())
}

/// Runs `x` through the tch teacher and ONNX Runtime and compares the two.
fn compare_case(
    net: &Segmenter,
    ort: &mut OrtRunner,
    input: String,
    x: &Tensor,
    opts: &VerifyOptions,
) -> Result<CaseReport, ExportError> {
    let size = x.size();
    let t0 = Instant::now();
    let (ref_logits, ref_labels) = tch_reference(net, x)?;
    let tch_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (logits, labels, ort_ms) = ort.run(x, net.config().num_classes)?;
    let d = LogitDiff::of(&logits, &ref_logits);
    let bound = opts.tolerance.bound(d.max_abs_logit);
    let argmax_agreement = agreement(&labels, &ref_labels);
    let passed = match opts.min_agreement {
        Some(min) => !d.max_abs_diff.is_nan() && argmax_agreement >= min,
        None => d.max_abs_diff <= bound,
    };
    Ok(CaseReport {
        input,
        shape: [size[0], 3, size[2], size[3]],
        max_abs_diff: d.max_abs_diff,
        mean_abs_diff: d.mean_abs_diff,
        max_abs_logit: d.max_abs_logit,
        bound,
        argmax_agreement,
        passed,
        tch_ms,
        ort_ms,
    })
}

/// How far ONNX Runtime's logits are from the reference's.
struct LogitDiff {
    /// Largest |diff|; NaN when any difference is NaN.
    max_abs_diff: f32,
    /// Mean |diff|.
    mean_abs_diff: f64,
    /// Largest |reference logit|.
    max_abs_logit: f32,
}

impl LogitDiff {
    fn of(logits: &[f32], reference: &[f32]) -> LogitDiff {
        let (mut max_abs_diff, mut sum, mut nan) = (0f32, 0f64, false);
        for (a, b) in logits.iter().zip(reference) {
            let d = (a - b).abs();
            nan |= d.is_nan();
            max_abs_diff = max_abs_diff.max(d);
            sum += d as f64;
        }
        LogitDiff {
            max_abs_diff: if nan { f32::NAN } else { max_abs_diff },
            mean_abs_diff: sum / reference.len().max(1) as f64,
            max_abs_logit: reference.iter().fold(0f32, |m, v| m.max(v.abs())),
        }
    }
}

/// Share of positions where `labels` equals `reference` (over the reference's length).
fn agreement(labels: &[i64], reference: &[i64]) -> f64 {
    let same = labels.iter().zip(reference).filter(|(a, b)| a == b).count();
    same as f64 / reference.len().max(1) as f64
}

impl VerifyReport {
    /// The report over `cases`: passed when there is a case and every one passed.
    fn from_cases(cases: Vec<CaseReport>, opts: &VerifyOptions, ort_library: String) -> Self {
        let max_abs_diff = cases.iter().fold(0f32, |m, c| {
            if c.max_abs_diff.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(c.max_abs_diff)
            }
        });
        VerifyReport {
            passed: !cases.is_empty() && cases.iter().all(|c| c.passed),
            min_argmax_agreement: cases.iter().map(|c| c.argmax_agreement).fold(1.0, f64::min),
            max_abs_diff,
            cases,
            tolerance: opts.tolerance,
            min_agreement: opts.min_agreement,
            ort_library,
        }
    }
}

/// The first-maximum argmax over the classes of each image of `N x C x P` logits
/// (`rccr_infer::labelmap::argmax_planes`), as int64 labels like the `labels` output.
fn labels_of_logits(logits: &[f32], c: usize, pixels: usize) -> Vec<i64> {
    logits
        .chunks(c * pixels)
        .flat_map(|image| argmax_planes(image, c, pixels))
        .map(i64::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_by_hand() {
        // N = 1, C = 3, 2 pixels: pixel 0 -> class 2, pixel 1 ties 0 and 1 -> first (0).
        let logits = [0.0, 5.0, 1.0, 5.0, 2.0, -1.0];
        assert_eq!(labels_of_logits(&logits, 3, 2), vec![2, 0]);
        // Two images: the second is the first with classes 0 and 2 swapped.
        let two = [0.0, 5.0, 1.0, 5.0, 2.0, -1.0, 2.0, -1.0, 1.0, 5.0, 0.0, 5.0];
        assert_eq!(labels_of_logits(&two, 3, 2), vec![2, 0, 0, 1]);
    }

    #[test]
    fn tolerance_bounds() {
        assert_eq!(Tolerance::default_for(false).bound(1000.0), 1e-4);
        assert!((Tolerance::default_for(true).bound(10.0) - 0.1).abs() < 1e-6);
    }
}
