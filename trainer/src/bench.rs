//! `rccr-train bench`: times full training iterations (Algorithm 1, Eq. 9) on random
//! tensors, no data needed. After `warmup` untimed iterations, `iterations` are timed
//! end to end (device synchronised), then the same number again with per-phase timing.
//! In mode `rccr` a baseline (mean teacher + ClassMix) is measured in the same process,
//! so the cost of the contrastive branch is the ratio of the two. Positive sampling is
//! off unless asked for (`--ps`): a fresh network is never confident enough to keep an
//! anchor, which would skip L_cont's backward and under-state the cost.
//!
//! Peak memory: on the CPU the process's resident high-water mark (`VmHWM` of
//! `/proc/self/status`); on CUDA the memory `nvidia-smi` attributes to this process
//! after the measurement (inside containers, where nvidia-smi often lists no processes,
//! the device's used memory), which is what libtorch's caching allocator holds (its peak
//! reservation, since it does not give memory back) plus the CUDA context. libtorch's
//! allocator statistics return C++ structs that tch does not expose. Both figures are
//! cumulative over the process, so the second (rccr) figure is the peak of both modes.

use crate::config::{
    Components, DataConfig, MethodConfig, Mode, Precision, RunConfig, TrainConfig,
};
use crate::error::{Context, Result};
use crate::trainer::{Phases, Trainer};
use rccr_models::ModelConfig;
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The network (backbone, decoder, classes), as `rccr-train train` builds it.
    pub model: ModelConfig,
    /// Square crop side.
    pub crop: u32,
    /// Images per domain.
    pub batch_size: usize,
    /// Device.
    pub device: Device,
    /// Mode measured (rccr also measures baseline).
    pub mode: Mode,
    /// Precision.
    pub precision: Precision,
    /// Timed iterations.
    pub iterations: usize,
    /// Untimed warm-up iterations.
    pub warmup: usize,
    /// Table 3 switches.
    pub components: Components,
    /// Anchor chunk.
    pub anchor_chunk: usize,
    /// Channels-last weights and activations (`run.channels_last`).
    pub channels_last: bool,
    /// The data-parallel group when launched by torchrun (gradients averaged as in
    /// training, the all-reduce timed).
    pub group: Option<std::rc::Rc<crate::dist::ProcessGroup>>,
}

/// One mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeBench {
    /// The mode.
    pub mode: String,
    /// Mean milliseconds per iteration.
    pub ms_per_iteration: f64,
    /// Median iteration.
    pub ms_median: f64,
    /// Fastest iteration.
    pub ms_min: f64,
    /// Mean phase times in milliseconds (profiled pass, with synchronisation).
    pub phases_ms: Phases,
    /// Peak memory after this mode in MiB (see the module doc), if known.
    pub peak_memory_mib: Option<f64>,
    /// Anchors per iteration (rccr).
    pub mean_kept_anchors: f64,
    /// How the peak memory was read.
    pub memory_source: String,
    /// Mean milliseconds per timed iteration spent averaging gradients (data-parallel).
    pub allreduce_ms: Option<f64>,
    /// allreduce_ms / ms_per_iteration.
    pub allreduce_share: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What measured: `rccr-train` (the PyTorch peer, scripts/peer/rccr_iteration.py,
    /// writes the same fields with `pytorch-peer`, for scripts/gpu/compare.py).
    pub implementation: String,
    /// Device name.
    pub device: String,
    /// Backbone.
    pub backbone: String,
    /// Crop.
    pub crop: u32,
    /// Batch per domain.
    pub batch_size: usize,
    /// Precision.
    pub precision: String,
    /// Timed iterations per mode.
    pub iterations: usize,
    /// Warm-up iterations per mode.
    pub warmup: usize,
    /// libtorch CPU threads.
    pub threads: i32,
    /// Channels-last weights and activations.
    pub channels_last: bool,
    /// This process's rank (0 alone).
    pub rank: usize,
    /// Processes.
    pub world_size: usize,
    /// Per mode.
    pub modes: Vec<ModeBench>,
    /// mean ms(rccr) / mean ms(baseline), when both ran.
    pub rccr_over_baseline: Option<f64>,
    /// median ms(rccr) / median ms(baseline) (robust on a shared machine).
    pub rccr_over_baseline_median: Option<f64>,
    /// How peak memory was measured.
    pub memory_source: String,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench (rank {} of {}): {} crop {} batch {} {}{} on {} ({} timed after {} warm-up iterations)",
            self.rank,
            self.world_size,
            self.backbone,
            self.crop,
            self.batch_size,
            self.precision,
            if self.channels_last { " channels-last" } else { "" },
            self.device,
            self.iterations,
            self.warmup
        )?;
        write_table(f, &self.modes)?;
        for m in &self.modes {
            if let (Some(ms), Some(share)) = (m.allreduce_ms, m.allreduce_share) {
                writeln!(
                    f,
                    "{}: gradient all-reduce {ms:.1} ms per iteration ({:.1} % of it)",
                    m.mode,
                    share * 100.0
                )?;
            }
        }
        if let (Some(r), Some(m)) = (self.rccr_over_baseline, self.rccr_over_baseline_median) {
            writeln!(
                f,
                "rccr / baseline iteration time: {r:.3} (mean), {m:.3} (median)"
            )?;
        }
        write!(f, "peak memory: {}", self.memory_source)
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub(crate) fn cpu_peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GPU memory of this process from nvidia-smi, MiB, with how it was read: the
/// per-process figure, or (inside containers, where nvidia-smi often lists no
/// processes) the device's used memory, which is this process's on a dedicated GPU.
pub(crate) fn cuda_memory_mib(device_index: usize) -> Option<(f64, &'static str)> {
    let me = std::process::id().to_string();
    let per_process = nvidia_smi(&[
        "--query-compute-apps=pid,used_memory",
        "--format=csv,noheader,nounits",
    ])
    .and_then(|text| {
        text.lines().find_map(|l| {
            let mut it = l.split(',').map(str::trim);
            (it.next()? == me).then(|| it.next()?.parse().ok())?
        })
    });
    if let Some(v) = per_process {
        return Some((v, "nvidia-smi per-process used memory"));
    }
    let index = device_index.to_string();
    let device = nvidia_smi(&[
        "--query-gpu=memory.used",
        "--format=csv,noheader,nounits",
        "-i",
        &index,
    ])?;
    let v = device.lines().next()?.trim().parse().ok()?;
    Some((
        v,
        "nvidia-smi device used memory (this process not listed; dedicated GPU assumed)",
    ))
}

fn synthetic(cfg: &BenchConfig) -> Batches {
    let (b, c) = (cfg.batch_size as i64, cfg.crop as i64);
    let opts = (Kind::Float, cfg.device);
    let xs = Tensor::rand([b, 3, c, c], opts) * 255.0;
    let xt = Tensor::rand([b, 3, c, c], opts) * 255.0;
    // Labels: a random class per 32 x 32 block (a few classes per crop), some ignored.
    let blocks = (c / 32).max(1);
    let coarse = Tensor::randint(
        cfg.model.num_classes + 1,
        [b, 1, blocks, blocks],
        (Kind::Int64, cfg.device),
    );
    let coarse = coarse.where_self(
        &coarse.lt(cfg.model.num_classes),
        &Tensor::from(crate::mixing::IGNORE).to_device(cfg.device),
    );
    let ys = coarse
        .to_kind(Kind::Float)
        .upsample_nearest2d([c, c], None, None)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    (xs, ys, xt)
}

/// The per-mode table: iteration times, peak memory and per-phase times.
fn write_table(f: &mut std::fmt::Formatter<'_>, modes: &[ModeBench]) -> std::fmt::Result {
    writeln!(
        f,
        "{:<12} {:>9} {:>9} {:>9} {:>9} | phases ms: {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "mode",
        "ms/iter",
        "median",
        "min",
        "peak MiB",
        "teacher",
        "source",
        "classmix",
        "cut fwd",
        "L_cont",
        "cut bwd",
        "update"
    )?;
    for m in modes {
        writeln!(
        f,
        "{:<12} {:>9.1} {:>9.1} {:>9.1} {:>9} | {:>19.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        m.mode,
        m.ms_per_iteration,
        m.ms_median,
        m.ms_min,
        m.peak_memory_mib
            .map_or("n/a".to_string(), |v| format!("{v:.0}")),
        m.phases_ms.teacher,
        m.phases_ms.source,
        m.phases_ms.classmix,
        m.phases_ms.cutmix_forward,
        m.phases_ms.contrastive_loss,
        m.phases_ms.cutmix_backward,
        m.phases_ms.update
        )?;
    }
    Ok(())
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The network as reported: the backbone, and the decoder where it is a choice (MiT).
fn network_name(m: &ModelConfig) -> String {
    match m.backbone.is_mit() {
        true => format!("{} + {}", m.backbone.name(), m.decoder().name()),
        false => m.backbone.name().into(),
    }
}

/// The training configuration of one measured mode.
fn train_config(cfg: &BenchConfig, mode: Mode) -> TrainConfig {
    TrainConfig {
        model: cfg.model.clone(),
        data: DataConfig {
            crop: cfg.crop,
            batch_size: cfg.batch_size,
            ..DataConfig::default()
        },
        method: MethodConfig {
            mode,
            components: cfg.components,
            anchor_chunk: cfg.anchor_chunk,
            ..MethodConfig::default()
        },
        run: RunConfig {
            precision: cfg.precision,
            channels_last: cfg.channels_last,
            ..RunConfig::default()
        },
        ..TrainConfig::default()
    }
}

/// The three random batches of every step: source images, labels, target images.
type Batches = (Tensor, Tensor, Tensor);

fn bench_mode(cfg: &BenchConfig, mode: Mode) -> Result<ModeBench> {
    let mut trainer = Trainer::new(train_config(cfg, mode), cfg.device)?;
    if let Some(pg) = &cfg.group {
        trainer.ddp = Some(crate::dist::Ddp::shared(pg.clone(), false));
    }
    let batches = synthetic(cfg);
    let (xs, ys, xt) = &batches;
    for _ in 0..cfg.warmup {
        trainer.step(xs, ys, Some(xt)).context("warm-up step")?;
    }
    sync(cfg.device);
    if let Some(d) = &mut trainer.ddp {
        d.take_reduce_seconds();
    }
    let (times, anchors) = timed_steps(&mut trainer, cfg, &batches)?;
    let reduce_ms = trainer
        .ddp
        .as_mut()
        .map(|d| d.take_reduce_seconds() * 1e3 / cfg.iterations.max(1) as f64);
    let phases_ms = profiled_phases(&mut trainer, cfg, &batches)?;
    let n = times.len().max(1) as f64;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (peak, source) = peak_memory(cfg.device);
    let ms_per_iteration = times.iter().sum::<f64>() / n;
    Ok(ModeBench {
        mode: mode.name().into(),
        ms_per_iteration,
        allreduce_ms: reduce_ms,
        allreduce_share: reduce_ms.map(|r| r / ms_per_iteration.max(1e-9)),
        ms_median: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        ms_min: times.iter().copied().fold(f64::INFINITY, f64::min),
        phases_ms,
        peak_memory_mib: peak,
        mean_kept_anchors: anchors as f64 / n,
        memory_source: source.into(),
    })
}

/// `iterations` timed steps (device synchronised): milliseconds of each and the anchors
/// kept in all.
fn timed_steps(trainer: &mut Trainer, cfg: &BenchConfig, b: &Batches) -> Result<(Vec<f64>, i64)> {
    let mut times = Vec::with_capacity(cfg.iterations);
    let mut anchors = 0i64;
    for _ in 0..cfg.iterations {
        let t0 = Instant::now();
        let s = trainer.step(&b.0, &b.1, Some(&b.2)).context("timed step")?;
        sync(cfg.device);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        anchors += s.kept_anchors;
    }
    Ok((times, anchors))
}

/// `iterations` steps with per-phase timing: the mean milliseconds of each phase.
fn profiled_phases(trainer: &mut Trainer, cfg: &BenchConfig, b: &Batches) -> Result<Phases> {
    trainer.profile = true;
    let mut ph = Phases::default();
    for _ in 0..cfg.iterations {
        let s = trainer
            .step(&b.0, &b.1, Some(&b.2))
            .context("profiled step")?;
        if let Some(p) = s.phases {
            for (acc, v) in [
                (&mut ph.teacher, p.teacher),
                (&mut ph.source, p.source),
                (&mut ph.classmix, p.classmix),
                (&mut ph.cutmix_forward, p.cutmix_forward),
                (&mut ph.contrastive_loss, p.contrastive_loss),
                (&mut ph.cutmix_backward, p.cutmix_backward),
                (&mut ph.update, p.update),
            ] {
                *acc += v * 1e3 / cfg.iterations as f64;
            }
        }
    }
    Ok(ph)
}

/// Peak memory in MiB (where it can be read) and how it was measured.
fn peak_memory(device: Device) -> (Option<f64>, &'static str) {
    match device {
        Device::Cuda(i) => match cuda_memory_mib(i) {
            Some((v, how)) => (Some(v), how),
            None => (None, "unavailable: nvidia-smi not found or unreadable"),
        },
        _ => (cpu_peak_mib(), "process resident high-water mark (VmHWM)"),
    }
}

/// rccr's figure `f` over the baseline's, when both modes ran.
fn rccr_ratio(results: &[ModeBench], f: fn(&ModeBench) -> f64) -> Option<f64> {
    let get = |name: &str| results.iter().find(|r| r.mode == name).map(f);
    match (get("rccr"), get("baseline")) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// How the report's memory figures were measured (that of the last mode).
fn memory_source(cfg: &BenchConfig, results: &[ModeBench]) -> String {
    match results.last() {
        Some(r) if cfg.device.is_cuda() => format!(
            "{} after each mode: libtorch's caching-allocator reservation (it keeps its \
             peak) + the CUDA context; cumulative over the process",
            r.memory_source
        ),
        Some(r) => format!("{}, cumulative over the process", r.memory_source),
        None => String::new(),
    }
}

/// Runs the benchmark.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport> {
    let modes: Vec<Mode> = match cfg.mode {
        Mode::Rccr => vec![Mode::Baseline, Mode::Rccr],
        m => vec![m],
    };
    let mut results = Vec::new();
    for m in modes {
        tracing::info!(mode = %m, "benchmarking");
        results.push(bench_mode(cfg, m)?);
    }
    let rccr_over_baseline = rccr_ratio(&results, |r| r.ms_per_iteration);
    let rccr_over_baseline_median = rccr_ratio(&results, |r| r.ms_median);
    let memory_source = memory_source(cfg, &results);
    Ok(BenchReport {
        implementation: "rccr-train".into(),
        device: rccr_models::device::device_name(cfg.device),
        backbone: network_name(&cfg.model),
        crop: cfg.crop,
        batch_size: cfg.batch_size,
        precision: format!("{:?}", cfg.precision).to_lowercase(),
        iterations: cfg.iterations,
        warmup: cfg.warmup,
        threads: tch::get_num_threads(),
        channels_last: cfg.channels_last,
        rank: cfg.group.as_ref().map_or(0, |g| g.rank),
        world_size: cfg.group.as_ref().map_or(1, |g| g.size),
        modes: results,
        rccr_over_baseline,
        rccr_over_baseline_median,
        memory_source,
    })
}
