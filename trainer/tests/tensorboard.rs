//! TensorBoard event files (src/tensorboard.rs) read back by TensorBoard's own reader
//! (tests/reference/tb_read.py on the `tensorboard` package of `make setup`): a short
//! "run" logs the trainer's real metrics.jsonl records (train lines with every loss,
//! lr, mu, alpha, q, anchors, gradient norms; val lines with mIoU and per-class IoU) and
//! images, is interrupted after its last checkpoint and resumed; TensorBoard must see
//! every tag with each step once, the resumed values, and the images at their sizes and
//! pixels.

mod common;

use image::{Rgb, RgbImage};
use rccr_test_support::{python, repo_root, run_python, Deps};
use rccr_trainer::metrics::{ClassIous, ValRecord};
use rccr_trainer::tensorboard::{self, TbWriter};
use rccr_trainer::trainer::{GradNorms, StepStats};
use std::collections::BTreeMap;
use std::path::Path;

/// TensorBoard's reader on a folder of event files (prints what it found as JSON).
const TB_READ: &str = "trainer/tests/reference/tb_read.py";

/// What TensorBoard's reader found in `dir`.
fn read_back(dir: &Path) -> serde_json::Value {
    let out = run_python(Deps::Py, TB_READ, &[dir]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A train line as the trainer writes it (`run::record` of a step's figures).
fn train_line(step: u64, run: f64) -> serde_json::Value {
    let x = step as f64 + run;
    let stats = StepStats {
        iteration: step,
        loss_ce: 1.0 / x,
        loss_cons: 0.5 / x,
        loss_cont: 0.25 / x,
        loss_total: 1.75 / x,
        lr: 2.5e-4 * (1.0 - step as f64 / 100.0).powf(0.9),
        mu: 0.01 * (-5.0 * (1.0 - step as f64 / 100.0f64).sqrt()).exp(),
        alpha: 0.99,
        kept_anchors: 1000 + step as i64,
        box_anchors: 2000,
        negatives: 8000,
        q: 0.3 + 0.01 * x,
        grads: Some(GradNorms {
            grad_norm_ce: 2.0 + x,
            grad_norm_cons: 1.0,
            grad_norm_cont: 0.1 * x,
            grad_share: 0.05,
        }),
        ..StepStats::default()
    };
    serde_json::to_value(rccr_trainer::run::record(&stats, 0.2 + run, 1)).unwrap()
}

fn val_line(step: u64, run: f64) -> serde_json::Value {
    let record = ValRecord {
        kind: "val",
        iteration: step,
        miou: 0.3 + run + step as f64 / 1000.0,
        miou_16: None,
        miou_13: None,
        per_class_iou: ClassIous(vec![
            ("road".into(), Some(0.9 - run)),
            ("sidewalk".into(), Some(step as f64 / 100.0)),
            ("train".into(), None),
        ]),
        images: 50,
        seconds: 1.5,
    };
    serde_json::to_value(record).unwrap()
}

/// A 3-panel picture (input, ground truth, prediction) whose pixels depend on `step`.
fn panels(step: u64) -> RgbImage {
    let panel = |c: u8| {
        RgbImage::from_fn(6, 4, |x, y| {
            Rgb([c, (x * 40) as u8, (y * 60) as u8 + step as u8])
        })
    };
    tensorboard::side_by_side(&[panel(10), panel(120), panel(250)])
}

type Expected = BTreeMap<String, BTreeMap<u64, f32>>;

/// Logs steps `steps` of a run (train every 2, val + image every 10) and what the reader
/// should then show (later writes of a step replace earlier ones, as the purge does).
fn log_run(
    w: &mut TbWriter,
    steps: std::ops::RangeInclusive<u64>,
    run: f64,
    expected: &mut Expected,
) {
    for step in steps.filter(|s| s % 2 == 0) {
        let mut lines = vec![train_line(step, run)];
        if step % 10 == 0 {
            lines.push(val_line(step, run));
            w.add_image("val/panels", step, &panels(step)).unwrap();
        }
        for line in lines {
            let scalars = tensorboard::scalars_of(&line);
            assert_eq!(tensorboard::step_of(&line), Some(step));
            w.add_scalars(step, &scalars).unwrap();
            for (tag, v) in scalars {
                expected.entry(tag).or_default().insert(step, v as f32);
            }
        }
    }
}

#[test]
fn a_short_run_with_a_resume_reads_back_in_tensorboard() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let mut expected = Expected::new();
    // The first process logs up to step 24, its last checkpoint being at step 20.
    let mut first = TbWriter::create(&tb).unwrap();
    log_run(&mut first, 1..=24, 0.0, &mut expected);
    drop(first);
    for steps in expected.values_mut() {
        steps.retain(|&s, _| s <= 20);
    }
    // The resumed process: a new file, steps continue from 21 with other values.
    let mut second = TbWriter::resume(&tb, 21).unwrap();
    log_run(&mut second, 21..=40, 0.5, &mut expected);
    second.add_scalar("train/custom", 40, 1.25).unwrap();
    second.flush().unwrap();
    expected
        .entry("train/custom".into())
        .or_default()
        .insert(40, 1.25);
    let second_path = second.path().to_path_buf();
    drop(second);

    let got = read_back(&tb);
    let files = got["files"].as_object().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains_key(second_path.file_name().unwrap().to_str().unwrap()));
    assert!(files.keys().all(|f| f.starts_with("events.out.tfevents.")));

    let scalars = got["scalars"].as_object().unwrap();
    let tags: Vec<&String> = scalars.keys().collect();
    assert_eq!(tags, expected.keys().collect::<Vec<_>>());
    for tag in [
        "train/loss_ce",
        "train/loss_cons",
        "train/loss_cont",
        "train/loss_total",
        "train/lr",
        "train/mu",
        "train/alpha",
        "train/q",
        "train/kept_anchors",
        "train/grad_norm_ce",
        "train/grad_share",
        "train/seconds_per_iteration",
        "val/miou",
        "val/iou/road",
        "val/iou/sidewalk",
    ] {
        assert!(scalars.contains_key(tag), "no {tag} in {tags:?}");
    }
    assert!(!scalars.contains_key("val/iou/train") && !scalars.contains_key("val/miou_16"));
    for (tag, want) in &expected {
        let events: Vec<(u64, f32)> = scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap() as f32))
            .collect();
        let want: Vec<(u64, f32)> = want.iter().map(|(&s, &v)| (s, v)).collect();
        assert_eq!(events, want, "{tag}");
    }

    let images = got["images"]["val/panels"].as_array().unwrap();
    let steps: Vec<u64> = images.iter().map(|e| e[0].as_u64().unwrap()).collect();
    assert_eq!(steps, [10, 20, 30, 40]);
    for e in images {
        let step = e[0].as_u64().unwrap();
        assert_eq!((e[1].as_u64(), e[2].as_u64()), (Some(18), Some(4)));
        let pixels: Vec<u8> = e[3]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(pixels, panels(step).into_raw(), "pixels at step {step}");
    }
}

#[test]
fn corrupt_records_are_caught_by_tensorboards_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TbWriter::create(dir.path()).unwrap();
    w.add_scalar("a", 1, 2.0).unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    // Sanity of the check above: flip one byte of the last event's data; the CRC
    // mismatch makes TensorBoard's record reader fail.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = python(Deps::Py)
        .arg(repo_root().join(TB_READ))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("crc32 check"));
}

/// `rccr-train train` itself: every scalar of metrics.jsonl reaches TensorBoard with its
/// step and value, and each validation adds the pictures (input | truth | prediction).
#[test]
fn training_writes_what_metrics_jsonl_holds_and_val_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let bin = env!("CARGO_BIN_EXE_rccr-train");
    common::synth_cli(bin, &data, 4);
    let run = tmp.path().join("run");
    let out = common::train_command(bin, &common::gta5(&data), "128x64", &data, &run)
        .args(["--iterations", "4", "--val-every", "2", "--log-every", "1"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let tb = read_back(&run.join("tb"));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut checked = 0;
    for line in &lines {
        let step = line["iteration"].as_u64().unwrap();
        for (tag, value) in rccr_trainer::tensorboard::scalars_of(line) {
            let series = tb["scalars"][&tag]
                .as_array()
                .unwrap_or_else(|| panic!("no {tag}"));
            let got = series
                .iter()
                .find(|p| p[0].as_u64() == Some(step))
                .unwrap_or_else(|| panic!("{tag} has no step {step}"))[1]
                .as_f64()
                .unwrap();
            assert!(
                (got - value).abs() <= 1e-6 * value.abs().max(1.0),
                "{tag}@{step}: {got} vs {value}"
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} scalars");
    assert!(tb["scalars"]["val/miou"].as_array().unwrap().len() == 2);
    for i in 0..2 {
        let img = tb["images"][format!("val/image_{i}")].as_array().unwrap();
        let steps: Vec<u64> = img.iter().map(|e| e[0].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![2, 4]);
        assert_eq!(
            (img[0][1].as_u64(), img[0][2].as_u64()),
            (Some(3 * 128), Some(64))
        );
    }
}
