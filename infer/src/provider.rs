//! Execution providers and session creation: TensorRT (with an engine cache folder and an
//! fp16 option), CUDA and CPU through ort's `ep` module. `auto` tries them in that order
//! and keeps the first that both registers and builds the session; an explicitly
//! requested provider that fails is an error naming the libraries it needs.
//!
//! Session options are tuned for throughput: every graph optimisation (level 3: constant
//! folding, node fusions, layout optimisations), intra-op threads = physical cores, the
//! memory-pattern planner on (input shapes repeat from batch to batch), subnormals
//! flushed to zero, optional fixing of symbolic input dimensions
//! ([`create_session_with_dims`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::error::{InferError, Result};
use crate::runtime;

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// TensorRT, then CUDA, then CPU: the first that works.
    Auto,
    /// NVIDIA TensorRT (through ONNX Runtime's TensorRT execution provider).
    TensorRt,
    /// NVIDIA CUDA (cuDNN).
    Cuda,
    /// ONNX Runtime's CPU kernels.
    Cpu,
}

impl Provider {
    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Auto => "auto",
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    /// The shared libraries this provider loads on Linux (for error messages).
    pub fn needs(self) -> &'static str {
        match self {
            Provider::Auto | Provider::Cpu => "libonnxruntime.so only",
            Provider::TensorRt => {
                "libonnxruntime_providers_tensorrt.so (from onnxruntime-gpu), libonnxruntime_providers_cuda.so, TensorRT 10 (libnvinfer.so.10) and the CUDA / cuDNN 9 libraries"
            }
            Provider::Cuda => {
                "libonnxruntime_providers_cuda.so (from onnxruntime-gpu) and the CUDA runtime, cuBLAS and cuDNN 9 libraries (libcudart, libcublas, libcudnn.so.9)"
            }
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Provider {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Provider::Auto),
            "tensorrt" | "trt" => Ok(Provider::TensorRt),
            "cuda" | "gpu" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => Err(InferError::Invalid(format!(
                "provider `{other}`: use auto, tensorrt, cuda or cpu"
            ))),
        }
    }
}

/// Options of session creation.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Provider to use. Default `auto`.
    pub provider: Provider,
    /// GPU index for TensorRT / CUDA. Default 0.
    pub device_id: i32,
    /// TensorRT engine cache folder (engines are built once per shape and reused). Default
    /// none: `./trt-cache` next to the model (`<model dir>/trt-cache`).
    pub trt_cache_dir: Option<PathBuf>,
    /// Let TensorRT run layers in fp16. Default false (fp32, matching the exported model).
    pub trt_fp16: bool,
    /// Intra-op threads of the CPU provider. Default none: the number of physical cores.
    pub intra_threads: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            provider: Provider::Auto,
            device_id: 0,
            trt_cache_dir: None,
            trt_fp16: false,
            intra_threads: None,
        }
    }
}

/// Number of physical CPU cores (sibling hyper-threads counted once); falls back to the
/// logical count where the topology cannot be read.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut phys = None;
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => phys = Some(v.to_string()),
            (Some("core id"), Some(v)) => {
                cores.insert((phys.clone().unwrap_or_default(), v.to_string()));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        // The process may be limited to fewer CPUs than the machine has.
        cores.len().min(logical).max(1)
    }
}

/// A session builder on the shared ONNX Runtime environment (the library is loaded
/// first, [`runtime::environment`]) with the throughput options of this module: every
/// graph optimisation, `threads` intra-op threads (default [`physical_cores`]), the
/// memory-pattern planner and flush-to-zero. No execution provider is registered (CPU).
pub fn session_builder(threads: Option<usize>) -> Result<SessionBuilder> {
    let env = runtime::environment()?;
    let threads = threads.unwrap_or_else(physical_cores).max(1);
    Ok(Session::builder(&env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_memory_pattern(true)?
        // Subnormals are slow on x86 and carry no information in a segmentation network.
        .with_flush_to_zero()?)
}

/// [`session_builder`] for `model` with `opts`' threads and the symbolic input
/// dimensions `dims` fixed; errors name the model.
fn base_builder(
    model: &Path,
    opts: &SessionOptions,
    dims: &[(String, i64)],
) -> Result<SessionBuilder> {
    let fail = |e: ort::Error<SessionBuilder>| InferError::Session {
        path: model.to_path_buf(),
        reason: e.to_string(),
    };
    let mut builder = session_builder(opts.intra_threads).map_err(|e| match e {
        InferError::Ort(e) => InferError::Session {
            path: model.to_path_buf(),
            reason: e.to_string(),
        },
        other => other,
    })?;
    for (name, size) in dims {
        builder = builder.with_dimension_override(name, *size).map_err(fail)?;
    }
    Ok(builder)
}

fn register(
    builder: &mut SessionBuilder,
    which: Provider,
    model: &Path,
    opts: &SessionOptions,
) -> std::result::Result<(), String> {
    match which {
        Provider::TensorRt => {
            let cache = opts
                .trt_cache_dir
                .clone()
                .unwrap_or_else(|| model.parent().unwrap_or(Path::new(".")).join("trt-cache"));
            std::fs::create_dir_all(&cache)
                .map_err(|e| format!("cannot create engine cache {}: {e}", cache.display()))?;
            ep::TensorRT::default()
                .with_device_id(opts.device_id)
                .with_engine_cache(true)
                .with_engine_cache_path(cache.display().to_string())
                .with_timing_cache(true)
                .with_timing_cache_path(cache.display().to_string())
                .with_fp16(opts.trt_fp16)
                .register(builder)
                .map_err(|e| e.to_string())
        }
        Provider::Cuda => ep::CUDA::default()
            .with_device_id(opts.device_id)
            .register(builder)
            .map_err(|e| e.to_string()),
        Provider::Cpu | Provider::Auto => Ok(()),
    }
}

/// Builds a session for `model` on one concrete provider (not `auto`).
fn build_on(
    model: &Path,
    which: Provider,
    opts: &SessionOptions,
    dims: &[(String, i64)],
) -> Result<Session> {
    let mut builder = base_builder(model, opts, dims)?;
    let provider_err = |reason: String| InferError::Provider {
        provider: which.name().into(),
        path: model.to_path_buf(),
        reason,
        needs: which.needs().into(),
    };
    if which != Provider::Cpu {
        // A build without the provider compiled in would otherwise fail obscurely.
        let compiled = match which {
            Provider::TensorRt => ep::TensorRT::is_available(),
            _ => ep::CUDA::is_available(),
        };
        if let Ok(false) = compiled {
            let lib = runtime::ensure_loaded()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(provider_err(format!(
                "the ONNX Runtime library {lib} was built without it (CPU-only package)"
            )));
        }
        // Nodes the provider cannot run still fall back to the CPU kernels (ORT default).
        register(&mut builder, which, model, opts).map_err(provider_err)?;
    }
    builder.commit_from_file(model).map_err(|e| {
        let reason = e.to_string();
        if which == Provider::Cpu {
            InferError::Session {
                path: model.to_path_buf(),
                reason: format!("{reason} (is it an ONNX file made by rccr-export?)"),
            }
        } else {
            provider_err(reason)
        }
    })
}

/// Creates a session for `model`, returning it with the provider that actually runs it.
/// With [`Provider::Auto`], TensorRT, CUDA and CPU are tried in turn (each failure is
/// logged at debug level); otherwise the requested provider or an error.
pub fn create_session(model: &Path, opts: &SessionOptions) -> Result<(Session, Provider)> {
    create_session_with_dims(model, opts, &[])
}

/// [`create_session`] with symbolic input dimensions fixed by name (ONNX Runtime's free
/// dimension overrides; names the model does not use are ignored). Static shapes let ONNX
/// Runtime's CPU layout optimiser fuse more: with dynamic H and W it cannot prove that
/// the two inputs of a residual `Add` after a dilated convolution have equal shapes and
/// leaves `Add` + `Relu` (and reshapes) unfused.
pub fn create_session_with_dims(
    model: &Path,
    opts: &SessionOptions,
    dims: &[(String, i64)],
) -> Result<(Session, Provider)> {
    if !model.is_file() {
        return Err(InferError::io(
            "cannot read model",
            model,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    runtime::ensure_loaded()?;
    match opts.provider {
        Provider::Auto => {
            for which in [Provider::TensorRt, Provider::Cuda] {
                match build_on(model, which, opts, dims) {
                    Ok(s) => return Ok((s, which)),
                    Err(e) => tracing::debug!("auto: {which} not used: {e}"),
                }
            }
            build_on(model, Provider::Cpu, opts, dims).map(|s| (s, Provider::Cpu))
        }
        which => build_on(model, which, opts, dims).map(|s| (s, which)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_names() {
        for p in [
            Provider::Auto,
            Provider::TensorRt,
            Provider::Cuda,
            Provider::Cpu,
        ] {
            assert_eq!(p.name().parse::<Provider>().unwrap(), p);
        }
        assert!("metal".parse::<Provider>().is_err());
        assert!(physical_cores() >= 1);
    }
}
