//! `rccr-train`: the RCCR training binary. Subcommands: `describe` (network sizes),
//! `train` (paper Algorithm 1), `eval` (score a checkpoint's teacher), `synth` (the
//! synthetic benchmark generator) and `bench` (iteration timing).

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rccr_models::{Backbone, Decoder, ModelConfig, RccrNet, GRID_STRIDE};
use rccr_trainer::bench::{self, BenchConfig};
use rccr_trainer::config::{
    Components, DataConfig, MethodConfig, Mode, OptimConfig, Precision, RunConfig, Size,
    TrainConfig,
};
use rccr_trainer::data::{DatasetSpec, ValSet};
use rccr_trainer::run::{self, RunOptions};
use rccr_trainer::{checkpoint, validate};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "rccr-train",
    version,
    about = "RCCR domain-adaptive semantic segmentation: training, evaluation, benchmarks",
    // An option given twice takes its last value (a script's flags after its defaults).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the network's parameter counts and output stride.
    Describe(DescribeArgs),
    /// Train (paper Algorithm 1): source-only, baseline (mean teacher + ClassMix) or RCCR.
    Train(Box<TrainArgs>),
    /// Run --iterations K exactly as `train` would and write every iteration's tensors to
    /// OUT/step_<t:07>.safetensors (format rccr-trace-v1) for an independent replay.
    Trace(Box<TrainArgs>),
    /// Score the teacher of a checkpoint (or a bare model file) on a validation split.
    Eval(EvalArgs),
    /// Convert a PyTorch checkpoint (DACS / RCCR `.pth`, zip or legacy format) into an rccr
    /// model file, reporting copied / skipped / missing / unexpected tensors.
    Import(ImportArgs),
    /// Generate the synthetic "game -> real" benchmark.
    Synth(rccr_trainer::synth::SynthArgs),
    /// Time training iterations on random tensors (no data needed).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct DescribeArgs {
    /// A recipe or settings file (e.g. configs/mic.toml): print it resolved (every
    /// setting, defaults filled in) before the network's sizes.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    net: NetworkArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The network options of `describe`, `train` and `trace`; each overrides its field of
/// the [`ModelConfig`] it is applied to.
#[derive(Args, Debug, Default)]
struct NetworkArgs {
    /// resnet101 | resnet50 | small | mit-b0 | mit-b1 | ... | mit-b5 (a MiT takes the
    /// ImageNet RGB mean / std input normalisation and the daformer decoder by default).
    #[arg(long)]
    backbone: Option<Backbone>,
    /// Segmentation head: aspp (ResNets) | daformer (MiT, default) | segformer (MiT).
    #[arg(long)]
    decoder: Option<Decoder>,
    /// Output classes.
    #[arg(long)]
    num_classes: Option<i64>,
    /// ASPP branches: 4 (paper) or 2 (the DACS / RCCR reference code; docs/design.md#network).
    #[arg(long)]
    aspp_branches: Option<usize>,
}

impl NetworkArgs {
    /// Writes every option given over its field of `m`.
    fn apply(&self, m: &mut ModelConfig) {
        if let Some(b) = self.backbone {
            m.set_backbone(b);
        }
        if self.decoder.is_some() {
            m.decoder = self.decoder;
        }
        set(&mut m.num_classes, self.num_classes);
        set(&mut m.aspp_branches, self.aspp_branches);
    }
}

/// Every option overrides the same field of `--config` (or, with `--resume`, of the
/// checkpoint's configuration); the defaults shown are `TrainConfig::default()`'s.
#[derive(Args, Debug, Default)]
struct TrainArgs {
    /// Settings file (TOML or JSON, fields as in RUN_DIR/config.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Labelled source: gta5:DIR | synthia:DIR | cityscapes:DIR.
    #[arg(long)]
    source: Option<DatasetSpec>,
    /// Unlabelled target: cityscapes:DIR.
    #[arg(long)]
    target: Option<DatasetSpec>,
    /// Validation data (default: the target's val split).
    #[arg(long)]
    val: Option<DatasetSpec>,
    /// The run folder (default with --resume: the checkpoint's run folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from RUN_DIR/checkpoints/iter_*.safetensors.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// source-only | baseline | rccr.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Switch off the region-wise contrastive loss (= baseline).
    #[arg(long)]
    no_rwc: bool,
    /// Switch off NS(R), the random half of the negatives.
    #[arg(long)]
    no_ns_random: bool,
    /// Switch off NS(C), the category-aware negative filter.
    #[arg(long)]
    no_ns_category: bool,
    /// Switch off PS, the positive (anchor) confidence filter.
    #[arg(long)]
    no_ps: bool,
    /// Switch off MB, the memory bank.
    #[arg(long)]
    no_mb: bool,
    #[command(flatten)]
    net: NetworkArgs,
    #[command(flatten)]
    strategies: StrategyArgs,
    /// ImageNet backbone weights with torchvision names (safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Start student and teacher from an rccr checkpoint's teacher or a model file (e.g. a
    /// source-only run: the stand-in for the paper's pretrained start).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// paper (mu_max exp(-5 (1 - t/N)^0.5)) | constant (mu_max throughout).
    #[arg(long, value_enum)]
    mu_schedule: Option<rccr_trainer::config::MuSchedule>,
    /// cuDNN benchmark off and libtorch's deterministic algorithms on (GPU runs repeat).
    #[arg(long)]
    deterministic: bool,
    /// Channels-last (NHWC) weights and activations (tensor-core kernels on CUDA).
    #[arg(long)]
    channels_last: bool,
    /// Data-parallel backend under torchrun: auto (NCCL on CUDA, Gloo on CPU) | nccl | gloo.
    #[arg(long, value_enum)]
    dist_backend: Option<rccr_trainer::config::DistBackend>,
    /// Seconds a rank waits for the others before failing.
    #[arg(long)]
    dist_timeout: Option<u32>,
    /// Synchronised batch norm across ranks in the student's forwards.
    #[arg(long)]
    sync_bn: bool,
    /// Test hook: batches and random choices of data-parallel rank R, in one process.
    #[arg(long, hide = true)]
    data_rank: Option<usize>,
    /// No TensorBoard event files in RUN_DIR/tb/.
    #[arg(long)]
    no_tensorboard: bool,
    /// Replace the run already in --out (without it such a folder is refused).
    #[arg(long)]
    overwrite: bool,
    /// Test hook: ranks above 0 also write their final checkpoint to `OUT/rank<r>/`.
    #[arg(long, hide = true)]
    save_all_ranks: bool,
    /// Iterations N of Algorithm 1.
    #[arg(long)]
    iterations: Option<u64>,
    /// Square crop side.
    #[arg(long)]
    crop: Option<u32>,
    /// Images per domain per iteration.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Source resize WxH (default: the dataset's, GTA5 1280x720, SYNTHIA 1280x760).
    #[arg(long)]
    source_size: Option<Size>,
    /// Target resize WxH (default: Cityscapes 1024x512, DACS).
    #[arg(long)]
    target_size: Option<Size>,
    /// Validation input size WxH (default 1024x512 for Cityscapes).
    #[arg(long)]
    val_size: Option<Size>,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// fp32 | bf16 (CUDA autocast).
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Seed of the weights, the data order and every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Backbone learning rate (the head's is 10x).
    #[arg(long)]
    lr: Option<f64>,
    /// mu_max of mu(t).
    #[arg(long)]
    mu_max: Option<f64>,
    /// Train the BN affine parameters (default: frozen, as DACS).
    #[arg(long)]
    train_bn_affine: bool,
    /// Validate every N iterations (0: only at the end).
    #[arg(long)]
    val_every: Option<u64>,
    /// Validate on at most N images.
    #[arg(long)]
    val_limit: Option<usize>,
    /// Checkpoint every N iterations.
    #[arg(long)]
    save_every: Option<u64>,
    /// Periodic checkpoints kept besides the best.
    #[arg(long)]
    keep_last: Option<usize>,
    /// Log every N iterations.
    #[arg(long)]
    log_every: Option<u64>,
    /// Anchors per chunk of the L_cont similarity.
    #[arg(long)]
    anchor_chunk: Option<usize>,
    /// Data worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Batches prefetched.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Stop after this iteration (the schedule still spans --iterations).
    #[arg(long, hide = true)]
    stop_at: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the run summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The successors' switches (docs/method.md, "Successors' strategies"); a switch given
/// without a value turns it on, `--fd false` turns a recipe's off.
#[derive(Args, Debug, Default)]
struct StrategyArgs {
    /// Rare-class sampling of the source images (DAFormer).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    rcs: Option<bool>,
    /// Temperature T of rare-class sampling.
    #[arg(long)]
    rcs_temperature: Option<f64>,
    /// Thing-class feature distance to the starting encoder (DAFormer).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    fd: Option<bool>,
    /// lambda_FD.
    #[arg(long)]
    fd_lambda: Option<f64>,
    /// Masked image consistency on the target (MIC).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    mic: Option<bool>,
    /// lambda_MIC.
    #[arg(long)]
    mic_lambda: Option<f64>,
    /// MIC's patch side in pixels (default: crop / 8).
    #[arg(long)]
    mic_patch: Option<u32>,
    /// Share of MIC's patches masked.
    #[arg(long)]
    mic_ratio: Option<f64>,
    /// Target rows at the top of a crop ignored in the pseudo-label losses (DAFormer).
    #[arg(long)]
    pseudo_ignore_top: Option<u32>,
    /// Target rows at the bottom of a crop ignored in the pseudo-label losses (DAFormer).
    #[arg(long)]
    pseudo_ignore_bottom: Option<u32>,
    /// sgd (paper) | adamw (DAFormer).
    #[arg(long, value_enum)]
    optimizer: Option<rccr_trainer::config::Optimizer>,
    /// Linear warm-up iterations of the learning rate.
    #[arg(long)]
    warmup_iters: Option<u64>,
    /// Weight decay (SGD: coupled; AdamW: decoupled).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Upper bound of the teacher's EMA coefficient alpha.
    #[arg(long)]
    ema_alpha: Option<f64>,
}

impl StrategyArgs {
    /// Writes every option given over its field of `c`.
    fn apply(&self, c: &mut TrainConfig) {
        let (d, m, o) = (&mut c.data, &mut c.method, &mut c.optim);
        set(&mut d.rcs.enabled, self.rcs);
        set(&mut d.rcs.temperature, self.rcs_temperature);
        set(&mut m.fd.enabled, self.fd);
        set(&mut m.fd.lambda, self.fd_lambda);
        set(&mut m.mic.enabled, self.mic);
        set(&mut m.mic.lambda, self.mic_lambda);
        set_some(&mut m.mic.patch, &self.mic_patch);
        set(&mut m.mic.ratio, self.mic_ratio);
        set(&mut m.pseudo_ignore_top, self.pseudo_ignore_top);
        set(&mut m.pseudo_ignore_bottom, self.pseudo_ignore_bottom);
        set(&mut o.optimizer, self.optimizer);
        set(&mut o.warmup_iters, self.warmup_iters);
        set(&mut o.weight_decay, self.weight_decay);
        set(&mut o.ema_alpha, self.ema_alpha);
    }
}

impl TrainArgs {
    /// Writes every option given on the command line over its field of `c`.
    fn apply(&self, c: &mut TrainConfig) {
        self.net.apply(&mut c.model);
        self.strategies.apply(c);
        self.apply_data(&mut c.data);
        self.apply_method(&mut c.method);
        self.apply_optim(&mut c.optim);
        self.apply_run(&mut c.run);
    }

    fn apply_data(&self, d: &mut DataConfig) {
        set_some(&mut d.source, &self.source);
        set_some(&mut d.target, &self.target);
        set_some(&mut d.val, &self.val);
        set_some(&mut d.source_size, &self.source_size);
        set_some(&mut d.target_size, &self.target_size);
        set_some(&mut d.val_size, &self.val_size);
        set_some(&mut d.data_rank, &self.data_rank);
        set(&mut d.crop, self.crop);
        set(&mut d.batch_size, self.batch_size);
        set(&mut d.workers, self.workers);
        set(&mut d.prefetch, self.prefetch);
    }

    fn apply_method(&self, m: &mut MethodConfig) {
        set(&mut m.mode, self.mode);
        set(&mut m.mu_max, self.mu_max);
        set(&mut m.mu_schedule, self.mu_schedule);
        set(&mut m.anchor_chunk, self.anchor_chunk);
        let comp = &mut m.components;
        for (off, field) in [
            (self.no_rwc, &mut comp.rwc),
            (self.no_ns_random, &mut comp.ns_random),
            (self.no_ns_category, &mut comp.ns_category),
            (self.no_ps, &mut comp.ps),
            (self.no_mb, &mut comp.mb),
        ] {
            if off {
                *field = false;
            }
        }
    }

    fn apply_optim(&self, o: &mut OptimConfig) {
        set(&mut o.lr, self.lr);
        o.train_bn_affine |= self.train_bn_affine;
    }

    fn apply_run(&self, r: &mut RunConfig) {
        set(&mut r.iterations, self.iterations);
        set(&mut r.device, self.device.clone());
        set(&mut r.precision, self.precision);
        set(&mut r.seed, self.seed);
        set_some(&mut r.init, &self.init);
        set_some(&mut r.init_from, &self.init_from);
        set(&mut r.val_every, self.val_every);
        set_some(&mut r.val_limit, &self.val_limit);
        set(&mut r.save_every, self.save_every);
        set(&mut r.keep_last, self.keep_last);
        set(&mut r.log_every, self.log_every);
        set(&mut r.dist.backend, self.dist_backend);
        set(&mut r.dist.timeout_s, self.dist_timeout);
        r.deterministic |= self.deterministic;
        r.channels_last |= self.channels_last;
        r.dist.sync_bn |= self.sync_bn;
    }
}

/// `field = v` when the option was given.
fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

/// `field = Some(v)` when the option was given (an optional setting).
fn set_some<T: Clone>(field: &mut Option<T>, v: &Option<T>) {
    if v.is_some() {
        field.clone_from(v);
    }
}

/// The `train` / `trace` options whose help shows a default, each with its value in
/// [`TrainConfig::default`] (the one place the defaults are stated).
fn train_option_defaults() -> Vec<(&'static str, String)> {
    fn show<T: serde::Serialize>(v: &T) -> String {
        match serde_json::to_value(v).expect("settings serialise") {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }
    }
    let c = TrainConfig::default();
    let (d, m, o, r) = (&c.data, &c.method, &c.optim, &c.run);
    vec![
        ("mode", show(&m.mode)),
        ("backbone", show(&c.model.backbone)),
        ("num_classes", show(&c.model.num_classes)),
        ("aspp_branches", show(&c.model.aspp_branches)),
        ("mu_schedule", show(&m.mu_schedule)),
        ("dist_backend", show(&r.dist.backend)),
        ("dist_timeout", show(&r.dist.timeout_s)),
        ("iterations", show(&r.iterations)),
        ("crop", show(&d.crop)),
        ("batch_size", show(&d.batch_size)),
        ("device", show(&r.device)),
        ("precision", show(&r.precision)),
        ("seed", show(&r.seed)),
        ("lr", show(&o.lr)),
        ("rcs_temperature", show(&d.rcs.temperature)),
        ("fd_lambda", show(&m.fd.lambda)),
        ("mic_lambda", show(&m.mic.lambda)),
        ("mic_ratio", show(&m.mic.ratio)),
        ("pseudo_ignore_top", show(&m.pseudo_ignore_top)),
        ("pseudo_ignore_bottom", show(&m.pseudo_ignore_bottom)),
        ("optimizer", show(&o.optimizer)),
        ("warmup_iters", show(&o.warmup_iters)),
        ("weight_decay", show(&o.weight_decay)),
        ("ema_alpha", show(&o.ema_alpha)),
        ("mu_max", show(&m.mu_max)),
        ("val_every", show(&r.val_every)),
        ("save_every", show(&r.save_every)),
        ("keep_last", show(&r.keep_last)),
        ("log_every", show(&r.log_every)),
        ("anchor_chunk", show(&m.anchor_chunk)),
        ("workers", show(&d.workers)),
        ("prefetch", show(&d.prefetch)),
    ]
}

/// The options of `describe` whose default is the network's.
const DESCRIBE_DEFAULTS: &[&str] = &["backbone", "num_classes", "aspp_branches"];

/// The options of `bench` whose default is a training run's.
const BENCH_DEFAULTS: &[&str] = &[
    "backbone",
    "num_classes",
    "aspp_branches",
    "crop",
    "batch_size",
    "device",
    "mode",
    "precision",
    "anchor_chunk",
    "dist_backend",
    "dist_timeout",
];

/// A subcommand with the help of each option in `ids` (all of them when None) ending in
/// `[default: V]`, V from [`TrainConfig::default`]; the options stay unset unless given,
/// so that they override `--config` only when present.
fn with_defaults(cmd: clap::Command, ids: Option<&[&str]>) -> clap::Command {
    train_option_defaults()
        .into_iter()
        .filter(|(id, _)| ids.is_none_or(|ids| ids.contains(id)))
        .fold(cmd, |cmd, (id, value)| {
            cmd.mut_arg(id, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                a.help(format!("{help} [default: {value}]"))
            })
        })
}

/// Parses the command line, the help of `train`, `trace`, `describe` and `bench` showing
/// the defaults of [`TrainConfig::default`].
fn parse_cli() -> Cli {
    let cmd = Cli::command()
        .mut_subcommand("train", |c| with_defaults(c, None))
        .mut_subcommand("trace", |c| with_defaults(c, None))
        .mut_subcommand("describe", |c| with_defaults(c, Some(DESCRIBE_DEFAULTS)))
        .mut_subcommand("bench", |c| with_defaults(c, Some(BENCH_DEFAULTS)));
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The PyTorch file (`torch.save` output: bare state_dict, DACS checkpoint dict, or an
    /// mmseg / DAFormer / MIC checkpoint of a MiT network).
    #[arg(long)]
    from: PathBuf,
    /// The rccr model file to write (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Which network of a DACS / RCCR / DAFormer checkpoint: ema (the teacher), student,
    /// or auto (ema when present; DAFormer's own test script evaluates the student).
    #[arg(long, default_value = "auto")]
    weights: String,
    /// ASPP branches the network sums: 4 (paper) or 2 (the DACS / RCCR reference code;
    /// docs/design.md#network). DACS files always store four; only the code that trained
    /// them knows.
    #[arg(long, default_value_t = 4)]
    aspp_branches: usize,
    /// Output classes (default: the classifier's).
    #[arg(long)]
    num_classes: Option<i64>,
    /// Any skipped, missing or unexpected tensor is an error.
    #[arg(long)]
    strict: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint (RUN_DIR/checkpoints/iter_*.safetensors) or a bare model file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Which network of a checkpoint: teacher (default, Algorithm 1's output) or student.
    #[arg(long, default_value = "teacher")]
    network: String,
    /// Validation data: cityscapes:DIR (val split) | gta5:DIR | synthia:DIR.
    #[arg(long)]
    data: DatasetSpec,
    /// Input size WxH (default: Cityscapes 1024x512, others their own size).
    #[arg(long)]
    size: Option<Size>,
    /// Score at most N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Also report SYNTHIA's 16- and 13-class mIoU (default: when the data is SYNTHIA or
    /// the checkpoint was trained from SYNTHIA).
    #[arg(long)]
    synthia_protocols: bool,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// bf16 autocast (CUDA).
    #[arg(long)]
    bf16: bool,
    /// Also write the scores as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    net: NetworkArgs,
    /// Square crop side.
    #[arg(long)]
    crop: Option<u32>,
    /// Images per domain.
    #[arg(long)]
    batch_size: Option<usize>,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// rccr (also measures baseline, for the ratio) | baseline | source-only.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// fp32 | bf16.
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Timed iterations per mode.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Untimed warm-up iterations per mode.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Anchors per chunk of the L_cont similarity.
    #[arg(long)]
    anchor_chunk: Option<usize>,
    /// Switch off the memory bank.
    #[arg(long)]
    no_mb: bool,
    /// libtorch CPU threads (default: libtorch's choice, the core count). On a busy
    /// machine 1 avoids OpenMP barrier stalls and gives steadier figures.
    #[arg(long)]
    threads: Option<i32>,
    /// Keep positive sampling on. Off by default here: a fresh network is never confident
    /// enough (max softmax <= 0.75), so PS would drop every anchor and skip L_cont's
    /// backward; without it every box cell is an anchor, the upper bound of the cost.
    #[arg(long)]
    ps: bool,
    /// Channels-last (NHWC) weights and activations (tensor-core kernels on CUDA).
    #[arg(long)]
    channels_last: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Data-parallel backend under torchrun: auto | nccl | gloo.
    #[arg(long, value_enum)]
    dist_backend: Option<rccr_trainer::config::DistBackend>,
    /// Seconds a rank waits for the others.
    #[arg(long)]
    dist_timeout: Option<u32>,
}

/// The resolved recipe of `path` (the network options applied), printed as TOML unless
/// `--json` (which prints it under `recipe` with the network's sizes).
fn describe_recipe(path: &std::path::Path, a: &DescribeArgs) -> Result<TrainConfig> {
    let mut c = TrainConfig::from_file(path)?;
    a.net.apply(&mut c.model);
    c.validate()?;
    if !a.json {
        let value = without_nulls(serde_json::to_value(&c)?);
        println!(
            "# {} resolved (unset options omitted)\n{}",
            path.display(),
            toml::to_string(&value)?
        );
    }
    Ok(c)
}

/// `v` without its null entries (TOML has no null: an unset option is an absent key).
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, x)| !x.is_null())
            .map(|(k, x)| (k, without_nulls(x)))
            .collect(),
        other => other,
    }
}

fn main() {
    rccr_infer::logging::init("info");
    if let Err(e) = run_command(parse_cli().command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Describe(a) => describe(&a),
        Command::Train(a) => train(&a, false),
        Command::Trace(a) => train(&a, true),
        Command::Eval(a) => eval(&a),
        Command::Import(a) => import(&a),
        Command::Synth(a) => {
            let report =
                rccr_trainer::synth::run(&a).context("synthetic benchmark generation failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(a) => bench_cmd(&a),
    }
}

fn describe(a: &DescribeArgs) -> Result<()> {
    let (mut cfg, recipe) = match &a.config {
        Some(path) => {
            let c = describe_recipe(path, a)?;
            (c.model.clone(), Some(c))
        }
        None => (ModelConfig::default(), None),
    };
    a.net.apply(&mut cfg);
    cfg.validate()?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &cfg);
    let counts = rccr_models::count_parameters(&vs);
    let (oh, ow) = cfg.logits_size(512, 512);
    let (gh, gw) = cfg.grid_size(512, 512);
    let json = serde_json::json!({
        "backbone": cfg.backbone.name(),
        "decoder": cfg.decoder().name(),
        "num_classes": cfg.num_classes,
        "aspp_branches": cfg.aspp_branches,
        "parameters": counts.parameters,
        "encoder_parameters": counts.encoder_parameters,
        "decoder_parameters": counts.decoder_parameters,
        "projector_parameters": counts.projector_parameters,
        "total_parameters": counts.parameters + counts.projector_parameters,
        "output_stride": cfg.output_stride(),
        "grid_stride": GRID_STRIDE,
        "feature_width": cfg.feature_width(),
        "projector_dim": cfg.projector_dim,
        "output_size_512x512": [oh, ow],
        "grid_size_512x512": [gh, gw],
        "model_config": cfg,
    });
    if a.json {
        let mut json = json;
        if let Some(c) = recipe {
            json["recipe"] = serde_json::to_value(&c)?;
        }
        println!("{json}");
    } else {
        println!("backbone               {}", cfg.backbone);
        println!("decoder                {}", cfg.decoder());
        println!("classes                {}", cfg.num_classes);
        println!("ASPP branches          {}", cfg.aspp_branches);
        println!("parameters (enc + dec) {}", counts.parameters);
        println!("encoder parameters     {}", counts.encoder_parameters);
        println!("decoder parameters     {}", counts.decoder_parameters);
        println!("projector parameters   {}", counts.projector_parameters);
        println!(
            "total                  {}",
            counts.parameters + counts.projector_parameters
        );
        println!("output stride          {}", cfg.output_stride());
        println!("feature width          {}", cfg.feature_width());
        println!("embedding dim K        {}", cfg.projector_dim);
        println!("512x512 input ->       {oh}x{ow} logits, {gh}x{gw} RCCR grid");
    }
    Ok(())
}

/// `train`, or with `trace` the same run writing its iterations out.
fn train(a: &TrainArgs, trace: bool) -> Result<()> {
    let cfg = resolve_config(a)?;
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r
            .canonicalize()
            .ok()
            .and_then(|p| p.parent()?.parent().map(|d| d.to_path_buf()))
            .context("cannot tell the run folder of the checkpoint; pass --out")?,
        (None, None) => bail!("pass --out RUN_DIR (the run folder)"),
    };
    let summary = run::run(
        &cfg,
        &RunOptions {
            out,
            resume: a.resume.clone(),
            stop_at: a.stop_at,
            quiet: a.quiet,
            trace,
            save_all_ranks: a.save_all_ranks,
            overwrite: a.overwrite,
            tensorboard: !a.no_tensorboard && !trace,
        },
    )?;
    print_summary(&summary, a.json)
}

/// The configuration of `train` / `trace`: `--config`, else the checkpoint's with
/// `--resume`, else the defaults; the options written over it; checked.
fn resolve_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match (&a.config, &a.resume) {
        (Some(p), _) => TrainConfig::from_file(p)?,
        (None, Some(r)) => {
            checkpoint::load(r)
                .with_context(|| format!("cannot resume from {}", r.display()))?
                .config
        }
        (None, None) => TrainConfig::default(),
    };
    a.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

fn print_summary(summary: &run::RunSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    println!(
        "trained {} iterations ({:.3} s/iteration) in {}",
        summary.iterations,
        summary.seconds_per_iteration,
        summary.run_dir.display()
    );
    if let Some(b) = summary.best {
        println!(
            "best teacher mIoU {:.2}% at iteration {}",
            b.miou * 100.0,
            b.iteration
        );
    }
    if let Some(p) = &summary.last_checkpoint {
        println!("last checkpoint {}", p.display());
    }
    Ok(())
}

fn import(a: &ImportArgs) -> Result<()> {
    use rccr_models::pth;
    let which: pth::Which = a.weights.parse().map_err(anyhow::Error::msg)?;
    let file =
        pth::read(&a.from, which).with_context(|| format!("cannot import {}", a.from.display()))?;
    let mut config = pth::infer_config(&file)?;
    if !config.backbone.is_mit() {
        config.aspp_branches = a.aspp_branches;
    }
    if let Some(n) = a.num_classes {
        config.num_classes = n;
    }
    let report = pth::to_model_file(&file, &config, &a.out, a.strict)
        .with_context(|| format!("cannot convert {}", a.from.display()))?;
    println!("{report}");
    let head = match config.decoder() {
        Decoder::Aspp => format!("{} ASPP branches", config.aspp_branches),
        d => format!("{d} decoder"),
    };
    println!(
        "wrote {} ({} / {} classes / {head})",
        a.out.display(),
        config.backbone,
        config.num_classes,
    );
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    let device = rccr_models::device::parse_device(&a.device)?;
    let prefix = match a.network.as_str() {
        "teacher" => rccr_models::checkpoint::TEACHER,
        "student" => rccr_models::checkpoint::STUDENT,
        other => bail!("--network must be teacher or student, got `{other}`"),
    };
    let loaded = rccr_models::checkpoint::load_network(&a.checkpoint, prefix, device)
        .with_context(|| format!("cannot load {}", a.checkpoint.display()))?;
    let trained_on_synthia = checkpoint::load(&a.checkpoint)
        .ok()
        .and_then(|c| c.config.data.source)
        .is_some_and(|s| s.is_synthia());
    let set = ValSet::open(&a.data, a.size.map(|s| s.pair()), a.limit)
        .with_context(|| format!("validation data {}", a.data))?;
    let pb = indicatif::ProgressBar::new(set.len() as u64);
    let synthia = a.synthia_protocols || a.data.is_synthia() || trained_on_synthia;
    let res = validate::evaluate(&loaded.net, &set, device, a.bf16, synthia, Some(&pb))?;
    pb.finish_and_clear();
    println!("{}: {} on {}", a.checkpoint.display(), a.network, a.data);
    println!("{res}");
    if let Some(p) = &a.json {
        #[derive(serde::Serialize)]
        struct EvalReport<'a> {
            checkpoint: &'a std::path::Path,
            network: &'a str,
            iteration: u64,
            data: String,
            scores: &'a validate::ValResult,
        }
        let json = EvalReport {
            checkpoint: &a.checkpoint,
            network: &a.network,
            iteration: loaded.info.iteration,
            data: a.data.to_string(),
            scores: &res,
        };
        rccr_models::weights::write_atomic(p, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}

fn bench_cmd(a: &BenchArgs) -> Result<()> {
    let d = TrainConfig::default();
    let mut device =
        rccr_models::device::parse_device(a.device.as_deref().unwrap_or(&d.run.device))?;
    let group = bench_group(a, &d, &mut device)?;
    if let Some(n) = a.threads {
        tch::set_num_threads(n.max(1));
    }
    let report = bench::run(&bench_config(a, &d, device, group))?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    if let Some(p) = &a.json_out {
        rccr_models::weights::write_atomic(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

/// Under torchrun, joins the data-parallel group (moving `device` to this rank's);
/// None for a single process.
fn bench_group(
    a: &BenchArgs,
    d: &TrainConfig,
    device: &mut tch::Device,
) -> Result<Option<std::rc::Rc<rccr_trainer::dist::ProcessGroup>>> {
    let Some(launch) = rccr_trainer::dist::Launch::from_env()? else {
        return Ok(None);
    };
    let dist = &d.run.dist;
    let (pg, dev, _) = rccr_trainer::dist::join(
        &launch,
        a.dist_backend.unwrap_or(dist.backend),
        a.dist_timeout.unwrap_or(dist.timeout_s),
        *device,
    )
    .context("cannot join the data-parallel benchmark (torchrun variables)")?;
    *device = dev;
    Ok(Some(std::rc::Rc::new(pg)))
}

/// The benchmark's settings: each option given, else its field of `d` (the defaults).
fn bench_config(
    a: &BenchArgs,
    d: &TrainConfig,
    device: tch::Device,
    group: Option<std::rc::Rc<rccr_trainer::dist::ProcessGroup>>,
) -> BenchConfig {
    BenchConfig {
        model: {
            let mut m = d.model.clone();
            a.net.apply(&mut m);
            m
        },
        crop: a.crop.unwrap_or(d.data.crop),
        batch_size: a.batch_size.unwrap_or(d.data.batch_size),
        device,
        mode: a.mode.unwrap_or(d.method.mode),
        precision: a.precision.unwrap_or(d.run.precision),
        iterations: a.iterations.max(1),
        warmup: a.warmup,
        components: Components {
            mb: !a.no_mb,
            ps: a.ps,
            ..Components::default()
        },
        anchor_chunk: a.anchor_chunk.unwrap_or(d.method.anchor_chunk).max(1),
        channels_last: a.channels_last,
        group,
    }
}
