//! Export benchmark: time and file size of exporting a ResNet-101 teacher (the paper's
//! network) with fp32 and fp16 weights, from a trainer-style checkpoint of a randomly
//! initialised network (export cost does not depend on the weight values).
//!
//! `cargo run --release -p rccr-exporter --example export_bench [-- --backbone resnet101 --repeat 3 --keep DIR]`
//!
//! Prints one line per phase and a JSON summary on stdout.

use clap::Parser;
use rccr_exporter::network::ExportOptions;
use rccr_exporter::{encode, export_loaded, load_teacher, write_model};
use rccr_models::checkpoint::{model_metadata, CHECKPOINT_FORMAT, TEACHER};
use rccr_models::{Backbone, ModelConfig, RccrNet};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Backbone to export.
    #[arg(long, default_value = "resnet101")]
    backbone: Backbone,
    /// Timed repetitions of each export (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep the checkpoint and models in this folder (default: a temporary folder).
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let config = ModelConfig::new(args.backbone, 19);

    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &config);
    let ckpt = dir.join(format!("bench-{}.safetensors", args.backbone));
    let vars = vs.variables();
    rccr_models::weights::write_tensors(
        &ckpt,
        vars.iter().map(|(n, t)| (format!("{TEACHER}{n}"), t)),
        &model_metadata(CHECKPOINT_FORMAT, &config, 0),
    )?;
    let ckpt_bytes = std::fs::metadata(&ckpt)?.len();
    println!(
        "checkpoint {} ({:.1} MB)",
        ckpt.display(),
        ckpt_bytes as f64 / 1e6
    );

    let mut results = Vec::new();
    for fp16 in [false, true] {
        let opts = ExportOptions {
            fp16,
            ..Default::default()
        };
        let out = dir.join(format!(
            "bench-{}{}.onnx",
            args.backbone,
            if fp16 { "-fp16" } else { "" }
        ));
        let (mut load_s, mut build_s, mut write_s, mut total_s) =
            (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        let mut size = 0;
        for _ in 0..args.repeat.max(1) {
            let t0 = Instant::now();
            let loaded = load_teacher(&ckpt)?;
            let t1 = Instant::now();
            let bytes = encode(&export_loaded(&loaded, &ckpt, &opts)?)?;
            let t2 = Instant::now();
            write_model(&out, &bytes)?;
            let t3 = Instant::now();
            size = bytes.len();
            load_s = load_s.min((t1 - t0).as_secs_f64());
            build_s = build_s.min((t2 - t1).as_secs_f64());
            write_s = write_s.min((t3 - t2).as_secs_f64());
            total_s = total_s.min((t3 - t0).as_secs_f64());
        }
        println!(
            "{} {}: load {load_s:.2} s, fold + build + encode {build_s:.2} s, write {write_s:.2} s, total {total_s:.2} s, {:.1} MB",
            args.backbone,
            if fp16 { "fp16" } else { "fp32" },
            size as f64 / 1e6
        );
        results.push(serde_json::json!({
            "backbone": args.backbone.name(), "fp16": fp16, "bytes": size,
            "load_s": load_s, "build_s": build_s, "write_s": write_s, "total_s": total_s,
        }));
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}
