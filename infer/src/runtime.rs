//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`).
//!
//! Search order: `ORT_DYLIB_PATH`; the folder `make setup` installed it to (baked in at
//! build time as `RCCR_ORT_DIR`); the folder of the file holding this code (the
//! executable, or `librccr_infer.so` when loaded from C); the executable's own folder;
//! `../lib` beside the executable (`make install`'s layout, docs/deployment.md). Loading happens once per
//! process; later calls return the path that was loaded. The process-wide ONNX Runtime
//! environment created then is kept here ([`environment`]) for every session to share.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime version this build is made for.
pub const ORT_VERSION: &str = "1.31.1";

/// The library file name.
pub(crate) fn library_name() -> String {
    format!("libonnxruntime.so.{ORT_VERSION}")
}

/// ONNX Runtime could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ONNX Runtime could not be loaded: {reason}. Looked in: {}. Run `make setup` (or `make setup GPU=1` on a GPU host), or set ORT_DYLIB_PATH to libonnxruntime.so.{ORT_VERSION}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
pub struct RuntimeError {
    /// Why.
    pub reason: String,
    /// Every path tried.
    pub searched: Vec<PathBuf>,
}

/// The candidate library paths, in search order.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Some(dir) = option_env!("RCCR_ORT_DIR") {
        out.push(Path::new(dir).join(library_name()));
    }
    let exe = std::env::current_exe().ok();
    // An installed binary: PREFIX/bin/rccr-infer finds PREFIX/lib.
    let installed = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|prefix| prefix.join("lib"));
    let dirs = [own_file(), exe]
        .into_iter()
        .flatten()
        .filter_map(|file| file.parent().map(Path::to_path_buf))
        .chain(installed);
    for dir in dirs {
        for name in [library_name(), "libonnxruntime.so".to_string()] {
            let p = dir.join(name);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The file (executable or shared library) this code was loaded from, via `dladdr`.
fn own_file() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let addr = own_file as *const () as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`; it returns 0 on failure.
    let found = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled by dladdr on success.
    let info = unsafe { info.assume_init() };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr's file name is a NUL-terminated string owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    std::fs::canonicalize(&path).ok().or(Some(path))
}

static LOADED: OnceLock<Result<(PathBuf, ort::environment::Environment), RuntimeError>> =
    OnceLock::new();

/// Loads ONNX Runtime once and creates its global environment; returns the library path.
pub fn ensure_loaded() -> Result<PathBuf, RuntimeError> {
    load().map(|(path, _)| path.clone())
}

/// The process-wide ONNX Runtime environment (loading the library first if needed); pass
/// it to `ort::session::Session::builder`.
pub fn environment() -> Result<ort::environment::Environment, RuntimeError> {
    load().map(|(_, env)| env.clone())
}

fn load() -> Result<&'static (PathBuf, ort::environment::Environment), RuntimeError> {
    LOADED
        .get_or_init(|| {
            let searched = candidates();
            let Some(path) = searched.iter().find(|p| p.is_file()).cloned() else {
                return Err(RuntimeError {
                    reason: "library not found".into(),
                    searched,
                });
            };
            let builder = ort::init_from(&path).map_err(|e| RuntimeError {
                reason: format!("{}: {e}", path.display()),
                searched: searched.clone(),
            })?;
            let env = builder
                .with_name("rccr")
                .build()
                .map_err(|e| RuntimeError {
                    reason: format!("{}: {e}", path.display()),
                    searched: searched.clone(),
                })?;
            // The environment lives for the whole process (ort itself only keeps a weak
            // reference), so every later session shares it.
            Ok((path, env))
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_file_is_the_file_holding_this_code() {
        // In a test executable the code is linked in, so dladdr names the executable.
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(own_file(), Some(exe.clone()));
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            let dir = exe.parent().unwrap();
            assert!(candidates().contains(&dir.join(library_name())));
            // make install's layout: PREFIX/bin/<exe> looks in PREFIX/lib.
            let lib = dir.parent().unwrap().join("lib");
            assert!(candidates().contains(&lib.join(library_name())));
        }
    }
}
