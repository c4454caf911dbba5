//! The `rccr-export` binary: a verified export end to end, and its error cases (missing,
//! truncated, non-checkpoint file, no teacher, unwritable output, failed verification):
//! exit status 1 with `error: ...` naming the problem, and no ONNX file left; malformed
//! option values are clap usage errors (exit status 2).

mod common;

use common::rccr_export as export;
use rccr_models::checkpoint::{model_metadata, CHECKPOINT_FORMAT};
use rccr_models::{Backbone, ModelConfig};
use std::path::{Path, PathBuf};
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The file names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn small() -> ModelConfig {
    ModelConfig::new(Backbone::Small, 19)
}

/// A temporary folder with a random small checkpoint (seed `seed`), and the path of a
/// model `model.onnx` to write there.
fn fixture(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _vs, _net) = common::checkpoint(dir.path(), &small(), seed);
    let out = dir.path().join("model.onnx");
    (dir, ckpt, out)
}

#[test]
fn verified_export_writes_the_model_and_a_json_report() {
    let (dir, ckpt, out) = fixture(5);
    let o = export(&[
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        // A verification shape alone asks for verification (as --verify-images does).
        "--verify-shape",
        "1x40x56",
        "--outputs",
        "both",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verify"]["passed"], true);
    assert_eq!(
        v["verify"]["cases"][0]["shape"],
        serde_json::json!([1, 3, 40, 56])
    );
    assert!(v["verify"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    // Only the checkpoint and the model: no temporary file left behind.
    assert_eq!(
        listing(dir.path()),
        vec![
            "ckpt-small-5.safetensors".to_string(),
            "model.onnx".to_string()
        ]
    );
}

/// Runs an export expected to fail; checks the exit status, the message and that `out`
/// was not created.
fn expect_failure(ckpt: &Path, out: &Path, extra: &[&str], message: &str) {
    let mut args = vec![
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = export(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(message), "expected `{message}` in:\n{err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "no `error: ` line in:\n{err}"
    );
    assert!(!out.is_file(), "{} was written", out.display());
}

#[test]
fn missing_truncated_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");

    let missing = dir.path().join("nope.safetensors");
    expect_failure(&missing, &out, &[], "no such checkpoint file");
    expect_failure(dir.path(), &out, &[], "a folder, not a checkpoint file");

    let (ckpt, vs, _net) = common::checkpoint(dir.path(), &small(), 1);
    let bytes = std::fs::read(&ckpt).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    expect_failure(&truncated, &out, &[], "not a readable safetensors file");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    expect_failure(&text, &out, &[], "not a readable safetensors file");

    // A valid safetensors file without the rccr metadata.
    let foreign = dir.path().join("foreign.safetensors");
    let vars = vs.variables();
    rccr_models::weights::write_tensors(
        &foreign,
        vars.iter().map(|(n, t)| (format!("teacher.{n}"), t)),
        &Default::default(),
    )
    .unwrap();
    expect_failure(&foreign, &out, &[], "not an rccr checkpoint");

    // A checkpoint with only a student network.
    let student_only = dir.path().join("student.safetensors");
    common::write_checkpoint(&student_only, &vs, &small(), 10, false, true);
    expect_failure(&student_only, &out, &[], "no `teacher` network tensors");

    // A teacher with a tensor missing.
    let incomplete = dir.path().join("incomplete.safetensors");
    rccr_models::weights::write_tensors(
        &incomplete,
        vars.iter()
            .filter(|(n, _)| n.as_str() != "layer2.0.bn1.running_var")
            .map(|(n, t)| (format!("teacher.{n}"), t)),
        &model_metadata(CHECKPOINT_FORMAT, &small(), 3),
    )
    .unwrap();
    expect_failure(&incomplete, &out, &[], "teacher.layer2.0.bn1.running_var");

    assert!(!listing(dir.path())
        .iter()
        .any(|n| n.ends_with(".tmp") || n.ends_with(".onnx")));
}

#[test]
fn unwritable_outputs_are_refused_before_any_work() {
    let (dir, ckpt, _) = fixture(2);
    expect_failure(
        &ckpt,
        &dir.path().join("no/such/folder/model.onnx"),
        &[],
        "does not exist",
    );
    let sub = dir.path().join("models");
    std::fs::create_dir(&sub).unwrap();
    expect_failure(&ckpt, &sub, &[], "it is a folder");
    // A path "through" a regular file.
    expect_failure(&ckpt, &ckpt.join("model.onnx"), &[], "is not a folder");
    assert_eq!(
        listing(dir.path()),
        vec!["ckpt-small-2.safetensors", "models"]
    );
}

#[test]
fn failed_verification_writes_nothing() {
    let (dir, ckpt, out) = fixture(4);
    // A zero bound: float rounding alone (~1e-7 here) exceeds it.
    expect_failure(
        &ckpt,
        &out,
        &["--verify", "--tolerance", "0", "--verify-shape", "1x32x32"],
        "verification failed",
    );
    assert_eq!(listing(dir.path()), vec!["ckpt-small-4.safetensors"]);
}

#[test]
fn bad_options_are_refused() {
    let (dir, ckpt, out) = fixture(6);
    expect_failure(
        &ckpt,
        &out,
        &["--opset", "12"],
        "--opset 12 is not supported",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect_failure(
        &ckpt,
        &out,
        &["--verify-images", empty.to_str().unwrap()],
        "no .png / .jpg images",
    );
    // Malformed values are clap usage errors (exit status 2).
    for args in [["--fixed-shape", "1x2"], ["--outputs", "probs"]] {
        let o = export(&[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            args[0],
            args[1],
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!out.exists());
    }
}
