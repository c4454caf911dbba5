//! Atomic file writes: the bytes go to a temporary `.<name>.<pid>.tmp` in the target's
//! folder, which is then renamed over the target, so readers (and a run killed mid-write)
//! see the old file or the complete new one, never a torn one. A failed write removes
//! its temporary file; one left by a killed process is recognised by
//! [`temporary_owner`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Whether the data reaches the disk before the rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No fsync: the rename alone keeps readers consistent (outputs of a run, where a
    /// sync per file would dominate small writes).
    Renamed,
    /// fsync before the rename: the file survives a power loss (checkpoints).
    Synced,
}

/// The temporary path a write of `target` goes through: `.<name>.<pid>.tmp` beside it.
pub fn temporary_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    parent_dir(target).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// The writer's process id when `file_name` is a temporary name of [`temporary_path`].
pub fn temporary_owner(file_name: &str) -> Option<u32> {
    let stem = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, pid) = stem.rsplit_once('.')?;
    if name.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// The folder of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` atomically (parents are created), without fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, Durability::Renamed, |w| w.write_all(bytes))
}

/// Writes `bytes` to `path` atomically and fsyncs them before the rename.
pub fn write_atomic_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, Durability::Synced, |w| w.write_all(bytes))
}

/// Writes `path` atomically with what `fill` writes into a buffered temporary file.
pub fn write_atomic_with(
    path: &Path,
    durability: Durability,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(parent_dir(path))?;
    let tmp = temporary_path(path);
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised() {
        let tmp = temporary_path(Path::new("dir/model.safetensors"));
        assert_eq!(tmp.parent(), Some(Path::new("dir")));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!(".model.safetensors.{}.tmp", std::process::id()));
        assert_eq!(temporary_owner(name), Some(std::process::id()));
        assert_eq!(temporary_owner(".a.12.tmp"), Some(12));
        for other in ["a.12.tmp", ".a.tmp", ".a.x1.tmp", "..12.tmp", ".a.12.tmpx"] {
            assert_eq!(temporary_owner(other), None, "{other}");
        }
    }

    #[test]
    fn writes_replace_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic_synced(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let failed = write_atomic_with(&path, Durability::Renamed, |w| {
            w.write_all(b"torn")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }
}
