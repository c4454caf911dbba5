//! A whole training run (`rccr-train train`): Algorithm 1's loop over t = 1..N around
//! [`Trainer::step`], with the data loaders, the resolved configuration in
//! `RUN_DIR/config.json`, the metrics log, a progress bar, validation of the teacher
//! every `val_every` iterations and at the end, and checkpoints every `save_every`
//! iterations, at each validation and at the end (`--resume` continues exactly).

use crate::checkpoint::{self, Best, CheckpointDir, Saved};
use crate::config::{Mode, TrainConfig};
use crate::data::{LoaderConfig, Split, TrainLoader, ValSet};
use crate::dist::{Ddp, Launch, ProcessGroup};
use crate::ema;
use crate::error::{Context, Error, Result};
use crate::metrics::{MetricsLog, TrainRecord};
use crate::tensorboard::{scalars_of, TbWriter};
use crate::trainer::{StepStats, Trainer};
use crate::validate;
use indicatif::{ProgressBar, ProgressStyle};
use rccr_models::device::device_name;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

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

/// Builds the trainer: fresh (with `--init`) or from `--resume`.
pub fn build_trainer(cfg: &TrainConfig, device: Device, resume: Option<&Path>) -> Result<Trainer> {
    let mut trainer = Trainer::new(cfg.clone(), device)?;
    match resume {
        Some(path) => {
            let ck = checkpoint::load(path)
                .with_context(|| format!("cannot resume from {}", path.display()))?;
            if ck.config.model_config() != cfg.model_config() {
                return Err(Error::Refused(format!(
                    "{}: the checkpoint's network ({} / {} classes / {} ASPP branches) differs \
                     from the requested one; drop --backbone/--num-classes/--aspp-branches \
                     when resuming",
                    path.display(),
                    ck.config.backbone,
                    ck.config.num_classes,
                    ck.config.aspp_branches
                )));
            }
            checkpoint::load_vars(
                &trainer.student_vs,
                &ck.with_prefix(rccr_models::checkpoint::STUDENT),
                path,
                "student",
            )?;
            checkpoint::load_vars(
                &trainer.teacher_vs,
                &ck.with_prefix(rccr_models::checkpoint::TEACHER),
                path,
                "teacher",
            )?;
            trainer
                .opt
                .load_state(&ck.with_prefix(checkpoint::OPTIM))
                .map_err(|msg| Error::BadCheckpoint {
                    path: path.to_path_buf(),
                    msg,
                })?;
            let bank: Vec<_> = ck
                .bank()
                .into_iter()
                .map(|e| crate::memory_bank::BankEntry {
                    embeddings: e.embeddings.to_device(device),
                    labels: e.labels.to_device(device),
                })
                .collect();
            trainer.bank.restore(bank);
            trainer.iteration = ck.iteration;
            tracing::info!(checkpoint = %path.display(), iteration = ck.iteration, "resumed");
        }
        None => {
            if let Some(from) = &cfg.init_from {
                init_from_model(&trainer, from)?;
            }
            if let Some(init) = cfg.init.as_ref().filter(|p| rccr_models::pth::is_pth(p)) {
                let report = rccr_models::pth::import_into(
                    &trainer.student_vs,
                    init,
                    rccr_models::pth::Which::Auto,
                    false,
                )
                .with_context(|| format!("cannot import {} (--init)", init.display()))?;
                tracing::info!(file = %init.display(), "imported a PyTorch checkpoint:\n{report}");
                ema::copy_all(&trainer.teacher_vs, &trainer.student_vs);
            } else if let Some(init) = &cfg.init {
                let report = rccr_models::weights::import_torchvision(&trainer.student_vs, init)
                    .with_context(|| format!("cannot import the backbone {}", init.display()))?;
                tracing::info!(
                    file = %init.display(),
                    loaded = report.loaded,
                    missing = report.missing.len(),
                    unexpected = report.unexpected.len(),
                    "imported backbone"
                );
                if !report.missing.is_empty() {
                    tracing::warn!(missing = ?report.missing, "backbone tensors missing from --init (left at random init)");
                }
                if !report.unexpected.is_empty() {
                    tracing::warn!(unexpected = ?report.unexpected, "tensors in --init the network does not have (ignored)");
                }
                ema::copy_all(&trainer.teacher_vs, &trainer.student_vs);
            }
        }
    }
    Ok(trainer)
}

/// `--init-from`: student and teacher start from the teacher of an rccr checkpoint (or a
/// bare model file): encoder, classifier, BN statistics and, where the file has one, the
/// projector (else the projector keeps its fresh initialisation).
fn init_from_model(trainer: &Trainer, path: &Path) -> Result<()> {
    let loaded =
        rccr_models::checkpoint::load_network(path, rccr_models::checkpoint::TEACHER, Device::Cpu)
            .with_context(|| format!("cannot start from {} (--init-from)", path.display()))?;
    if loaded.info.model != trainer.model {
        return Err(Error::Refused(format!(
            "{}: --init-from holds a {} / {} classes / {} ASPP branches network, the run \
             trains {} / {} / {}; pass the same --backbone/--num-classes/--aspp-branches",
            path.display(),
            loaded.info.model.backbone,
            loaded.info.model.num_classes,
            loaded.info.model.aspp_branches,
            trainer.model.backbone,
            trainer.model.num_classes,
            trainer.model.aspp_branches
        )));
    }
    let src = loaded.vs.variables();
    let mut copied = 0;
    tch::no_grad(|| {
        for (name, mut var) in trainer.student_vs.variables() {
            if loaded.report.missing.contains(&name) {
                continue;
            }
            if let Some(t) = src.get(&name) {
                var.copy_(&t.to_device(var.device()));
                copied += 1;
            }
        }
    });
    ema::copy_all(&trainer.teacher_vs, &trainer.student_vs);
    tracing::info!(
        file = %path.display(),
        iteration = loaded.info.iteration,
        copied,
        fresh = ?loaded.report.missing,
        "student and teacher start from --init-from"
    );
    Ok(())
}

fn loader_config(cfg: &TrainConfig, size: Option<crate::config::Size>, seed: u64) -> LoaderConfig {
    LoaderConfig {
        resize: size.map(|s| s.pair()),
        crop: cfg.crop,
        batch_size: cfg.batch_size,
        seed,
        workers: cfg.workers.max(1),
        prefetch: cfg.prefetch.max(1),
        split: Split::Train,
    }
}

/// Joins the data-parallel run the launcher's environment describes (module
/// `crate::dist`); returns the configuration as this process runs it, its device and
/// the process group (None without a launcher).
fn join(cfg: &TrainConfig, trace: bool) -> Result<(TrainConfig, Device, Option<ProcessGroup>)> {
    let mut cfg = cfg.clone();
    let mut device = rccr_models::device::parse_device(&cfg.device)?;
    let Some(l) = Launch::from_env().map_err(Error::DistSetup)? else {
        return Ok((cfg, device, None));
    };
    if trace {
        return Err(Error::Refused(
            "rccr-train trace runs in one process: launch it without torchrun".into(),
        ));
    }
    let (pg, dev, backend) = crate::dist::join(&l, cfg.dist.backend, cfg.dist.timeout_s, device)
        .with_context(|| {
            format!(
                "cannot join the {}-process run at {}:{} (check MASTER_ADDR/MASTER_PORT and \
                 that every rank started; --dist-timeout bounds the wait)",
                l.world_size, l.master_addr, l.master_port
            )
        })?;
    device = dev;
    cfg.dist.world_size = l.world_size;
    cfg.dist.backend_used = backend.into();
    tracing::info!(rank = l.rank, world_size = l.world_size, backend, device = %device_name(device), "joined the data-parallel run");
    Ok((cfg, device, Some(pg)))
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

/// Runs (or continues) training as configured.
pub fn run(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    cfg.validate()?;
    check_run_dir(&opts.out, opts)?;
    let (cfg, device, pg) = join(cfg, opts.trace)?;
    let cfg = &cfg;
    let rank = pg.as_ref().map_or(0, |p| p.rank);
    let main = rank == 0;
    let data_rank = cfg.data_rank.unwrap_or(rank);
    let source = cfg
        .source
        .clone()
        .context("no source data: pass --source gta5:DIR | synthia:DIR | cityscapes:DIR")?;
    let target = match (&cfg.target, cfg.mode) {
        (Some(t), _) => Some(t.clone()),
        (None, Mode::SourceOnly) => None,
        (None, m) => {
            return Err(Error::Refused(format!(
                "mode {m} needs target data: pass --target cityscapes:DIR"
            )))
        }
    };
    let val_spec = cfg.val.clone().or_else(|| target.clone());
    let run_dir = opts.out.clone();
    std::fs::create_dir_all(&run_dir)
        .map_err(Error::io_at(&run_dir))
        .context("cannot create the run folder")?;
    let mut trainer = build_trainer(cfg, device, opts.resume.as_deref())?;
    trainer.streams.rank = data_rank as u64;
    if let Some(pg) = pg {
        let ddp = Ddp::new(pg, cfg.dist.sync_bn);
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
    let mut best = match &opts.resume {
        Some(p) => checkpoint::load(p)?.best,
        None => None,
    };
    let start = trainer.iteration;
    if start >= cfg.iterations {
        return Err(Error::Refused(format!(
            "the checkpoint is at iteration {start}, the run has {} iterations: nothing to do \
             (raise --iterations to continue)",
            cfg.iterations
        )));
    }
    tracing::info!(
        device = %device_name(device),
        mode = %cfg.mode,
        backbone = %cfg.backbone,
        start,
        iterations = cfg.iterations,
        run_dir = %run_dir.display(),
        "training"
    );

    let seed = rank_seed(cfg.seed, data_rank);
    let mut src_loader =
        TrainLoader::open(&source, &loader_config(cfg, cfg.source_size, seed), start)
            .with_context(|| format!("source data {source}"))?;
    let mut tgt_loader = match &target {
        Some(t) if cfg.mode != Mode::SourceOnly => Some(
            TrainLoader::open(
                t,
                &loader_config(cfg, cfg.target_size, seed.wrapping_add(1)),
                start,
            )
            .with_context(|| format!("target data {t}"))?,
        ),
        _ => None,
    };
    let val_set = match val_spec.as_ref().filter(|_| main) {
        Some(v) => Some(
            ValSet::open(v, cfg.val_size.map(|s| s.pair()), cfg.val_limit)
                .with_context(|| format!("validation data {v}"))?,
        ),
        None => None,
    };
    let synthia = source.is_synthia();
    let mut cfg = cfg.clone();
    cfg.crop_padding = [
        src_loader.padding_share(cfg.crop),
        tgt_loader
            .as_ref()
            .map_or(0.0, |l| l.padding_share(cfg.crop)),
    ];
    for (domain, share) in ["source", "target"].iter().zip(cfg.crop_padding) {
        if share > 0.0 {
            tracing::warn!(
                domain,
                padding = format!("{:.1} %", share * 100.0),
                crop = cfg.crop,
                "the resized images are smaller than the crop: this share of every crop is \
                 padding (image 0, label 255); lower --crop or raise --source-size/--target-size"
            );
        }
    }
    let cfg = &cfg;
    // Everything opened: only now does the run folder receive files.
    if main {
        let cfg_json = serde_json::to_vec_pretty(cfg)?;
        rccr_models::weights::write_atomic(&run_dir.join("config.json"), &cfg_json)?;
    }

    let ckdir = CheckpointDir::create(run_dir.join("checkpoints"), cfg.keep_last)?;
    if opts.resume.is_some() && main {
        truncate_log(&run_dir.join("metrics.jsonl"), start)?;
    }
    let log_path = run_dir.join("metrics.jsonl");
    let tb_dir = run_dir.join("tb");
    let mut log = match main {
        true => Some(
            MetricsLog::open(&log_path)
                .map_err(Error::io_at(&log_path))
                .context("cannot open the metrics log")?,
        ),
        false => None,
    };

    let mut events = match (main && opts.tensorboard, opts.resume.is_some()) {
        (false, _) => None,
        (true, false) => Some(TbWriter::create(&tb_dir).map_err(Error::io_at(&tb_dir))?),
        (true, true) => Some(TbWriter::resume(&tb_dir, start + 1).map_err(Error::io_at(&tb_dir))?),
    };
    let val_pictures = match (&events, &val_set) {
        (Some(_), Some(set)) => crate::pictures::ValPictures::new(set, 3),
        _ => None,
    };
    let end = opts.stop_at.unwrap_or(cfg.iterations).min(cfg.iterations);
    let pb = if opts.quiet || !main {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.iterations)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    pb.set_position(start);
    let t0 = Instant::now();
    let mut last_checkpoint = None;
    let mut final_miou = None;
    let mut validated_at = None;

    while trainer.iteration < end {
        let it_start = Instant::now();
        let sb = src_loader.next_batch().context("reading a source batch")?;
        let tb = match &mut tgt_loader {
            Some(l) => Some(l.next_batch().context("reading a target batch")?),
            None => None,
        };
        let mut stats = trainer
            .step(&sb.images, &sb.labels, tb.as_ref().map(|b| &b.images))
            .context("training step failed")?;
        let secs = it_start.elapsed().as_secs_f64();
        let it = stats.iteration;
        pb.set_position(it);
        pb.set_message(format!(
            "ce {:.3} cons {:.3} cont {:.3}",
            stats.loss_ce, stats.loss_cons, stats.loss_cont
        ));
        if it % cfg.log_every == 0 || it == end {
            if let Some(d) = &trainer.ddp {
                mean_over_ranks(d, &mut stats)?;
            }
            let rec = record(&stats, secs, cfg.dist.world_size);
            if let Some(log) = &mut log {
                log.write(&rec).map_err(Error::io_at(&log_path))?;
            }
            if let Some(ev) = &mut events {
                ev.add_scalars(it, &scalars_of(&serde_json::to_value(&rec)?))
                    .map_err(Error::io_at(&tb_dir))?;
            }
        }
        if let Some(tr) = &trainer.trace {
            let path = tr.write(&run_dir, &trainer.model, cfg)?;
            pb.println(format!("iteration {it}: {}", path.display()));
            continue;
        }
        let last = it == cfg.iterations;
        let do_val = val_spec.is_some() && ((cfg.val_every > 0 && it % cfg.val_every == 0) || last);
        if do_val && main {
            let set = val_set.as_ref().expect("checked");
            let vpb = pb.clone();
            vpb.set_message(format!("validating {} images", set.len()));
            let res = validate::evaluate(
                &trainer.teacher,
                set,
                device,
                cfg.precision == crate::config::Precision::Bf16,
                synthia,
                None,
            )
            .context("validation failed")?;
            if let Some(log) = &mut log {
                log.write(&res.record(it))
                    .map_err(Error::io_at(&log_path))?;
            }
            if let Some(ev) = &mut events {
                ev.add_scalars(it, &scalars_of(&serde_json::to_value(res.record(it))?))
                    .map_err(Error::io_at(&tb_dir))?;
                if let Some(p) = &val_pictures {
                    for (i, img) in p.render(&trainer.teacher, device)?.iter().enumerate() {
                        ev.add_image(&format!("val/image_{i}"), it, img)
                            .map_err(Error::io_at(&tb_dir))?;
                    }
                }
            }
            pb.println(format!(
                "iteration {it}: teacher mIoU {:.2}%",
                res.miou * 100.0
            ));
            tracing::info!(iteration = it, miou = res.miou, "validation");
            if best.is_none_or(|b| res.miou > b.miou) {
                best = Some(Best {
                    iteration: it,
                    miou: res.miou,
                });
            }
            final_miou = Some(res.miou);
            validated_at = Some(it);
        }
        let do_save =
            (cfg.save_every > 0 && it % cfg.save_every == 0) || do_val || last || it == end;
        if do_save && main {
            let path = ckdir.save(&Saved {
                student: &trainer.student_vs,
                teacher: &trainer.teacher_vs,
                optim: &trainer.opt,
                bank: &trainer.bank,
                iteration: it,
                config: cfg,
                best,
            })?;
            last_checkpoint = Some(path);
        }
        if let (Some(d), true) = (&trainer.ddp, do_val || do_save) {
            d.pg.barrier()
                .context("waiting for rank 0's validation / checkpoint")?;
        }
    }
    pb.finish_and_clear();
    if let Some(d) = &trainer.ddp {
        finish_ranks(d, &trainer, cfg, opts, &run_dir, best)?;
    }
    let done = trainer.iteration - start;
    let summary = RunSummary {
        run_dir,
        iterations: trainer.iteration,
        last_checkpoint,
        best,
        final_miou: if validated_at == Some(trainer.iteration) {
            final_miou
        } else {
            None
        },
        seconds_per_iteration: t0.elapsed().as_secs_f64() / done.max(1) as f64,
    };
    tracing::info!(
        skipped_source = src_loader.skipped(),
        skipped_target = tgt_loader.as_ref().map_or(0, |l| l.skipped()),
        "data files skipped (corrupt or unreadable)"
    );
    Ok(summary)
}

/// A fresh run (no `--resume`) refuses a folder that holds a run (config.json,
/// metrics.jsonl, checkpoints or trace steps), so two runs never mix; with `overwrite`
/// rank 0 clears those files first (before the ranks meet, so nobody has written yet).
fn check_run_dir(out: &Path, opts: &RunOptions) -> Result<()> {
    if opts.resume.is_some() || !out.is_dir() {
        return Ok(());
    }
    let held: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(Error::io_at(out))
        .context("cannot read the run folder")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let has_checkpoints = || {
                std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n == "index.json" || (n.starts_with("iter_") && n.ends_with(".safetensors"))
                    })
            };
            matches!(name.as_str(), "config.json" | "metrics.jsonl")
                || (name == "checkpoints" && has_checkpoints())
                || (name.starts_with("step_") && name.ends_with(".safetensors"))
                || (name.starts_with("rank") && p.is_dir())
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    if !opts.overwrite {
        return Err(Error::Refused(format!(
            "{} already holds a run ({}): continue it with --resume {}/checkpoints/iter_*.safetensors, \
             pick a fresh --out, or pass --overwrite to replace it",
            out.display(),
            held.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>().join(", "),
            out.display()
        )));
    }
    let rank0 = Launch::from_env()
        .ok()
        .flatten()
        .is_none_or(|l| l.rank == 0);
    if rank0 {
        for p in held {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(Error::io_at(&p))
                .context("--overwrite: cannot remove")?;
        }
        tracing::warn!(out = %out.display(), "--overwrite: removed the previous run");
    }
    Ok(())
}

/// Drops the lines of iterations after `iteration` from a metrics log (a run resumed
/// from an earlier checkpoint than its last iteration rewrites that stretch).
pub fn truncate_log(path: &Path, iteration: u64) -> Result<()> {
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
    run_dir: &Path,
    best: Option<Best>,
) -> Result<()> {
    let mut all = Ddp::variables(&trainer.student_vs, false);
    all.extend(Ddp::variables(&trainer.teacher_vs, false));
    d.check_identical(&all).map_err(Error::DistSetup)?;
    if opts.save_all_ranks && d.rank() > 0 {
        let dir = CheckpointDir::create(run_dir.join(format!("rank{}", d.rank())), 1)?;
        dir.save(&Saved {
            student: &trainer.student_vs,
            teacher: &trainer.teacher_vs,
            optim: &trainer.opt,
            bank: &trainer.bank,
            iteration: trainer.iteration,
            config: cfg,
            best,
        })?;
    }
    d.pg.barrier().context("final barrier")?;
    Ok(())
}
