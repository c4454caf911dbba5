//! Helpers shared by the trainer's integration tests: tiny synthetic data and process
//! output. (Each test binary uses a subset.)
#![allow(dead_code)]

use rccr_trainer::config::{Mode, MuSchedule, Optimizer, Size, TrainConfig};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

/// stdout then stderr of a finished process.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Panics with the process's stdout and stderr unless it succeeded.
pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
}

/// `rccr-train synth` (binary `bin`) into `dir`: `count` training and 2 val images per
/// domain at 128x64.
pub fn synth_cli(bin: &str, dir: &Path, count: u32) {
    let out = Command::new(bin)
        .args(["synth", "--out"])
        .arg(dir)
        .args([
            "--count",
            &count.to_string(),
            "--val-count",
            "2",
            "--size",
            "128x64",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
}

/// The same data through the library: 8 training and 2 val images per domain, 128x64.
pub fn synth_lib(dir: &Path) {
    use rccr_trainer::synth::{self, SynthArgs};
    let mut args = SynthArgs::new(dir);
    args.count = 8;
    args.val_count = 2;
    args.size = synth::ImageSize {
        width: 128,
        height: 64,
    };
    synth::run(&args).expect("synthetic data");
}

/// `source` `gta5:DATA/gta5` of synthetic data in `data`.
pub fn gta5(data: &Path) -> String {
    format!("gta5:{}", data.join("gta5").display())
}

/// The arguments of `rccr-train SUBCOMMAND` (`train` or `trace`) on tiny data: `source`
/// and the Cityscapes-layout target of `data`, images resized to `size`, the `small`
/// backbone, 64 crops, batch 2, one data worker, quiet.
pub fn tiny_args(
    subcommand: &str,
    source: &str,
    size: &str,
    data: &Path,
    out: &Path,
) -> Vec<OsString> {
    let target = format!("cityscapes:{}", data.join("cityscapes").display());
    let mut args: Vec<OsString> = [subcommand, "--source", source, "--target", &target]
        .map(OsString::from)
        .into();
    args.extend(["--out".into(), out.into()]);
    args.extend(
        [
            "--backbone",
            "small",
            "--crop",
            "64",
            "--batch-size",
            "2",
            "--source-size",
            size,
            "--target-size",
            size,
            "--workers",
            "1",
            "--quiet",
        ]
        .map(OsString::from),
    );
    args
}

/// [`tiny_args`] of `rccr-train train`, validation at 128x64 on at most 2 images.
pub fn tiny_train_args(source: &str, size: &str, data: &Path, out: &Path) -> Vec<OsString> {
    let mut args = tiny_args("train", source, size, data, out);
    args.extend(["--val-size", "128x64", "--val-limit", "2"].map(OsString::from));
    args
}

/// `rccr-train train` (binary `bin`) with [`tiny_train_args`], one libtorch thread.
pub fn train_command(bin: &str, source: &str, size: &str, data: &Path, out: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(tiny_train_args(source, size, data, out))
        .env("OMP_NUM_THREADS", "1")
        .env("RUST_BACKTRACE", "0");
    c
}

/// A library run on the data of [`synth_lib`] in `data`: GTA5 -> Cityscapes at 128x64,
/// the `small` backbone, 64 crops, batch 2, seed 7, `iterations` iterations, losses
/// logged every iteration, validation (at most 2 images) and a checkpoint only at the end.
pub fn tiny_config(data: &Path, iterations: u64) -> TrainConfig {
    let size = Some(Size::new(128, 64));
    let mut c = TrainConfig {
        model: rccr_models::ModelConfig::new(rccr_models::Backbone::Small, 19),
        ..TrainConfig::default()
    };
    let d = &mut c.data;
    d.source = Some(gta5(data).parse().unwrap());
    d.target = Some(
        format!("cityscapes:{}", data.join("cityscapes").display())
            .parse()
            .unwrap(),
    );
    (d.crop, d.batch_size, d.workers, d.prefetch) = (64, 2, 2, 2);
    (d.source_size, d.target_size, d.val_size) = (size, size, size);
    c.method.bank_per_iteration = 50;
    let r = &mut c.run;
    (r.iterations, r.seed, r.device) = (iterations, 7, "cpu".into());
    (r.val_every, r.save_every, r.log_every, r.val_limit) = (0, 0, 1, Some(2));
    c
}

/// [`tiny_config`] with every successors' switch on (RCS, FD, MIC, pseudo-label rows
/// ignored, AdamW with warm-up), PS off and q = 1 (threshold 0) so the pseudo-label terms
/// weigh in, mu held at `mu_max`.
pub fn every_switch_config(data: &Path, mode: Mode, mu_max: f64, iterations: u64) -> TrainConfig {
    let mut c = tiny_config(data, iterations);
    c.data.rcs.enabled = true;
    let m = &mut c.method;
    (m.mode, m.mu_max, m.mu_schedule) = (mode, mu_max, MuSchedule::Constant);
    (m.components.ps, m.pseudo_threshold) = (false, 0.0);
    (m.pseudo_ignore_top, m.pseudo_ignore_bottom) = (4, 8);
    (m.fd.enabled, m.mic.enabled) = (true, true);
    let o = &mut c.optim;
    (o.optimizer, o.lr, o.warmup_iters, o.weight_decay) = (Optimizer::Adamw, 1e-3, 3, 0.01);
    c
}

/// A random training batch (source images, source labels of 5 classes in 16x16 blocks,
/// target images), 2 x 64 x 64, fixed by `seed`.
pub fn batch(seed: i64) -> (Tensor, Tensor, Tensor) {
    tch::manual_seed(seed);
    let xs = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)) * 255.0;
    let xt = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)) * 255.0;
    let coarse = Tensor::randint(5, [2, 1, 4, 4], (Kind::Int64, Device::Cpu));
    let ys = coarse
        .to_kind(Kind::Float)
        .upsample_nearest2d([64, 64], None, None)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    (xs, ys, xt)
}

/// Trains (or resumes) as configured.
pub fn try_train(
    cfg: &TrainConfig,
    out: &Path,
    stop_at: Option<u64>,
    resume: Option<&Path>,
) -> rccr_trainer::Result<rccr_trainer::run::RunSummary> {
    let opts = rccr_trainer::run::RunOptions {
        out: out.to_path_buf(),
        quiet: true,
        stop_at,
        resume: resume.map(Path::to_path_buf),
        ..Default::default()
    };
    rccr_trainer::run::run(cfg, &opts)
}

/// Trains (or resumes) and returns every tensor of the last checkpoint.
pub fn train(
    cfg: &TrainConfig,
    out: &Path,
    stop_at: Option<u64>,
    resume: Option<&Path>,
) -> std::collections::BTreeMap<String, Tensor> {
    let summary = try_train(cfg, out, stop_at, resume)
        .unwrap_or_else(|e| panic!("training in {} failed: {e:#}", out.display()));
    let ck =
        rccr_trainer::checkpoint::load(&summary.last_checkpoint.expect("a checkpoint")).unwrap();
    ck.with_prefix("")
}

/// The names under `prefix` whose tensors differ bitwise (or exist in one map only).
pub fn differing(
    a: &std::collections::BTreeMap<String, Tensor>,
    b: &std::collections::BTreeMap<String, Tensor>,
    prefix: &str,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names
        .into_iter()
        .filter(|n| match (a.get(*n), b.get(*n)) {
            (Some(x), Some(y)) => !x.equal(y),
            _ => true,
        })
        .cloned()
        .collect()
}

/// Trains `cfg` with a checkpoint every 2 iterations into `out`, stops at 3, resumes from
/// the checkpoint of iteration 2 and returns every tensor of the resumed run's last one.
pub fn stopped_at_3_and_resumed_from_2(
    cfg: &TrainConfig,
    out: &Path,
) -> std::collections::BTreeMap<String, Tensor> {
    let mut cut = cfg.clone();
    cut.run.save_every = 2;
    train(&cut, out, Some(3), None);
    let ck = out.join("checkpoints/iter_0000002.safetensors");
    assert!(ck.is_file(), "no checkpoint at iteration 2");
    train(&cut, out, None, Some(&ck))
}

/// Panics naming the tensors under each of `prefixes` that differ between `a` and `b`.
pub fn assert_same_under(
    a: &std::collections::BTreeMap<String, Tensor>,
    b: &std::collections::BTreeMap<String, Tensor>,
    prefixes: &[&str],
) {
    for prefix in prefixes {
        let diff = differing(a, b, prefix);
        assert!(
            diff.is_empty(),
            "{prefix}: differ in {:?}",
            &diff[..diff.len().min(5)]
        );
    }
}
