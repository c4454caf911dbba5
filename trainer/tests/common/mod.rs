//! Helpers shared by the trainer's integration tests: tiny synthetic data and process
//! output. (Each test binary uses a subset.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// stdout then stderr of a finished process.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `rccr-train synth` (binary `bin`) into `dir`: `count` training and 2 val images per
/// domain at 128x64.
pub fn synth_cli(bin: &str, dir: &Path, count: u32) {
    let out = Command::new(bin)
        .args(["synth", "--out"])
        .arg(dir)
        .args([
            "--count",
            &count.to_string(),
            "--val-count",
            "2",
            "--size",
            "128x64",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The same data through the library: 8 training and 2 val images per domain, 128x64.
pub fn synth_lib(dir: &Path) {
    use rccr_trainer::synth::{self, SynthArgs};
    let mut args = SynthArgs::new(dir);
    args.count = 8;
    args.val_count = 2;
    args.size = synth::ImageSize {
        width: 128,
        height: 64,
    };
    synth::run(&args).expect("synthetic data");
}
