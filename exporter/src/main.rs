//! `rccr-export`: freezes the teacher of a trainer checkpoint into an ONNX model
//! (see the library docs for the model contract) and optionally verifies it against
//! libtorch with ONNX Runtime before writing it.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rccr_exporter::network::{Outputs, Shape, OPSETS};
use rccr_exporter::quantize::{self, CalibrationMethod};
use rccr_exporter::verify::{self, Tolerance, VerifyOptions};
use rccr_exporter::{export, ExportOptions};
use std::path::PathBuf;
use std::time::Instant;

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
    #[arg(long, default_value_t = rccr_exporter::network::DEFAULT_OPSET)]
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
    /// Random verification shapes NxHxW (repeatable); default 1x64x96, 2x80x80, 1x65x65.
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
    calibration_size: Option<String>,
    /// int8 verification: least share of pixels whose argmax equals libtorch fp32's.
    /// Verified on --verify-images, else on the first --verify-max-images calibration
    /// images (random inputs only with an explicit --verify-shape).
    #[arg(long, default_value_t = quantize::DEFAULT_MIN_AGREEMENT)]
    min_agreement: f64,
    /// Print the result as JSON on stdout (logs stay on stderr).
    #[arg(long)]
    json: bool,
}

fn main() {
    rccr_infer::logging::init("info");
    match run(Cli::parse()) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if !OPSETS.contains(&cli.opset) {
        bail!(
            "--opset {} is not supported: use {} to {}",
            cli.opset,
            OPSETS.start(),
            OPSETS.end()
        );
    }
    // Fail on an unusable output path before the (long) load.
    export::check_output_path(&cli.out)?;
    let opts = ExportOptions {
        outputs: cli.outputs,
        fp16: cli.fp16,
        fixed_shape: cli.fixed_shape,
        opset: cli.opset,
    };

    let t0 = Instant::now();
    let loaded = export::load_teacher(&cli.checkpoint)
        .with_context(|| format!("loading the teacher from {}", cli.checkpoint.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    tracing::info!(
        backbone = %loaded.info.model.backbone,
        classes = loaded.info.model.num_classes,
        iteration = loaded.info.iteration,
        "loaded {} in {load_s:.2} s",
        cli.checkpoint.display()
    );

    let t1 = Instant::now();
    let mut model = export::export_loaded(&loaded, &cli.checkpoint, &opts)?;
    let mut calibration = None;
    if cli.int8 {
        let dir = cli
            .calibration_images
            .as_ref()
            .context("--int8 needs --calibration-images DIR")?;
        let (w, h) = match (&cli.calibration_size, cli.fixed_shape) {
            (Some(s), _) => parse_wxh(s)?,
            (None, Some(f)) => (f.w as u32, f.h as u32),
            (None, None) => rccr_infer::segmenter::DEFAULT_INPUT_SIZE,
        };
        let mut batches = quantize::calibration_batches(dir, cli.calibration_count, w, h)?;
        if let Some(f) = cli.fixed_shape {
            // A fixed batch N: repeat each image N times.
            for (shape, data) in &mut batches {
                shape[0] = f.n;
                *data = data.repeat(f.n as usize);
            }
        }
        tracing::info!(
            "calibrating on {} images of {} at {w}x{h} ({:?})",
            batches.len(),
            dir.display(),
            cli.calibration_method
        );
        let t = Instant::now();
        let c = quantize::calibrate(&model, &batches, cli.calibration_method, true)
            .context("calibrating the int8 activation ranges")?;
        model = quantize::quantize(&model, &c)?;
        tracing::info!(
            "quantized {} activation tensors in {:.1} s",
            c.ranges.len(),
            t.elapsed().as_secs_f64()
        );
        calibration = Some(c);
    }
    let bytes = export::encode(&model)?;
    let build_s = t1.elapsed().as_secs_f64();
    let graph = model.graph.as_ref();
    tracing::info!(
        nodes = graph.map_or(0, |g| g.node.len()),
        initializers = graph.map_or(0, |g| g.initializer.len()),
        bytes = bytes.len(),
        "built the ONNX graph in {build_s:.2} s"
    );

    let mut report = None;
    if cli.verify || cli.verify_images.is_some() {
        let images = match (&cli.verify_images, &cli.calibration_images) {
            (Some(dir), _) => verify::list_images(dir, cli.verify_max_images)?,
            (None, Some(dir)) if cli.int8 => verify::list_images(dir, cli.verify_max_images)?,
            _ => Vec::new(),
        };
        let mut tolerance = Tolerance::default_for(cli.fp16);
        if let Some(t) = cli.tolerance {
            tolerance = Tolerance { abs: t, rel: 0.0 };
        }
        let vopts = VerifyOptions {
            shapes: if !cli.verify_shapes.is_empty() {
                cli.verify_shapes.clone()
            } else if cli.int8 {
                Vec::new()
            } else {
                verify::default_shapes()
            },
            images,
            max_side: cli.verify_max_side,
            tolerance,
            min_agreement: cli.int8.then_some(cli.min_agreement),
            progress: true,
            ..Default::default()
        };
        let r = verify::verify(&loaded.net.seg, &bytes, &vopts).context("verifying the model")?;
        eprintln!("{}", r.summary());
        report = Some(r);
    }
    // The --json result, printed on failure as well as after a successful write.
    let print_json = || -> Result<()> {
        if cli.json {
            let json = json_result(
                &cli,
                &opts,
                bytes.len(),
                load_s,
                build_s,
                report.as_ref(),
                calibration.as_ref(),
            )?;
            println!("{json}");
        }
        Ok(())
    };
    if let Some(r) = report.as_ref().filter(|r| !r.passed) {
        print_json()?;
        if cli.int8 {
            bail!(
                "verification failed: argmax agreement {:.4}% below --min-agreement {:.4}%; {} was not written",
                100.0 * r.min_argmax_agreement,
                100.0 * cli.min_agreement,
                cli.out.display()
            );
        }
        bail!(
            "verification failed: max |logit diff| {:.3e} beyond the bound; {} was not written",
            r.max_abs_diff,
            cli.out.display()
        );
    }

    export::write_model(&cli.out, &bytes)?;
    eprintln!(
        "wrote {} ({:.1} MB, {} nodes, outputs {:?}{})",
        cli.out.display(),
        bytes.len() as f64 / 1e6,
        graph.map_or(0, |g| g.node.len()),
        opts.outputs.names(),
        if opts.fp16 {
            ", fp16 weights"
        } else if cli.int8 {
            ", int8 QDQ"
        } else {
            ""
        }
    );
    print_json()
}

#[allow(clippy::too_many_arguments)]
fn json_result(
    cli: &Cli,
    opts: &ExportOptions,
    bytes: usize,
    load_s: f64,
    build_s: f64,
    report: Option<&verify::VerifyReport>,
    calibration: Option<&quantize::Calibration>,
) -> Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "checkpoint": cli.checkpoint,
        "out": cli.out,
        "options": opts,
        "int8": cli.int8,
        "calibration": calibration.map(|c| serde_json::json!({
            "method": c.method, "images": c.batches, "tensors": c.ranges.len(),
        })),
        "bytes": bytes,
        "load_s": load_s,
        "build_s": build_s,
        "verify": report,
    }))?)
}

fn parse_wxh(s: &str) -> Result<(u32, u32)> {
    s.split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| w > 0 && h > 0)
        .with_context(|| format!("bad size `{s}`: expected WxH, e.g. 1024x512"))
}
