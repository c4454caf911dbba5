//! The start of a run: the run folder checked (a fresh run never mixes with an old one),
//! the data-parallel group joined, and the trainer built fresh (random, `--init` or
//! `--init-from` weights) or restored from `--resume`.

use super::RunOptions;
use crate::checkpoint::{self, Loaded};
use crate::config::TrainConfig;
use crate::dist::{Launch, ProcessGroup};
use crate::ema;
use crate::error::{Context, Error, Result};
use crate::feature_distance::FrozenEncoder;
use crate::trainer::Trainer;
use rccr_models::device::device_name;
use std::path::{Path, PathBuf};
use tch::Device;

/// Builds the trainer: fresh (with `--init` or `--init-from`) or from `--resume`.
pub fn build_trainer(cfg: &TrainConfig, device: Device, resume: Option<&Path>) -> Result<Trainer> {
    let mut trainer = Trainer::new(cfg.clone(), device)?;
    match resume {
        Some(path) => restore(&mut trainer, path)?,
        None => {
            if let Some(from) = &cfg.run.init_from {
                init_from_model(&trainer, from)?;
            }
            if let Some(init) = &cfg.run.init {
                init_backbone(&trainer, init)?;
            }
            trainer.freeze_reference();
        }
    }
    Ok(trainer)
}

/// `--resume`: student, teacher, momentum, memory bank and iteration from a checkpoint of
/// the same network.
fn restore(trainer: &mut Trainer, path: &Path) -> Result<()> {
    let ck =
        checkpoint::load(path).with_context(|| format!("cannot resume from {}", path.display()))?;
    if ck.config.model != trainer.cfg.model {
        return Err(Error::Refused(format!(
            "{}: the checkpoint's network ({} / {} classes / {} ASPP branches) differs \
             from the requested one; drop --backbone/--num-classes/--aspp-branches \
             when resuming",
            path.display(),
            ck.config.model.backbone,
            ck.config.model.num_classes,
            ck.config.model.aspp_branches
        )));
    }
    restore_networks(trainer, &ck, path)?;
    let device = trainer.device;
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
    Ok(())
}

/// The student, the teacher and the optimiser's momentum of a checkpoint.
fn restore_networks(trainer: &mut Trainer, ck: &Loaded, path: &Path) -> Result<()> {
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
    restore_frozen(trainer, ck, path)?;
    trainer
        .opt
        .load_state(&ck.with_prefix(checkpoint::OPTIM))
        .map_err(|msg| Error::BadCheckpoint {
            path: path.to_path_buf(),
            msg,
        })
}

/// The feature distance's frozen encoder of a checkpoint (`fd.<var>`), when it is on.
fn restore_frozen(trainer: &mut Trainer, ck: &Loaded, path: &Path) -> Result<()> {
    trainer.freeze_reference();
    let Some(frozen) = &trainer.frozen else {
        return Ok(());
    };
    let saved = ck.with_prefix(checkpoint::FROZEN);
    let is_encoder = FrozenEncoder::is_encoder_var;
    let report = rccr_models::weights::load_into(&frozen.vs, &saved, is_encoder, path)?;
    match report.missing.first() {
        None => Ok(()),
        Some(name) => Err(Error::BadCheckpoint {
            path: path.to_path_buf(),
            msg: format!(
                "method.fd is on but the checkpoint lacks the frozen encoder's `{}{name}` (it \
                 was trained without the feature distance: resume without --fd)",
                checkpoint::FROZEN
            ),
        }),
    }
}

/// `--init`: an ImageNet backbone (torchvision names) or a PyTorch checkpoint into the
/// student, then copied to the teacher.
fn init_backbone(trainer: &Trainer, init: &Path) -> Result<()> {
    if rccr_models::pth::is_pth(init) {
        let report = rccr_models::pth::import_into(
            &trainer.student_vs,
            init,
            rccr_models::pth::Which::Auto,
            false,
        )
        .with_context(|| format!("cannot import {} (--init)", init.display()))?;
        tracing::info!(file = %init.display(), "imported a PyTorch checkpoint:\n{report}");
    } else {
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
    }
    ema::copy_all(&trainer.teacher_vs, &trainer.student_vs);
    Ok(())
}

/// `--init-from`: student and teacher start from the teacher of an rccr checkpoint (or a
/// bare model file): encoder, classifier, BN statistics and, where the file has one, the
/// projector (else the projector keeps its fresh initialisation).
fn init_from_model(trainer: &Trainer, path: &Path) -> Result<()> {
    let loaded =
        rccr_models::checkpoint::load_network(path, rccr_models::checkpoint::TEACHER, Device::Cpu)
            .with_context(|| format!("cannot start from {} (--init-from)", path.display()))?;
    let (have, want) = (&loaded.info.model, &trainer.cfg.model);
    if have != want {
        return Err(Error::Refused(format!(
            "{}: --init-from holds a {} / {} classes / {} ASPP branches network, the run \
             trains {} / {} / {}; pass the same --backbone/--num-classes/--aspp-branches",
            path.display(),
            have.backbone,
            have.num_classes,
            have.aspp_branches,
            want.backbone,
            want.num_classes,
            want.aspp_branches
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

/// Joins the data-parallel run the launcher's environment describes (module
/// `crate::dist`); returns the configuration as this process runs it, its device and
/// the process group (None without a launcher).
pub(super) fn join(
    cfg: &TrainConfig,
    trace: bool,
) -> Result<(TrainConfig, Device, Option<ProcessGroup>)> {
    let mut cfg = cfg.clone();
    let device = rccr_models::device::parse_device(&cfg.run.device)?;
    let Some(l) = Launch::from_env()? else {
        return Ok((cfg, device, None));
    };
    if trace {
        return Err(Error::Refused(
            "rccr-train trace runs in one process: launch it without torchrun".into(),
        ));
    }
    let dist = &cfg.run.dist;
    let (pg, device, backend) = crate::dist::join(&l, dist.backend, dist.timeout_s, device)
        .with_context(|| {
            format!(
                "cannot join the {}-process run at {}:{} (check MASTER_ADDR/MASTER_PORT and \
                 that every rank started; --dist-timeout bounds the wait)",
                l.world_size, l.master_addr, l.master_port
            )
        })?;
    cfg.run.dist.world_size = l.world_size;
    cfg.run.dist.backend_used = backend.into();
    tracing::info!(rank = l.rank, world_size = l.world_size, backend, device = %device_name(device), "joined the data-parallel run");
    Ok((cfg, device, Some(pg)))
}

/// A fresh run (no `--resume`) refuses a folder that holds a run (config.json,
/// metrics.jsonl, checkpoints or trace steps), so two runs never mix; with `overwrite`
/// rank 0 clears those files first (before the ranks meet, so nobody has written yet).
pub(super) fn check_run_dir(out: &Path, opts: &RunOptions) -> Result<()> {
    if opts.resume.is_some() || !out.is_dir() {
        return Ok(());
    }
    let held = run_files(out)?;
    if held.is_empty() {
        return Ok(());
    }
    if !opts.overwrite {
        let names: Vec<_> = held
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy())
            .collect();
        return Err(Error::Refused(format!(
            "{} already holds a run ({}): continue it with --resume \
             {}/checkpoints/iter_*.safetensors, pick a fresh --out, or pass --overwrite to \
             replace it",
            out.display(),
            names.join(", "),
            out.display()
        )));
    }
    let rank0 = Launch::from_env()
        .ok()
        .flatten()
        .is_none_or(|l| l.rank == 0);
    if rank0 {
        remove_run(out, held)?;
    }
    Ok(())
}

/// The files and folders of a run in `out`.
fn run_files(out: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(out)
        .map_err(Error::io_at(out))
        .context("cannot read the run folder")?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_run_file(p))
        .collect())
}

/// config.json, metrics.jsonl, a checkpoints folder with checkpoints, trace steps or a
/// `rank<r>` folder.
fn is_run_file(p: &Path) -> bool {
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
}

/// `--overwrite`: removes the previous run's files.
fn remove_run(out: &Path, held: Vec<PathBuf>) -> Result<()> {
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
    Ok(())
}
