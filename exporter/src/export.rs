//! The export pipeline around [`crate::network::build_model`]: load the teacher from a
//! trainer checkpoint (or a bare model file), check the output path early, encode the
//! model and write it atomically (temporary file + rename: never a partial ONNX file).

use crate::network::build_model;
use crate::onnx::ModelProto;
use crate::options::{ExportOptions, Source};
use crate::ExportError;
use prost::Message;
use rccr_models::checkpoint::{self, LoadedNet};
use std::path::Path;
use tch::Device;

/// The largest model protobuf can hold (2 GiB; larger needs external data, unused here).
pub(crate) const MAX_MODEL_BYTES: usize = (1 << 31) - 1;

/// Loads the teacher network of a trainer checkpoint (or the network of a bare model
/// file) on the CPU. Errors name the file: missing, truncated, not an rccr file, no
/// teacher, incomplete teacher.
pub fn load_teacher(path: &Path) -> Result<LoadedNet, ExportError> {
    if !path.is_file() {
        let what = if path.is_dir() {
            "a folder, not a checkpoint file"
        } else {
            "no such checkpoint file"
        };
        return Err(ExportError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{what} (pass RUN_DIR/checkpoints/*.safetensors written by `rccr-train`)"),
            ),
        });
    }
    Ok(checkpoint::load_network(
        path,
        checkpoint::TEACHER,
        Device::Cpu,
    )?)
}

/// Fails early, before any work, when `out` cannot be an output file: it is a folder, or
/// its folder does not exist or is not a folder.
pub(crate) fn check_output_path(out: &Path) -> Result<(), ExportError> {
    let err = |reason: String| ExportError::Output {
        path: out.to_path_buf(),
        reason,
    };
    if out.file_name().is_none() {
        return Err(err("the path names no file".into()));
    }
    if out.is_dir() {
        return Err(err(
            "it is a folder; give a file name such as model.onnx".into()
        ));
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        return Err(err(format!(
            "the folder {} does not exist (create it first)",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(err(format!("{} is not a folder", dir.display())));
    }
    Ok(())
}

/// Builds the ONNX model of a loaded teacher; the metadata records `checkpoint`.
pub fn export_loaded(
    loaded: &LoadedNet,
    checkpoint: &Path,
    opts: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    let source = Source {
        checkpoint: checkpoint.display().to_string(),
        iteration: loaded.info.iteration,
    };
    tch::no_grad(|| build_model(&loaded.net.seg, &source, opts))
}

/// Serialises a model, refusing sizes protobuf cannot hold.
pub fn encode(model: &ModelProto) -> Result<Vec<u8>, ExportError> {
    let len = model.encoded_len();
    if len > MAX_MODEL_BYTES {
        return Err(ExportError::Network(format!(
            "the model needs {len} bytes, more than protobuf's 2 GiB"
        )));
    }
    Ok(model.encode_to_vec())
}

/// Decodes a serialised model.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, ExportError> {
    Ok(ModelProto::decode(bytes)?)
}

/// Writes `bytes` to `out` through a temporary file and a rename.
pub fn write_model(out: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    check_output_path(out)?;
    rccr_infer::files::write_atomic_synced(out, bytes).map_err(|cause| ExportError::Write {
        path: out.to_path_buf(),
        cause,
    })
}
