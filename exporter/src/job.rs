//! One `rccr-export` run as a library call ([`run`]): check the options and the output
//! path, load the teacher, build the graph, optionally quantize it to int8 and verify it
//! against libtorch, and write it only when it passes. The binary parses its arguments
//! into an [`ExportJob`] and prints the [`ExportOutcome`].

use crate::export::{check_output_path, encode, export_loaded, load_teacher, write_model};
use crate::onnx::ModelProto;
use crate::options::{ExportOptions, Shape, OPSETS};
use crate::quantize::{self, Batch, Calibration, CalibrationMethod};
use crate::verify::{self, Tolerance, VerifyOptions, VerifyReport};
use crate::ExportError;
use rccr_infer::Size;
use rccr_models::checkpoint::LoadedNet;
use std::path::PathBuf;
use std::time::Instant;

/// What one export run does.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// Trainer checkpoint (or bare model file) holding the teacher.
    pub checkpoint: PathBuf,
    /// The ONNX model to write.
    pub out: PathBuf,
    /// How to build the graph.
    pub export: ExportOptions,
    /// Quantize to int8 (QDQ) when set.
    pub int8: Option<Int8Options>,
    /// Verify against libtorch before writing when set.
    pub verify: Option<VerifyRequest>,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// Static int8 quantization of a run.
#[derive(Debug, Clone)]
pub struct Int8Options {
    /// Images like those the model will see (`.png` / `.jpg`, recursive).
    pub calibration_images: PathBuf,
    /// Images used, spread over the sorted list.
    pub calibration_count: usize,
    /// The range rule.
    pub method: CalibrationMethod,
    /// Calibration size; `None`: the fixed shape's, else rccr-infer's default.
    pub calibration_size: Option<Size>,
    /// The verification pass rule: least share of pixels whose argmax equals libtorch's.
    pub min_agreement: f64,
}

/// What to verify on.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// A folder of images to verify on (int8 without one: the calibration images).
    pub images: Option<PathBuf>,
    /// At most this many images.
    pub max_images: usize,
    /// Images are scaled down to at most this many pixels on the longer side.
    pub max_side: u32,
    /// Random-input shapes; empty: [`verify::default_shapes`] (none for int8, whose
    /// ranges are calibrated on images, not noise).
    pub shapes: Vec<Shape>,
    /// Absolute bound on max |logit diff| instead of [`Tolerance::default_for`].
    pub tolerance: Option<f32>,
}

/// What a run did.
#[derive(Debug)]
pub struct ExportOutcome {
    /// Size of the serialised model.
    pub bytes: usize,
    /// Nodes of its graph.
    pub nodes: usize,
    /// Seconds to load the checkpoint.
    pub load_s: f64,
    /// Seconds to build (and quantize) and encode the model.
    pub build_s: f64,
    /// The int8 calibration, when quantized.
    pub calibration: Option<Calibration>,
    /// The verification report, when verified.
    pub report: Option<VerifyReport>,
    /// Why verification failed (the model was then not written).
    pub failure: Option<ExportError>,
}

impl ExportOutcome {
    /// Whether the model was written.
    pub fn written(&self) -> bool {
        self.failure.is_none()
    }

    /// The run as JSON (options, sizes, timings, calibration, verification report).
    pub fn json(&self, job: &ExportJob) -> serde_json::Value {
        serde_json::json!({
            "checkpoint": job.checkpoint,
            "out": job.out,
            "options": job.export,
            "int8": job.int8.is_some(),
            "calibration": self.calibration.as_ref().map(|c| serde_json::json!({
                "method": c.method, "images": c.batches, "tensors": c.ranges.len(),
            })),
            "bytes": self.bytes,
            "load_s": self.load_s,
            "build_s": self.build_s,
            "verify": self.report,
        })
    }
}

/// Runs `job`. Errors are for unusable inputs, options or runtimes; a model that fails
/// verification gives an outcome with [`ExportOutcome::failure`] set, and no file.
pub fn run(job: &ExportJob) -> Result<ExportOutcome, ExportError> {
    check(job)?;
    let t0 = Instant::now();
    let loaded = load(job)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut model = export_loaded(&loaded, &job.checkpoint, &job.export)?;
    let calibration = match &job.int8 {
        Some(int8) => Some(quantize_model(&mut model, int8, job)?),
        None => None,
    };
    let bytes = encode(&model)?;
    let build_s = t1.elapsed().as_secs_f64();
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    tracing::info!(
        nodes,
        bytes = bytes.len(),
        "built the ONNX graph in {build_s:.2} s"
    );
    let report = match &job.verify {
        Some(v) => Some(verify::verify(
            &loaded.net.seg,
            &bytes,
            &verify_options(job, v)?,
        )?),
        None => None,
    };
    let failure = report.as_ref().and_then(|r| verification_failure(job, r));
    if failure.is_none() {
        write_model(&job.out, &bytes)?;
    }
    Ok(ExportOutcome {
        bytes: bytes.len(),
        nodes,
        load_s,
        build_s,
        calibration,
        report,
        failure,
    })
}

/// Refuses an unsupported opset and an unusable output path before the (long) load.
fn check(job: &ExportJob) -> Result<(), ExportError> {
    let opset = job.export.opset;
    if !OPSETS.contains(&opset) {
        return Err(ExportError::Options(format!(
            "--opset {opset} is not supported: use {} to {}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    check_output_path(&job.out)
}

/// The teacher of the job's checkpoint, logged.
fn load(job: &ExportJob) -> Result<LoadedNet, ExportError> {
    let loaded = load_teacher(&job.checkpoint)?;
    tracing::info!(
        backbone = %loaded.info.model.backbone,
        classes = loaded.info.model.num_classes,
        iteration = loaded.info.iteration,
        "loaded {}",
        job.checkpoint.display()
    );
    Ok(loaded)
}

/// The calibration size `(W, H)`: the one asked for, else the fixed shape's, else
/// rccr-infer's default input size.
pub(crate) fn calibration_size(int8: &Int8Options, fixed: Option<Shape>) -> (u32, u32) {
    match (int8.calibration_size, fixed) {
        (Some(s), _) => s.pair(),
        (None, Some(f)) => (f.w as u32, f.h as u32),
        (None, None) => rccr_infer::segmenter::DEFAULT_INPUT_SIZE,
    }
}

/// The calibration batches of `int8` at [`calibration_size`]; for a fixed shape each
/// image is repeated to its batch size N.
pub(crate) fn calibration_inputs(
    int8: &Int8Options,
    fixed: Option<Shape>,
) -> Result<Vec<Batch>, ExportError> {
    let (w, h) = calibration_size(int8, fixed);
    let mut batches =
        quantize::calibration_batches(&int8.calibration_images, int8.calibration_count, w, h)?;
    if let Some(f) = fixed {
        for (shape, data) in &mut batches {
            shape[0] = f.n;
            *data = data.repeat(f.n as usize);
        }
    }
    tracing::info!(
        "calibrating on {} images of {} at {w}x{h} ({:?})",
        batches.len(),
        int8.calibration_images.display(),
        int8.method
    );
    Ok(batches)
}

/// Calibrates and quantizes `model` in place; returns the calibration.
fn quantize_model(
    model: &mut ModelProto,
    int8: &Int8Options,
    job: &ExportJob,
) -> Result<Calibration, ExportError> {
    let batches = calibration_inputs(int8, job.export.fixed_shape)?;
    let t = Instant::now();
    let c = quantize::calibrate(model, &batches, int8.method, job.progress)?;
    *model = quantize::quantize(model, &c)?;
    tracing::info!(
        "quantized {} activation tensors in {:.1} s",
        c.ranges.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(c)
}

/// The verification of a job: its images (int8 without images: the first calibration
/// images), its shapes, its bound or the default for the weights, and for int8 the
/// argmax-agreement rule.
pub(crate) fn verify_options(
    job: &ExportJob,
    v: &VerifyRequest,
) -> Result<VerifyOptions, ExportError> {
    let image_dir = v
        .images
        .as_ref()
        .or(job.int8.as_ref().map(|q| &q.calibration_images));
    let images = match image_dir {
        Some(dir) => verify::list_images(dir, v.max_images)?,
        None => Vec::new(),
    };
    let shapes = match (v.shapes.is_empty(), job.int8.is_some()) {
        (false, _) => v.shapes.clone(),
        (true, true) => Vec::new(),
        (true, false) => verify::default_shapes(),
    };
    let tolerance = match v.tolerance {
        Some(abs) => Tolerance { abs, rel: 0.0 },
        None => Tolerance::default_for(job.export.fp16),
    };
    Ok(VerifyOptions {
        shapes,
        images,
        max_side: v.max_side,
        tolerance,
        min_agreement: job.int8.as_ref().map(|q| q.min_agreement),
        progress: job.progress,
        ..Default::default()
    })
}

/// The error of a failed verification, naming the rule and the file not written.
fn verification_failure(job: &ExportJob, r: &VerifyReport) -> Option<ExportError> {
    if r.passed {
        return None;
    }
    let out = job.out.display();
    Some(ExportError::Verification(match &job.int8 {
        Some(q) => format!(
            "argmax agreement {:.4}% below --min-agreement {:.4}%; {out} was not written",
            100.0 * r.min_argmax_agreement,
            100.0 * q.min_agreement,
        ),
        None => format!(
            "max |logit diff| {:.3e} beyond the bound; {out} was not written",
            r.max_abs_diff
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(int8: Option<Int8Options>, fp16: bool) -> ExportJob {
        ExportJob {
            checkpoint: "c.safetensors".into(),
            out: "m.onnx".into(),
            export: ExportOptions {
                fp16,
                ..Default::default()
            },
            int8,
            verify: None,
            progress: false,
        }
    }

    fn int8(dir: &std::path::Path, size: Option<Size>) -> Int8Options {
        Int8Options {
            calibration_images: dir.to_path_buf(),
            calibration_count: 16,
            method: CalibrationMethod::MinMax,
            calibration_size: size,
            min_agreement: 0.97,
        }
    }

    #[test]
    fn calibration_size_is_the_request_then_the_fixed_shape_then_infers_default() {
        let fixed = Some(Shape { n: 2, h: 48, w: 64 });
        let q = int8("d".as_ref(), Some(Size::new(96, 32)));
        assert_eq!(calibration_size(&q, fixed), (96, 32));
        let q = int8("d".as_ref(), None);
        assert_eq!(calibration_size(&q, fixed), (64, 48));
        assert_eq!(
            calibration_size(&q, None),
            rccr_infer::segmenter::DEFAULT_INPUT_SIZE
        );
    }

    #[test]
    fn verification_follows_the_weights() {
        let request = VerifyRequest {
            max_images: 4,
            max_side: 512,
            ..Default::default()
        };
        // fp32: the default shapes and the absolute bound; an explicit bound replaces it.
        let v = verify_options(&job(None, false), &request).unwrap();
        assert_eq!(v.shapes, verify::default_shapes());
        assert_eq!(
            v.tolerance,
            Tolerance {
                abs: 1e-4,
                rel: 0.0
            }
        );
        assert_eq!((v.images.len(), v.min_agreement), (0, None));
        let tight = VerifyRequest {
            tolerance: Some(0.0),
            ..request.clone()
        };
        let v = verify_options(&job(None, true), &tight).unwrap();
        assert_eq!(v.tolerance, Tolerance { abs: 0.0, rel: 0.0 });
        // fp16: the bound relative to the logits.
        let v = verify_options(&job(None, true), &request).unwrap();
        assert_eq!(
            v.tolerance,
            Tolerance {
                abs: 0.0,
                rel: 1e-2
            }
        );
        // int8: argmax agreement on the calibration images, no random inputs unless asked.
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::new(8, 8)
            .save(dir.path().join("a.png"))
            .unwrap();
        let v = verify_options(&job(Some(int8(dir.path(), None)), false), &request).unwrap();
        assert_eq!(v.images, vec![dir.path().join("a.png")]);
        assert!(v.shapes.is_empty());
        assert_eq!(v.min_agreement, Some(0.97));
        let shaped = VerifyRequest {
            shapes: vec![Shape { n: 1, h: 8, w: 8 }],
            ..request
        };
        let v = verify_options(&job(Some(int8(dir.path(), None)), false), &shaped).unwrap();
        assert_eq!(v.shapes, shaped.shapes);
    }
}
