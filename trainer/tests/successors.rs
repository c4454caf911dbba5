//! The successors' switches (rare-class sampling, feature distance, MIC, pseudo-label
//! region ignoring, AdamW with warm-up; docs/method.md "Successors' strategies") keep the
//! two guarantees of the trainer with every switch on:
//! - pairing: a `baseline` run and an `rccr` run with mu = 0 of one seed end with
//!   bit-identical teachers (their extra random choices draw from their own streams);
//!   controls: lambda_MIC and lambda_FD do change the teacher, so the comparison can fail;
//! - exact resume: a run stopped at k and resumed from its checkpoint ends with the
//!   student, teacher, optimiser state and frozen encoder of an uninterrupted run, bit
//!   for bit.

mod common;

use common::{differing, train, try_train};
use rccr_trainer::config::{Mode, TrainConfig};
use std::path::Path;

const ITERATIONS: u64 = 8;

/// libtorch's global generator initialises the networks: tests of this file run one at a
/// time so that no other test's networks draw from it in between.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(data: &Path, mode: Mode, mu_max: f64) -> TrainConfig {
    common::every_switch_config(data, mode, mu_max, ITERATIONS)
}

#[test]
fn pairing_holds_with_every_switch_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synth_lib(&data);
    let base = train(
        &config(&data, Mode::Baseline, 0.0),
        &tmp.path().join("b"),
        None,
        None,
    );
    let zero = train(
        &config(&data, Mode::Rccr, 0.0),
        &tmp.path().join("r"),
        None,
        None,
    );
    common::assert_same_under(&base, &zero, &["teacher."]);
    assert!(base.keys().any(|n| n.starts_with("optim.adam.exp_avg.")));
    assert!(base.keys().any(|n| n.starts_with("fd.")));
    let teachers = base.keys().filter(|n| n.starts_with("teacher.")).count();
    for (what, tweak) in [
        (
            "lambda_MIC = 0",
            Box::new(|c: &mut TrainConfig| c.method.mic.lambda = 0.0)
                as Box<dyn Fn(&mut TrainConfig)>,
        ),
        (
            "lambda_FD = 0",
            Box::new(|c: &mut TrainConfig| c.method.fd.lambda = 0.0),
        ),
    ] {
        let mut c = config(&data, Mode::Baseline, 0.0);
        tweak(&mut c);
        let other = train(&c, &tmp.path().join(what.replace(' ', "")), None, None);
        let n = differing(&base, &other, "teacher.").len();
        assert!(
            n > teachers / 2,
            "{what} changed only {n} of {teachers} teacher tensors"
        );
    }
}

#[test]
fn resume_is_exact_with_every_switch_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synth_lib(&data);
    let cfg = config(&data, Mode::Rccr, 0.1);
    let whole = train(&cfg, &tmp.path().join("whole"), None, None);
    let resumed = common::stopped_at_3_and_resumed_from_2(&cfg, &tmp.path().join("part"));
    let prefixes = ["student.", "teacher.", "optim.", "fd.", "bank."];
    common::assert_same_under(&whole, &resumed, &prefixes);
}

#[test]
fn resuming_with_fd_from_a_run_without_it_is_refused_naming_the_fix() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synth_lib(&data);
    let mut cfg = config(&data, Mode::Baseline, 0.0);
    (cfg.method.fd.enabled, cfg.run.save_every) = (false, 2);
    let out = tmp.path().join("run");
    train(&cfg, &out, Some(2), None);
    cfg.method.fd.enabled = true;
    let ck = out.join("checkpoints/iter_0000002.safetensors");
    let err = try_train(&cfg, &out, None, Some(&ck))
        .expect_err("a resume with FD from a checkpoint without its frozen encoder must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("fd.") && msg.contains("resume without --fd"),
        "{msg}"
    );
}
