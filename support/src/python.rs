//! The pinned Python: `python3` with the packages `make setup` installs under the
//! repository's `.deps/` on `PYTHONPATH`, running a reference script of the repository.

use std::path::Path;
use std::process::{Command, Output};

use crate::repo_root;

/// Which `.deps/` folders go on `PYTHONPATH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deps {
    /// `.deps/torch` (PyTorch).
    Torch,
    /// `.deps/py` (onnx, Pillow, cityscapesscripts, ...).
    Py,
    /// `.deps/torch` then `.deps/py`.
    TorchAndPy,
}

impl Deps {
    fn folders(self) -> &'static [&'static str] {
        match self {
            Deps::Torch => &["torch"],
            Deps::Py => &["py"],
            Deps::TorchAndPy => &["torch", "py"],
        }
    }
}

/// `python3` with `deps` (under the repository's `.deps/`) on `PYTHONPATH`.
pub fn python(deps: Deps) -> Command {
    let root = repo_root().join(".deps");
    let paths: Vec<_> = deps.folders().iter().map(|f| root.join(f)).collect();
    let mut cmd = Command::new("python3");
    cmd.env(
        "PYTHONPATH",
        std::env::join_paths(paths).expect("plain paths"),
    );
    cmd
}

/// Runs `script` (relative to the repository root) with `args` under [`python`]`(deps)`;
/// panics with the script's stderr when it fails.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(deps: Deps, script: &str, args: &[S]) -> Output {
    let out = python(deps)
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("python3 runs (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        Path::new(script).display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `script` (relative to the repository root) with a new temporary folder as its
/// only argument, as [`run_python`] does, and returns the folder with what it wrote.
pub fn python_outputs(deps: Deps, script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    run_python(deps, script, &[dir.path()]);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pythonpath_names_the_deps_folders_in_order() {
        let cmd = python(Deps::TorchAndPy);
        let (_, value) = cmd.get_envs().find(|(k, _)| *k == "PYTHONPATH").unwrap();
        let paths: Vec<_> = std::env::split_paths(value.unwrap()).collect();
        let deps = repo_root().join(".deps");
        assert_eq!(paths, [deps.join("torch"), deps.join("py")]);
    }

    #[test]
    fn outputs_land_in_the_returned_folder() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("writes.py");
        std::fs::write(
            &script,
            "import sys, os\nopen(os.path.join(sys.argv[1], 'x'), 'w').write('1')\n",
        )
        .unwrap();
        let out = python_outputs(Deps::Py, script.to_str().unwrap());
        assert_eq!(std::fs::read_to_string(out.path().join("x")).unwrap(), "1");
    }

    #[test]
    #[should_panic(expected = "exits.py failed")]
    fn a_failing_script_panics_with_its_stderr() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("exits.py");
        std::fs::write(&script, "import sys\nsys.exit('exits.py: no')\n").unwrap();
        run_python::<&str>(Deps::Py, script.to_str().unwrap(), &[]);
    }
}
