//! The `rccr-train` command line: the describe interface scripts rely on (reference
//! parameter counts of docs/method.md "The network"), the CUDA refusal on a machine
//! without one, a config file overridden by flags, and the bench report.

mod common;

use serde_json::Value;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rccr-train"))
}

#[test]
fn describe_prints_the_reference_counts() {
    let out = bin()
        .args([
            "describe",
            "--backbone",
            "resnet101",
            "--num-classes",
            "19",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The reference figures (docs/method.md "The network": the DACS DeepLab-v2 ResNet-101).
    assert_eq!(v["parameters"], 43_901_068);
    assert_eq!(
        v["parameters"].as_i64().unwrap() + v["projector_parameters"].as_i64().unwrap(),
        48_359_692
    );
    assert_eq!(v["output_stride"], 8);
}

/// SegFormer Tab. 1 lists MiT-B5's encoder as 81.4 M parameters; describe prints the
/// encoder apart from DAFormer's decoder and the projector.
#[test]
fn describe_prints_the_mit_encoder_count_apart() {
    let out = bin()
        .args(["describe", "--backbone", "mit-b5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["encoder_parameters"], 81_443_008);
    assert_eq!(v["decoder"], "daformer");
    assert_eq!(
        v["parameters"].as_i64().unwrap(),
        v["encoder_parameters"].as_i64().unwrap() + v["decoder_parameters"].as_i64().unwrap()
    );
    assert_eq!(
        (v["output_stride"].as_i64(), v["feature_width"].as_i64()),
        (Some(4), Some(256))
    );
    assert_eq!(v["model_config"]["input"]["bgr"], false);
}

#[test]
fn cuda_is_refused_where_there_is_none() {
    if tch::Cuda::is_available() {
        return;
    }
    let out = bin()
        .args([
            "bench",
            "--backbone",
            "small",
            "--device",
            "cuda",
            "--iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA device"), "{err}");
}

#[test]
fn bench_reports_both_modes_and_their_ratio() {
    let out = bin()
        .args([
            "bench",
            "--backbone",
            "small",
            "--crop",
            "32",
            "--batch-size",
            "1",
            "--device",
            "cpu",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes: Vec<&str> = v["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["baseline", "rccr"]);
    assert!(v["rccr_over_baseline"].as_f64().unwrap() > 0.0);
    assert!(v["modes"][1]["peak_memory_mib"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_builds_the_decoder_it_is_given_and_refuses_one_that_does_not_fit() {
    let bench = |decoder: &str| {
        bin()
            .args([
                "bench",
                "--backbone",
                "mit-b0",
                "--decoder",
                decoder,
                "--crop",
                "32",
            ])
            .args(["--batch-size", "1", "--device", "cpu", "--iterations", "1"])
            .args(["--warmup", "0", "--mode", "baseline", "--json"])
            .output()
            .unwrap()
    };
    let out = bench("segformer");
    common::assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backbone"], "mit-b0 + segformer");
    let out = bench("aspp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit backbone `mit-b0`"), "{err}");
}

#[test]
fn a_config_file_is_read_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    // The file's mu_max is invalid: refused before any data is read...
    std::fs::write(
        &cfg,
        "[model]\nbackbone = \"small\"\n[data]\nsource = \"gta5:/nonexistent\"\n\
         [method]\nmode = \"baseline\"\nmu_max = -1.0\n[run]\niterations = 7\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("run");
    let run = |extra: &[&str]| {
        bin()
            .args(["train", "--config"])
            .arg(&cfg)
            .args([
                "--device",
                "cpu",
                "--target",
                "cityscapes:/nonexistent",
                "--out",
            ])
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mu_max must be >= 0, got -1"), "{err}");
    // ...a flag overrides it, and the run then stops on the missing data, naming it.
    let out = run(&["--mu-max", "0.5", "--iterations", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("mu_max"), "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
    // A start that fails on its data writes nothing (docs/training.md, Failure behaviour).
    assert!(!out_dir.join("config.json").exists());
}

/// The value at `key` in the section of the default configuration that holds it (options
/// named after their field; `--dist-*` are `run.dist` fields, `--rcs-*`, `--fd-*`, `--mic-*`
/// those of `data.rcs`, `method.fd`, `method.mic`).
fn config_default(defaults: &Value, flag: &str) -> Option<String> {
    let key = flag.replace('-', "_");
    let found = match key.as_str() {
        "dist_backend" => Some(&defaults["run"]["dist"]["backend"]),
        "dist_timeout" => Some(&defaults["run"]["dist"]["timeout_s"]),
        "rcs_temperature" => Some(&defaults["data"]["rcs"]["temperature"]),
        "fd_lambda" => Some(&defaults["method"]["fd"]["lambda"]),
        "mic_lambda" => Some(&defaults["method"]["mic"]["lambda"]),
        "mic_ratio" => Some(&defaults["method"]["mic"]["ratio"]),
        _ => ["model", "data", "method", "optim", "run"]
            .iter()
            .find_map(|s| defaults[s].get(&key)),
    }?;
    match found {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

/// The `[default: V]` each option of `rccr-train SUB --help` shows and whether it takes
/// a value, by option name.
fn help_defaults(sub: &str) -> Vec<(String, Option<String>, bool)> {
    let out = bin().args([sub, "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    // One block per option: from its `--name` at the start of a line to the next.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        match t.strip_prefix("--") {
            Some(rest) => {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                blocks.push((name, t.to_string()));
            }
            None => {
                if let Some((_, b)) = blocks.last_mut() {
                    b.push(' ');
                    b.push_str(t);
                }
            }
        }
    }
    blocks
        .into_iter()
        .map(|(flag, block)| {
            let shown = block
                .split_once("[default: ")
                .map(|(_, r)| r.split_once(']').unwrap().0.to_string());
            let takes_value = block.contains(&format!("--{flag} <"));
            (flag, shown, takes_value)
        })
        .collect()
}

/// Every option of `rccr-train SUB --help` that takes a value and has a default in
/// `TrainConfig::default()` shows that default, and no other default is shown except
/// the subcommand's `own` ones; returns how many defaults agreed.
fn help_agrees_with_config(sub: &str, own: &[&str]) -> usize {
    let defaults = serde_json::to_value(rccr_trainer::config::TrainConfig::default()).unwrap();
    let mut checked = 0;
    for (flag, shown, takes_value) in help_defaults(sub) {
        if own.contains(&flag.as_str()) {
            continue;
        }
        let expected = config_default(&defaults, &flag).filter(|_| takes_value);
        assert_eq!(shown, expected, "{sub} --{flag}");
        checked += usize::from(shown.is_some());
    }
    checked
}

#[test]
fn help_defaults_are_the_config_defaults() {
    assert!(help_agrees_with_config("train", &[]) >= 20);
    assert!(help_agrees_with_config("trace", &[]) >= 20);
    assert_eq!(help_agrees_with_config("describe", &[]), 3);
    assert_eq!(
        help_agrees_with_config("bench", &["iterations", "warmup"]),
        11
    );
}

/// Every recipe of configs/ loads and validates, `describe --config` prints it resolved
/// with the switches its file sets (read here from the file's text, not from the code), and
/// a network flag overrides the file.
#[test]
fn recipes_load_and_describe_prints_them_resolved() {
    let dir = rccr_test_support::repo_root().join("configs");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let out = bin()
            .args(["describe", "--json", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &v["recipe"];
        let file: toml::Value = toml::from_str(&text).unwrap();
        let on = |section: &str, key: &str| {
            section
                .split('.')
                .try_fold(&file, |t, k| t.get(k))
                .and_then(|t| t.get(key))
                .and_then(toml::Value::as_bool)
                .unwrap_or(false)
        };
        assert_eq!(
            r["data"]["rcs"]["enabled"],
            on("data.rcs", "enabled"),
            "{}",
            path.display()
        );
        assert_eq!(
            r["method"]["fd"]["enabled"],
            on("method.fd", "enabled"),
            "{}",
            path.display()
        );
        assert_eq!(
            r["method"]["mic"]["enabled"],
            on("method.mic", "enabled"),
            "{}",
            path.display()
        );
        let mode = file["method"]["mode"].as_str().unwrap_or("rccr");
        assert_eq!(r["method"]["mode"], mode, "{}", path.display());
        assert!(
            text.contains("Origin"),
            "{} does not say where it comes from",
            path.display()
        );
        names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    for want in [
        "dacs",
        "rccr-paper",
        "daformer-strategies",
        "mic",
        "rccr-mic",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "configs/{want}.toml missing: {names:?}"
        );
    }
    // A flag overrides the file: mic.toml is DeepLabv2 ResNet-101; --backbone small wins.
    let out = bin()
        .args(["describe", "--json", "--backbone", "small", "--config"])
        .arg(dir.join("mic.toml"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recipe"]["model"]["backbone"], "small");
    assert_eq!(v["backbone"], "small");
    assert_eq!(v["recipe"]["optim"]["optimizer"], "adamw");
}
