//! `rccr-infer`: segment a folder of images (or one shard of it) with an rccr ONNX model
//! (and score it against Cityscapes ground truth), score existing predictions the official
//! way or merge shard reports (`score`), measure per-call latency (`bench`), or benchmark
//! scoring (`bench-score`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rccr_infer::bench;
use rccr_infer::files::{self, Shard};
use rccr_infer::latency::{self, LatencyOptions};
use rccr_infer::merge;
use rccr_infer::pipeline::{self, PipelineOptions};
use rccr_infer::provider::{Provider, SessionOptions};
use rccr_infer::report::{Report, Skipped};
use rccr_infer::score::{self, IdFormat, ScoreOptions};
use rccr_infer::segmenter::{self as segmenter_mod, Segmenter, SegmenterOptions};
use rccr_infer::taxonomy::Protocol;
use rccr_infer::Size;

#[derive(Parser, Debug)]
#[command(
    name = "rccr-infer",
    version,
    about = "Batched semantic segmentation with an rccr ONNX model on ONNX Runtime, and Cityscapes mIoU scoring",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Score existing labelId predictions against Cityscapes ground truth, as the official
    /// cityscapesscripts evaluation does; or merge the JSON reports of shards (--merge).
    Score(ScoreArgs),
    /// Per-call latency (p50/p90/p99/max) and images/s of a model on synthetic frames,
    /// preprocessing, model and postprocessing timed apart.
    Bench(LatencyArgs),
    /// Benchmark scoring throughput against the official script and bare PNG decoding.
    BenchScore(BenchArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The ONNX model made by rccr-export.
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// Folder of input images (walked recursively; .png, .jpg, .jpeg).
    #[arg(long, required = true)]
    images: Option<PathBuf>,
    /// Output folder: trainIds/, labelIds/ (official result format), color/ [overlay/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ground-truth labelIds folder (e.g. gtFine/val): score the predictions.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Images per model run (1 to 256).
    #[arg(long, default_value_t = 1, value_parser = parse_batch_size)]
    batch_size: usize,
    /// Execution provider: auto (TensorRT, CUDA, CPU: first that works), tensorrt, cuda, cpu.
    #[arg(long, default_value = "auto")]
    provider: String,
    /// Model input size WxH (default: the model's fixed size, else 1024x512; at most
    /// 8192 per side and 8192x4096 pixels).
    #[arg(long, value_parser = parse_input_size)]
    input_size: Option<(u32, u32)>,
    /// Process only shard K of N of the sorted image list (image i goes to shard
    /// i mod N + 1); merge the shards' --json reports with `score --merge`.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Classes averaged into the mIoU: 19, or SYNTHIA's 16 / 13.
    #[arg(long, default_value_t = 19)]
    classes: usize,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stop at the first bad input instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Also write the colour map blended over each input (overlay/).
    #[arg(long)]
    overlay: bool,
    /// ONNX Runtime intra-op threads (default: physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Decode and write threads, each (default: half the physical cores, at least 1).
    #[arg(long)]
    workers: Option<usize>,
    /// TensorRT engine cache folder (default: trt-cache/ next to the model).
    #[arg(long)]
    trt_cache: Option<PathBuf>,
    /// Let TensorRT use fp16 kernels.
    #[arg(long)]
    fp16: bool,
    /// GPU index for TensorRT / CUDA.
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ScoreArgs {
    /// Folder of predictions, matched to ground truth by <city>_<seq>_<frame>.
    #[arg(long, required_unless_present = "merge")]
    pred: Option<PathBuf>,
    /// Ground-truth folder (*_gtFine_labelIds.png, e.g. gtFine/val).
    #[arg(long, required_unless_present = "merge")]
    labels: Option<PathBuf>,
    /// Merge these JSON reports (of `--shard K/N` runs, or of disjoint image sets) into
    /// the report of one run over all their images, instead of scoring folders.
    #[arg(long, num_args = 1.., conflicts_with_all = ["pred", "labels", "train_ids", "strict", "classes"])]
    merge: Vec<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Classes averaged into the mIoU: 19, 16 or 13.
    #[arg(long, default_value_t = 19)]
    classes: usize,
    /// Predictions are train ids (0..18, 255 void) instead of official labelIds.
    #[arg(long)]
    train_ids: bool,
    /// Stop at the first bad pair instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    /// The ONNX model made by rccr-export.
    #[arg(long)]
    model: PathBuf,
    /// Images per call (1 to 256).
    #[arg(long, default_value_t = 1, value_parser = parse_batch_size)]
    batch_size: usize,
    /// Model input size WxH (default: the model's fixed size, else 1024x512).
    #[arg(long, value_parser = parse_input_size)]
    input_size: Option<(u32, u32)>,
    /// Camera frame size WxH each call starts from (default: the input size, so no resize).
    #[arg(long, value_parser = parse_input_size)]
    image_size: Option<(u32, u32)>,
    /// Timed calls.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed calls first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Execution provider: auto, tensorrt, cuda, cpu.
    #[arg(long, default_value = "auto")]
    provider: String,
    /// ONNX Runtime intra-op threads (default: physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// GPU index for TensorRT / CUDA.
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// Let TensorRT use fp16 kernels.
    #[arg(long)]
    fp16: bool,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Prediction folder (with --labels); default: generate a synthetic split.
    #[arg(long, requires = "labels")]
    pred: Option<PathBuf>,
    /// Ground-truth folder (with --pred).
    #[arg(long, requires = "pred")]
    labels: Option<PathBuf>,
    /// Folder holding gtFine/val for the official script (with --pred/--labels).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Pairs in the generated split.
    #[arg(long, default_value_t = 12)]
    count: usize,
    /// Size WxH of the generated maps.
    #[arg(long, value_parser = parse_size, default_value = "2048x1024")]
    size: (u32, u32),
    /// Skip the official script.
    #[arg(long)]
    no_official: bool,
    /// Runs per measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    s.parse::<Size>().map(Size::pair)
}

fn parse_input_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let size = parse_size(s)?;
    segmenter_mod::check_input_size(size).map_err(|e| e.to_string())?;
    Ok(size)
}

fn parse_batch_size(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: expected a number of images, e.g. --batch-size 4"))?;
    segmenter_mod::check_batch_size(n).map_err(|e| e.to_string())?;
    Ok(n)
}

fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    s.parse().map_err(|e: rccr_infer::InferError| e.to_string())
}

/// An error naming `flag` unless `path` is an existing folder.
fn existing_folder(flag: &str, path: &std::path::Path) -> Result<()> {
    files::check_folder(path).with_context(|| format!("{flag} {}", path.display()))
}

fn protocol(n: usize) -> Result<Protocol> {
    Protocol::from_count(n)
        .with_context(|| format!("--classes {n}: use 19 (Cityscapes), 16 or 13 (SYNTHIA)"))
}

fn print_skipped(skipped: &[Skipped]) {
    if !skipped.is_empty() {
        eprintln!("{} input(s) skipped:", skipped.len());
        for s in skipped {
            eprintln!("  {}: {}", s.file, s.error);
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let (Some(model), Some(images)) = (args.model, args.images) else {
        bail!("--model and --images are required");
    };
    existing_folder("--images", &images)?;
    if let Some(labels) = &args.labels {
        existing_folder("--labels", labels)?;
    }
    let provider: Provider = args.provider.parse()?;
    let mut opts = PipelineOptions::new(model, images);
    opts.shard = args.shard;
    opts.out = args.out;
    opts.labels = args.labels;
    opts.protocol = protocol(args.classes)?;
    opts.strict = args.strict;
    opts.overlay = args.overlay;
    opts.workers = args.workers;
    opts.progress = !args.quiet;
    opts.segmenter = SegmenterOptions {
        session: SessionOptions {
            provider,
            device_id: args.device_id,
            trt_cache_dir: args.trt_cache,
            trt_fp16: args.fp16,
            intra_threads: args.threads,
        },
        batch_size: args.batch_size,
        input_size: args.input_size,
    };
    if opts.overlay && opts.out.is_none() {
        bail!("--overlay needs --out");
    }
    let report = pipeline::run(&opts).with_context(|| {
        format!(
            "rccr-infer on {} with {}",
            opts.images.display(),
            opts.model.display()
        )
    })?;
    print_skipped(&report.skipped);
    if opts.labels.is_some() {
        print!("{}", report.table());
    }
    if let Some(st) = &report.stage_ms {
        println!(
            "{} images in {:.2} s: {:.2} images/s on {} | ms per image: decode {:.1}, preprocess {:.1}, model {:.1}, postprocess {:.1}, write {:.1}",
            report.images,
            report.seconds,
            report.images_per_second,
            report.provider.as_deref().unwrap_or("?"),
            st.decode_ms,
            st.preprocess_ms,
            st.model_ms,
            st.postprocess_ms,
            st.write_ms
        );
    }
    if let Some(out) = &opts.out {
        println!("predictions written under {}", out.display());
    }
    if let Some(j) = &args.json {
        report.write_json(j)?;
        println!("report written to {}", j.display());
    }
    Ok(())
}

fn merge_cmd(args: &ScoreArgs) -> Result<()> {
    let report = merge::merge_files(&args.merge)?;
    println!("merged {} reports:", args.merge.len());
    for p in &args.merge {
        println!("  {}", p.display());
    }
    print_skipped(&report.skipped);
    if report.miou.is_some() {
        print!("{}", report.table());
    }
    println!(
        "{} images ({} skipped), {:.2} s of compute in all",
        report.images,
        report.skipped.len(),
        report.seconds
    );
    if let Some(j) = &args.json {
        report.write_json(j)?;
        println!("report written to {}", j.display());
    }
    Ok(())
}

fn score_cmd(args: ScoreArgs) -> Result<()> {
    if !args.merge.is_empty() {
        return merge_cmd(&args);
    }
    let (Some(pred), Some(labels)) = (&args.pred, &args.labels) else {
        bail!("score needs --pred and --labels (or --merge REPORT.json ...)");
    };
    existing_folder("--pred", pred)?;
    existing_folder("--labels", labels)?;
    let opts = ScoreOptions {
        protocol: protocol(args.classes)?,
        pred_format: if args.train_ids {
            IdFormat::TrainIds
        } else {
            IdFormat::LabelIds
        },
        strict: args.strict,
    };
    let pb = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    pb.set_message("scoring");
    let tick = || pb.inc(1);
    let res = score::score_dirs(pred, labels, &opts, &tick)
        .with_context(|| format!("scoring {} against {}", pred.display(), labels.display()))?;
    pb.finish_and_clear();
    let mut report = Report {
        images: res.images,
        skipped: res
            .skipped
            .iter()
            .map(|(f, e)| Skipped {
                file: f.display().to_string(),
                error: e.clone(),
            })
            .collect(),
        images_per_second: res.images as f64 / res.seconds.max(1e-9),
        megapixels_per_second: Some(res.pixels as f64 / 1e6 / res.seconds.max(1e-9)),
        seconds: res.seconds,
        ..Report::default()
    };
    report.set_scores(&res.scores);
    print_skipped(&report.skipped);
    print!("{}", report.table());
    println!(
        "{} pairs in {:.2} s ({:.1} images/s, {:.1} MP/s)",
        report.images,
        report.seconds,
        report.images_per_second,
        report.megapixels_per_second.unwrap_or(0.0)
    );
    if let Some(j) = &args.json {
        report.write_json(j)?;
        println!("report written to {}", j.display());
    }
    Ok(())
}

fn latency_cmd(args: LatencyArgs) -> Result<()> {
    let options = SegmenterOptions {
        session: SessionOptions {
            provider: args.provider.parse()?,
            device_id: args.device_id,
            trt_cache_dir: None,
            trt_fp16: args.fp16,
            intra_threads: args.threads,
        },
        batch_size: args.batch_size,
        input_size: args.input_size,
    };
    let mut seg = Segmenter::open(&args.model, &options)?;
    let opts = LatencyOptions {
        image_size: args.image_size,
        iterations: args.iterations,
        warmup: args.warmup,
    };
    let mut report = latency::measure(&mut seg, &opts)?;
    if seg.provider() == Provider::Cpu {
        report.threads = Some(
            args.threads
                .unwrap_or_else(rccr_infer::provider::physical_cores),
        );
    }
    print!("{}", report.table());
    if let Some(j) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        rccr_infer::imageio::write_output(j, text.as_bytes())?;
        println!("figures written to {}", j.display());
    }
    Ok(())
}

fn bench_cmd(args: BenchArgs) -> Result<()> {
    let mut generated = None;
    let (pred, labels, dataset) = match (args.pred, args.labels) {
        (Some(p), Some(l)) => (p, l, args.dataset),
        _ => {
            let tmp = std::env::temp_dir().join(format!("rccr-bench-split-{}", std::process::id()));
            let (w, h) = args.size;
            println!(
                "generating {} synthetic {w}x{h} pairs under {} ...",
                args.count,
                tmp.display()
            );
            let (gt, pred) = bench::write_synthetic_split(&tmp, args.count, w, h, 7)?;
            generated = Some(tmp.clone());
            (pred, gt, Some(tmp))
        }
    };
    let dataset = if args.no_official { None } else { dataset };
    let res = bench::bench_score(&pred, &labels, dataset.as_deref(), args.repeat);
    if let Some(tmp) = generated {
        let _ = std::fs::remove_dir_all(tmp);
    }
    let res = res?;
    print!("{}", res.table());
    if let Some(j) = &args.json {
        let text = serde_json::to_string_pretty(&res)?;
        rccr_infer::imageio::write_output(j, text.as_bytes())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    rccr_infer::logging::init("info");
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Score(a)) => score_cmd(a),
        Some(Command::Bench(a)) => latency_cmd(a),
        Some(Command::BenchScore(a)) => bench_cmd(a),
        None => run(cli.run),
    }
}
