//! Whole training iterations checked against an independent implementation: `rccr-train
//! trace` runs K = 3 iterations (2 on MiT) on tiny synthetic data (the memory bank holds
//! entries from t = 2) and writes every tensor of each step;
//! tests/reference/rccr_replay.py, written from the paper in plain PyTorch (float64),
//! recomputes the pseudo-labels, q, the anchor / label / keep masks, L_CE, L_cons, L_cont
//! and L, the gradients, the SGD step, the EMA teacher and the BN statistics, and fails on
//! any disagreement; it also replays the successors' terms (DAFormer's rare-class
//! sampling, thing-class feature distance, warm-up, AdamW and pseudo-label row ignoring;
//! MIC's masked image consistency) and, for a MiT network, re-types the Mix Transformer
//! and DAFormer's decoder (SegFormer Sec. 3; DAFormer Sec. 3.2) with RCCR's grid on the
//! fused decoder feature. Seven cases: (a) rccr with every component, mu constant 1,
//! thresholds at which PS keeps some anchors and drops others and 0 < q < 1; (b) rccr
//! without PS, MB and NS(R) (paper mu schedule, default lr); (d) rccr without NS(C), where
//! only Eq. 8 keeps an anchor's own cells out of its negatives; (c) the baseline; (e) rccr
//! as (a) with RCS, FD, MIC, AdamW (decoupled weight decay 0.05), a 5-iteration warm-up
//! and the top 8 / bottom 16 pseudo-label rows ignored; (f) the baseline with MIC and FD
//! at their default weights, SGD, no warm-up; (g) rccr on MiT-B0 with the DAFormer
//! decoder (stride-4 logits upsampled with align_corners false, the 1/8 grid subsampled
//! from the fused decoder feature, the decoder's BN trained in the head group), AdamW
//! (weight decay 0.05, none on the LayerNorms), drop path and decoder dropout 0 so that
//! the replay is deterministic. Two tampered copies of a case (e) step (MIC on but its
//! tensors gone; L_FD off by 1 %) must make the replay fail.

mod common;

use rccr_models::weights;
use rccr_test_support::{repo_root, Deps};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::Kind;

const ITERATIONS: usize = 3;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rccr-train"))
}

fn python() -> Command {
    let torch = repo_root().join(".deps/torch");
    assert!(
        torch.join("torch").is_dir(),
        "PyTorch is missing from {} (the replay needs it): run `make setup`",
        torch.display()
    );
    rccr_test_support::python(Deps::TorchAndPy)
}

/// Runs `rccr-train trace` with the common tiny settings plus `extra`; returns the files.
fn trace(data: &Path, out: &Path, extra: &[&str]) -> Vec<PathBuf> {
    trace_steps(data, out, extra, ITERATIONS)
}

/// [`trace`] for `iterations` iterations.
fn trace_steps(data: &Path, out: &Path, extra: &[&str], iterations: usize) -> Vec<PathBuf> {
    let res = bin()
        .args(common::tiny_args(
            "trace",
            &common::gta5(data),
            "128x64",
            data,
            out,
        ))
        .args(["--prefetch", "1", "--seed", "3", "--device", "cpu"])
        .args(["--iterations", &iterations.to_string()])
        .args(extra)
        .output()
        .unwrap();
    common::assert_ok(&res);
    let files: Vec<PathBuf> = (1..=iterations)
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
    let report = common::text(&out);
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

/// Runs the replay on `file` and asserts that it fails with a report naming `expect`.
fn replay_must_fail(case: &str, file: &Path, expect: &str) {
    let script = repo_root().join("trainer/tests/reference/rccr_replay.py");
    let out = python().arg(&script).arg(file).output().unwrap();
    let report = common::text(&out);
    assert!(
        !out.status.success() && report.contains("REPLAY FAILED") && report.contains(expect),
        "case {case}: the replay should fail naming {expect:?}:\n{report}"
    );
}

/// A copy of trace `file` in `dir` without the tensors that `drop` selects and with the
/// scalar `scale.0` multiplied by `scale.1`.
fn tampered(file: &Path, dir: &Path, drop: impl Fn(&str) -> bool, scale: (&str, f64)) -> PathBuf {
    let tf = weights::read_tensors(file).unwrap();
    let scaled = &tf.tensors[scale.0] * scale.1;
    let kept = tf.tensors.iter().filter(|(n, _)| !drop(n)).map(|(n, t)| {
        let t = if n == scale.0 { &scaled } else { t };
        (n.clone(), t)
    });
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(file.file_name().unwrap());
    weights::write_tensors(&out, kept, &tf.metadata).unwrap();
    out
}

/// What one traced step offered L_cont and L_cons, read here from the file itself.
#[derive(Debug)]
struct StepFacts {
    /// Cells with `contrast.anchor_mask` set.
    anchors: i64,
    /// Cells of the 1/8 grid inside the CutMix box (pixel (8i, 8j) in [y0, y1) x [x0, x1)).
    in_box: i64,
    /// Memory-bank entries offered as negatives.
    bank: i64,
    /// The ClassMix weight of target pixels.
    q: f64,
}

fn facts(file: &Path) -> StepFacts {
    let tf = weights::read_tensors(file).unwrap();
    let get = |n: &str| tf.tensors.get(n).unwrap_or_else(|| panic!("{n} missing"));
    let mask = get("contrast.anchor_mask");
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
    StepFacts {
        anchors: mask.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]),
        in_box: rows * cols * size[0],
        bank: get("bank.label").numel() as i64,
        q: get("q").double_value(&[]),
    }
}

/// What one traced step offered the successors' terms, read from the file itself.
#[derive(Debug)]
struct SwitchFacts {
    /// Feature cells in `fd.mask` (thing-class cells L_FD averages over).
    fd_cells: Option<i64>,
    /// Source crops flagged `rcs.crop_hit` (they hold their rare-class draw).
    rcs_hits: Option<i64>,
    /// The weight of L_MIC's (and ClassMix's) target pixels.
    q: f64,
    /// Whether `mic.mask` masks some pixels and keeps others.
    mic_mixed: Option<bool>,
}

fn switch_facts(file: &Path) -> SwitchFacts {
    let tf = weights::read_tensors(file).unwrap();
    let count = |n: &str| {
        tf.tensors
            .get(n)
            .map(|t| t.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]))
    };
    let mic_mixed = tf.tensors.get("mic.mask").map(|m| {
        let kept = m.sum(Kind::Double).double_value(&[]);
        0.0 < kept && kept < m.numel() as f64
    });
    SwitchFacts {
        fd_cells: count("fd.mask"),
        rcs_hits: count("rcs.crop_hit"),
        q: tf.tensors["q"].double_value(&[]),
        mic_mixed,
    }
}

/// Asserts that the traced steps exercise FD (some thing-class cells), MIC (a mask that
/// masks and keeps, 0 < q so L_MIC has weight) and, when `rcs`, a rare-class crop hit.
fn assert_switches_exercised(case: &str, files: &[PathBuf], rcs: bool) {
    let steps: Vec<SwitchFacts> = files.iter().map(|f| switch_facts(f)).collect();
    println!("case {case}, per step: {steps:?}");
    assert!(
        steps
            .iter()
            .all(|s| s.fd_cells.is_some() && s.mic_mixed.is_some()),
        "case {case}: fd.mask / mic.mask missing from the trace ({steps:?})"
    );
    assert!(
        steps.iter().any(|s| s.fd_cells > Some(0)),
        "case {case}: no thing-class cell in any step's FD mask ({steps:?})"
    );
    assert!(
        steps.iter().all(|s| s.mic_mixed == Some(true)),
        "case {case}: a MIC mask masks all or nothing ({steps:?})"
    );
    assert!(
        steps.iter().any(|s| 0.0 < s.q),
        "case {case}: q = 0 at every step, L_MIC has no weight ({steps:?})"
    );
    if rcs {
        assert!(
            steps.iter().any(|s| s.rcs_hits > Some(0)),
            "case {case}: no RCS crop holds its class ({steps:?})"
        );
    }
}

/// Asserts that the traced rccr steps exercise PS (a step keeps some anchors of the box
/// and drops others, with bank negatives), the confidence weight (0 < q < 1 at some
/// step) and the bank (empty at t = 1, filled from t = 2).
fn assert_contrast_exercised(case: &str, files: &[PathBuf]) {
    let steps: Vec<StepFacts> = files.iter().map(|f| facts(f)).collect();
    println!("case {case}, per step: {steps:?}");
    assert!(
        steps
            .iter()
            .any(|s| 0 < s.anchors && s.anchors < s.in_box && s.bank > 0),
        "case {case}: no step where PS keeps some anchors and drops others with bank \
         negatives: adjust ps_threshold ({steps:?})"
    );
    assert!(
        steps.iter().any(|s| 0.0 < s.q && s.q < 1.0),
        "case {case}: q is 0 or 1 at every step: adjust pseudo_threshold ({steps:?})"
    );
    assert_eq!(steps[0].bank, 0, "case {case}: the bank is empty at t = 1");
    assert!(
        steps[1..].iter().all(|s| s.bank > 0),
        "case {case}: the bank offers negatives from t = 2 ({steps:?})"
    );
}

/// Flags of the rccr cases that exercise L_cont at full weight: mu = 1 throughout, a
/// learning rate at which three steps move the teacher.
const STRONG: [&str; 6] = ["--mu-schedule", "constant", "--mu-max", "1", "--lr", "0.01"];

#[test]
fn traced_iterations_match_the_independent_replay() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synth_cli(env!("CARGO_BIN_EXE_rccr-train"), &data, 4);

    // (a) rccr, every component, mu = 1 throughout. A random teacher is never 0.75
    // (delta) or 0.968 (q) confident; with delta = 0.4 and a q threshold of 0.5 step 1
    // has no anchor (L_cont = 0, the projector untouched) and q = 0, steps 2 and 3 keep
    // some anchors and drop others, with bank negatives, and 0 < q < 1.
    let cfg = tmp.path().join("thresholds.toml");
    std::fs::write(
        &cfg,
        "[method]\nps_threshold = 0.4\npseudo_threshold = 0.5\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut flags = vec!["--config", cfg, "--mode", "rccr"];
    flags.extend(STRONG);
    let a = trace(&data, &tmp.path().join("a"), &flags);
    assert_contrast_exercised("a", &a);
    replay("a (rccr, all components)", &a);

    // (b) rccr without PS, MB and NS(R).
    let b = trace(
        &data,
        &tmp.path().join("b"),
        &["--mode", "rccr", "--no-ps", "--no-mb", "--no-ns-random"],
    );
    replay("b (rccr --no-ps --no-mb --no-ns-random)", &b);

    // (d) rccr without NS(C): the anchor's own cells, which NS(C) would drop anyway
    // (same label), must be excluded from the negatives by Eq. 8 alone.
    let mut flags = vec!["--config", cfg, "--mode", "rccr", "--no-ns-category"];
    flags.extend(STRONG);
    let d = trace(&data, &tmp.path().join("d"), &flags);
    replay("d (rccr --no-ns-category)", &d);

    // (c) the baseline: mean teacher + ClassMix, no L_cont.
    let c = trace(&data, &tmp.path().join("c"), &["--mode", "baseline"]);
    replay("c (baseline)", &c);

    // (e) rccr as (a) with every successor's switch: RCS, FD (weight 0.5, so its gradient
    // shows in the updates), MIC, AdamW with weight decay 0.05, a 5-iteration warm-up
    // (lr factors 1e-6, 0.2, 0.4 at the three steps) and the top 8 / bottom 16 rows of
    // the 64-row target crop ignored in the pseudo-label weights.
    let cfg_e = tmp.path().join("successors.toml");
    std::fs::write(
        &cfg_e,
        "[method]\nps_threshold = 0.4\npseudo_threshold = 0.5\n[optim]\nweight_decay = 0.05\n",
    )
    .unwrap();
    let mut flags = vec!["--config", cfg_e.to_str().unwrap(), "--mode", "rccr"];
    flags.extend(STRONG);
    flags.extend([
        "--rcs",
        "--fd",
        "--fd-lambda",
        "0.5",
        "--mic",
        "--optimizer",
        "adamw",
        "--warmup-iters",
        "5",
        "--pseudo-ignore-top",
        "8",
        "--pseudo-ignore-bottom",
        "16",
    ]);
    let e = trace(&data, &tmp.path().join("e"), &flags);
    assert_switches_exercised("e", &e, true);
    replay(
        "e (rccr + RCS, FD, MIC, AdamW, warm-up, pseudo-label rows ignored)",
        &e,
    );
    // The replay bites: MIC switched on but its tensors gone; L_FD (at a step with
    // thing-class cells) off by 1 %.
    let dir = tmp.path().join("e-tampered");
    let no_mic = tampered(
        &e[1],
        &dir.join("no-mic"),
        |n| n.starts_with("mic.") || n == "loss.mic",
        ("q", 1.0),
    );
    replay_must_fail("e without MIC tensors", &no_mic, "mic switched on");
    let fd_step = e
        .iter()
        .find(|f| switch_facts(f).fd_cells > Some(0))
        .unwrap();
    let fd_off = tampered(fd_step, &dir.join("fd-off"), |_| false, ("loss.fd", 1.01));
    replay_must_fail("e with L_FD off by 1 %", &fd_off, "loss.fd: trace");

    // (f) the baseline with MIC and FD at their default weights, SGD, no warm-up; the
    // thresholds and learning rate of (a), at which the teacher becomes confident enough
    // for q > 0 (L_MIC has weight) within the three steps.
    let f = trace(
        &data,
        &tmp.path().join("f"),
        &[
            "--config", cfg, "--mode", "baseline", "--mic", "--fd", "--lr", "0.01",
        ],
    );
    assert_switches_exercised("f", &f, false);
    replay("f (baseline + MIC, FD)", &f);

    // (g) rccr on MiT-B0 + DAFormer (64 px crops: a multiple of 32, so stages 1..4 are
    // 16, 8, 4, 2 cells wide, the logits 16 x 16 and the RCCR grid 8 x 8) with the flags
    // of (a), two iterations (a float64 MiT step costs seconds). A random MiT teacher is
    // less confident than DeepLab's: at delta = 0.09 and a q threshold of 0.12, step 2
    // keeps 2 of its 8 box cells as anchors, with bank negatives, and 0 < q < 1. AdamW
    // with weight decay 0.05 (decaying a LayerNorm would show) and adam_eps = 1: the
    // update is then a smooth function of g, where eps << |g| makes it lr sign(g), a sign
    // that float32 noise flips on entries with |g| near the noise (the formula, moments
    // and decay rules are the same).
    let cfg_g = tmp.path().join("mit.toml");
    std::fs::write(
        &cfg_g,
        "[model]\ndrop_path_rate = 0.0\ndecoder_dropout = 0.0\n\
         [method]\nps_threshold = 0.09\npseudo_threshold = 0.12\n\
         [optim]\nadam_eps = 1.0\nweight_decay = 0.05\n",
    )
    .unwrap();
    let mut flags = vec!["--config", cfg_g.to_str().unwrap(), "--mode", "rccr"];
    flags.extend(["--backbone", "mit-b0", "--decoder", "daformer"]);
    flags.extend(["--optimizer", "adamw"]);
    flags.extend(STRONG);
    let g = trace_steps(&data, &tmp.path().join("g"), &flags, 2);
    assert_contrast_exercised("g", &g);
    replay("g (MiT-B0 + DAFormer, rccr, AdamW)", &g);
    println!(
        "trace_replay: seven cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
