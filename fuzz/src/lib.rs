//! Shared by the fuzz targets (docs/hardening.md): the readers under test take paths, so
//! each input is written to a scratch file in memory (`/dev/shm` when present) first, and
//! each target checks the readers' error contract (docs/inference.md, "Failures"): a bad
//! file is a typed error that names the file, never a panic.

use std::path::{Path, PathBuf};

/// Writes `bytes` to this process's scratch file for `target`, ending in `.ext`.
pub fn scratch(target: &str, ext: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("rccr-fuzz-{target}-{}.{ext}", std::process::id()));
    std::fs::write(&path, bytes).expect("the scratch file can be written");
    path
}

/// Panics (a finding) when an error message does not name the file it is about.
pub fn assert_names(path: &Path, message: &str) {
    let name = path.display().to_string();
    assert!(
        message.contains(&name),
        "the error does not name the file {name}: {message}"
    );
}
