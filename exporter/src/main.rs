//! `rccr-export`: freezes the teacher of a trainer checkpoint into an ONNX model
//! (see the library docs for the model contract) and optionally verifies it against
//! libtorch with ONNX Runtime before writing it. The work is [`rccr_exporter::job::run`];
//! this binary parses the arguments into its [`ExportJob`] and prints the outcome.

use anyhow::Result;
use clap::Parser;
use rccr_exporter::options::{Outputs, Shape, DEFAULT_OPSET};
use rccr_exporter::quantize::{CalibrationMethod, DEFAULT_MIN_AGREEMENT};
use rccr_exporter::{job, ExportJob, ExportOptions, Int8Options, VerifyRequest};
use rccr_infer::Size;
use std::path::PathBuf;

/// Export the RCCR teacher (encoder + segmentation head) of a checkpoint to ONNX.
#[derive(Debug, Parser)]
#[command(name = "rccr-export", version)]
struct Cli {
    /// Trainer checkpoint (RUN_DIR/checkpoints/*.safetensors) or bare model file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The ONNX model to write (written to a temporary file, then renamed).
    #[arg(long)]
    out: PathBuf,
    /// Graph outputs: `labels` (int64 N x H x W), `logits` (float32 N x C x H x W) or `both`.
    #[arg(long, default_value = "labels")]
    outputs: Outputs,
    /// Store the weights as float16 (Cast to float32 in the graph; I/O and arithmetic
    /// stay float32). Halves the file.
    #[arg(long)]
    fp16: bool,
    /// Fixed input shape NxHxW (or Nx3xHxW) instead of dynamic N, H, W, for TensorRT
    /// engines built ahead of time.
    #[arg(long, alias = "input-size", value_name = "NxHxW")]
    fixed_shape: Option<Shape>,
    /// ONNX opset (17 to 21).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    opset: i64,
    /// Compare libtorch and ONNX Runtime (CPU) outputs before writing; the model is not
    /// written and the exit status is 1 when they differ beyond the bound.
    #[arg(long)]
    verify: bool,
    /// Also verify on the images (.png/.jpg) of this folder (implies --verify).
    #[arg(long, value_name = "DIR")]
    verify_images: Option<PathBuf>,
    /// At most this many images of --verify-images.
    #[arg(long, default_value_t = 4)]
    verify_max_images: usize,
    /// Scale verification images down to at most this many pixels on the longer side.
    #[arg(long, default_value_t = 512)]
    verify_max_side: u32,
    /// Random verification shapes NxHxW (repeatable; implies --verify); default 1x64x96,
    /// 2x80x80, 1x65x65.
    #[arg(long = "verify-shape", value_name = "NxHxW")]
    verify_shapes: Vec<Shape>,
    /// Override the absolute pass bound on max |logit diff| (default 1e-4; with --fp16
    /// the default is 1e-2 x max |logit|).
    #[arg(long)]
    tolerance: Option<f32>,
    /// Quantize to int8 (QDQ format: per-channel int8 weights, uint8 activations
    /// calibrated on --calibration-images) for ONNX Runtime's integer CPU kernels.
    /// `--verify` then checks argmax agreement (--min-agreement) instead of logit error.
    #[arg(long, requires = "calibration_images", conflicts_with = "fp16")]
    int8: bool,
    /// Images (.png/.jpg, searched recursively) like those the model will see, for the
    /// int8 activation ranges.
    #[arg(long, value_name = "DIR")]
    calibration_images: Option<PathBuf>,
    /// Calibration images used (spread over the sorted list).
    #[arg(long, default_value_t = 16)]
    calibration_count: usize,
    /// Range rule: `minmax` or `percentile[:P]` (|x| clipped at its P-th percentile).
    #[arg(long, default_value = "percentile:99.999")]
    calibration_method: CalibrationMethod,
    /// Size WxH the calibration images are resized to (default: the fixed shape, else
    /// 1024x512, rccr-infer's default input size).
    #[arg(long, value_name = "WxH")]
    calibration_size: Option<Size>,
    /// int8 verification: least share of pixels whose argmax equals libtorch fp32's.
    /// Verified on --verify-images, else on the first --verify-max-images calibration
    /// images (random inputs only with an explicit --verify-shape).
    #[arg(long, default_value_t = DEFAULT_MIN_AGREEMENT)]
    min_agreement: f64,
    /// Print the result as JSON on stdout (logs stay on stderr).
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// The library's description of this run.
    fn job(&self) -> ExportJob {
        let int8 = self.calibration_images.clone().filter(|_| self.int8);
        ExportJob {
            checkpoint: self.checkpoint.clone(),
            out: self.out.clone(),
            export: ExportOptions {
                outputs: self.outputs,
                fp16: self.fp16,
                fixed_shape: self.fixed_shape,
                opset: self.opset,
            },
            int8: int8.map(|calibration_images| Int8Options {
                calibration_images,
                calibration_count: self.calibration_count,
                method: self.calibration_method,
                calibration_size: self.calibration_size,
                min_agreement: self.min_agreement,
            }),
            verify: (self.verify || self.verify_images.is_some() || !self.verify_shapes.is_empty())
                .then(|| VerifyRequest {
                    images: self.verify_images.clone(),
                    max_images: self.verify_max_images,
                    max_side: self.verify_max_side,
                    shapes: self.verify_shapes.clone(),
                    tolerance: self.tolerance,
                }),
            progress: true,
        }
    }
}

fn main() {
    rccr_infer::logging::init("info");
    if let Err(e) = run(&Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the export, prints the report, the written file and (with --json) the result;
/// a failed verification is an error after the JSON is printed.
fn run(cli: &Cli) -> Result<()> {
    let job = cli.job();
    let outcome = job::run(&job)?;
    if let Some(r) = &outcome.report {
        eprintln!("{}", r.summary());
    }
    if outcome.written() {
        let weights = match (job.export.fp16, job.int8.is_some()) {
            (true, _) => ", fp16 weights",
            (false, true) => ", int8 QDQ",
            (false, false) => "",
        };
        eprintln!(
            "wrote {} ({:.1} MB, {} nodes, outputs {:?}{weights})",
            job.out.display(),
            outcome.bytes as f64 / 1e6,
            outcome.nodes,
            job.export.outputs.names(),
        );
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&outcome.json(&job))?);
    }
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
