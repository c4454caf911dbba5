//! Whole training iterations checked against an independent implementation: `rccr-train
//! trace` runs K = 3 iterations on tiny synthetic data (the memory bank holds entries from
//! t = 2) and writes every tensor of each step; tests/reference/rccr_replay.py, written
//! from the paper in plain PyTorch (float64), recomputes the pseudo-labels, q, the
//! anchor / label / keep masks, L_CE, L_cons, L_cont and L, the gradients, the SGD step,
//! the EMA teacher and the BN statistics, and fails on any disagreement. Three cases:
//! (a) rccr with every component, mu constant 1 and a PS threshold that keeps some
//! anchors and drops others; (b) rccr without PS, MB and NS(R); (c) the baseline.

use rccr_models::weights;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::Kind;

const ITERATIONS: usize = 3;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rccr-train"))
}

fn python() -> Command {
    let root = repo_root();
    let torch = root.join(".deps/torch");
    assert!(
        torch.join("torch").is_dir(),
        "PyTorch is missing from {} (the replay needs it): run `make setup`",
        torch.display()
    );
    let mut cmd = Command::new("python3");
    cmd.env(
        "PYTHONPATH",
        format!("{}:{}", torch.display(), root.join(".deps/py").display()),
    );
    cmd
}

fn synth(dir: &Path) {
    let out = bin()
        .args(["synth", "--count", "4", "--val-count", "2", "--size", "128x64", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `rccr-train trace` with the common tiny settings plus `extra`; returns the files.
fn trace(data: &Path, out: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let res = bin()
        .arg("trace")
        .arg("--source")
        .arg(format!("gta5:{}", data.join("gta5").display()))
        .arg("--target")
        .arg(format!("cityscapes:{}", data.join("cityscapes").display()))
        .arg("--out")
        .arg(out)
        .args([
            "--backbone",
            "small",
            "--crop",
            "64",
            "--batch-size",
            "2",
            "--workers",
            "1",
            "--prefetch",
            "1",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--source-size",
            "128x64",
            "--target-size",
            "128x64",
            "--quiet",
            "--iterations",
            &ITERATIONS.to_string(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "rccr-train trace failed:\n{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let files: Vec<PathBuf> = (1..=ITERATIONS)
        .map(|t| out.join(format!("step_{t:07}.safetensors")))
        .collect();
    for f in &files {
        assert!(f.is_file(), "trace file {} missing", f.display());
    }
    files
}

/// Runs the independent replay on `files`; panics with its report when it fails.
fn replay(case: &str, files: &[PathBuf]) {
    let script = repo_root().join("trainer/tests/reference/rccr_replay.py");
    let started = Instant::now();
    let out = python()
        .arg(&script)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (run `make setup`): {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "--- replay of case {case} ({:.1} s)\n{report}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the independent replay disagrees with `rccr-train trace` (case {case}):\n{report}"
    );
    assert!(report.contains("REPLAY OK"), "{report}");
}

/// Anchors kept and in-box cells of a trace step, read here from the file itself.
fn anchors(file: &Path) -> (i64, i64, i64) {
    let tf = weights::read_tensors(file).unwrap();
    let get = |n: &str| tf.tensors.get(n).unwrap_or_else(|| panic!("{n} missing"));
    let mask = get("contrast.anchor_mask");
    let kept = mask.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
    let size = mask.size();
    let (h, w) = (size[1], size[2]);
    let crop = get("input.x_s").size()[2];
    let b: Vec<i64> = Vec::try_from(get("cutmix.box").to_kind(Kind::Int64)).unwrap();
    let inside = |k: i64, lo: i64, hi: i64| {
        let p = (8 * k).min(crop - 1);
        lo <= p && p < hi
    };
    let rows = (0..h).filter(|&i| inside(i, b[0], b[2])).count() as i64;
    let cols = (0..w).filter(|&j| inside(j, b[1], b[3])).count() as i64;
    let bank = get("bank.label").numel() as i64;
    (kept, rows * cols * size[0], bank)
}

#[test]
fn traced_iterations_match_the_independent_replay() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data);

    // (a) rccr, every component, mu = 1 throughout; delta low enough that a random
    // teacher keeps some anchors and drops others.
    let cfg = tmp.path().join("ps.toml");
    std::fs::write(&cfg, "ps_threshold = 0.06\n").unwrap();
    let a = trace(
        &data,
        &tmp.path().join("a"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--mode",
            "rccr",
            "--mu-schedule",
            "constant",
            "--mu-max",
            "1",
            "--lr",
            "0.01",
        ],
    );
    let counts: Vec<(i64, i64, i64)> = a.iter().map(|f| anchors(f)).collect();
    println!("case a: (anchors kept, in-box cells, bank entries) per step: {counts:?}");
    assert!(
        counts.iter().all(|&(kept, _, _)| kept > 0),
        "PS kept no anchor at some step: lower ps_threshold ({counts:?})"
    );
    assert!(
        counts.iter().any(|&(kept, inbox, _)| kept < inbox),
        "PS dropped no anchor: raise ps_threshold ({counts:?})"
    );
    assert_eq!(counts[0].2, 0, "the bank is empty at t = 1");
    assert!(
        counts[1..].iter().all(|&(_, _, bank)| bank > 0),
        "the bank offers negatives from t = 2 ({counts:?})"
    );
    replay("a (rccr, all components)", &a);

    // (b) rccr without PS, MB and NS(R).
    let b = trace(
        &data,
        &tmp.path().join("b"),
        &["--mode", "rccr", "--no-ps", "--no-mb", "--no-ns-random"],
    );
    replay("b (rccr --no-ps --no-mb --no-ns-random)", &b);

    // (c) the baseline: mean teacher + ClassMix, no L_cont.
    let c = trace(&data, &tmp.path().join("c"), &["--mode", "baseline"]);
    replay("c (baseline)", &c);
    println!(
        "trace_replay: three cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
