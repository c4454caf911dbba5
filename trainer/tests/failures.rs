//! The trainer's part of the bad-input and fault catalogue (docs/training.md "Failure behaviour"):
//! each case runs `rccr-train` as a user would, on tiny data with the `small` backbone,
//! and asserts the exit status, that no panic happened, that the message names the
//! cause and the fix, and that no partial or non-finite file is left behind.

mod common;

use common::text;
use rccr_trainer::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rccr-train");

fn no_panic(o: &Output) {
    let t = text(o);
    assert!(
        !t.contains("panicked") && o.status.code().is_some(),
        "panic or signal: {t}"
    );
}

fn make_data(dir: &Path) {
    common::synth_cli(BIN, dir, 6);
}

fn train_cmd(data: &Path, out: &Path, extra: &[&str]) -> Command {
    train_cmd_from(&common::gta5(data), "128x64", data, out, extra)
}

/// `rccr-train train` from `source` with images resized to `size`.
fn train_cmd_from(source: &str, size: &str, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = common::train_command(BIN, source, size, data, out);
    c.args(["--seed", "2", "--val-every", "0"]).args(extra);
    c
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = train_cmd(data, out, extra).output().unwrap();
    no_panic(&o);
    o
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_diverging_run_stops_at_the_first_non_finite_state_and_keeps_only_finite_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    let o = train(
        &data,
        &run,
        &["--iterations", "20", "--save-every", "2", "--lr", "1e6"],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("NaN or infinite") || t.contains("not finite"),
        "{t}"
    );
    assert!(t.contains("resume from the last checkpoint"), "{t}");
    // Every checkpoint left is finite and loadable; the index names an existing file.
    for ck in checkpoints(&run) {
        checkpoint::load(&ck).unwrap_or_else(|e| panic!("{}: {e}", ck.display()));
    }
    if let Ok(index) = std::fs::read_to_string(run.join("checkpoints/index.json")) {
        let v: serde_json::Value = serde_json::from_str(&index).unwrap();
        let latest = v["latest"].as_str().unwrap();
        assert!(
            run.join("checkpoints").join(latest).exists(),
            "index names a missing {latest}"
        );
    }
}

#[test]
fn every_reader_refuses_a_checkpoint_with_nan_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    assert!(train(&data, &run, &["--iterations", "2"]).status.success());
    let good = checkpoints(&run).pop().unwrap();
    // Poison one teacher tensor, keep everything else (metadata included).
    let file = rccr_models::weights::read_tensors(&good).unwrap();
    let name = "teacher.layer5.conv2d_list.0.bias";
    let mut tensors = file.tensors;
    let bad = tensors[name].copy();
    let _ = bad.get(0).fill_(f64::NAN);
    tensors.insert(name.to_string(), bad);
    let nan = tmp.path().join("nan.safetensors");
    rccr_models::weights::write_tensors(
        &nan,
        tensors.iter().map(|(n, t)| (n.clone(), t)),
        &file.metadata,
    )
    .unwrap();

    let eval = Command::new(BIN)
        .args(["eval", "--checkpoint"])
        .arg(&nan)
        .arg("--data")
        .arg(format!("cityscapes:{}", data.join("cityscapes").display()))
        .args(["--device", "cpu"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    no_panic(&eval);
    assert!(
        !eval.status.success(),
        "eval scored a NaN network: {}",
        text(&eval)
    );
    assert!(
        text(&eval).contains(name) && text(&eval).contains("diverged"),
        "{}",
        text(&eval)
    );
    let resume = train(
        &data,
        &tmp.path().join("r2"),
        &["--iterations", "4", "--resume", nan.to_str().unwrap()],
    );
    assert!(!resume.status.success());
    assert!(text(&resume).contains(name), "{}", text(&resume));
}

#[test]
fn a_fresh_run_refuses_a_folder_holding_a_run_and_bad_data_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    assert!(train(&data, &run, &["--iterations", "3"]).status.success());
    let before = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let o = train(&data, &run, &["--iterations", "2", "--lr", "0.002"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("already holds a run") && t.contains("--resume") && t.contains("--overwrite"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        before,
        "the old run was touched"
    );
    // --overwrite replaces it: one run's lines only.
    assert!(train(
        &data,
        &run,
        &["--iterations", "2", "--overwrite", "--log-every", "1"]
    )
    .status
    .success());
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.contains("\"kind\":\"train\""))
            .count(),
        2,
        "{lines}"
    );
    assert_eq!(checkpoints(&run).len(), 1);
    // A start that fails on its data leaves the folder empty.
    let empty = tmp.path().join("empty");
    let o = train_cmd_from(
        "gta5:/nonexistent/gta5",
        "128x64",
        &data,
        &empty,
        &["--iterations", "2"],
    )
    .output()
    .unwrap();
    no_panic(&o);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/gta5"), "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(&empty)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed start wrote {left:?}");
}

#[test]
fn crops_larger_than_the_images_are_reported_with_their_padding_share() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    // 64x32 images, 64 crops: half of every crop is padding.
    let o = train_cmd_from(
        &common::gta5(&data),
        "64x32",
        &data,
        &run,
        &["--iterations", "1"],
    )
    .output()
    .unwrap();
    no_panic(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("padding") && text(&o).contains("50.0 %"),
        "{}",
        text(&o)
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["crop_padding"], serde_json::json!([0.5, 0.5]));
}

/// The final tensors of a run's last checkpoint.
fn final_tensors(run: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    let ck = checkpoints(run).pop().expect("a checkpoint");
    checkpoint::load(&ck)
        .unwrap()
        .file
        .tensors
        .into_iter()
        .collect()
}

#[test]
fn kill_9_at_random_moments_then_resume_reproduces_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let args = [
        "--iterations",
        "12",
        "--save-every",
        "2",
        "--keep-last",
        "2",
        "--mu-schedule",
        "constant",
        "--no-ps",
    ];
    let straight = tmp.path().join("straight");
    assert!(train(&data, &straight, &args).status.success());

    let run = tmp.path().join("killed");
    // Kill delays from a fixed pseudo-random sequence.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    let mut resumes = 0;
    for _ in 0..25 {
        let latest = checkpoints(&run).pop();
        if latest
            .as_ref()
            .is_some_and(|p| p.ends_with("iter_0000012.safetensors"))
        {
            break;
        }
        let mut extra: Vec<&str> = args.to_vec();
        let resume;
        match &latest {
            Some(p) => {
                resume = p.to_str().unwrap().to_string();
                extra.extend(["--resume", resume.as_str()]);
                resumes += 1;
            }
            None => extra.push("--overwrite"),
        }
        let mut child = train_cmd(&data, &run, &extra).spawn().unwrap();
        // Wait for this attempt to make progress (a new checkpoint), then kill it after
        // a pseudo-random 0-250 ms: sometimes mid-iteration, sometimes mid-write.
        let newest = checkpoints(&run).pop();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none()
            && checkpoints(&run).pop() == newest
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(x % 250));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
    }
    assert!(
        kills > 0 && resumes > 0,
        "{kills} kills, {resumes} resumes: lengthen the run"
    );
    // Finish whatever is left.
    let latest = checkpoints(&run)
        .pop()
        .expect("a checkpoint survives the kills");
    if !latest.ends_with("iter_0000012.safetensors") {
        let r = latest.to_str().unwrap().to_string();
        let o = train(
            &data,
            &run,
            &[&args[..], &["--resume", r.as_str()]].concat(),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let (a, b) = (final_tensors(&straight), final_tensors(&run));
    for (n, t) in &a {
        if n.starts_with("student.") || n.starts_with("teacher.") || n.starts_with("optim.") {
            assert!(
                t.equal(&b[n]),
                "{n} differs after {kills} kills and resumes"
            );
        }
    }
    let stale: Vec<_> = checkpoint::stale_temporaries(&run.join("checkpoints"));
    assert!(stale.is_empty(), "temporary files left: {stale:?}");
}

#[test]
fn stale_temporary_files_of_killed_writes_are_removed_on_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    // A writer that is gone (no such pid) and one that is alive (this test process).
    let gone = run.join("checkpoints/.iter_0000002.safetensors.4194303.tmp");
    let alive = run.join(format!(
        "checkpoints/.iter_0000004.safetensors.{}.tmp",
        std::process::id()
    ));
    std::fs::write(&gone, b"partial").unwrap();
    std::fs::write(&alive, b"in progress").unwrap();
    assert!(train(&data, &run, &["--iterations", "1"]).status.success());
    assert!(!gone.exists(), "the stale temporary file stayed");
    assert!(alive.exists(), "a live writer's file was removed");
}
