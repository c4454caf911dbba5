//! Whole-iteration behaviour of Algorithm 1 on the CPU with the `small` backbone:
//! training lowers the source loss on tiny synthetic data read through the real loaders;
//! a run stopped at k and resumed reaches exactly the losses of an uninterrupted run; a
//! NaN loss stops training with an error naming the iteration and the term, before any
//! weight changes; every Table 3 switch changes what the iteration does.

mod common;

use rccr_models::{Backbone, ModelConfig};
use rccr_trainer::checkpoint;
use rccr_trainer::config::{Components, Mode, TrainConfig};
use rccr_trainer::run::{run, RunOptions};
use rccr_trainer::trainer::Trainer;
use rccr_trainer::Error;
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn make_data(dir: &Path) {
    common::synth_lib(dir);
}

fn tiny(dir: &Path, iterations: u64) -> TrainConfig {
    common::tiny_config(dir, iterations)
}

fn train_lines(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .collect()
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

#[test]
fn a_few_iterations_lower_the_source_loss() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(&tmp.path().join("data"));
    let mut cfg = tiny(&tmp.path().join("data"), 40);
    cfg.optim.lr = 2.5e-3;
    let out = tmp.path().join("run");
    let summary = run(&cfg, &opts(&out)).unwrap();
    assert_eq!(summary.iterations, 40);
    let lines = train_lines(&out);
    assert_eq!(lines.len(), 40);
    let ce: Vec<f64> = lines
        .iter()
        .map(|l| l["loss_ce"].as_f64().unwrap())
        .collect();
    let first = ce[..5].iter().sum::<f64>() / 5.0;
    let last = ce[35..].iter().sum::<f64>() / 5.0;
    assert!(
        last < 0.8 * first,
        "source loss should fall: first five {first:.3}, last five {last:.3}"
    );
    for l in &lines {
        for key in [
            "loss_cons",
            "loss_cont",
            "lr",
            "mu",
            "q",
            "kept_anchors",
            "seconds_per_iteration",
        ] {
            assert!(!l[key].is_null(), "metrics line lacks {key}: {l}");
        }
    }
    // Validation ran at the end; the checkpoint holds both networks and loads for export.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(log
        .lines()
        .any(|l| l.contains("\"kind\":\"val\"") && l.contains("\"road\"")));
    let ck = out.join("checkpoints/iter_0000040.safetensors");
    let teacher =
        rccr_models::checkpoint::load_network(&ck, rccr_models::checkpoint::TEACHER, Device::Cpu)
            .unwrap();
    assert!(teacher.report.is_exact(), "{:?}", teacher.report);
    assert_eq!(teacher.info.iteration, 40);
    assert!(out.join("config.json").exists());
}

#[test]
fn resume_reaches_the_same_losses_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let mut cfg = tiny(&data, 6);
    // Every anchor kept (PS off), so L_cont, NS(R), NS(C) and the memory bank all act.
    cfg.method.components.ps = false;
    cfg.run.save_every = 3;
    let full = tmp.path().join("full");
    run(&cfg, &opts(&full)).unwrap();
    let part = tmp.path().join("part");
    run(
        &cfg,
        &RunOptions {
            stop_at: Some(4),
            ..opts(&part)
        },
    )
    .unwrap();
    // Stopped at 4 with checkpoints at 3 and 4; resume from the earlier one.
    let ck = part.join("checkpoints/iter_0000003.safetensors");
    let loaded = checkpoint::load(&ck).unwrap();
    assert_eq!(loaded.iteration, 3);
    assert_eq!(
        loaded.bank().len(),
        3,
        "the memory bank travels in the checkpoint"
    );
    run(
        &cfg,
        &RunOptions {
            resume: Some(ck),
            ..opts(&part)
        },
    )
    .unwrap();
    let a = train_lines(&full);
    let b = train_lines(&part);
    assert_eq!(a.len(), 6);
    assert_eq!(
        b.len(),
        6,
        "the stopped run logged 4 iterations; resuming from 3 rewrites the 4th"
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["iteration"], y["iteration"]);
        for key in ["loss_ce", "loss_cons", "loss_cont", "q", "lr", "mu"] {
            let (u, v) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (u - v).abs() <= 1e-6,
                "iteration {}: {key} {u} (uninterrupted) vs {v} (resumed)",
                x["iteration"]
            );
        }
        assert_eq!(x["kept_anchors"], y["kept_anchors"]);
    }
    assert!(a[5]["loss_cont"].as_f64().unwrap() > 0.0);
}

fn small_cfg(mode: Mode, components: Components) -> TrainConfig {
    let mut c = TrainConfig {
        model: ModelConfig::new(Backbone::Small, 5),
        ..TrainConfig::default()
    };
    c.data.crop = 64;
    (c.method.mode, c.method.components) = (mode, components);
    c.method.bank_per_iteration = 40;
    (c.run.iterations, c.run.device) = (100, "cpu".into());
    c
}

fn snapshot(vs: &tch::nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].copy()
}

#[test]
fn a_nan_loss_stops_before_any_weight_changes() {
    let mut t = Trainer::new(small_cfg(Mode::Rccr, Components::default()), Device::Cpu).unwrap();
    let (xs, ys, xt) = common::batch(1);
    t.step(&xs, &ys, Some(&xt)).unwrap();
    t.step(&xs, &ys, Some(&xt)).unwrap();
    let before = snapshot(&t.student_vs, "conv1.weight");
    let teacher_before = snapshot(&t.teacher_vs, "conv1.weight");
    let bad = xs.copy();
    let _ = bad.narrow(2, 0, 8).fill_(f64::NAN);
    match t.step(&bad, &ys, Some(&xt)) {
        Err(Error::NonFinite {
            iteration, term, ..
        }) => {
            assert_eq!(iteration, 3);
            assert_eq!(term, "loss_ce");
        }
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
    assert!(snapshot(&t.student_vs, "conv1.weight").equal(&before));
    assert!(snapshot(&t.teacher_vs, "conv1.weight").equal(&teacher_before));
    assert_eq!(t.iteration, 2);
    let msg = Error::NonFinite {
        iteration: 3,
        term: "loss_ce",
        value: f64::NAN,
    }
    .to_string();
    assert!(msg.contains("iteration 3") && msg.contains("loss_ce") && msg.contains("checkpoint"));
}

#[test]
fn every_table3_switch_changes_the_iteration() {
    let (xs, ys, xt) = common::batch(2);
    let all = Components::default();
    let step = |mode: Mode, c: Components| {
        let mut t = Trainer::new(small_cfg(mode, c), Device::Cpu).unwrap();
        let s1 = t.step(&xs, &ys, Some(&xt)).unwrap();
        let s2 = t.step(&xs, &ys, Some(&xt)).unwrap();
        // The teacher never receives gradients.
        for (name, v) in t.teacher_vs.variables() {
            assert!(!v.requires_grad(), "teacher {name} requires grad");
            assert!(!v.grad().defined(), "teacher {name} has a gradient");
        }
        (t, s1, s2)
    };
    // source-only: no target terms, the teacher is the student.
    let (t, s, _) = step(Mode::SourceOnly, all);
    assert_eq!((s.loss_cons, s.loss_cont, s.mu), (0.0, 0.0, 0.0));
    let sv = t.student_vs.variables();
    for (name, v) in t.teacher_vs.variables() {
        assert!(v.equal(&sv[&name]), "source-only teacher differs at {name}");
    }
    // baseline: L_cons, no L_cont.
    let (_, s, _) = step(Mode::Baseline, all);
    assert!(s.loss_cons > 0.0);
    assert_eq!((s.loss_cont, s.mu, s.kept_anchors), (0.0, 0.0, 0));
    // rccr without RWC is the baseline.
    let (_, s, _) = step(Mode::Rccr, Components { rwc: false, ..all });
    assert_eq!((s.loss_cont, s.kept_anchors), (0.0, 0));
    // RWC alone: every box cell is an anchor; negatives = 2 B h w (9 x 9 grid), no bank.
    let bare = Components {
        rwc: true,
        ns_random: false,
        ns_category: false,
        ps: false,
        mb: false,
    };
    let (_, s1, s2) = step(Mode::Rccr, bare);
    assert!(s1.loss_cont > 0.0 && s1.mu > 0.0);
    assert_eq!(s1.kept_anchors, s1.box_anchors);
    assert_eq!(s1.negatives, 2 * 2 * 9 * 9);
    assert_eq!(s2.negatives, 2 * 2 * 9 * 9);
    // NS(R): half of them.
    let (_, s, _) = step(
        Mode::Rccr,
        Components {
            ns_random: true,
            ..bare
        },
    );
    assert_eq!(s.negatives, 2 * 9 * 9);
    // MB: the second iteration also sees the first one's 40 + 40 bank entries.
    let (t, s1, s2) = step(Mode::Rccr, Components { mb: true, ..bare });
    assert_eq!(s1.negatives, 2 * 2 * 9 * 9);
    assert_eq!(s2.negatives, 2 * 2 * 9 * 9 + 80);
    assert_eq!(t.bank.len(), 160);
    // PS: a fresh network is not confident (max softmax <= 0.75), so no anchor survives.
    let (_, s, _) = step(Mode::Rccr, Components { ps: true, ..bare });
    assert!(s.box_anchors > 0);
    assert_eq!(s.kept_anchors, 0);
    assert_eq!(s.loss_cont, 0.0);
    // NS(C) changes the loss (same-label negatives leave the denominator).
    let (_, a, _) = step(Mode::Rccr, bare);
    let (_, b, _) = step(
        Mode::Rccr,
        Components {
            ns_category: true,
            ..bare
        },
    );
    assert!(
        b.loss_cont < a.loss_cont,
        "NS(C) {} vs all {}",
        b.loss_cont,
        a.loss_cont
    );
}

#[test]
fn checkpoints_keep_the_last_k_and_the_best() {
    use rccr_trainer::checkpoint::{Best, CheckpointDir, Saved};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_cfg(Mode::Rccr, Components::default());
    let t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let dir = CheckpointDir::create(tmp.path().join("checkpoints"), 2).unwrap();
    let best = Some(Best {
        iteration: 2,
        miou: 0.5,
    });
    for it in 1..=5 {
        dir.save(&Saved {
            student: &t.student_vs,
            teacher: &t.teacher_vs,
            optim: &t.opt,
            bank: &t.bank,
            frozen: Vec::new(),
            iteration: it,
            config: &cfg,
            best: if it >= 2 { best } else { None },
        })
        .unwrap();
    }
    assert_eq!(dir.present(), vec![2, 4, 5]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("checkpoints/index.json")).unwrap())
            .unwrap();
    assert_eq!(index["latest"], "iter_0000005.safetensors");
    assert_eq!(index["best"]["file"], "iter_0000002.safetensors");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn init_imports_a_torchvision_backbone_into_student_and_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_cfg(Mode::Rccr, Components::default());
    // A "torchvision" file: the encoder of another small network, plus the ImageNet head.
    let src = tch::nn::VarStore::new(Device::Cpu);
    tch::manual_seed(99);
    let _net = rccr_models::RccrNet::new(&src.root(), &cfg.model);
    let vars = src.variables();
    let fc = Tensor::zeros([10, 128], (Kind::Float, Device::Cpu));
    let mut tensors: Vec<(String, &Tensor)> = vars
        .iter()
        .filter(|(n, _)| rccr_models::weights::is_encoder_var(n))
        .map(|(n, t)| (n.clone(), t))
        .collect();
    tensors.push(("fc.weight".into(), &fc));
    let path = tmp.path().join("backbone.safetensors");
    rccr_models::weights::write_tensors(&path, tensors, &Default::default()).unwrap();
    cfg.run.init = Some(path);
    let t = rccr_trainer::run::build_trainer(&cfg, Device::Cpu, None).unwrap();
    for name in ["conv1.weight", "layer4.0.conv2.weight", "bn1.running_var"] {
        assert!(
            t.student_vs.variables()[name].equal(&vars[name]),
            "student {name}"
        );
        assert!(
            t.teacher_vs.variables()[name].equal(&vars[name]),
            "teacher {name}"
        );
    }
    // The classifier is not part of the backbone: it keeps its own initialisation.
    let w = "layer5.conv2d_list.0.weight";
    assert!(!t.student_vs.variables()[w].equal(&vars[w]));
}
