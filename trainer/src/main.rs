//! `rccr-train`: the RCCR training binary. Subcommands: `describe` (network sizes),
//! `train` (paper Algorithm 1), `eval` (score a checkpoint's teacher), `synth` (the
//! synthetic benchmark generator) and `bench` (iteration timing).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rccr_models::{Backbone, ModelConfig, RccrNet, OUTPUT_STRIDE};
use rccr_trainer::bench::{self, BenchConfig};
use rccr_trainer::config::{Components, Mode, Precision, Size, TrainConfig};
use rccr_trainer::data::{DatasetSpec, ValSet};
use rccr_trainer::run::{self, RunOptions};
use rccr_trainer::{checkpoint, validate};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "rccr-train",
    version,
    about = "RCCR domain-adaptive semantic segmentation: training, evaluation, benchmarks"
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
    /// resnet101 | resnet50 | small.
    #[arg(long, default_value = "resnet101")]
    backbone: Backbone,
    /// Output classes.
    #[arg(long, default_value_t = 19)]
    num_classes: i64,
    /// ASPP branches: 4 (paper) or 2 (DACS release).
    #[arg(long, default_value_t = 4)]
    aspp_branches: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Every option overrides the same field of `--config` (or, with `--resume`, of the
/// checkpoint's configuration); defaults are the paper's.
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
    /// source-only | baseline | rccr (default rccr).
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
    /// resnet101 | resnet50 | small (default resnet101).
    #[arg(long)]
    backbone: Option<Backbone>,
    /// Output classes (default 19).
    #[arg(long)]
    num_classes: Option<i64>,
    /// ASPP branches, 4 (paper, default) or 2 (DACS release).
    #[arg(long)]
    aspp_branches: Option<usize>,
    /// ImageNet backbone weights with torchvision names (safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Start student and teacher from an rccr checkpoint's teacher or a model file (e.g. a
    /// source-only run: the stand-in for the paper's pretrained start).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// paper (mu_max exp(-5 (1 - t/N)^0.5), default) | constant (mu_max throughout).
    #[arg(long, value_enum)]
    mu_schedule: Option<rccr_trainer::config::MuSchedule>,
    /// cuDNN benchmark off and libtorch's deterministic algorithms on (GPU runs repeat).
    #[arg(long)]
    deterministic: bool,
    /// Data-parallel backend under torchrun: auto (NCCL on CUDA, Gloo on CPU) | nccl | gloo.
    #[arg(long, value_enum)]
    dist_backend: Option<rccr_trainer::config::DistBackend>,
    /// Seconds a rank waits for the others before failing (default 600).
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
    /// Test hook: ranks above 0 also write their final checkpoint to OUT/rank<r>/.
    #[arg(long, hide = true)]
    save_all_ranks: bool,
    /// Iterations (default 250000).
    #[arg(long)]
    iterations: Option<u64>,
    /// Square crop side (default 512).
    #[arg(long)]
    crop: Option<u32>,
    /// Images per domain per iteration (default 2).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Source resize WxH (default: the dataset's, GTA5 1280x720, SYNTHIA 1280x760).
    #[arg(long)]
    source_size: Option<Size>,
    /// Target resize WxH (default 1024x512).
    #[arg(long)]
    target_size: Option<Size>,
    /// Validation input size WxH (default 1024x512 for Cityscapes).
    #[arg(long)]
    val_size: Option<Size>,
    /// auto | cpu | cuda | cuda:N (default auto).
    #[arg(long)]
    device: Option<String>,
    /// fp32 | bf16 (CUDA autocast).
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Seed (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Backbone learning rate (default 2.5e-4; head 10x).
    #[arg(long)]
    lr: Option<f64>,
    /// mu_max of mu(t) (default 0.01).
    #[arg(long)]
    mu_max: Option<f64>,
    /// Train the BN affine parameters (default: frozen, as DACS).
    #[arg(long)]
    train_bn_affine: bool,
    /// Validate every N iterations (0: only at the end; default 2000).
    #[arg(long)]
    val_every: Option<u64>,
    /// Validate on at most N images.
    #[arg(long)]
    val_limit: Option<usize>,
    /// Checkpoint every N iterations (default 5000).
    #[arg(long)]
    save_every: Option<u64>,
    /// Periodic checkpoints kept besides the best (default 3).
    #[arg(long)]
    keep_last: Option<usize>,
    /// Log every N iterations (default 10).
    #[arg(long)]
    log_every: Option<u64>,
    /// Anchors per chunk of the L_cont similarity (default 1024).
    #[arg(long)]
    anchor_chunk: Option<usize>,
    /// Data worker threads (default 4).
    #[arg(long)]
    workers: Option<usize>,
    /// Batches prefetched (default 4).
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

impl TrainArgs {
    fn apply(&self, c: &mut TrainConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone().into(); } )* };
        }
        set!(
            mode,
            backbone,
            num_classes,
            aspp_branches,
            iterations,
            crop,
            batch_size,
            device,
            precision,
            seed,
            lr,
            mu_max,
            mu_schedule,
            val_every,
            save_every,
            keep_last,
            log_every,
            anchor_chunk,
            workers,
            prefetch
        );
        if let Some(v) = &self.source {
            c.source = Some(v.clone());
        }
        if let Some(v) = &self.target {
            c.target = Some(v.clone());
        }
        if let Some(v) = &self.val {
            c.val = Some(v.clone());
        }
        if let Some(v) = &self.init {
            c.init = Some(v.clone());
        }
        if let Some(v) = &self.init_from {
            c.init_from = Some(v.clone());
        }
        if self.deterministic {
            c.deterministic = true;
        }
        if let Some(b) = self.dist_backend {
            c.dist.backend = b;
        }
        if let Some(t) = self.dist_timeout {
            c.dist.timeout_s = t;
        }
        if self.sync_bn {
            c.dist.sync_bn = true;
        }
        if self.data_rank.is_some() {
            c.data_rank = self.data_rank;
        }
        if self.source_size.is_some() {
            c.source_size = self.source_size;
        }
        if self.target_size.is_some() {
            c.target_size = self.target_size;
        }
        if self.val_size.is_some() {
            c.val_size = self.val_size;
        }
        if self.val_limit.is_some() {
            c.val_limit = self.val_limit;
        }
        if self.train_bn_affine {
            c.train_bn_affine = true;
        }
        let comp = &mut c.components;
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
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The PyTorch file (`torch.save` output: bare state_dict or DACS checkpoint dict).
    #[arg(long)]
    from: PathBuf,
    /// The rccr model file to write (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Which network of a DACS / RCCR checkpoint: ema (the teacher), student, or auto
    /// (ema when present).
    #[arg(long, default_value = "auto")]
    weights: String,
    /// ASPP branches the network sums: 4 (paper) or 2 (the DACS release's code). DACS
    /// files always store four; only the code that trained them knows.
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
    /// resnet101 | resnet50 | small.
    #[arg(long, default_value = "resnet101")]
    backbone: Backbone,
    /// Output classes.
    #[arg(long, default_value_t = 19)]
    num_classes: i64,
    /// Square crop side.
    #[arg(long, default_value_t = 512)]
    crop: u32,
    /// Images per domain.
    #[arg(long, default_value_t = 2)]
    batch_size: usize,
    /// auto | cpu | cuda | cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// rccr (also measures baseline, for the ratio) | baseline | source-only.
    #[arg(long, value_enum, default_value = "rccr")]
    mode: Mode,
    /// fp32 | bf16.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    /// Timed iterations per mode.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Untimed warm-up iterations per mode.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Anchors per chunk of the L_cont similarity.
    #[arg(long, default_value_t = 1024)]
    anchor_chunk: usize,
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
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Data-parallel backend under torchrun: auto | nccl | gloo.
    #[arg(long, value_enum, default_value = "auto")]
    dist_backend: rccr_trainer::config::DistBackend,
    /// Seconds a rank waits for the others.
    #[arg(long, default_value_t = 600)]
    dist_timeout: u32,
}

fn main() {
    rccr_infer::logging::init("info");
    if let Err(e) = run_command(Cli::parse().command) {
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
    let cfg = ModelConfig {
        aspp_branches: a.aspp_branches,
        ..ModelConfig::new(a.backbone, a.num_classes)
    };
    cfg.validate()?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &cfg);
    let counts = rccr_models::count_parameters(&vs);
    let (oh, ow) = ModelConfig::output_size(512, 512);
    let json = serde_json::json!({
        "backbone": cfg.backbone.name(),
        "num_classes": cfg.num_classes,
        "aspp_branches": cfg.aspp_branches,
        "parameters": counts.parameters,
        "projector_parameters": counts.projector_parameters,
        "total_parameters": counts.parameters + counts.projector_parameters,
        "output_stride": OUTPUT_STRIDE,
        "feature_width": cfg.backbone.feature_width(),
        "projector_dim": cfg.projector_dim,
        "output_size_512x512": [oh, ow],
        "model_config": cfg,
    });
    if a.json {
        println!("{json}");
    } else {
        println!("backbone               {}", cfg.backbone);
        println!("classes                {}", cfg.num_classes);
        println!("ASPP branches          {}", cfg.aspp_branches);
        println!("parameters (enc + cls) {}", counts.parameters);
        println!("projector parameters   {}", counts.projector_parameters);
        println!(
            "total                  {}",
            counts.parameters + counts.projector_parameters
        );
        println!("output stride          {OUTPUT_STRIDE}");
        println!("feature width          {}", cfg.backbone.feature_width());
        println!("embedding dim K        {}", cfg.projector_dim);
        println!("512x512 input ->       {oh}x{ow} logits");
    }
    Ok(())
}

/// `train`, or with `trace` the same run writing its iterations out.
fn train(a: &TrainArgs, trace: bool) -> Result<()> {
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
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
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
    }
    Ok(())
}

fn import(a: &ImportArgs) -> Result<()> {
    use rccr_models::pth;
    let which: pth::Which = a.weights.parse().map_err(anyhow::Error::msg)?;
    let file =
        pth::read(&a.from, which).with_context(|| format!("cannot import {}", a.from.display()))?;
    let mut config = pth::infer_config(&file)?;
    config.aspp_branches = a.aspp_branches;
    if let Some(n) = a.num_classes {
        config.num_classes = n;
    }
    let report = pth::to_model_file(&file, &config, &a.out, a.strict)
        .with_context(|| format!("cannot convert {}", a.from.display()))?;
    println!("{report}");
    println!(
        "wrote {} ({} / {} classes / {} ASPP branches)",
        a.out.display(),
        config.backbone,
        config.num_classes,
        config.aspp_branches
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
        .and_then(|c| c.config.source)
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
    let mut device = rccr_models::device::parse_device(&a.device)?;
    let launch = rccr_trainer::dist::Launch::from_env().map_err(anyhow::Error::msg)?;
    let group = match &launch {
        Some(l) => {
            let (pg, dev, _) = rccr_trainer::dist::join(l, a.dist_backend, a.dist_timeout, device)
                .context("cannot join the data-parallel benchmark (torchrun variables)")?;
            device = dev;
            Some(std::rc::Rc::new(pg))
        }
        None => None,
    };
    if let Some(n) = a.threads {
        tch::set_num_threads(n.max(1));
    }
    let report = bench::run(&BenchConfig {
        backbone: a.backbone,
        num_classes: a.num_classes,
        crop: a.crop,
        batch_size: a.batch_size,
        device,
        mode: a.mode,
        precision: a.precision,
        iterations: a.iterations.max(1),
        warmup: a.warmup,
        components: Components {
            mb: !a.no_mb,
            ps: a.ps,
            ..Components::default()
        },
        anchor_chunk: a.anchor_chunk.max(1),
        group,
    })?;
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
