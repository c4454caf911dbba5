//! A whole training run (`rccr-train train`): Algorithm 1's loop over t = 1..N around
//! [`Trainer::step`], with the data loaders, the resolved configuration in
//! `RUN_DIR/config.json`, the metrics log, a progress bar, validation of the teacher
//! every `val_every` iterations and at the end, and checkpoints every `save_every`
//! iterations, at each validation and at the end (`--resume` continues exactly).

mod start;

pub use start::build_trainer;

use crate::checkpoint::{self, Best, CheckpointDir, Saved};
use crate::config::{Mode, Precision, RcsConfig, Size, TrainConfig};
use crate::data::{DatasetSpec, LoaderConfig, RcsDraw, RcsTable, Split, TrainLoader, ValSet};
use crate::dist::{Ddp, ProcessGroup};
use crate::error::{Context, Error, Result};
use crate::metrics::{MetricsLog, TrainRecord};
use crate::pictures::ValPictures;
use crate::tensorboard::{scalars_of, TbWriter};
use crate::trace::Trace;
use crate::trainer::{StepStats, Trainer};
use crate::validate::{self, ValResult};
use indicatif::{ProgressBar, ProgressStyle};
use rccr_models::device::device_name;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Iterations completed.
    pub iterations: u64,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// The best validation.
    pub best: Option<Best>,
    /// The final validation mIoU.
    pub final_miou: Option<f64>,
    /// Mean seconds per iteration in this process.
    pub seconds_per_iteration: f64,
}

/// Options of a run that are not part of the method's configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// A checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// Stop after this many iterations of the schedule (the schedule still spans
    /// `iterations`); used to interrupt runs in tests. Default: run to the end.
    pub stop_at: Option<u64>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// `rccr-train trace`: write every iteration's tensors to `out` (no validation, no
    /// checkpoints).
    pub trace: bool,
    /// Write TensorBoard event files to `out/tb/` (rank 0).
    pub tensorboard: bool,
    /// Clear a run folder that already holds a run (else such a folder is refused
    /// without `resume`).
    pub overwrite: bool,
    /// Test hook of data-parallel runs: ranks above 0 also write their final checkpoint,
    /// to `out/rank<r>/`.
    pub save_all_ranks: bool,
}

/// Runs (or continues) training as configured.
pub fn run(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    cfg.validate()?;
    start::check_run_dir(&opts.out, opts)?;
    let (cfg, device, pg) = start::join(cfg, opts.trace)?;
    let rank = pg.as_ref().map_or(0, |p| p.rank);
    let (source, target) = data_specs(&cfg)?;
    std::fs::create_dir_all(&opts.out)
        .map_err(Error::io_at(&opts.out))
        .context("cannot create the run folder")?;
    let trainer = prepare_trainer(&cfg, device, pg, opts)?;
    let best = match &opts.resume {
        Some(p) => checkpoint::load(p)?.best,
        None => None,
    };
    let start = trainer.iteration;
    check_start(start, &cfg)?;
    log_start(&cfg, device, start, &opts.out);
    let main = rank == 0;
    let data_rank = cfg.data.data_rank.unwrap_or(rank);
    let seed = rank_seed(cfg.run.seed, data_rank);
    let inputs = Inputs::open(&cfg, &source, target.as_ref(), seed, start, main)?;
    let cfg = with_crop_padding(cfg, &inputs);
    // Everything opened: only now does the run folder receive files.
    let outputs = Outputs::open(&cfg, opts, main, start, &inputs)?;
    let session = Session {
        cfg,
        opts,
        device,
        main,
        synthia: source.is_synthia(),
        trainer,
        inputs,
        outputs,
        progress: Progress {
            best,
            ..Progress::default()
        },
    };
    session.train(start)
}

/// The log line that opens a run.
fn log_start(cfg: &TrainConfig, device: Device, start: u64, run_dir: &Path) {
    tracing::info!(
        device = %device_name(device),
        mode = %cfg.method.mode,
        backbone = %cfg.model.backbone,
        start,
        iterations = cfg.run.iterations,
        run_dir = %run_dir.display(),
        "training"
    );
}

/// The source and target of a run; the target may be absent only in mode `source-only`.
fn data_specs(cfg: &TrainConfig) -> Result<(DatasetSpec, Option<DatasetSpec>)> {
    let source = cfg
        .data
        .source
        .clone()
        .context("no source data: pass --source gta5:DIR | synthia:DIR | cityscapes:DIR")?;
    let target = match (&cfg.data.target, cfg.method.mode) {
        (Some(t), _) => Some(t.clone()),
        (None, Mode::SourceOnly) => None,
        (None, m) => {
            return Err(Error::Refused(format!(
                "mode {m} needs target data: pass --target cityscapes:DIR"
            )))
        }
    };
    Ok((source, target))
}

/// The trainer of this process: built or resumed, drawing as its data rank, joined to
/// the data-parallel group (rank 0's weights broadcast), tracing when asked.
fn prepare_trainer(
    cfg: &TrainConfig,
    device: Device,
    pg: Option<ProcessGroup>,
    opts: &RunOptions,
) -> Result<Trainer> {
    let mut trainer = build_trainer(cfg, device, opts.resume.as_deref())?;
    let rank = pg.as_ref().map_or(0, |p| p.rank);
    trainer.streams.rank = cfg.data.data_rank.unwrap_or(rank) as u64;
    if let Some(pg) = pg {
        let ddp = Ddp::new(pg, cfg.run.dist.sync_bn);
        let mut all = Ddp::variables(&trainer.student_vs, false);
        all.extend(Ddp::variables(&trainer.teacher_vs, false));
        all.extend(
            trainer
                .opt
                .state()
                .into_iter()
                .map(|(_, t)| t.shallow_clone()),
        );
        ddp.broadcast(&all)
            .context("broadcasting rank 0's weights")?;
        trainer.ddp = Some(ddp);
    }
    if opts.trace {
        trainer.trace = Some(crate::trace::Trace::default());
    }
    Ok(trainer)
}

/// A resumed run must have iterations left.
fn check_start(start: u64, cfg: &TrainConfig) -> Result<()> {
    if start >= cfg.run.iterations {
        return Err(Error::Refused(format!(
            "the checkpoint is at iteration {start}, the run has {} iterations: nothing to do \
             (raise --iterations to continue)",
            cfg.run.iterations
        )));
    }
    Ok(())
}

fn loader_config(cfg: &TrainConfig, size: Option<Size>, seed: u64) -> LoaderConfig {
    LoaderConfig {
        resize: size.map(|s| s.pair()),
        crop: cfg.data.crop,
        batch_size: cfg.data.batch_size,
        seed,
        workers: cfg.data.workers.max(1),
        prefetch: cfg.data.prefetch.max(1),
        split: Split::Train,
        rcs: RcsConfig::default(),
    }
}

/// `RUN_DIR/rcs.json`: the rare-class sampling table of the source loader, when it has one.
fn write_rcs_report(run_dir: &Path, inputs: &Inputs) -> Result<()> {
    if let Some(table) = inputs.source.rcs() {
        let json = serde_json::to_vec_pretty(&table.report())?;
        rccr_models::weights::write_atomic(&run_dir.join("rcs.json"), &json)?;
    }
    Ok(())
}

/// The trace tensors of rare-class sampling (docs/method.md "The trace"): each sample's
/// class and crop hit, and the table the classes were drawn from, over `num_classes`.
fn trace_rcs(tr: &mut Trace, draws: &[RcsDraw], table: &RcsTable, num_classes: usize) {
    let class: Vec<i64> = draws.iter().map(|d| i64::from(d.class)).collect();
    let hit: Vec<u8> = draws.iter().map(|d| u8::from(d.crop_hit)).collect();
    let per_class = |f: &dyn Fn(usize) -> i64| {
        Tensor::from_slice(&(0..num_classes).map(f).collect::<Vec<i64>>())
    };
    let prob: Vec<f64> = (0..num_classes)
        .map(|c| table.prob.get(c).copied().unwrap_or(0.0))
        .collect();
    tr.put("rcs.class", &Tensor::from_slice(&class));
    tr.put("rcs.crop_hit", &Tensor::from_slice(&hit));
    tr.put("rcs.prob", &Tensor::from_slice(&prob));
    let pixels = |c: usize| table.class_pixels.get(c).map_or(0, |&n| n as i64);
    tr.put("rcs.class_pixels", &per_class(&pixels));
    tr.put(
        "rcs.candidates",
        &per_class(&|c| table.candidate_count(c) as i64),
    );
    tr.put("rcs.min_pixels", &Tensor::from(table.min_pixels as i64));
}

/// The seed of a rank's data loaders: the run's seed for rank 0 (so a 1-process run is
/// unchanged), a derived one for the others.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        crate::data::augment::mix(seed, 0x5241_4e4b, rank as u64)
    }
}

/// The data a run reads.
struct Inputs {
    source: TrainLoader,
    target: Option<TrainLoader>,
    /// Rank 0's validation split.
    val: Option<ValSet>,
    /// Whether the run validates (it has validation data).
    validates: bool,
}

impl Inputs {
    fn open(
        cfg: &TrainConfig,
        source: &DatasetSpec,
        target: Option<&DatasetSpec>,
        seed: u64,
        start: u64,
        main: bool,
    ) -> Result<Inputs> {
        let d = &cfg.data;
        // Rare-class sampling draws the source pairs only (DAFormer Sec. 3.3).
        let src_cfg = LoaderConfig {
            rcs: d.rcs.clone(),
            ..loader_config(cfg, d.source_size, seed)
        };
        let src = TrainLoader::open(source, &src_cfg, start)
            .with_context(|| format!("source data {source}"))?;
        if let (Some(table), true) = (src.rcs(), main) {
            table.log();
        }
        let tgt = match target {
            Some(t) if cfg.method.mode != Mode::SourceOnly => {
                let lc = loader_config(cfg, d.target_size, seed.wrapping_add(1));
                Some(TrainLoader::open(t, &lc, start).with_context(|| format!("target data {t}"))?)
            }
            _ => None,
        };
        let val_spec = d.val.as_ref().or(target);
        let val = match val_spec.filter(|_| main) {
            Some(v) => Some(
                ValSet::open(v, d.val_size.map(|s| s.pair()), cfg.run.val_limit)
                    .with_context(|| format!("validation data {v}"))?,
            ),
            None => None,
        };
        Ok(Inputs {
            source: src,
            target: tgt,
            val,
            validates: val_spec.is_some(),
        })
    }
}

/// The configuration with the share of padding in the source / target crops recorded
/// (and warned about where there is any).
fn with_crop_padding(mut cfg: TrainConfig, inputs: &Inputs) -> TrainConfig {
    let crop = cfg.data.crop;
    cfg.data.crop_padding = [
        inputs.source.padding_share(crop),
        inputs
            .target
            .as_ref()
            .map_or(0.0, |l| l.padding_share(crop)),
    ];
    for (domain, share) in ["source", "target"].iter().zip(cfg.data.crop_padding) {
        if share > 0.0 {
            tracing::warn!(
                domain,
                padding = format!("{:.1} %", share * 100.0),
                crop,
                "the resized images are smaller than the crop: this share of every crop is \
                 padding (image 0, label 255); lower --crop or raise --source-size/--target-size"
            );
        }
    }
    cfg
}

/// The metrics log at `path`; resuming at `start`, cut after the lines of iteration `start`.
fn open_log(path: &Path, resume: bool, start: u64) -> Result<MetricsLog> {
    if resume {
        truncate_log(path, start)?;
    }
    MetricsLog::open(path)
        .map_err(Error::io_at(path))
        .context("cannot open the metrics log")
}

/// TensorBoard events in `dir`: a new file, or on resume one that continues at `start + 1`.
fn open_events(dir: &Path, resume: bool, start: u64) -> Result<TbWriter> {
    match resume {
        false => TbWriter::create(dir),
        true => TbWriter::resume(dir, start + 1),
    }
    .map_err(Error::io_at(dir))
}

/// What a run writes: config.json, the metrics log, TensorBoard events and checkpoints
/// (rank 0), and the progress bar.
struct Outputs {
    ckdir: CheckpointDir,
    log_path: PathBuf,
    log: Option<MetricsLog>,
    tb_dir: PathBuf,
    events: Option<TbWriter>,
    pictures: Option<ValPictures>,
    pb: ProgressBar,
}

impl Outputs {
    fn open(
        cfg: &TrainConfig,
        opts: &RunOptions,
        main: bool,
        start: u64,
        inputs: &Inputs,
    ) -> Result<Outputs> {
        let run_dir = &opts.out;
        if main {
            let cfg_json = serde_json::to_vec_pretty(cfg)?;
            rccr_models::weights::write_atomic(&run_dir.join("config.json"), &cfg_json)?;
            write_rcs_report(run_dir, inputs)?;
        }
        let ckdir = CheckpointDir::create(run_dir.join("checkpoints"), cfg.run.keep_last)?;
        let log_path = run_dir.join("metrics.jsonl");
        let log = match main {
            true => Some(open_log(&log_path, opts.resume.is_some(), start)?),
            false => None,
        };
        let tb_dir = run_dir.join("tb");
        let events = match main && opts.tensorboard {
            true => Some(open_events(&tb_dir, opts.resume.is_some(), start)?),
            false => None,
        };
        let pictures = match (&events, &inputs.val) {
            (Some(_), Some(set)) => ValPictures::new(set, 3),
            _ => None,
        };
        Ok(Outputs {
            ckdir,
            log_path,
            log,
            tb_dir,
            events,
            pictures,
            pb: progress_bar(cfg, opts, main, start),
        })
    }

    /// A line of the metrics log and its TensorBoard scalars.
    fn write<T: serde::Serialize>(&mut self, it: u64, record: &T) -> Result<()> {
        if let Some(log) = &mut self.log {
            log.write(record).map_err(Error::io_at(&self.log_path))?;
        }
        if let Some(ev) = &mut self.events {
            ev.add_scalars(it, &scalars_of(&serde_json::to_value(record)?))
                .map_err(Error::io_at(&self.tb_dir))?;
        }
        Ok(())
    }
}

fn progress_bar(cfg: &TrainConfig, opts: &RunOptions, main: bool, start: u64) -> ProgressBar {
    let pb = if opts.quiet || !main {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.run.iterations)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    pb.set_position(start);
    pb
}

/// What the loop has reached.
#[derive(Default)]
struct Progress {
    best: Option<Best>,
    last_checkpoint: Option<PathBuf>,
    final_miou: Option<f64>,
    validated_at: Option<u64>,
}

/// A run in progress: Algorithm 1's loop with its inputs and outputs.
struct Session<'a> {
    cfg: TrainConfig,
    opts: &'a RunOptions,
    device: Device,
    /// Rank 0 (validates, logs and writes checkpoints).
    main: bool,
    /// Scored on SYNTHIA's 16 and 13 classes as well.
    synthia: bool,
    trainer: Trainer,
    inputs: Inputs,
    outputs: Outputs,
    progress: Progress,
}

impl Session<'_> {
    /// Iterations `start + 1 ..= end`, then the summary.
    fn train(mut self, start: u64) -> Result<RunSummary> {
        let cfg = &self.cfg;
        let end = self
            .opts
            .stop_at
            .unwrap_or(cfg.run.iterations)
            .min(cfg.run.iterations);
        let t0 = Instant::now();
        while self.trainer.iteration < end {
            self.iterate(end)?;
        }
        self.outputs.pb.finish_and_clear();
        if let Some(d) = &self.trainer.ddp {
            finish_ranks(d, &self.trainer, &self.cfg, self.opts, self.progress.best)?;
        }
        Ok(self.summary(start, t0))
    }

    /// One iteration: a step, its log line, then (trace) its tensors or validation and
    /// checkpoint where due.
    fn iterate(&mut self, end: u64) -> Result<()> {
        let it_start = Instant::now();
        let mut stats = self.step()?;
        let secs = it_start.elapsed().as_secs_f64();
        let it = stats.iteration;
        let pb = &self.outputs.pb;
        pb.set_position(it);
        pb.set_message(format!(
            "ce {:.3} cons {:.3} cont {:.3}",
            stats.loss_ce, stats.loss_cons, stats.loss_cont
        ));
        if it % self.cfg.run.log_every == 0 || it == end {
            if let Some(d) = &self.trainer.ddp {
                mean_over_ranks(d, &mut stats)?;
            }
            let rec = record(&stats, secs, self.cfg.run.dist.world_size);
            self.outputs.write(it, &rec)?;
        }
        if let Some(tr) = &self.trainer.trace {
            let path = tr.write(&self.opts.out, &self.cfg)?;
            self.outputs
                .pb
                .println(format!("iteration {it}: {}", path.display()));
            return Ok(());
        }
        let (do_val, do_save) = self.due(it, end);
        if do_val && self.main {
            self.validate(it)?;
        }
        if do_save && self.main {
            self.save(it)?;
        }
        if let (Some(d), true) = (&self.trainer.ddp, do_val || do_save) {
            d.pg.barrier()
                .context("waiting for rank 0's validation / checkpoint")?;
        }
        Ok(())
    }

    /// Whether iteration `it` validates and whether it writes a checkpoint: every
    /// `val_every` / `save_every` iterations and at the end; a checkpoint at each
    /// validation and where the run stops.
    fn due(&self, it: u64, end: u64) -> (bool, bool) {
        let r = &self.cfg.run;
        let last = it == r.iterations;
        let every = |n: u64| n > 0 && it.is_multiple_of(n);
        let do_val = self.inputs.validates && (every(r.val_every) || last);
        (do_val, every(r.save_every) || do_val || last || it == end)
    }

    /// Reads a source (and target) batch and runs [`Trainer::step`] on it.
    fn step(&mut self) -> Result<StepStats> {
        let sb = self
            .inputs
            .source
            .next_batch()
            .context("reading a source batch")?;
        let tb = match &mut self.inputs.target {
            Some(l) => Some(l.next_batch().context("reading a target batch")?),
            None => None,
        };
        let stats = self
            .trainer
            .step(&sb.images, &sb.labels, tb.as_ref().map(|b| &b.images))
            .context("training step failed")?;
        let table = self.inputs.source.rcs();
        if let (Some(tr), Some(draws), Some(table)) = (&mut self.trainer.trace, &sb.rcs, table) {
            trace_rcs(tr, draws, table, self.cfg.model.num_classes.max(0) as usize);
        }
        Ok(stats)
    }

    /// Scores the teacher, logs the scores (and pictures) and keeps the best.
    fn validate(&mut self, it: u64) -> Result<()> {
        let set = self
            .inputs
            .val
            .as_ref()
            .expect("rank 0 opened the validation data");
        self.outputs
            .pb
            .set_message(format!("validating {} images", set.len()));
        let res = validate::evaluate(
            &self.trainer.teacher,
            set,
            self.device,
            self.cfg.run.precision == Precision::Bf16,
            self.synthia,
            None,
        )
        .context("validation failed")?;
        self.outputs.write(it, &res.record(it))?;
        self.write_pictures(it)?;
        self.outputs.pb.println(format!(
            "iteration {it}: teacher mIoU {:.2}%",
            res.miou * 100.0
        ));
        tracing::info!(iteration = it, miou = res.miou, "validation");
        self.progress.record(it, &res);
        Ok(())
    }

    /// The teacher's predictions on the first validation images, to TensorBoard.
    fn write_pictures(&mut self, it: u64) -> Result<()> {
        let (Some(ev), Some(p)) = (&mut self.outputs.events, &self.outputs.pictures) else {
            return Ok(());
        };
        for (i, img) in p
            .render(&self.trainer.teacher, self.device)?
            .iter()
            .enumerate()
        {
            ev.add_image(&format!("val/image_{i}"), it, img)
                .map_err(Error::io_at(&self.outputs.tb_dir))?;
        }
        Ok(())
    }

    /// A checkpoint of iteration `it`.
    fn save(&mut self, it: u64) -> Result<()> {
        let t = &self.trainer;
        let path = self.outputs.ckdir.save(&Saved {
            student: &t.student_vs,
            teacher: &t.teacher_vs,
            optim: &t.opt,
            bank: &t.bank,
            frozen: t.frozen.as_ref().map_or(Vec::new(), |f| f.encoder_vars()),
            iteration: it,
            config: &self.cfg,
            best: self.progress.best,
        })?;
        self.progress.last_checkpoint = Some(path);
        Ok(())
    }

    fn summary(self, start: u64, t0: Instant) -> RunSummary {
        let done = self.trainer.iteration - start;
        let p = self.progress;
        tracing::info!(
            skipped_source = self.inputs.source.skipped(),
            skipped_target = self.inputs.target.as_ref().map_or(0, |l| l.skipped()),
            "data files skipped (corrupt or unreadable)"
        );
        RunSummary {
            run_dir: self.opts.out.clone(),
            iterations: self.trainer.iteration,
            last_checkpoint: p.last_checkpoint,
            best: p.best,
            final_miou: p
                .final_miou
                .filter(|_| p.validated_at == Some(self.trainer.iteration)),
            seconds_per_iteration: t0.elapsed().as_secs_f64() / done.max(1) as f64,
        }
    }
}

impl Progress {
    /// A validation at iteration `it`.
    fn record(&mut self, it: u64, res: &ValResult) {
        if self.best.is_none_or(|b| res.miou > b.miou) {
            self.best = Some(Best {
                iteration: it,
                miou: res.miou,
            });
        }
        self.final_miou = Some(res.miou);
        self.validated_at = Some(it);
    }
}

/// Drops the lines of iterations after `iteration` from a metrics log (a run resumed
/// from an earlier checkpoint than its last iteration rewrites that stretch).
pub(crate) fn truncate_log(path: &Path, iteration: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["iteration"].as_u64())
                .is_none_or(|it| it <= iteration)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if kept.len() != text.len() {
        rccr_models::weights::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// The metrics.jsonl line of a step.
pub fn record(s: &StepStats, seconds: f64, world_size: usize) -> TrainRecord {
    TrainRecord {
        kind: "train",
        step: StepStats {
            phases: None,
            ..s.clone()
        },
        seconds_per_iteration: seconds,
        world_size,
    }
}

/// Replaces the logged losses and q by their mean over the ranks.
fn mean_over_ranks(d: &Ddp, s: &mut StepStats) -> Result<()> {
    let m = d.mean(&[s.loss_ce, s.loss_cons, s.loss_cont, s.loss_total, s.q])?;
    [s.loss_ce, s.loss_cons, s.loss_cont, s.loss_total, s.q] = [m[0], m[1], m[2], m[3], m[4]];
    Ok(())
}

/// End of a data-parallel run: every rank must hold the same student and teacher (a
/// hash of their bytes is compared); with `save_all_ranks` the other ranks also write
/// their final checkpoint to `RUN_DIR/rank<r>/` (tests compare the files).
fn finish_ranks(
    d: &Ddp,
    trainer: &Trainer,
    cfg: &TrainConfig,
    opts: &RunOptions,
    best: Option<Best>,
) -> Result<()> {
    let run_dir = &opts.out;
    let mut all = Ddp::variables(&trainer.student_vs, false);
    all.extend(Ddp::variables(&trainer.teacher_vs, false));
    d.check_identical(&all)?;
    if opts.save_all_ranks && d.rank() > 0 {
        let dir = CheckpointDir::create(run_dir.join(format!("rank{}", d.rank())), 1)?;
        dir.save(&Saved {
            student: &trainer.student_vs,
            teacher: &trainer.teacher_vs,
            optim: &trainer.opt,
            bank: &trainer.bank,
            frozen: Vec::new(),
            iteration: trainer.iteration,
            config: cfg,
            best,
        })?;
    }
    d.pg.barrier().context("final barrier")?;
    Ok(())
}
