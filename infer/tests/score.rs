//! `rccr-infer score` against the official `cityscapesscripts` evaluation on generated
//! splits (every labelId 0..=33 in play: void ground truth, void predictions, a class only
//! predicted, a class absent everywhere), and its error cases.

mod common;

use common::*;

#[test]
fn score_agrees_with_the_official_script() {
    let d = tempfile::tempdir().unwrap();
    for (count, w, h, seed) in [(5, 96, 48, 1u64), (3, 257, 131, 2)] {
        let root = d.path().join(format!("split{seed}"));
        let (gt, pred) =
            rccr_infer::bench::write_synthetic_split(&root, count, w, h, seed).unwrap();
        let json = root.join("score.json");
        let o = run_score(&pred, &gt, &["--json", json.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let ours = read_json(&json);
        assert_eq!(ours["images"], count);
        let off = official(&root, &pred);
        assert_matches_official(&ours, &off);
        // The generator never predicts nor labels `train`, and never labels `truck`
        // (which it predicts): null and 0 respectively, as in the official script.
        assert!(ours["per_class"]["train"].is_null());
        assert_eq!(ours["per_class"]["truck"].as_f64(), Some(0.0));
    }
}

#[test]
fn protocols_average_the_right_classes() {
    let d = tempfile::tempdir().unwrap();
    let (gt, pred) = rccr_infer::bench::write_synthetic_split(d.path(), 3, 80, 40, 5).unwrap();
    let run = |classes: &str| {
        let json = d.path().join(format!("s{classes}.json"));
        let o = run_score(
            &pred,
            &gt,
            &["--classes", classes, "--json", json.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", text(&o));
        read_json(&json)
    };
    let all = run("19");
    for (n, dropped) in [
        (16, vec!["terrain", "truck", "train"]),
        (
            13,
            vec!["terrain", "truck", "train", "wall", "fence", "pole"],
        ),
    ] {
        let r = run(&n.to_string());
        let per = r["per_class"].as_object().unwrap();
        assert_eq!(per.len(), n);
        // Mean of the 19-class IoUs of the kept classes, computed here.
        let kept: Vec<f64> = all["per_class"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !dropped.contains(&k.as_str()))
            .filter_map(|(_, v)| v.as_f64())
            .collect();
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        assert!((r["miou"].as_f64().unwrap() - mean).abs() < 1e-12);
        for k in &dropped {
            assert!(!per.contains_key(*k));
        }
    }
}

#[test]
fn missing_and_bad_predictions() {
    let d = tempfile::tempdir().unwrap();
    let (gt, pred) = rccr_infer::bench::write_synthetic_split(d.path(), 4, 40, 20, 3).unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "score".to_string(),
            "--pred".into(),
            pred.display().to_string(),
            "--labels".into(),
            gt.display().to_string(),
            "--quiet".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cli = |extra: &[&str]| {
        let a = args(extra);
        run_cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A prediction with an id outside the table, one of another size, one RGB file.
    let files: Vec<_> = walk(&pred);
    save_gray(&files[0], 40, 20, vec![40; 800]);
    save_gray(&files[1], 20, 20, vec![7; 400]);
    save_rgb(&files[2], &image::RgbImage::new(40, 20));
    let json = d.path().join("r.json");
    let o = cli(&["--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["images"], 1);
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let all: String = skipped
        .iter()
        .map(|s| s["error"].as_str().unwrap().to_string() + "\n")
        .collect();
    assert!(all.contains("label id 40"), "{all}");
    assert!(all.contains("size mismatch"), "{all}");
    assert!(all.contains("single-channel"), "{all}");
    for f in &files[..3] {
        assert!(all.contains(&f.display().to_string()), "{all}");
    }
    let o = cli(&["--strict"]);
    assert!(!o.status.success());

    // A missing prediction is an error listing its key.
    let name = files[3].file_name().unwrap().to_str().unwrap();
    let key = name.split('_').take(3).collect::<Vec<_>>().join("_");
    std::fs::remove_file(&files[3]).unwrap();
    let o = cli(&[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("predictions missing") && text(&o).contains(&key),
        "{}",
        text(&o)
    );

    // An empty prediction folder.
    std::fs::create_dir_all(d.path().join("none")).unwrap();
    let o = run_cli(&[
        "score",
        "--pred",
        d.path().join("none").to_str().unwrap(),
        "--labels",
        gt.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no prediction PNGs"), "{}", text(&o));
}

#[test]
fn train_id_predictions() {
    // gt labelIds 7 7 26 0 ; pred trainIds 0 13 13 255 -> road 1/2, car 1/2 (void gt ignored).
    let d = tempfile::tempdir().unwrap();
    save_gray(
        &d.path().join("gt/x_000000_000001_gtFine_labelIds.png"),
        4,
        1,
        vec![7, 7, 26, 0],
    );
    save_gray(
        &d.path().join("pred/x_000000_000001.png"),
        4,
        1,
        vec![0, 13, 13, 255],
    );
    let json = d.path().join("r.json");
    let o = run_score(
        &d.path().join("pred"),
        &d.path().join("gt"),
        &["--train-ids", "--json", json.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["per_class"]["road"].as_f64(), Some(0.5));
    assert_eq!(r["per_class"]["car"].as_f64(), Some(0.5));
    assert_eq!(r["miou"].as_f64(), Some(0.5));
    assert!((r["pixel_accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}
