//! Training a MiT (docs/method.md, "The MiT network") keeps the trainer's guarantees with
//! MiT's own randomness (stochastic depth, decoder dropout) and every switch on:
//! - pairing: `baseline` and `rccr` with mu = 0 of one seed end with bit-identical
//!   teachers, so the drop-path and dropout draws are not shifted by the contrastive
//!   branch; control: mu = 0.1 changes the teacher;
//! - exact resume: stopped at 3 and resumed from iteration 2, the student, teacher,
//!   AdamW state, FD's frozen MiT encoder and the memory bank equal an uninterrupted run;
//! - the SegFormer decoder trains in every mode, and RCCR without NS(R), NS(C) and MB.

mod common;

use common::{differing, train};
use rccr_models::{Backbone, Decoder};
use rccr_trainer::config::{Mode, TrainConfig};
use std::path::Path;

/// libtorch's global generator initialises the networks: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// MiT-B0 at 64 px crops (a multiple of 32: every stage has whole cells) with every
/// switch on ([`common::every_switch_config`]).
fn config(data: &Path, mode: Mode, mu_max: f64, iterations: u64) -> TrainConfig {
    let mut c = common::every_switch_config(data, mode, mu_max, iterations);
    c.model.set_backbone(Backbone::MitB0);
    assert!(c.model.drop_path() > 0.0 && c.model.dropout() > 0.0);
    c
}

fn data(tmp: &Path) -> std::path::PathBuf {
    let data = tmp.join("data");
    common::synth_lib(&data);
    data
}

#[test]
fn mit_pairing_and_resume_are_exact_with_every_switch_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let run = |mode, mu, name: &str| {
        train(
            &config(&data, mode, mu, 4),
            &tmp.path().join(name),
            None,
            None,
        )
    };
    let base = run(Mode::Baseline, 0.0, "b");
    let zero = run(Mode::Rccr, 0.0, "r0");
    common::assert_same_under(&base, &zero, &["teacher."]);
    assert!(
        base.keys().any(|n| n.starts_with("fd.block1.")),
        "FD's frozen MiT encoder"
    );
    let whole = run(Mode::Rccr, 0.1, "whole");
    let teachers = base.keys().filter(|n| n.starts_with("teacher.")).count();
    let moved = differing(&base, &whole, "teacher.").len();
    assert!(
        moved > teachers / 2,
        "mu = 0.1 changed {moved} of {teachers} teacher tensors"
    );
    let cfg = config(&data, Mode::Rccr, 0.1, 4);
    let resumed = common::stopped_at_3_and_resumed_from_2(&cfg, &tmp.path().join("part"));
    let prefixes = ["student.", "teacher.", "optim.", "fd.", "bank."];
    common::assert_same_under(&whole, &resumed, &prefixes);
}

#[test]
fn the_segformer_decoder_trains_in_every_mode_and_rccr_without_its_components() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let mut runs: Vec<(String, TrainConfig)> = [Mode::SourceOnly, Mode::Baseline, Mode::Rccr]
        .into_iter()
        .map(|m| {
            let mut c = config(&data, m, 0.1, 2);
            c.method.mic.enabled = m != Mode::SourceOnly; // MIC needs pseudo-labels
            (format!("{m:?}"), c)
        })
        .collect();
    // RCCR without NS(R), NS(C) and the memory bank: each one's "off" path runs.
    let mut c = config(&data, Mode::Rccr, 0.1, 2);
    let k = &mut c.method.components;
    (k.ns_random, k.ns_category, k.mb) = (false, false, false);
    runs.push(("rccr-without-ns-and-mb".into(), c));
    for (name, mut c) in runs {
        c.model.decoder = Some(Decoder::Segformer);
        let ck = train(&c, &tmp.path().join(&name), None, None);
        // SegFormer's head names (and no DAFormer fusion layer) in what was trained.
        assert!(
            ck.keys()
                .any(|n| n.starts_with("teacher.decode_head.linear_fuse.")),
            "{name}"
        );
        assert!(!ck.keys().any(|n| n.contains("fuse_layer")), "{name}");
        let finite = ck
            .iter()
            .filter(|(n, _)| n.starts_with("student."))
            .all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1);
        assert!(finite, "{name}: a non-finite student weight");
    }
}
