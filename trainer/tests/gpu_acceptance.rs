//! `scripts/gpu-acceptance.sh --dry-run` (docs/gpu-acceptance.md): on this build it
//! passes every check that needs no GPU (scripts, binaries, the options the GPU run uses
//! against each command's real --help, the libraries, the 64 MiB carry of the device
//! call, the JSON writer); on a broken build it names what is wrong. Needs the three
//! release binaries, which `make test` builds (`cargo build --release --workspace`).

use rccr_test_support::repo_root;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn dry_run(bin_dir: &Path, out: &Path) -> (Output, Value) {
    let o = Command::new("bash")
        .arg(repo_root().join("scripts/gpu-acceptance.sh"))
        .arg("--dry-run")
        .env("RCCR_BIN", bin_dir)
        .env("OUT", out)
        .env("WORK", out.join("work"))
        .env("STAGE", out.join("no-stage"))
        .output()
        .expect("bash runs");
    let report = std::fs::read_to_string(out.join("dry-run.json")).unwrap_or_else(|e| {
        panic!(
            "no dry-run.json ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (
        o,
        serde_json::from_str(&report).expect("dry-run.json is JSON"),
    )
}

fn status<'a>(report: &'a Value, step: &str) -> (&'a str, &'a str) {
    let s = &report["steps"][step];
    (
        s["status"].as_str().unwrap_or("absent"),
        s["note"].as_str().unwrap_or(""),
    )
}

#[test]
fn the_dry_run_passes_on_this_build() {
    let bin = Path::new(env!("CARGO_BIN_EXE_rccr-train"))
        .parent()
        .unwrap();
    for b in ["rccr-export", "rccr-infer"] {
        assert!(
            bin.join(b).exists(),
            "{b} is not built in {}: run `cargo build --release --workspace` (make test does)",
            bin.display()
        );
    }
    let out = tempfile::tempdir().unwrap();
    let (o, report) = dry_run(bin, out.path());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "dry run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for step in [
        "scripts",
        "binaries",
        "options",
        "libraries",
        "carry-main",
        "json-writer",
    ] {
        assert_eq!(
            status(&report, step).0,
            "ok",
            "{step}: {:?}\n{stdout}",
            status(&report, step)
        );
    }
    // No staged ONNX Runtime in this test's STAGE: a preparation step, not a failure.
    assert_eq!(status(&report, "carry-ort").0, "pending");
    assert!(
        stdout.contains("command='scripts/gpu-acceptance.sh'"),
        "{stdout}"
    );
}

/// A fake binary: a shell script printing `help` for --help, padded to `bytes`.
fn fake(dir: &Path, name: &str, help: &str, bytes: u64) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho '{help}'\nexit 0\n")).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(bytes).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
}

#[test]
fn the_dry_run_names_a_missing_option_an_oversized_carry_and_missing_binaries() {
    let out = tempfile::tempdir().unwrap();
    let bin = out.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let (o, report) = dry_run(&bin, out.path());
    assert!(!o.status.success());
    let (s, note) = status(&report, "binaries");
    assert!(
        s == "failed" && note.contains("cargo build --release --workspace"),
        "{note}"
    );

    // Every option of every command, except bench's --channels-last; one binary of 70 MiB.
    let all = "--backbone --crop --batch-size --device --mode --precision --iterations \
               --warmup --json-out --dist-backend --out --count --val-count --size --source \
               --target --val-every --save-every --source-size --target-size --val-size \
               --workers --val-limit --sync-bn --checkpoint --json --fp16 --model --images \
               --labels --input-size --provider --quiet --pred";
    fake(&bin, "rccr-train", all, 1000);
    fake(&bin, "rccr-export", all, 70 << 20);
    fake(&bin, "rccr-infer", all, 1000);
    let (o, report) = dry_run(&bin, out.path());
    assert!(!o.status.success());
    let (s, note) = status(&report, "options");
    assert_eq!(s, "failed");
    assert_eq!(note, "unknown: [rccr-train bench --channels-last]");
    let (s, note) = status(&report, "carry-main");
    assert!(s == "failed" && note.contains("binaries 70 MiB"), "{note}");
    // Scripts are not libtorch programs: the NCCL/CUDA link check fails.
    assert_eq!(status(&report, "libraries").0, "failed");
}
