//! The PyTorch speed peer (scripts/peer/rccr_iteration.py, docs/gpu-acceptance.md) on the
//! CPU with the small backbone: both modes run, the report has the fields
//! scripts/gpu/report.py compares, and the losses of iteration 0 are sane against
//! hand-derived values: L_CE of a freshly initialised classifier (ASPP weights
//! N(0, 0.01)) is close to ln(C), the cross-entropy of a uniform prediction; L_cont of
//! one anchor with n negatives lies in (0, ln(1 + n) + 2 / tau] for unit vectors. Then
//! `rccr-train bench` at the same settings and `report.py compare` of the two: the ratio
//! it prints is peer ms / rccr-train ms of the two files.

use rccr_test_support::{run_python, Deps};
use serde_json::Value;
use std::process::Command;

const SETTINGS: [&str; 12] = [
    "--backbone",
    "small",
    "--crop",
    "64",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--iterations",
    "2",
    "--warmup",
    "1",
];

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mode<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["modes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mode"] == name)
        .unwrap_or_else(|| panic!("no mode {name} in {report}"))
}

#[test]
fn the_peer_runs_on_the_cpu_and_compares_with_the_bench() {
    let dir = tempfile::tempdir().unwrap();
    let peer_json = dir.path().join("peer.json");
    let mut args: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    args.extend(["--threads".into(), "1".into(), "--json-out".into()]);
    args.push(peer_json.display().to_string());
    run_python(Deps::Torch, "scripts/peer/rccr_iteration.py", &args);
    let peer = read(&peer_json);
    assert_eq!(peer["implementation"], "pytorch-peer");
    assert_eq!(
        (peer["backbone"].as_str(), peer["crop"].as_i64()),
        (Some("small"), Some(64))
    );
    for name in ["baseline", "rccr"] {
        let m = mode(&peer, name);
        let (mean, median, min) = (
            m["ms_per_iteration"].as_f64().unwrap(),
            m["ms_median"].as_f64().unwrap(),
            m["ms_min"].as_f64().unwrap(),
        );
        assert!(min > 0.0 && min <= median && min <= mean, "{m}");
        assert!(m["peak_memory_mib"].as_f64().unwrap() > 0.0);
        let first = &m["first_losses"];
        let ce = first["loss_ce"].as_f64().unwrap();
        assert!(
            (ce - 19f64.ln()).abs() < 0.5,
            "L_CE at iteration 0: {ce} vs ln 19"
        );
        assert!(first["loss_cons"].as_f64().unwrap().is_finite());
        let q = first["q"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&q));
        for l in ["loss_ce", "loss_cons", "loss_cont"] {
            assert!(
                m["last_losses"][l].as_f64().unwrap().is_finite(),
                "{l}: {m}"
            );
        }
    }
    // 64 px -> a 9 x 9 grid: 2 x 2 x 81 = 324 current cells, NS(R) keeps 162; no bank yet.
    let cont = mode(&peer, "rccr")["first_losses"]["loss_cont"]
        .as_f64()
        .unwrap();
    assert!(
        cont > 0.0 && cont <= 163f64.ln() + 2.0 / 0.1,
        "L_cont at iteration 0: {cont}"
    );
    assert_eq!(mode(&peer, "baseline")["first_losses"]["loss_cont"], 0.0);

    let bench_json = dir.path().join("bench.json");
    let o = Command::new(env!("CARGO_BIN_EXE_rccr-train"))
        .arg("bench")
        .args(SETTINGS)
        .args(["--threads", "1", "--json-out"])
        .arg(&bench_json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = read(&bench_json);
    assert_eq!(ours["implementation"], "rccr-train");
    let out = run_python(
        Deps::Torch,
        "scripts/gpu/report.py",
        &[
            "compare".to_string(),
            bench_json.display().to_string(),
            peer_json.display().to_string(),
        ],
    );
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["baseline", "rccr"] {
        let want = mode(&peer, name)["ms_per_iteration"].as_f64().unwrap()
            / mode(&ours, name)["ms_per_iteration"].as_f64().unwrap();
        let got = cmp["modes"][name]["peer_over_rccr_train"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{name}: {got} vs {want}");
    }
}
