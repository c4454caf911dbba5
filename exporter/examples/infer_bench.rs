//! Inference benchmark, in one run on the same weights and the same inputs: libtorch
//! eager fp32 (the tch teacher, inference mode, no_grad: `normalize`, `forward_upsampled`
//! and argmax), optionally libtorch bf16 + channels_last, and ONNX Runtime on the CPU through
//! the `rccr-infer` library (`Segmenter::run` on preprocessed batches) for the fp32 export
//! and the int8 QDQ export (`rccr_exporter::quantize`). Prints seconds per image, the speed
//! ratio of each variant to libtorch eager fp32 and its argmax agreement with it; a JSON
//! summary goes to stdout (last line) and to `--json FILE`.
//!
//! ```sh
//! cargo run --release -p rccr-exporter --example infer_bench                # resnet101, 1024x512
//! cargo run --release -p rccr-exporter --example infer_bench -- --backbone small --size 256x128 --count 2
//! cargo run --release -p rccr-exporter --example infer_bench -- --backbone mit-b2 --decoder daformer
//! cargo run --release -p rccr-exporter --example infer_bench -- --checkpoint CKPT --images DIR
//! ```
//!
//! Without `--checkpoint` the network has random weights (the test fixtures' scaled
//! initialisation); speed does not depend on the weight values, but argmax agreement of
//! reduced-precision variants is then less meaningful (random logits have near-ties) and
//! is reported for completeness. Without `--images` the inputs and calibration images are
//! synthetic (random coloured rectangles over gradients, different seeds for the two).

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result};
use clap::Parser;
use image::RgbImage;
use rccr_exporter::onnx::ModelProto;
use rccr_exporter::quantize::{self, CalibrationMethod};
use rccr_exporter::ExportOptions;
use rccr_exporter::{encode, export_loaded, load_teacher, write_model};
use rccr_infer::contract::{INPUT_NAME, LABELS_OUTPUT};
use rccr_infer::segmenter::preprocess;
use rccr_infer::{Batch, Provider, Segmenter, SegmenterOptions, SessionOptions, Size};
use rccr_models::checkpoint::LoadedNet;
use rccr_models::{Backbone, Decoder, ModelConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// Trainer checkpoint to benchmark (default: a random network of --backbone).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Backbone of the random network (`resnet101`, ..., `mit-b0` ... `mit-b5`).
    #[arg(long, default_value = "resnet101")]
    backbone: Backbone,
    /// Decoder of a random MiT network (`daformer`, the default, or `segformer`).
    #[arg(long)]
    decoder: Option<Decoder>,
    /// Classes of the random network.
    #[arg(long, default_value_t = 19)]
    classes: i64,
    /// Input size WxH.
    #[arg(long, default_value = "1024x512")]
    size: Size,
    /// Timed images per variant (after --warmup untimed ones).
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Untimed warm-up runs per variant.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Folder of images (.png/.jpg, recursive) to time on (default: synthetic images).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Folder of calibration images (default: --images, else synthetic ones).
    #[arg(long)]
    calibration_images: Option<PathBuf>,
    /// Calibration images for the int8 model.
    #[arg(long, default_value_t = 8)]
    calibration_count: usize,
    /// Calibration method: minmax or percentile[:P].
    #[arg(long, default_value = "percentile:99.999")]
    calibration: CalibrationMethod,
    /// Skip libtorch bf16 + channels_last.
    #[arg(long)]
    no_bf16: bool,
    /// Skip the int8 ONNX Runtime variant.
    #[arg(long)]
    no_int8: bool,
    /// Also time ONNX Runtime fp32 with default session options (only intra-op threads
    /// set), to show what the tuned options of `rccr-infer` give.
    #[arg(long)]
    ort_default: bool,
    /// Threads for libtorch and ONNX Runtime (default: physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep the checkpoint and models here (default: a temporary folder).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    variant: String,
    s_per_image: f64,
    min_s: f64,
    speedup_vs_torch_fp32: f64,
    /// Ratio of the fastest runs (closest to an unloaded machine).
    speedup_min_vs_torch_fp32: f64,
    argmax_agreement_vs_torch_fp32: f64,
}

/// Random coloured rectangles over a gradient: smooth regions and edges, like a scene.
fn synthetic_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = common::Rng::new(seed);
    let base: Vec<f32> = (0..6).map(|_| rng.uniform(0.0, 255.0)).collect();
    let mut img = RgbImage::from_fn(w, h, |_, y| {
        let t = y as f32 / h as f32;
        let p: Vec<u8> = (0..3)
            .map(|c| (base[c] * (1.0 - t) + base[c + 3] * t) as u8)
            .collect();
        image::Rgb([p[0], p[1], p[2]])
    });
    for _ in 0..30 {
        let (x0, y0) = (
            rng.uniform(0.0, w as f64) as u32,
            rng.uniform(0.0, h as f64) as u32,
        );
        let (rw, rh) = (
            rng.uniform(1.0, w as f64 / 3.0) as u32,
            rng.uniform(1.0, h as f64 / 3.0) as u32,
        );
        let c = [
            rng.uniform(0.0, 255.0) as u8,
            rng.uniform(0.0, 255.0) as u8,
            rng.uniform(0.0, 255.0) as u8,
        ];
        for y in y0..(y0 + rh).min(h) {
            for x in x0..(x0 + rw).min(w) {
                let n = rng.uniform(-12.0, 12.0);
                let px = c.map(|v| (v as f32 + n).clamp(0.0, 255.0) as u8);
                img.put_pixel(x, y, image::Rgb(px));
            }
        }
    }
    img
}

fn inputs(dir: Option<&Path>, n: usize, w: u32, h: u32, seed: u64) -> Result<Vec<Vec<f32>>> {
    match dir {
        Some(d) => {
            let files = rccr_exporter::verify::image_files(d, "images to benchmark on")?;
            (0..n)
                .map(|i| {
                    let p = &files[i * files.len() / n.max(1) % files.len()];
                    let img = image::open(p)
                        .with_context(|| format!("decoding {}", p.display()))?
                        .to_rgb8();
                    Ok(preprocess(&img, w, h))
                })
                .collect()
        }
        None => Ok((0..n)
            .map(|i| preprocess(&synthetic_image(w, h, seed + i as u64), w, h))
            .collect()),
    }
}

fn agreement(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (mut same, mut all) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        same += x.iter().zip(y).filter(|(p, q)| p == q).count();
        all += x.len();
    }
    same as f64 / all.max(1) as f64
}

fn torch_labels(net: &LoadedNet, x: &[f32], h: i64, w: i64, bf16: bool) -> Result<Vec<u8>> {
    let seg = &net.net.seg;
    let t = Tensor::from_slice(x).view([1, 3, h, w]);
    let labels = tch::no_grad(|| {
        if bf16 {
            let xb = seg
                .normalize(&t)
                .to_kind(Kind::BFloat16)
                .permute([0, 2, 3, 1])
                .contiguous()
                .permute([0, 3, 1, 2]);
            seg.forward_upsampled(&xb, false).argmax(1, false)
        } else {
            seg.forward_upsampled(&seg.normalize(&t), false)
                .argmax(1, false)
        }
    });
    let v = Vec::<i64>::try_from(&labels.view(-1))?;
    Ok(v.into_iter().map(|l| l as u8).collect())
}

fn segmenter(path: &Path, w: u32, h: u32, threads: usize) -> Result<Segmenter> {
    let opts = SegmenterOptions {
        session: SessionOptions {
            provider: Provider::Cpu,
            intra_threads: Some(threads),
            ..Default::default()
        },
        batch_size: 1,
        input_size: Some((w, h)),
    };
    Segmenter::open(path, &opts).with_context(|| format!("opening {}", path.display()))
}

fn ort_run(seg: &mut Segmenter, x: &[f32], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut b = Batch::new(w, h);
    b.push_preprocessed(x);
    let mut maps = seg.run(&b)?;
    Ok(maps.remove(0).data)
}

/// Threads, input size and the working folder of a run.
struct Setup {
    threads: usize,
    w: u32,
    h: u32,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn setup(args: &Args) -> Result<Setup> {
    let (w, h) = args.size.pair();
    let threads = args
        .threads
        .unwrap_or_else(rccr_infer::provider::physical_cores);
    tch::set_num_threads(threads as i32);
    let (tmp, dir) = rccr_test_support::work_dir(args.keep.as_deref())?;
    Ok(Setup {
        threads,
        w,
        h,
        dir,
        _tmp: tmp,
    })
}

/// The checkpoint to benchmark: `--checkpoint`, else a random network of `--backbone`.
fn checkpoint(args: &Args, dir: &Path) -> PathBuf {
    match &args.checkpoint {
        Some(c) => c.clone(),
        None if args.backbone.is_mit() => {
            let mut config = ModelConfig::new(args.backbone, args.classes);
            config.decoder = args.decoder;
            let (vs, _) = common::random_mit(&config, 1, 1.0);
            let path = dir.join(format!("ckpt-{}-1.safetensors", config.backbone));
            common::write_checkpoint(&path, &vs, &config, 1234, true, false);
            path
        }
        None => {
            let config = ModelConfig::new(args.backbone, args.classes);
            common::checkpoint(dir, &config, 1).0
        }
    }
}

/// What the weights are, for the log and the JSON.
fn weights_label(args: &Args, ckpt: &Path) -> String {
    match args.checkpoint {
        Some(_) => ckpt.display().to_string(),
        None => "random".into(),
    }
}

/// The teacher in bf16 with its 4-D weights in channels_last layout.
fn bf16_teacher(ckpt: &Path) -> Result<LoadedNet> {
    let mut bf = load_teacher(ckpt)?;
    bf.vs.bfloat16();
    tch::no_grad(|| {
        for (_, mut v) in bf.vs.variables() {
            if v.dim() == 4 {
                let cl = v.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
                v.set_data(&cl);
            }
        }
    });
    Ok(bf)
}

type RunFn<'a> = Box<dyn FnMut(&[f32]) -> Result<Vec<u8>> + 'a>;

/// ONNX Runtime on the fp32 model with default session options but the thread count:
/// deliberately not `rccr_infer::provider::session_builder`, whose tuned options are what
/// this variant is the baseline for.
fn ort_default_variant(path: &Path, threads: usize, w: u32, h: u32) -> Result<RunFn<'static>> {
    rccr_infer::runtime::ensure_loaded()?;
    let env = rccr_infer::runtime::environment()?;
    let mut s = ort::session::Session::builder(&env)?
        .with_intra_threads(threads)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(path)?;
    Ok(Box::new(move |x: &[f32]| {
        let input =
            ort::value::TensorRef::from_array_view(([1usize, 3, h as usize, w as usize], x))?;
        let out = s.run(ort::inputs![INPUT_NAME => input])?;
        let (_, labels) = out[LABELS_OUTPUT].try_extract_tensor::<i64>()?;
        Ok(labels.iter().map(|&v| v as u8).collect())
    }))
}

/// Calibrates and quantizes `fp32`, writes it to `dir`; returns its path.
fn int8_model(args: &Args, fp32: &ModelProto, s: &Setup) -> Result<PathBuf> {
    let (w, h) = (s.w, s.h);
    let calib_dir = args
        .calibration_images
        .as_deref()
        .or(args.images.as_deref());
    let batches: Vec<(Vec<i64>, Vec<f32>)> = match calib_dir {
        Some(d) => quantize::calibration_batches(d, args.calibration_count, w, h)?,
        None => inputs(None, args.calibration_count.max(1), w, h, 5000)?
            .into_iter()
            .map(|x| (vec![1, 3, h as i64, w as i64], x))
            .collect(),
    };
    let t0 = Instant::now();
    let calib = quantize::calibrate(fp32, &batches, args.calibration, true)?;
    let q = quantize::quantize(fp32, &calib)?;
    let q_path = s.dir.join("bench-int8.onnx");
    write_model(&q_path, &encode(&q)?)?;
    eprintln!(
        "  (calibrated on {} images and quantized in {:.1} s)",
        batches.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(q_path)
}

/// Every variant to time, libtorch eager fp32 first (the reference of the ratios).
fn variants<'a>(
    args: &Args,
    s: &Setup,
    ckpt: &Path,
    loaded: &'a LoadedNet,
    bf: Option<&'a LoadedNet>,
) -> Result<Vec<(String, RunFn<'a>)>> {
    let (w, h, threads) = (s.w, s.h, s.threads);
    let (hh, ww) = (h as i64, w as i64);
    let mut v: Vec<(String, RunFn<'a>)> = vec![(
        "libtorch eager fp32".into(),
        Box::new(move |x: &[f32]| torch_labels(loaded, x, hh, ww, false)),
    )];
    if let Some(bf) = bf {
        v.push((
            "libtorch eager bf16 channels_last".into(),
            Box::new(move |x: &[f32]| torch_labels(bf, x, hh, ww, true)),
        ));
    }
    let t0 = Instant::now();
    let fp32 = export_loaded(loaded, ckpt, &ExportOptions::default())?;
    let fp32_path = s.dir.join("bench-fp32.onnx");
    write_model(&fp32_path, &encode(&fp32)?)?;
    eprintln!("  (exported fp32 in {:.1} s)", t0.elapsed().as_secs_f64());
    let mut seg32 = segmenter(&fp32_path, w, h, threads)?;
    v.push((
        "onnxruntime fp32 (rccr-infer)".into(),
        Box::new(move |x: &[f32]| ort_run(&mut seg32, x, w, h)),
    ));
    if args.ort_default {
        let f = ort_default_variant(&fp32_path, threads, w, h)?;
        v.push(("onnxruntime fp32 (default options)".into(), f));
    }
    if !args.no_int8 {
        let mut seg8 = segmenter(&int8_model(args, &fp32, s)?, w, h, threads)?;
        v.push((
            "onnxruntime int8 QDQ (rccr-infer)".into(),
            Box::new(move |x: &[f32]| ort_run(&mut seg8, x, w, h)),
        ));
    }
    Ok(v)
}

/// Runs `warmup` untimed images per variant, then every image on every variant in turn
/// (round-robin, so that background load hits all variants alike); returns each
/// variant's times and label maps.
#[allow(clippy::type_complexity)]
fn time_round_robin(
    variants: &mut [(String, RunFn)],
    xs: &[Vec<f32>],
    warmup: usize,
) -> Result<(Vec<Vec<f64>>, Vec<Vec<Vec<u8>>>)> {
    for (name, f) in variants.iter_mut() {
        for i in 0..warmup {
            f(&xs[i % xs.len()]).with_context(|| format!("warm-up of {name}"))?;
        }
    }
    let mut times = vec![Vec::new(); variants.len()];
    let mut labels = vec![Vec::new(); variants.len()];
    for x in xs {
        for (k, (_, f)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            let l = f(x)?;
            times[k].push(t.elapsed().as_secs_f64());
            labels[k].push(l);
        }
    }
    Ok((times, labels))
}

/// One row per variant against the first (libtorch eager fp32), printed as it goes.
fn rows(names: &[String], times: &[Vec<f64>], labels: &[Vec<Vec<u8>>]) -> Vec<Row> {
    eprintln!(
        "  variant                              mean s/image  x torch fp32 | fastest s  x torch fp32 | argmax agreement with torch fp32"
    );
    let mean = |t: &[f64]| t.iter().sum::<f64>() / t.len() as f64;
    let fastest = |t: &[f64]| t.iter().cloned().fold(f64::INFINITY, f64::min);
    let (t_ref, m_ref) = (mean(&times[0]), fastest(&times[0]));
    let mut rows = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let (m, min) = (mean(&times[k]), fastest(&times[k]));
        let agree = agreement(&labels[k], &labels[0]);
        eprintln!(
            "  {name:<36} {m:7.3} s/image  {:5.2}x | min {min:7.3} s  {:5.2}x | argmax agreement {:.4}%",
            t_ref / m,
            m_ref / min,
            100.0 * agree
        );
        rows.push(Row {
            variant: name.clone(),
            s_per_image: m,
            min_s: min,
            speedup_vs_torch_fp32: t_ref / m,
            speedup_min_vs_torch_fp32: m_ref / min,
            argmax_agreement_vs_torch_fp32: agree,
        });
    }
    rows
}

fn main() -> Result<()> {
    rccr_infer::logging::init("warn");
    let args = Args::parse();
    let s = setup(&args)?;
    let ckpt = checkpoint(&args, &s.dir);
    let loaded = load_teacher(&ckpt)?;
    let config = loaded.info.model.clone();
    let weights = weights_label(&args, &ckpt);
    eprintln!(
        "{} ({} classes), input {}x{}, {} timed images after {} warm-up, {} threads, weights: {weights}",
        config.backbone, config.num_classes, s.w, s.h, args.count, args.warmup, s.threads
    );
    let xs = inputs(args.images.as_deref(), args.count.max(1), s.w, s.h, 1000)?;
    // Build every variant first, then time them round-robin.
    let bf = (!args.no_bf16).then(|| bf16_teacher(&ckpt)).transpose()?;
    let mut variants = variants(&args, &s, &ckpt, &loaded, bf.as_ref())?;
    let (times, labels) = time_round_robin(&mut variants, &xs, args.warmup)?;
    let names: Vec<String> = variants.iter().map(|(n, _)| n.clone()).collect();
    drop(variants);
    let summary = serde_json::json!({
        "backbone": config.backbone.name(),
        "decoder": config.decoder().to_string(),
        "classes": config.num_classes,
        "width": s.w, "height": s.h,
        "images": xs.len(), "warmup": args.warmup, "threads": s.threads,
        "weights": weights,
        "calibration": args.calibration,
        "results": rows(&names, &times, &labels),
    });
    let text = serde_json::to_string(&summary)?;
    if let Some(p) = &args.json {
        rccr_infer::files::write_atomic(p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{text}");
    Ok(())
}
