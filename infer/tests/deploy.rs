//! Deployment features (docs/deployment.md) through the CLI: `rccr-infer bench` (latency
//! percentiles, stages apart, JSON and table) and `--shard K/N` + `score --merge` (three
//! shards merged equal one run over all images, every number but the timings).

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const W: u32 = 64;
const H: u32 = 32;

fn check_series(v: &Value, name: &str) -> (f64, f64) {
    let s = &v[name];
    let f = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{name}.{k} in {v}"));
    let (min, p50, p90, p99, max, mean) =
        (f("min"), f("p50"), f("p90"), f("p99"), f("max"), f("mean"));
    assert!(
        0.0 <= min && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{name}: {s}"
    );
    assert!(min <= mean && mean <= max, "{name}: {s}");
    // Five calls: the nearest-rank p99 is the slowest.
    assert_eq!(p99, max, "{name}: {s}");
    (mean, max)
}

#[test]
fn bench_prints_and_writes_latency_percentiles_with_stages_apart() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let json = d.path().join("lat.json");
    let o = cli("bench --provider cpu --threads 1 --input-size 64x32 --image-size 128x64")
        .words(&["--batch-size", "2", "--iterations", "5", "--warmup", "1"])
        .path("--model", &model)
        .path("--json", &json)
        .run();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for want in [
        "p50",
        "p90",
        "p99",
        "max",
        "preprocess",
        "model",
        "postprocess",
        "total",
        "images/s",
    ] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    let r = read_json(&json);
    assert_eq!(r["provider"], "cpu");
    assert_eq!(r["threads"], 1);
    assert_eq!(r["batch_size"], 2);
    assert_eq!(r["iterations"], 5);
    assert_eq!(r["warmup"], 1);
    assert_eq!(r["input_size"], serde_json::json!([64, 32]));
    assert_eq!(r["image_size"], serde_json::json!([128, 64]));
    let (total, _) = check_series(&r, "total_ms");
    let parts: f64 = ["preprocess_ms", "model_ms", "postprocess_ms"]
        .iter()
        .map(|n| check_series(&r, n).0)
        .sum();
    // Each call's total is the sum of its stages, so the means add up.
    assert!(
        (total - parts).abs() <= 1e-9 * total.max(1.0),
        "{total} vs {parts}"
    );
    let ips = r["images_per_second"].as_f64().unwrap();
    assert!(
        (ips - 2.0 * 1e3 / total).abs() <= 1e-6 * ips,
        "{ips} vs {total} ms per 2 images"
    );

    let o = cli("bench --iterations 0").path("--model", &model).run();
    assert!(!o.status.success());
    assert!(text(&o).contains("--iterations 0"), "{}", text(&o));
}

/// The report without the fields that are timings (and so differ between any two runs).
fn without_timings(mut v: Value) -> Value {
    let obj = v.as_object_mut().unwrap();
    for k in [
        "seconds",
        "images_per_second",
        "stage_ms",
        "megapixels_per_second",
    ] {
        obj.remove(k);
    }
    v
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn three_shards_merged_equal_one_run() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let ds = d.path().join("cs");
    cityscapes_dataset(&ds, 7, W, H);
    let (imgs, gt) = (ds.join("leftImg8bit/val"), ds.join("gtFine/val"));
    // One corrupt image (with its label): skipped in whichever shard holds it.
    std::fs::write(imgs.join("ulm/ulm_000099_000001_leftImg8bit.png"), b"junk").unwrap();
    save_gray(
        &gt.join("ulm/ulm_000099_000001_gtFine_labelIds.png"),
        W,
        H,
        vec![7; (W * H) as usize],
    );
    let run = |out: &Path, json: &Path, shard: Option<&str>| {
        let mut c = cpu_cli(&model, &imgs).words(&["--input-size", "32x16", "--threads", "1"]);
        if let Some(s) = shard {
            c = c.words(&["--shard", s]);
        }
        let o = c
            .path("--labels", &gt)
            .path("--out", out)
            .path("--json", json)
            .run();
        assert!(o.status.success(), "{}", text(&o));
    };
    let all = d.path().join("all.json");
    run(&d.path().join("out-all"), &all, None);
    let shards: Vec<_> = (1..=3)
        .map(|k| d.path().join(format!("s{k}.json")))
        .collect();
    for (k, json) in shards.iter().enumerate() {
        run(
            &d.path().join("out-shards"),
            json,
            Some(&format!("{}/3", k + 1)),
        );
    }
    // 8 images in sorted order, round robin: 3, 3 and 2 (the bad one counted as skipped).
    let counts: Vec<u64> = shards
        .iter()
        .map(|s| {
            let r = read_json(s);
            r["images"].as_u64().unwrap() + r["skipped"].as_array().unwrap().len() as u64
        })
        .collect();
    assert_eq!(counts, [3, 3, 2]);
    assert_eq!(
        read_json(&shards[0])["shard"],
        serde_json::json!({"index": 1, "count": 3})
    );

    let merged = d.path().join("merged.json");
    let mut args = vec!["score", "--merge"];
    args.extend(shards.iter().rev().map(|s| s.to_str().unwrap()));
    args.extend(["--json", merged.to_str().unwrap()]);
    let o = run_cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mIoU"),
        "{}",
        text(&o)
    );
    let (one, m) = (read_json(&all), read_json(&merged));
    assert_eq!(m["images"], 7);
    assert_eq!(m["skipped"].as_array().unwrap().len(), 1);
    assert!(one["confusion"]["counts"].as_array().unwrap().len() == 19);
    assert_eq!(
        without_timings(m),
        without_timings(one),
        "merged shards vs one run"
    );
    // The shards' outputs together are the one run's outputs.
    assert_eq!(
        files_under(&d.path().join("out-shards")),
        files_under(&d.path().join("out-all"))
    );

    // Incomplete or mixed sets are refused, naming the problem.
    let s = |i: usize| shards[i].to_str().unwrap();
    for (args, want) in [
        (vec![s(0), s(1)], "3/3 missing"),
        (vec![s(0), s(1), s(1), s(2)], "shard 2/3 is also"),
        (
            vec![s(0), s(1), s(2), all.to_str().unwrap()],
            "covers a whole image folder",
        ),
    ] {
        let mut a = vec!["score", "--merge"];
        a.extend(args);
        let o = run_cli(&a);
        assert!(!o.status.success(), "{args:?}", args = a);
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
}
