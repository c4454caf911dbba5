//! End-to-end runs of the `rccr-infer` CLI on tiny ONNX models built with the official
//! `onnx` package (a nearest-palette-colour classifier, so the exact label output is known
//! from how the input was painted), scored against the official Cityscapes evaluation, and
//! every bad input of docs/deployment.md "Failure behaviour of `rccr-infer`".

mod common;

use common::*;
use std::path::Path;

const W: u32 = 64;
const H: u32 = 32;

/// A CPU run of `model` on `root` writing under `out`, then `extra`.
fn cpu_run(model: &Path, root: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    cpu_cli(model, root).path("--out", out).words(extra).run()
}

#[test]
fn end_to_end_outputs_and_scores_match_the_official_evaluation() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels,logits"]);
    let ds = d.path().join("cityscapes");
    let keys = cityscapes_dataset(&ds, 3, W, H);
    let out = d.path().join("out");
    let json = d.path().join("report.json");
    let o = cpu_cli(&model, &ds.join("leftImg8bit/val"))
        .words(&["--input-size", "64x32", "--batch-size", "2", "--overlay"])
        .path("--out", &out)
        .path("--labels", &ds.join("gtFine/val"))
        .path("--json", &json)
        .run();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("images/s"), "{stdout}");
    assert!(stdout.contains("mIoU"), "{stdout}");

    for (i, key) in keys.iter().enumerate() {
        let city = &key[..key.find('_').unwrap()];
        let name = format!("{city}/{key}_leftImg8bit.png");
        let expect = painted_map(i, W, H);
        let train = load_gray(&out.join("trainIds").join(&name));
        assert_eq!(train.dimensions(), (W, H));
        assert_eq!(train.as_raw(), &expect, "trainIds of {name}");
        let label = load_gray(&out.join("labelIds").join(&name));
        let expect_ids: Vec<u8> = expect.iter().map(|&t| TABLE[t as usize].0).collect();
        assert_eq!(label.as_raw(), &expect_ids, "labelIds of {name}");
        // The colour map of a palette-painted image is the image itself.
        let colour = load_rgb(&out.join("color").join(&name));
        let input = load_rgb(&ds.join("leftImg8bit/val").join(&name));
        assert_eq!(colour, input, "color of {name}");
        // Blending a colour over itself gives the colour back.
        assert_eq!(load_rgb(&out.join("overlay").join(&name)), input);
    }

    let report = read_json(&json);
    assert_eq!(report["images"], 3);
    assert_eq!(report["provider"], "cpu");
    assert_eq!(report["input_size"], serde_json::json!([64, 32]));
    assert!(report["images_per_second"].as_f64().unwrap() > 0.0);
    let miou = report["miou"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou));
    // Class 16 (train) is in neither ground truth nor prediction.
    assert!(report["per_class"]["train"].is_null());
    // The official script on the labelIds outputs gives the same numbers.
    let off = official(&ds, &out.join("labelIds"));
    assert_matches_official(&report, &off);
    // ... and so does `score` on them.
    let json2 = d.path().join("score.json");
    let o = run_score(
        &out.join("labelIds"),
        &ds.join("gtFine/val"),
        &["--json", json2.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_matches_official(&read_json(&json2), &off);
}

#[test]
fn default_input_size_is_1024x512_and_predictions_come_back_at_image_size() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels"]);
    // Left half road (0), right half car (13), 128x64.
    let (w, h) = (128, 64);
    let ids: Vec<u8> = (0..w * h)
        .map(|i| if i % w < w / 2 { 0 } else { 13 })
        .collect();
    let imgs = d.path().join("imgs");
    save_rgb(&imgs.join("00001.png"), &paint(&ids, w, h));
    let out = d.path().join("out");
    let json = d.path().join("r.json");
    let o = cpu_run(&model, &imgs, &out, &["--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["input_size"], serde_json::json!([1024, 512]));
    assert!(r["miou"].is_null());
    let pred = load_gray(&out.join("trainIds/00001.png"));
    assert_eq!(pred.dimensions(), (w, h));
    // Away from the boundary (blended by the bilinear upsampling) the classes are exact.
    for y in 0..h {
        for x in (0..w).filter(|&x| (x as i64 - 64).abs() > 2) {
            assert_eq!(
                pred.get_pixel(x, y).0[0],
                ids[(y * w + x) as usize],
                "({x},{y})"
            );
        }
    }
}

#[test]
fn logits_only_and_fixed_shape_models() {
    let d = tempfile::tempdir().unwrap();
    let ds = d.path().join("cs");
    cityscapes_dataset(&ds, 2, W, H);
    let imgs = ds.join("leftImg8bit/val");
    let expect0 = painted_map(0, W, H);
    let name0 = "aachen/aachen_000000_000019_leftImg8bit.png";

    // Only `logits`: the argmax is taken in rccr-infer.
    let model = make_model(&d.path().join("logits.onnx"), &["--outputs", "logits"]);
    let out = d.path().join("o1");
    let o = cpu_run(&model, &imgs, &out, &["--input-size", "64x32"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        load_gray(&out.join("trainIds").join(name0)).as_raw(),
        &expect0
    );

    // Fixed 1x3x32x64: the size comes from the model, a batch of 4 becomes 1.
    let model = make_model(&d.path().join("fixed.onnx"), &["--fixed", "1,32,64"]);
    let out = d.path().join("o2");
    let json = d.path().join("r.json");
    let o = cpu_run(
        &model,
        &imgs,
        &out,
        &["--batch-size", "4", "--json", json.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["input_size"], serde_json::json!([64, 32]));
    assert_eq!(r["batch_size"], 1);
    assert_eq!(r["images"], 2);
    assert_eq!(
        load_gray(&out.join("trainIds").join(name0)).as_raw(),
        &expect0
    );
    // A contradicting input size is an error.
    let o = cpu_run(&model, &imgs, &out, &["--input-size", "128x64"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("fixed 64x32"), "{}", text(&o));
}

#[test]
fn bad_inputs_are_reported_and_skipped_or_fatal_with_strict() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let ds = d.path().join("cs");
    let keys = cityscapes_dataset(&ds, 2, W, H);
    let imgs = ds.join("leftImg8bit/val");
    let gt = ds.join("gtFine/val");
    // Corrupt: random bytes with a PNG name.
    let corrupt = "ulm_000010_000001";
    std::fs::write(
        imgs.join(format!("ulm/{corrupt}_leftImg8bit.png")),
        b"definitely not a png",
    )
    .unwrap();
    save_gray(
        &gt.join(format!("ulm/{corrupt}_gtFine_labelIds.png")),
        W,
        H,
        vec![7; (W * H) as usize],
    );
    // Truncated: a valid PNG cut in half.
    let truncated = "ulm_000011_000001";
    let good = std::fs::read(imgs.join(format!("aachen/{}_leftImg8bit.png", keys[0]))).unwrap();
    std::fs::write(
        imgs.join(format!("ulm/{truncated}_leftImg8bit.png")),
        &good[..good.len() / 2],
    )
    .unwrap();
    save_gray(
        &gt.join(format!("ulm/{truncated}_gtFine_labelIds.png")),
        W,
        H,
        vec![7; (W * H) as usize],
    );
    // Unreadable: a dangling link.
    let dangling = "ulm_000012_000001";
    std::os::unix::fs::symlink(
        d.path().join("nowhere.png"),
        imgs.join(format!("ulm/{dangling}_leftImg8bit.png")),
    )
    .unwrap();
    save_gray(
        &gt.join(format!("ulm/{dangling}_gtFine_labelIds.png")),
        W,
        H,
        vec![7; (W * H) as usize],
    );
    // Size mismatch between image and label.
    let mismatch = "ulm_000013_000001";
    save_rgb(
        &imgs.join(format!("ulm/{mismatch}_leftImg8bit.png")),
        &paint(&painted_map(0, W, H), W, H),
    );
    save_gray(
        &gt.join(format!("ulm/{mismatch}_gtFine_labelIds.png")),
        W / 2,
        H,
        vec![7; (W * H / 2) as usize],
    );
    // Label ids outside the table.
    let badids = "ulm_000014_000001";
    save_rgb(
        &imgs.join(format!("ulm/{badids}_leftImg8bit.png")),
        &paint(&painted_map(0, W, H), W, H),
    );
    save_gray(
        &gt.join(format!("ulm/{badids}_gtFine_labelIds.png")),
        W,
        H,
        vec![200; (W * H) as usize],
    );
    // A non-image file is skipped with a warning.
    std::fs::write(imgs.join("ulm/README.txt"), b"notes").unwrap();

    let out = d.path().join("out");
    let json = d.path().join("r.json");
    let gt_s = gt.to_str().unwrap().to_string();
    let o = cpu_run(
        &model,
        &imgs,
        &out,
        &[
            "--labels",
            &gt_s,
            "--input-size",
            "64x32",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["images"], 2, "the good images complete");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    let find = |key: &str| {
        skipped
            .iter()
            .find(|s| s["file"].as_str().unwrap().contains(key))
            .unwrap_or_else(|| panic!("{key} not reported: {skipped:?}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        find(corrupt).contains("cannot decode image"),
        "{}",
        find(corrupt)
    );
    assert!(
        find(truncated).contains("cannot decode image"),
        "{}",
        find(truncated)
    );
    assert!(
        find(dangling).contains("cannot read image"),
        "{}",
        find(dangling)
    );
    let e = find(mismatch);
    assert!(
        e.contains("size mismatch") && e.contains("gtFine_labelIds"),
        "{e}"
    );
    let e = find(badids);
    assert!(e.contains("label id 200") && e.contains(badids), "{e}");
    assert!(
        text(&o).contains("README.txt"),
        "non-image warning: {}",
        text(&o)
    );
    // No outputs for skipped inputs, outputs for good ones.
    assert!(!out
        .join(format!("trainIds/ulm/{badids}_leftImg8bit.png"))
        .exists());
    assert!(out
        .join(format!("trainIds/aachen/{}_leftImg8bit.png", keys[0]))
        .exists());
    // The score covers exactly the good images: same as the official script on them.
    let clean = d.path().join("clean");
    cityscapes_dataset(&clean, 2, W, H);
    let off = official(&clean, &out.join("labelIds"));
    assert_matches_official(&r, &off);

    // --strict: the first bad input ends the run with its name.
    let o = cpu_run(
        &model,
        &imgs,
        &d.path().join("out2"),
        &["--labels", &gt_s, "--input-size", "64x32", "--strict"],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        [corrupt, truncated, dangling, mismatch, badids]
            .iter()
            .any(|k| t.contains(k)),
        "{t}"
    );

    // An image without a label is an error listing it.
    std::fs::remove_file(gt.join(format!("aachen/{}_gtFine_labelIds.png", keys[0]))).unwrap();
    let o = cpu_run(&model, &imgs, &out, &["--labels", &gt_s]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&keys[0]) && text(&o).contains("labels missing"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_models_folders_and_runtime_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let imgs = d.path().join("imgs");
    save_rgb(&imgs.join("a.png"), &paint(&painted_map(0, W, H), W, H));
    let out = d.path().join("out");

    // Empty folder.
    std::fs::create_dir_all(d.path().join("empty")).unwrap();
    let good = make_model(&d.path().join("good.onnx"), &[]);
    let o = cpu_run(&good, &d.path().join("empty"), &out, &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no images") && text(&o).contains("empty"),
        "{}",
        text(&o)
    );

    // No rccr metadata.
    let m = make_model(&d.path().join("nometa.onnx"), &["--no-metadata"]);
    let o = cpu_run(&m, &imgs, &out, &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("nometa.onnx") && t.contains("rccr.num_classes") && t.contains("rccr-export"),
        "{t}"
    );

    // Input not named `image`.
    let m = make_model(&d.path().join("noinput.onnx"), &["--input-name", "pixels"]);
    let o = cpu_run(&m, &imgs, &out, &[]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("noinput.onnx") && t.contains("no input named `image`"),
        "{t}"
    );

    // Not an ONNX file at all.
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"junk").unwrap();
    let o = cpu_run(&junk, &imgs, &out, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("junk.onnx"), "{}", text(&o));

    // Missing model file.
    let o = cpu_run(&d.path().join("absent.onnx"), &imgs, &out, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("absent.onnx"), "{}", text(&o));

    // Missing ONNX Runtime library.
    let o = cli("--quiet")
        .path("--model", &good)
        .path("--images", &imgs)
        .command()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("/nonexistent/libonnxruntime.so.1.31.1") && t.contains("ORT_DYLIB_PATH"),
        "{t}"
    );

    // An explicitly requested GPU provider that this ONNX Runtime cannot load names what
    // it needs; where it can (onnxruntime-gpu on a GPU host), it runs and says so.
    for (p, lib) in [
        ("cuda", "libonnxruntime_providers_cuda.so"),
        ("tensorrt", "libonnxruntime_providers_tensorrt.so"),
    ] {
        let json = d.path().join(format!("{p}.json"));
        let o = cli("--input-size 64x32 --quiet")
            .words(&["--provider", p])
            .path("--model", &good)
            .path("--images", &imgs)
            .path("--json", &json)
            .run();
        if o.status.success() {
            assert_eq!(read_json(&json)["provider"], p);
        } else {
            assert!(
                text(&o).contains(lib) && text(&o).contains(p),
                "{}",
                text(&o)
            );
        }
    }
    // `auto` always finds a provider and reports it.
    let json = d.path().join("auto.json");
    let o = cli("--input-size 64x32 --quiet")
        .path("--model", &good)
        .path("--images", &imgs)
        .path("--json", &json)
        .run();
    assert!(o.status.success(), "{}", text(&o));
    let p = read_json(&json)["provider"].as_str().unwrap().to_string();
    assert!(["tensorrt", "cuda", "cpu"].contains(&p.as_str()));
    assert!(text(&o).contains(&format!("provider {p}")), "{}", text(&o));
}

#[test]
fn two_inputs_with_one_output_name_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let imgs = d.path().join("imgs");
    let img = paint(&painted_map(0, W, H), W, H);
    save_rgb(&imgs.join("a.png"), &img);
    save_rgb(&imgs.join("a.jpg"), &img);
    save_rgb(&imgs.join("b.png"), &img);
    let out = d.path().join("out");
    let o = cpu_run(&model, &imgs, &out, &["--input-size", "64x32"]);
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("a.jpg") && t.contains("a.png") && t.contains("rename or move one"),
        "{t}"
    );
    assert!(!out.exists(), "nothing may be written");
    // Without outputs there is nothing to overwrite: both are segmented and counted.
    let json = d.path().join("r.json");
    let o = run_infer(
        &model,
        &imgs,
        &["--input-size", "64x32", "--json", json.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_json(&json)["images"], 3);
}

#[test]
fn out_of_bound_sizes_and_batch_zero_are_refused_without_an_abort() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let imgs = d.path().join("imgs");
    save_rgb(&imgs.join("a.png"), &paint(&painted_map(0, W, H), W, H));
    let out = d.path().join("out");
    for (extra, flag) in [
        (&["--input-size", "100000x100000"][..], "--input-size"),
        (&["--input-size", "8193x16"][..], "--input-size"),
        (&["--input-size", "8192x8192"][..], "--input-size"),
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--batch-size", "100000"][..], "--batch-size"),
    ] {
        let o = cpu_run(&model, &imgs, &out, extra);
        let t = text(&o);
        // A clean error exit (2: usage), not a signal (134 = abort on a failed allocation).
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {t}");
        assert!(t.contains(flag), "{extra:?}: {t}");
    }
    let o = cpu_run(&model, &imgs, &out, &["--input-size", "100000x100000"]);
    let t = text(&o);
    assert!(
        t.contains("8192 per side") && t.contains("8192x4096"),
        "{t}"
    );
    let o = cpu_run(&model, &imgs, &out, &["--batch-size", "0"]);
    assert!(text(&o).contains("1 to 256"), "{}", text(&o));
    assert!(!out.exists());
    // The largest accepted side is accepted.
    let o = cli("bench --provider cpu --input-size 8192x16 --image-size 16x8")
        .words(&["--iterations", "1", "--warmup", "0"])
        .path("--model", &model)
        .run();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn missing_folders_say_they_do_not_exist_and_huge_images_say_too_large() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let imgs = d.path().join("imgs");
    save_rgb(&imgs.join("good.png"), &paint(&painted_map(0, W, H), W, H));
    let nowhere = d.path().join("nowhere");
    let o = cpu_run(&model, &nowhere, &d.path().join("o"), &[]);
    let t = text(&o);
    // A failure ends as `error: <cause chain>` on stderr with exit status 1.
    assert_eq!(o.status.code(), Some(1), "{t}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: --images "), "{t}");
    assert!(
        t.contains("--images") && t.contains("nowhere") && t.contains("does not exist"),
        "{t}"
    );
    let o = cpu_run(
        &model,
        &imgs,
        &d.path().join("o"),
        &["--labels", nowhere.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(
        t.contains("--labels") && t.contains("does not exist"),
        "{t}"
    );
    let o = cli("score")
        .path("--pred", &nowhere)
        .path("--labels", &imgs)
        .run();
    let t = text(&o);
    assert!(t.contains("--pred") && t.contains("does not exist"), "{t}");
    // A file where a folder is expected.
    let file = imgs.join("good.png");
    let o = cpu_run(&model, &file, &d.path().join("o"), &[]);
    assert!(text(&o).contains("is not a folder"), "{}", text(&o));

    // An image over the decoder's limit: skipped as too large, with its size and the limit;
    // the good image is still processed.
    std::fs::write(
        imgs.join("huge.png"),
        rccr_test_support::png::header_only(20000, 10000),
    )
    .unwrap();
    let json = d.path().join("r.json");
    let o = cpu_run(
        &model,
        &imgs,
        &d.path().join("o"),
        &["--input-size", "64x32", "--json", json.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&json);
    assert_eq!(r["images"], 1);
    let e = r["skipped"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("huge.png")
            && e.contains("too large")
            && e.contains("20000x10000")
            && e.contains("600000000 bytes")
            && e.contains("536870912 bytes (512 MiB)"),
        "{e}"
    );
    assert!(!e.contains("corrupt"), "{e}");
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_escapes() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    let imgs = d.path().join("imgs");
    save_rgb(&imgs.join("a.png"), &paint(&painted_map(0, W, H), W, H));
    std::fs::write(imgs.join("notes.txt"), b"not an image").unwrap();
    // stderr is a pipe here: the warning about notes.txt must be plain text.
    let o = cpu_run(
        &model,
        &imgs,
        &d.path().join("o"),
        &["--input-size", "64x32"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in piped logs: {stderr:?}"
    );
}
