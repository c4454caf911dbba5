//! Training checkpoints: one safetensors file per save,
//! `RUN_DIR/checkpoints/iter_<NNNNNNN>.safetensors`, written atomically (temporary file,
//! then rename), holding everything `--resume` needs to continue exactly:
//!
//! - `student.<var>` and `teacher.<var>`: both networks (encoder, classifier `layer5`,
//!   projector, BN running statistics); the exporter reads `teacher.` with
//!   `rccr_models::checkpoint::load_network`;
//! - `optim.momentum.<var>`: the SGD momentum buffers, or `optim.adam.exp_avg.<var>`,
//!   `optim.adam.exp_avg_sq.<var>`, `optim.adam.step.<var>` for AdamW;
//! - `fd.<var>`: the feature distance's frozen encoder (when `method.fd` is on);
//! - `bank.<i>.embeddings`, `bank.<i>.labels`: the memory bank, oldest first;
//! - metadata: `rccr.format` / `rccr.model_config` / `rccr.iteration` (the models-crate
//!   contract), `rccr.train_config` (the resolved [`TrainConfig`] as JSON) and `rccr.best` (the best
//!   validation so far). No generator state: every random choice of iteration t comes
//!   from a stream keyed by (seed, purpose, t) ([`crate::streams`]); the `rccr.rng` key
//!   of older checkpoints is ignored.
//!
//! The folder keeps the last `keep_last` checkpoints and the best one by validation
//! mIoU; `checkpoints/index.json` names the latest and the best.

use crate::config::TrainConfig;
use crate::error::Error;
use crate::memory_bank::{BankEntry, MemoryBank};
use crate::optim::Optimiser;
use rccr_infer::files::temporary_owner;
use rccr_models::checkpoint::{file_info, model_metadata, CHECKPOINT_FORMAT, STUDENT, TEACHER};
use rccr_models::weights::{self, TensorFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// Metadata key of the training configuration.
pub(crate) const META_TRAIN_CONFIG: &str = "rccr.train_config";
/// Metadata key of the best validation.
pub(crate) const META_BEST: &str = "rccr.best";
/// Prefix of the optimiser state (`optim.momentum.<var>` for SGD, `optim.adam.*` for AdamW).
pub(crate) const OPTIM: &str = "optim.";
/// Prefix of the feature distance's frozen encoder.
pub(crate) const FROZEN: &str = "fd.";
/// Prefix of the memory bank.
pub(crate) const BANK: &str = "bank.";

/// The best validation so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Iterations completed at that validation.
    pub iteration: u64,
    /// Its mIoU (0..1).
    pub miou: f64,
}

/// What a checkpoint holds besides the networks.
#[derive(Debug)]
pub struct Saved<'a> {
    /// Student variables.
    pub student: &'a nn::VarStore,
    /// Teacher variables.
    pub teacher: &'a nn::VarStore,
    /// Optimiser.
    pub optim: &'a Optimiser,
    /// Memory bank.
    pub bank: &'a MemoryBank,
    /// The feature distance's frozen encoder variables (empty when it is off).
    pub frozen: Vec<(String, Tensor)>,
    /// Iterations completed.
    pub iteration: u64,
    /// The run's configuration.
    pub config: &'a TrainConfig,
    /// Best validation so far.
    pub best: Option<Best>,
}

/// Writes a checkpoint to `path` atomically.
pub fn save(path: &Path, s: &Saved) -> Result<(), Error> {
    let model = s.config.model.clone();
    let mut meta: HashMap<String, String> = model_metadata(CHECKPOINT_FORMAT, &model, s.iteration);
    meta.insert(
        META_TRAIN_CONFIG.into(),
        serde_json::to_string(s.config).expect("config serialises"),
    );
    if let Some(b) = s.best {
        meta.insert(
            META_BEST.into(),
            serde_json::to_string(&b).expect("best serialises"),
        );
    }
    let student = s.student.variables();
    let teacher = s.teacher.variables();
    let state = student
        .iter()
        .map(|(n, t)| (n.as_str(), t))
        .chain(teacher.iter().map(|(n, t)| (n.as_str(), t)));
    if let Some(bad) = weights::first_non_finite(state) {
        return Err(Error::BadCheckpoint {
            path: path.to_path_buf(),
            msg: format!("not written: `{bad}` holds NaN or infinite values (the run diverged)"),
        });
    }
    let mut tensors: BTreeMap<String, &Tensor> = BTreeMap::new();
    for (n, t) in &student {
        tensors.insert(format!("{STUDENT}{n}"), t);
    }
    for (n, t) in &teacher {
        tensors.insert(format!("{TEACHER}{n}"), t);
    }
    for (n, t) in s.optim.state() {
        tensors.insert(format!("{OPTIM}{n}"), t);
    }
    for (n, t) in &s.frozen {
        tensors.insert(format!("{FROZEN}{n}"), t);
    }
    for (i, e) in s.bank.entries().enumerate() {
        tensors.insert(format!("{BANK}{i}.embeddings"), &e.embeddings);
        tensors.insert(format!("{BANK}{i}.labels"), &e.labels);
    }
    weights::write_tensors(path, tensors, &meta)?;
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Iterations completed.
    pub iteration: u64,
    /// The configuration it was trained with.
    pub config: TrainConfig,
    /// Best validation so far.
    pub best: Option<Best>,
    /// The raw tensors.
    pub file: TensorFile,
}

impl Loaded {
    /// The tensors under `prefix`, prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        self.file
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(prefix)
                    .map(|s| (s.to_string(), t.shallow_clone()))
            })
            .collect()
    }

    /// The memory bank entries, oldest first.
    pub fn bank(&self) -> Vec<BankEntry> {
        let mut out = Vec::new();
        for i in 0.. {
            let e = self.file.tensors.get(&format!("{BANK}{i}.embeddings"));
            let l = self.file.tensors.get(&format!("{BANK}{i}.labels"));
            match (e, l) {
                (Some(e), Some(l)) => out.push(BankEntry {
                    embeddings: e.shallow_clone(),
                    labels: l.shallow_clone(),
                }),
                _ => break,
            }
        }
        out
    }
}

/// Reads a training checkpoint (not a bare model file).
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let file = weights::read_tensors(path)?;
    let info = file_info(path, &file)?;
    let invalid = |msg: String| Error::BadCheckpoint {
        path: path.to_path_buf(),
        msg,
    };
    if info.format != CHECKPOINT_FORMAT {
        return Err(invalid(format!(
            "is a `{}` file, not a training checkpoint; --resume needs \
             RUN_DIR/checkpoints/iter_*.safetensors",
            info.format
        )));
    }
    if let Some(bad) = weights::first_non_finite(file.tensors.iter().map(|(n, t)| (n.as_str(), t)))
    {
        return Err(invalid(format!(
            "tensor `{bad}` holds NaN or infinite values: the run that wrote it diverged; \
             resume from an earlier checkpoint with a lower learning rate"
        )));
    }
    let config: TrainConfig = file
        .metadata
        .get(META_TRAIN_CONFIG)
        .ok_or_else(|| invalid("no rccr.train_config metadata".into()))
        .and_then(|j| {
            serde_json::from_str(j).map_err(|e| invalid(format!("unreadable train config: {e}")))
        })?;
    let best = match file.metadata.get(META_BEST) {
        Some(j) => {
            Some(serde_json::from_str(j).map_err(|e| invalid(format!("unreadable best: {e}")))?)
        }
        None => None,
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        iteration: info.iteration,
        config,
        best,
        file,
    })
}

/// Temporary files in `dir` (`.<name>.<pid>.tmp`, [`rccr_infer::files::temporary_path`])
/// whose writer process no longer runs.
pub fn stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(temporary_owner)
                .is_some_and(|pid| !alive(pid))
        })
        .collect()
}

/// Copies `tensors` into `vs`, requiring every variable of `vs` to be present.
pub(crate) fn load_vars(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
    what: &str,
) -> Result<(), Error> {
    let report = weights::load_into(vs, tensors, |_| true, path)?;
    if let Some(m) = report.missing.first() {
        return Err(Error::BadCheckpoint {
            path: path.to_path_buf(),
            msg: format!(
                "the {what} network lacks `{m}` ({} missing): wrong backbone or classes?",
                report.missing.len()
            ),
        });
    }
    Ok(())
}

/// The checkpoint folder of a run: naming, the index, and pruning.
#[derive(Debug)]
pub struct CheckpointDir {
    /// `RUN_DIR/checkpoints`.
    pub dir: PathBuf,
    /// Periodic checkpoints kept.
    pub keep_last: usize,
}

/// `checkpoints/index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Index {
    /// The newest checkpoint file name.
    pub(crate) latest: Option<String>,
    /// The best checkpoint by validation mIoU.
    pub(crate) best: Option<BestFile>,
}

/// The best checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct BestFile {
    /// File name.
    pub(crate) file: String,
    /// Iterations completed.
    pub(crate) iteration: u64,
    /// mIoU (0..1).
    pub(crate) miou: f64,
}

impl CheckpointDir {
    /// Creates the folder if needed and removes the temporary files of writes whose process is
    /// gone (`.<name>.<pid>.tmp`, left by a kill during a checkpoint write).
    pub fn create(dir: PathBuf, keep_last: usize) -> Result<CheckpointDir, Error> {
        std::fs::create_dir_all(&dir).map_err(Error::io_at(&dir))?;
        for stale in stale_temporaries(&dir) {
            if std::fs::remove_file(&stale).is_ok() {
                tracing::warn!(file = %stale.display(), "removed the temporary file of an interrupted checkpoint write");
            }
        }
        Ok(CheckpointDir { dir, keep_last })
    }

    /// `iter_<NNNNNNN>.safetensors`.
    pub fn file_name(iteration: u64) -> String {
        format!("iter_{iteration:07}.safetensors")
    }

    /// The path of a checkpoint.
    pub fn path(&self, iteration: u64) -> PathBuf {
        self.dir.join(Self::file_name(iteration))
    }

    /// Iterations of the checkpoints present, ascending.
    pub fn present(&self) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("iter_")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Saves, then deletes periodic checkpoints beyond the last `keep_last` (never the
    /// best) and rewrites the index.
    pub fn save(&self, s: &Saved) -> Result<PathBuf, Error> {
        let path = self.path(s.iteration);
        save(&path, s)?;
        let keep_best = s.best.map(|b| b.iteration);
        let present = self.present();
        let n = present.len();
        for (i, it) in present.iter().enumerate() {
            let recent = i + self.keep_last.max(1) >= n;
            if !recent && Some(*it) != keep_best {
                let p = self.path(*it);
                std::fs::remove_file(&p).map_err(|source| Error::Io { path: p, source })?;
            }
        }
        let index = Index {
            latest: Some(Self::file_name(s.iteration)),
            best: s.best.map(|b| BestFile {
                file: Self::file_name(b.iteration),
                iteration: b.iteration,
                miou: b.miou,
            }),
        };
        let json = serde_json::to_vec_pretty(&index).expect("index serialises");
        weights::write_atomic(&self.dir.join("index.json"), &json)?;
        Ok(path)
    }
}
