//! Version 2 of the synthetic benchmark (`--gap content`, docs/benchmark.md): every
//! knob checked on the files `rccr-train synth` writes, against hand-computed pinhole
//! geometry or a stated direction; version 1's bytes checked against files the earlier
//! generator wrote (tests/fixtures/synth-v1).

use std::path::{Path, PathBuf};

use rccr_trainer::synth::{run, Gap, ImageSize, SynthArgs, SynthReport};
use rccr_trainer::Error;

/// labelIds (cityscapesScripts' `labels.py`).
const EGO: u8 = 1;
const ROAD: u8 = 7;
const POLE: u8 = 17;
const SIGN: u8 = 20;
const BICYCLE: u8 = 33;

/// Version-2 arguments writing `count` + 2 images per domain of `w x h`, with the knobs
/// file `knobs` (TOML) when not empty.
fn v2(dir: &Path, count: usize, (w, h): (u32, u32), knobs: &str) -> SynthArgs {
    let mut a = SynthArgs::new(dir.join("data"));
    a.seed = 7;
    a.count = count;
    a.val_count = 2;
    a.size = ImageSize {
        width: w,
        height: h,
    };
    if !knobs.is_empty() {
        let file = dir.join("knobs.toml");
        std::fs::write(&file, knobs).unwrap();
        a.knobs = Some(file);
    }
    a
}

/// A street without objects: only the ground, facades, fences and skyline.
const EMPTY_STREET: &str = "
[target.classes]
vehicles = [0, 0]
persons = [0, 0]
cyclists = [0, 0]
[target.layout]
poles = [0, 0]
trees = [0, 0]
";

/// (width, height, labelIds) of every target train label file under `data`, sorted.
fn target_labels(data: &Path) -> Vec<(usize, usize, Vec<u8>)> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(data.join("cityscapes/gtFine/train"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files.iter().map(|p| luma(p)).collect()
}

/// A greyscale PNG's (width, height, values), decoded by the `image` crate.
fn luma(path: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(path).unwrap().into_luma8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

/// The first row (from the top) whose pixel in column `x` is `id`.
fn first_row(w: usize, h: usize, v: &[u8], x: usize, id: u8) -> Option<usize> {
    (0..h).find(|&y| v[y * w + x] == id)
}

/// The longest horizontal run of `id` in an image.
fn longest_run(w: usize, v: &[u8], id: u8) -> usize {
    v.chunks(w)
        .map(|row| {
            let (mut best, mut run) = (0, 0);
            for &p in row {
                run = if p == id { run + 1 } else { 0 };
                best = best.max(run);
            }
            best
        })
        .max()
        .unwrap_or(0)
}

fn fraction(r: &SynthReport, target: bool, class: &str) -> f64 {
    let i = r.class_names.iter().position(|n| n == class).unwrap();
    if target {
        r.target_class_fraction[i]
    } else {
        r.source_class_fraction[i]
    }
}

#[test]
fn version_and_every_knob_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&v2(
        dir.path(),
        2,
        (128, 64),
        "[target.camera]\nhood = 0.2\n",
    ))
    .unwrap();
    assert_eq!(r.version, "synth-v2");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("data/synth.json")).unwrap())
            .unwrap();
    let report = &json["report"];
    assert_eq!(report["version"], "synth-v2");
    // The override and the defaults beside it.
    assert!(
        (report["knobs"]["target"]["camera"]["hood"]
            .as_f64()
            .unwrap()
            - 0.2)
            .abs()
            < 1e-6
    );
    assert_eq!(report["knobs"]["source"]["camera"]["hood"], 0.0);
    assert_eq!(report["knobs"]["target"]["sensor"]["jpeg_quality"], 85);
    assert_eq!(
        report["source_class_fraction"].as_array().unwrap().len(),
        19
    );
    assert_eq!(
        report["target_class_fraction"].as_array().unwrap().len(),
        19
    );
    assert_eq!(json["args"]["gap"], "content");
    // Version 1 records its version and no knobs.
    let mut a = v2(dir.path(), 1, (128, 64), "");
    a.out = dir.path().join("v1");
    a.gap = Gap::Appearance;
    let r1 = run(&a).unwrap();
    assert_eq!(r1.version, "synth-v1");
    assert!(r1.knobs.is_none());
}

#[test]
fn version_1_writes_the_earlier_generators_bytes() {
    // tests/fixtures/synth-v1 was written by the generator before version 2 existed:
    // `rccr-train synth --seed 3 --count 2 --val-count 1 --size 96x64` (commit 9367367).
    let fixture = rccr_test_support::repo_root().join("trainer/tests/fixtures/synth-v1");
    let dir = tempfile::tempdir().unwrap();
    let mut a = v2(dir.path(), 2, (96, 64), "");
    a.seed = 3;
    a.val_count = 1;
    a.gap = Gap::Appearance;
    run(&a).unwrap();
    let mut n = 0;
    for e in walkdir::WalkDir::new(&fixture) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(&fixture).unwrap();
            let now = std::fs::read(a.out.join(rel)).unwrap();
            assert!(
                now == std::fs::read(e.path()).unwrap(),
                "{} changed",
                rel.display()
            );
            n += 1;
        }
    }
    assert_eq!(n, 2 * (2 + 1) * 2, "image and label of every pair");
}

#[test]
fn the_hood_is_void_in_the_target_labels_only() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (128usize, 64usize);
    run(&v2(dir.path(), 3, (w as u32, h as u32), "")).unwrap();
    for (_, _, v) in target_labels(&dir.path().join("data")) {
        // The default hood covers 16 % of the rows at the centre column, 40 % of that
        // at the sides: rows h - 0.16 h .. h at x = w/2 (pixel centres), fewer at x = 0.
        let rows = |x: usize| (0..h).filter(|&y| v[y * w + x] == EGO).count();
        let centre = rows(w / 2);
        assert!(
            (centre as f32 - 0.16 * h as f32).abs() <= 1.0,
            "{centre} hood rows"
        );
        assert!(rows(0) < centre && rows(0) >= 2);
        assert!((h - centre..h).all(|y| v[y * w + w / 2] == EGO));
    }
    let src = palette_indices(&dir.path().join("data/gta5/labels"));
    assert!(src.iter().all(|&l| l != EGO), "the source has no hood");
    // The real loader reads the hood as ignore (255).
    let spec = format!(
        "cityscapes:{}",
        dir.path().join("data/cityscapes").display()
    );
    let val = rccr_trainer::data::ValSet::open(&spec.parse().unwrap(), None, None).unwrap();
    for s in val.iter() {
        let s = s.unwrap();
        assert_eq!(s.label[(s.height - 1) * s.width + s.width / 2], 255);
    }
}

/// Every label value of the paletted PNGs under `dir`, read as indices.
fn palette_indices(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if e.file_type().is_file() {
            let mut d = png::Decoder::new(std::io::BufReader::new(
                std::fs::File::open(e.path()).unwrap(),
            ));
            d.set_transformations(png::Transformations::IDENTITY);
            let mut r = d.read_info().unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            let info = r.next_frame(&mut buf).unwrap();
            all.extend_from_slice(&buf[..info.buffer_size()]);
        }
    }
    all
}

/// The target camera fixed at (height m, pitch degrees), 48 degrees wide, straight down
/// the street, no hood, in an empty street of one lane of 3 m each way.
fn fixed_camera(height: f32, pitch: f32) -> String {
    format!(
        "{EMPTY_STREET}
lanes = [1, 1]
lane_width_m = [3.0, 3.0]
[target.camera]
height_m = [{height}, {height}]
pitch_deg = [{pitch}, {pitch}]
hfov_deg = [48.0, 48.0]
yaw_deg = [0.0, 0.0]
hood = 0.0
"
    )
}

#[test]
fn camera_pitch_moves_the_horizon_row() {
    let (w, h) = (256usize, 128usize);
    let f = (w as f32 / 2.0) / 24f32.to_radians().tan();
    let horizon = |pitch: f32| {
        let dir = tempfile::tempdir().unwrap();
        run(&v2(
            dir.path(),
            2,
            (w as u32, h as u32),
            &fixed_camera(1.22, pitch),
        ))
        .unwrap();
        target_labels(&dir.path().join("data"))
            .iter()
            .map(|(_, _, v)| first_row(w, h, v, w / 2, ROAD).unwrap())
            .collect::<Vec<_>>()
    };
    // Pitching down by p moves the horizon up by f tan(p) from the centre row; at the
    // vanishing column the road starts at the first row whose centre is below it.
    for (pitch, rows) in [(0.0f32, horizon(0.0)), (5.0, horizon(5.0))] {
        let hy = h as f32 / 2.0 - f * pitch.to_radians().tan();
        for r in rows {
            let below = r as f32 + 0.5 - hy;
            assert!(
                below > 0.0 && below <= 1.0,
                "pitch {pitch}: road from row {r}, horizon {hy}"
            );
        }
    }
}

#[test]
fn camera_height_narrows_the_road_in_the_image() {
    let (w, h) = (256usize, 128usize);
    // At `dy` rows below the horizon the ground is at depth f H / dy, so a road of
    // width W spans W dy / H pixels there, whatever f is: 6 m, 20 rows, H = 1.2 or 2.4 m.
    for height in [1.2f32, 2.4] {
        let dir = tempfile::tempdir().unwrap();
        run(&v2(
            dir.path(),
            2,
            (w as u32, h as u32),
            &fixed_camera(height, 0.0),
        ))
        .unwrap();
        for (_, _, v) in target_labels(&dir.path().join("data")) {
            let y = h / 2 + 20;
            let road = v[y * w..(y + 1) * w].iter().filter(|&&l| l == ROAD).count();
            let expect = 6.0 * 20.5 / height;
            assert!(
                (road as f32 - expect).abs() <= 2.0,
                "H {height}: {road} road pixels, expected {expect}"
            );
        }
    }
}

#[test]
fn class_priors_move_the_pixel_frequencies_as_stated() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&v2(dir.path(), 60, (256, 128), "")).unwrap();
    // docs/benchmark.md: the target has more persons, riders and bicycles, fewer trucks
    // and buses, less sky and more sidewalk (Cityscapes vs GTA5).
    let both = |class| (fraction(&r, false, class), fraction(&r, true, class));
    for class in [
        "person",
        "rider",
        "bicycle",
        "sidewalk",
        "pole",
        "traffic sign",
    ] {
        let (s, t) = both(class);
        assert!(t > s, "{class}: source {s}, target {t}");
    }
    for class in ["truck", "bus", "sky", "terrain", "motorcycle"] {
        let (s, t) = both(class);
        assert!(t < s, "{class}: source {s}, target {t}");
    }
    // The person count knob alone moves the person frequency.
    let few = tempfile::tempdir().unwrap();
    let r0 = run(&v2(
        few.path(),
        30,
        (256, 128),
        "[target.classes]\npersons = [0, 0]\n",
    ))
    .unwrap();
    assert_eq!(fraction(&r0, true, "person"), 0.0);
    let many = tempfile::tempdir().unwrap();
    let r9 = run(&v2(
        many.path(),
        30,
        (256, 128),
        "[target.classes]\npersons = [12, 12]\n",
    ))
    .unwrap();
    assert!(fraction(&r9, true, "person") > 1.5 * fraction(&r, true, "person"));
}

#[test]
fn layout_knobs_change_the_street() {
    let road = |knobs: &str| {
        let dir = tempfile::tempdir().unwrap();
        let r = run(&v2(dir.path(), 8, (256, 128), knobs)).unwrap();
        (fraction(&r, true, "road"), fraction(&r, true, "sidewalk"))
    };
    let (road1, _) = road("[target.layout]\nlanes = [1, 1]\n");
    let (road3, _) = road("[target.layout]\nlanes = [3, 3]\n");
    assert!(road3 > 1.2 * road1, "3 lanes {road3} vs 1 lane {road1}");
    let (_, walk) = road("[target.layout]\nsidewalk_prob = 0.0\n");
    assert_eq!(walk, 0.0);
}

#[test]
fn thin_classes_reach_the_output_stride_in_part_of_the_images() {
    // At the study's 256x128, an output stride of 8 sees a thing whose width reaches
    // 8 pixels; the default target draws poles, signs and bicycles that wide in a
    // share of the images.
    let dir = tempfile::tempdir().unwrap();
    run(&v2(dir.path(), 40, (256, 128), "")).unwrap();
    let labels = target_labels(&dir.path().join("data"));
    for (id, share) in [(POLE, 0.25), (SIGN, 0.15), (BICYCLE, 0.15)] {
        let wide = labels
            .iter()
            .filter(|(w, _, v)| longest_run(*w, v, id) >= 8)
            .count();
        let got = wide as f64 / labels.len() as f64;
        assert!(
            got >= share,
            "labelId {id}: {got:.2} of the images reach 8 px"
        );
    }
}

/// Mean 8-bit level of every target train image under `data`.
fn mean_level(data: &Path) -> f64 {
    let (mut sum, mut n) = (0f64, 0f64);
    for e in walkdir::WalkDir::new(data.join("cityscapes/leftImg8bit/train")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let img = image::open(e.path()).unwrap().into_rgb8();
            sum += img.as_raw().iter().map(|&v| v as f64).sum::<f64>();
            n += img.as_raw().len() as f64;
        }
    }
    sum / n
}

#[test]
fn sensor_knobs_change_the_pixels_not_the_labels() {
    let quiet = "[target.sensor]\nwhite_balance = 0.0\nvignetting = 0.0\nlens_blur = 0\nmotion_blur = [0.0, 0.0]\nnoise = 0.0\n";
    let render = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        run(&v2(dir.path(), 3, (128, 64), &format!("{quiet}{extra}"))).unwrap();
        let level = mean_level(&dir.path().join("data"));
        (dir, level)
    };
    let (bright, full) = render("exposure = [0.9, 0.9]\njpeg_quality = 0\n");
    let (dark, half) = render("exposure = [0.45, 0.45]\njpeg_quality = 0\n");
    assert!(
        (half / full - 0.5).abs() < 0.02,
        "exposure 0.45 / 0.9: {}",
        half / full
    );
    assert_eq!(
        target_labels(&bright.path().join("data")),
        target_labels(&dark.path().join("data"))
    );
    // A JPEG round trip changes pixels (not labels).
    let (jpeg, _) = render("exposure = [0.9, 0.9]\njpeg_quality = 30\n");
    let image = |d: &Path| {
        let first = walkdir::WalkDir::new(d.join("data/cityscapes/leftImg8bit/train"))
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().is_file())
            .unwrap();
        image::open(first.path()).unwrap().into_rgb8().into_raw()
    };
    assert_ne!(image(jpeg.path()), image(bright.path()));
    assert_eq!(
        target_labels(&jpeg.path().join("data")),
        target_labels(&bright.path().join("data"))
    );
}

#[test]
fn bad_knob_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(&v2(
        dir.path(),
        1,
        (64, 32),
        "[target.camera]\npitch = 3.0\n",
    ))
    .unwrap_err();
    assert!(matches!(err, Error::ConfigParse { .. }), "{err}");
    assert!(
        err.to_string().contains("knobs.toml") && err.to_string().contains("pitch"),
        "{err}"
    );
    let err = run(&v2(
        dir.path(),
        1,
        (64, 32),
        "[target.camera]\nhood = 0.9\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("target.camera.hood"), "{err}");
    let mut a = v2(dir.path(), 1, (64, 32), "");
    a.knobs = Some(dir.path().join("missing.toml"));
    let err = run(&a).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
}
