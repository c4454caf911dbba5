#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! Test set-up shared by the workspace's tests (a dev-dependency only, never shipped):
//! - [`repo_root`]: the workspace root, where `.deps/` and the reference scripts live;
//! - [`python`] / [`run_python`] / [`python_outputs`]: the pinned Python (`python3` with the repository's
//!   `.deps/torch` and / or `.deps/py` on `PYTHONPATH`, as `make setup` installs them)
//!   running a reference script, failing with the script's stderr;
//! - [`read_f32_le`]: the raw little-endian float32 files those scripts write, and
//!   [`assert_matches_reference`]: logits against such a reference;
//! - [`work_dir`]: a kept or temporary folder to write into;
//! - [`Rng`]: a local seeded generator over rccr-infer's SplitMix64;
//! - [`png`]: PNG byte builders for corrupt-file tests;
//! - [`c_functions`]: the `rccr_*` functions a C header declares; [`compile_c`] and
//!   [`c_library_link`]: a C program against `rccr_infer.h` and the shared library.
//!
//! It depends on no rccr crate but the light core of rccr-infer (no ONNX Runtime, no
//! libtorch), so every crate of the workspace can use it.

pub mod png;
mod python;
mod rng;

pub use python::{python, python_outputs, run_python, Deps};
pub use rng::Rng;

use std::path::{Path, PathBuf};

/// The `rccr_*` functions C source declares or calls: names followed by `(` outside
/// `/* */` comments (the C ABI tests compare them with a library's exported symbols).
pub fn c_functions(c: &str) -> std::collections::BTreeSet<String> {
    let mut code = String::new();
    let mut rest = c;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = rest[start..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    code.push_str(rest);
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in code.match_indices("rccr_") {
        let ident: String = code[i..]
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect();
        if code[i + ident.len()..].trim_start().starts_with('(') {
            names.insert(ident);
        }
    }
    names
}

/// The workspace root (the folder above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the support crate sits in the workspace")
        .to_path_buf()
}

/// The little-endian float32 values of the file at `path` (panics when unreadable).
pub fn read_f32_le(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Asserts that `ours` equals the reference `theirs` (PyTorch's logits) to
/// max |diff| <= 1e-4 x max(1, max |theirs|), and that the reference is not degenerate
/// (max |theirs| > 1e-3); `what` names the comparison in the failure.
pub fn assert_matches_reference(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: value count");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 1e-3, "{what}: degenerate logits");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what}: max |diff| {diff} (max |logit| {scale})"
    );
}

/// The folder a run writes to: `keep` (created when missing), else a new temporary
/// folder, returned with it so that it lives as long as the caller keeps it.
pub fn work_dir(keep: Option<&Path>) -> std::io::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok((None, dir.to_path_buf()))
        }
        None => {
            let tmp = tempfile::tempdir()?;
            let dir = tmp.path().to_path_buf();
            Ok((Some(tmp), dir))
        }
    }
}

/// Compiles C `sources` into `out` with the system compiler (`$CC`, else `cc`): C11 with
/// every warning an error, `include` on the header path, linking `link`; panics with the
/// compiler's output when it fails.
pub fn compile_c(include: &Path, sources: &[PathBuf], out: &Path, link: &[String]) {
    let o = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
        ])
        .arg("-I")
        .arg(include)
        .args(sources)
        .arg("-o")
        .arg(out)
        .args(link)
        .output()
        .expect("the system C compiler `cc` (install gcc or clang, or set CC)");
    assert!(
        o.status.success(),
        "cc failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The linker flags for `librccr_infer.so` in `lib_dir`, found at run time by an rpath.
pub fn c_library_link(lib_dir: &Path) -> Vec<String> {
    let dir = lib_dir.display();
    vec![
        format!("-L{dir}"),
        "-lrccr_infer".into(),
        format!("-Wl,-rpath,{dir}"),
        "-lpthread".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{manifest}");
    }

    #[test]
    fn f32_files_read_back_in_order() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("v.bin");
        let values = [1.5f32, -0.25, f32::MAX];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_f32_le(&path), values);
    }

    #[test]
    fn reference_tolerance_is_relative_to_the_largest_logit() {
        assert_matches_reference(&[100.0, 0.005], &[100.0, 0.0], "within 1e-4 x 100");
        let far = std::panic::catch_unwind(|| {
            assert_matches_reference(&[1.0, 0.0002], &[1.0, 0.0], "over 1e-4 x 1")
        });
        assert!(far.is_err());
        let flat = std::panic::catch_unwind(|| assert_matches_reference(&[0.0], &[0.0], "zero"));
        assert!(flat.is_err());
    }

    #[test]
    fn a_kept_work_dir_is_created_and_a_temporary_one_removed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let keep = d.path().join("a/b");
        let (tmp, dir) = work_dir(Some(&keep)).unwrap();
        assert!(tmp.is_none() && dir == keep && keep.is_dir());
        let (tmp, dir) = work_dir(None).unwrap();
        assert!(dir.is_dir());
        drop(tmp);
        assert!(!dir.exists());
    }
}
