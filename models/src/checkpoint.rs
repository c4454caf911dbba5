//! The on-disk contract between trainer and exporter: a trainer checkpoint (and a bare
//! model file) is one safetensors file whose `__metadata__` carries the format tag, the
//! network's [`ModelConfig`] as JSON and the iteration, and whose tensors are the
//! networks' variables under a prefix (`student.`, `teacher.`; the trainer adds its own
//! optimiser / memory-bank / RNG entries under other prefixes).

use crate::weights::{self, LoadReport, TensorFile};
use crate::{ModelConfig, ModelError, RccrNet};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device};

/// `rccr.format` of a trainer checkpoint.
pub const CHECKPOINT_FORMAT: &str = "rccr-checkpoint-v1";
/// `rccr.format` of a bare model file (one network, no prefix).
pub const MODEL_FORMAT: &str = "rccr-model-v1";
/// Metadata key: the format tag.
pub const META_FORMAT: &str = "rccr.format";
/// Metadata key: the [`ModelConfig`] as JSON.
pub const META_MODEL_CONFIG: &str = "rccr.model_config";
/// Metadata key: the training iteration the file was written at.
pub const META_ITERATION: &str = "rccr.iteration";
/// Tensor-name prefix of the student network.
pub const STUDENT: &str = "student.";
/// Tensor-name prefix of the teacher (EMA) network.
pub const TEACHER: &str = "teacher.";

/// What the metadata of an rccr file says.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The format tag.
    pub format: String,
    /// The network configuration.
    pub model: ModelConfig,
    /// The iteration (0 for a bare model file without one).
    pub iteration: u64,
}

/// Reads and checks the metadata of an rccr safetensors file.
pub fn file_info(path: &Path, file: &TensorFile) -> Result<FileInfo, ModelError> {
    let not_ours = |what: &str| {
        ModelError::Format(format!(
            "{}: not an rccr checkpoint or model ({what}); pass a file written by \
             `rccr-train train` (RUN_DIR/checkpoints/*.safetensors)",
            path.display()
        ))
    };
    let format = file
        .metadata
        .get(META_FORMAT)
        .ok_or_else(|| not_ours("no rccr.format metadata"))?;
    if format != CHECKPOINT_FORMAT && format != MODEL_FORMAT {
        return Err(not_ours(&format!("unknown format `{format}`")));
    }
    let json = file
        .metadata
        .get(META_MODEL_CONFIG)
        .ok_or_else(|| not_ours("no rccr.model_config metadata"))?;
    let model: ModelConfig = serde_json::from_str(json)
        .map_err(|e| not_ours(&format!("unreadable model config: {e}")))?;
    // A bad value names the file like every other metadata error (docs/hardening.md).
    model
        .validate()
        .map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))?;
    let iteration = match file.metadata.get(META_ITERATION) {
        Some(s) => s
            .parse()
            .map_err(|_| not_ours(&format!("bad iteration `{s}`")))?,
        None => 0,
    };
    Ok(FileInfo {
        format: format.clone(),
        model,
        iteration,
    })
}

/// A network loaded from a file, in its own VarStore.
#[derive(Debug)]
pub struct LoadedNet {
    /// The variables.
    pub vs: nn::VarStore,
    /// The network built over them.
    pub net: RccrNet,
    /// The file's metadata.
    pub info: FileInfo,
    /// Which tensors were missing / left over.
    pub report: LoadReport,
}

/// Loads one network from a checkpoint (`prefix` = [`TEACHER`] or [`STUDENT`]) or from a
/// bare model file (`prefix` ignored) onto `device`. The encoder and classifier must be
/// complete; the projector may be absent (reported in `report.missing`).
pub fn load_network(path: &Path, prefix: &str, device: Device) -> Result<LoadedNet, ModelError> {
    if crate::pth::is_pth(path) {
        return load_pth(path, prefix, device);
    }
    let file = weights::read_tensors(path)?;
    let info = file_info(path, &file)?;
    let prefix = if info.format == MODEL_FORMAT {
        ""
    } else {
        prefix
    };
    let tensors: std::collections::BTreeMap<String, tch::Tensor> = file
        .tensors
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t)))
        .collect();
    if tensors.is_empty() {
        return Err(ModelError::Format(format!(
            "{}: the checkpoint holds no `{}` network tensors",
            path.display(),
            prefix.trim_end_matches('.')
        )));
    }
    if let Some(bad) = weights::first_non_finite(tensors.iter().map(|(n, t)| (n.as_str(), t))) {
        return Err(ModelError::Format(format!(
            "{}: tensor `{prefix}{bad}` holds NaN or infinite values: the run that wrote it \
             diverged; use an earlier checkpoint (or resume from one with a lower learning rate)",
            path.display()
        )));
    }
    let vs = nn::VarStore::new(device);
    let net = RccrNet::new(&vs.root(), &info.model);
    let report = weights::load_into(&vs, &tensors, |_| true, path)?;
    if let Some(m) = report.missing.iter().find(|m| !m.starts_with("projector.")) {
        return Err(ModelError::Format(format!(
            "{}: the `{}` network is incomplete: tensor `{prefix}{m}` is missing ({} missing in all)",
            path.display(),
            prefix.trim_end_matches('.'),
            report.missing.len()
        )));
    }
    Ok(LoadedNet {
        vs,
        net,
        info,
        report,
    })
}

/// [`load_network`] for a PyTorch `.pth` / `.pt` file (DACS / RCCR checkpoint or bare
/// state_dict): the teacher (`ema_model`) for [`TEACHER`], the student (`model`) for
/// [`STUDENT`]; the network is the one the tensors imply ([`crate::pth::infer_config`]).
fn load_pth(path: &Path, prefix: &str, device: Device) -> Result<LoadedNet, ModelError> {
    let which = if prefix == STUDENT {
        crate::pth::Which::Student
    } else {
        crate::pth::Which::Auto
    };
    let file = crate::pth::read(path, which)?;
    let model = crate::pth::infer_config(&file)?;
    let vs = nn::VarStore::new(device);
    let net = RccrNet::new(&vs.root(), &model);
    let imported = crate::pth::load_into(&vs, &file, false)?;
    if !imported.skipped.is_empty()
        || imported
            .load
            .missing
            .iter()
            .any(|m| !m.starts_with("projector."))
    {
        return Err(ModelError::Format(format!(
            "{}: the network is incomplete ({imported}); convert it with `rccr-train import` \
             to see the report and choose --num-classes / --aspp-branches",
            path.display()
        )));
    }
    Ok(LoadedNet {
        vs,
        net,
        info: FileInfo {
            format: "pytorch".into(),
            model,
            iteration: imported.iteration.unwrap_or(0),
        },
        report: imported.load,
    })
}

/// Saves one network as a bare model file (format [`MODEL_FORMAT`]), atomically.
pub fn save_model(
    vs: &nn::VarStore,
    config: &ModelConfig,
    path: &Path,
    iteration: u64,
) -> Result<(), ModelError> {
    weights::save_var_store(vs, path, &model_metadata(MODEL_FORMAT, config, iteration))
}

/// The metadata entries every rccr file carries.
pub fn model_metadata(
    format: &str,
    config: &ModelConfig,
    iteration: u64,
) -> HashMap<String, String> {
    HashMap::from([
        (META_FORMAT.to_string(), format.to_string()),
        (
            META_MODEL_CONFIG.to_string(),
            serde_json::to_string(config).expect("config serialises"),
        ),
        (META_ITERATION.to_string(), iteration.to_string()),
    ])
}
