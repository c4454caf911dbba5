//! Export benchmark: time and file size of exporting a ResNet-101 teacher (the paper's
//! network) with fp32 and fp16 weights, from a trainer-style checkpoint of a randomly
//! initialised network (export cost does not depend on the weight values).
//!
//! `cargo run --release -p rccr-exporter --example export_bench [-- --backbone resnet101 --repeat 3 --keep DIR]`
//!
//! Prints one line per phase and a JSON summary on stdout.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::Result;
use clap::Parser;
use rccr_exporter::{encode, export_loaded, load_teacher, write_model, ExportOptions};
use rccr_models::{Backbone, ModelConfig, RccrNet};
use std::path::{Path, PathBuf};
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

/// The best time of each phase over the repetitions, and the model size.
#[derive(Debug, Clone, Copy)]
struct Timing {
    load_s: f64,
    build_s: f64,
    write_s: f64,
    total_s: f64,
    bytes: usize,
}

/// Writes a checkpoint of a randomly initialised (seeded) teacher; returns its path.
fn random_checkpoint(dir: &Path, config: &ModelConfig) -> PathBuf {
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = RccrNet::new(&vs.root(), config);
    let ckpt = dir.join(format!("bench-{}.safetensors", config.backbone));
    common::write_checkpoint(&ckpt, &vs, config, 0, true, false);
    ckpt
}

/// Loads, exports and writes `ckpt` to `out` `repeat` times; the best time of each phase.
fn time_export(ckpt: &Path, out: &Path, opts: &ExportOptions, repeat: usize) -> Result<Timing> {
    let mut best = Timing {
        load_s: f64::MAX,
        build_s: f64::MAX,
        write_s: f64::MAX,
        total_s: f64::MAX,
        bytes: 0,
    };
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        let loaded = load_teacher(ckpt)?;
        let t1 = Instant::now();
        let bytes = encode(&export_loaded(&loaded, ckpt, opts)?)?;
        let t2 = Instant::now();
        write_model(out, &bytes)?;
        let t3 = Instant::now();
        best = Timing {
            load_s: best.load_s.min((t1 - t0).as_secs_f64()),
            build_s: best.build_s.min((t2 - t1).as_secs_f64()),
            write_s: best.write_s.min((t3 - t2).as_secs_f64()),
            total_s: best.total_s.min((t3 - t0).as_secs_f64()),
            bytes: bytes.len(),
        };
    }
    Ok(best)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (_tmp, dir) = rccr_test_support::work_dir(args.keep.as_deref())?;
    let config = ModelConfig::new(args.backbone, 19);
    let ckpt = random_checkpoint(&dir, &config);
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
        let suffix = if fp16 { "-fp16" } else { "" };
        let out = dir.join(format!("bench-{}{suffix}.onnx", args.backbone));
        let t = time_export(&ckpt, &out, &opts, args.repeat)?;
        println!(
            "{} {}: load {:.2} s, fold + build + encode {:.2} s, write {:.2} s, total {:.2} s, {:.1} MB",
            args.backbone,
            if fp16 { "fp16" } else { "fp32" },
            t.load_s,
            t.build_s,
            t.write_s,
            t.total_s,
            t.bytes as f64 / 1e6
        );
        results.push(serde_json::json!({
            "backbone": args.backbone.name(), "fp16": fp16, "bytes": t.bytes,
            "load_s": t.load_s, "build_s": t.build_s, "write_s": t.write_s, "total_s": t.total_s,
        }));
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}
