//! The speed options of the iteration (docs/gpu-acceptance.md) compute what the default
//! path computes. The default path is the one the PyTorch replay checks
//! (trainer/tests/trace_replay.rs), so it is the reference here: with `run.channels_last`
//! the networks' weights and inputs are laid out NHWC, and three rccr iterations (memory
//! bank filled, every Table 3 switch on) must give the same losses and weights up to
//! float rounding.

mod common;

use rccr_models::{Backbone, ModelConfig};
use rccr_trainer::config::TrainConfig;
use rccr_trainer::foreach::is_channels_last;
use rccr_trainer::trainer::Trainer;
use tch::{Device, Tensor};

fn cfg(channels_last: bool) -> TrainConfig {
    let mut c = TrainConfig {
        model: ModelConfig::new(Backbone::Small, 5),
        ..TrainConfig::default()
    };
    c.data.crop = 64;
    c.method.bank_per_iteration = 40;
    c.method.components.ps = false; // every box cell an anchor: L_cont's backward runs
    (c.run.iterations, c.run.device) = (100, "cpu".into());
    c.run.channels_last = channels_last;
    c
}

const NAMES: [&str; 4] = [
    "conv1.weight",
    "layer4.0.conv2.weight",
    "layer5.conv2d_list.0.weight",
    "projector.0.weight",
];

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn channels_last_iterations_match_the_default_layout() {
    let (xs, ys, xt) = common::batch(7);
    let mut plain = Trainer::new(cfg(false), Device::Cpu).unwrap();
    let mut nhwc = Trainer::new(cfg(true), Device::Cpu).unwrap();
    let w = |t: &Trainer, n: &str| t.student_vs.variables()[n].shallow_clone();
    assert!(is_channels_last(&w(&nhwc, "layer1.0.conv1.weight")));
    assert!(!is_channels_last(&w(&plain, "layer1.0.conv1.weight")));
    let snap = |t: &Trainer| {
        let get = |vs: &tch::nn::VarStore| -> std::collections::HashMap<&str, Tensor> {
            NAMES
                .iter()
                .map(|n| (*n, vs.variables()[*n].copy()))
                .collect()
        };
        (get(&t.student_vs), get(&t.teacher_vs))
    };
    let (before_a, before_b) = (snap(&plain), snap(&nhwc));
    for n in NAMES {
        assert!(before_a.0[n].equal(&before_b.0[n]), "same initial {n}");
    }
    for _ in 0..3 {
        let a = plain.step(&xs, &ys, Some(&xt)).unwrap();
        let b = nhwc.step(&xs, &ys, Some(&xt)).unwrap();
        assert!(a.loss_cont > 0.0 && a.kept_anchors > 0, "L_cont ran: {a:?}");
        for (x, y, term) in [
            (a.loss_ce, b.loss_ce, "loss_ce"),
            (a.loss_cons, b.loss_cons, "loss_cons"),
            (a.loss_cont, b.loss_cont, "loss_cont"),
        ] {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "{term}: {x} vs {y}"
            );
        }
        assert_eq!(a.kept_anchors, b.kept_anchors);
    }
    // The updates (after - before) agree, not only the weights (which barely move).
    for name in NAMES {
        for (who, a0, b0, a1, b1) in [
            (
                "student",
                &before_a.0,
                &before_b.0,
                &plain.student_vs,
                &nhwc.student_vs,
            ),
            (
                "teacher",
                &before_a.1,
                &before_b.1,
                &plain.teacher_vs,
                &nhwc.teacher_vs,
            ),
        ] {
            let da = a1.variables()[name].copy() - &a0[name];
            let db = b1.variables()[name].copy() - &b0[name];
            assert!(da.abs().max().double_value(&[]) > 0.0, "{who} {name} moved");
            let d = max_rel_diff(&db, &da);
            // The deltas of f32 weights carry ~1 ulp of the weight each: 1e-2 of the
            // update is that rounding; a wrong layout or gradient differs by O(1).
            assert!(d < 1e-2, "{who} {name}: updates differ by {d:e} (relative)");
        }
    }
}
