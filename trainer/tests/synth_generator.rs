//! The synthetic benchmark generator, version 1 (`--gap appearance`): same seed -> same
//! bytes, layouts readable by the real loaders, valid label ids, class coverage in both
//! domains, and a domain shift that changes the pixels but not the label statistics.
//! Version 2's knobs are tested in `synth_gap.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rccr_trainer::data::{DatasetSpec, LoaderConfig, Split, TrainLoader, ValSet};
use rccr_trainer::synth::{run, Gap, ImageSize, SynthArgs};
use rccr_trainer::Error;

/// The 19 Cityscapes training labelIds (cityscapesScripts' `labels.py`).
const TRAIN_LABEL_IDS: [u8; 19] = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
];

fn args(out: &Path, seed: u64, count: usize, val: usize) -> SynthArgs {
    let mut a = SynthArgs::new(out);
    a.seed = seed;
    a.count = count;
    a.val_count = val;
    a.size = ImageSize {
        width: 160,
        height: 80,
    };
    a.gap = Gap::Appearance;
    a
}

/// The files under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// Training loader settings over the 160x80 images of [`args`]: `workers` workers, each
/// prefetching as many batches.
fn loader_config(crop: u32, batch_size: usize, seed: u64, workers: usize) -> LoaderConfig {
    LoaderConfig {
        resize: Some((160, 80)),
        crop,
        batch_size,
        seed,
        workers,
        prefetch: workers,
        split: Split::Train,
        ..LoaderConfig::default()
    }
}

/// Every file under `root` (relative path -> bytes), excluding synth.json.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.file_name() != "synth.json" {
            out.insert(
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// Raw 8-bit label values of a PNG, read without palette expansion (independent of the
/// crate's decoder).
fn raw_label(path: &Path) -> (png::ColorType, Vec<u8>) {
    let mut d = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    d.set_transformations(png::Transformations::IDENTITY);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.color_type, buf)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    run(&args(a.path(), 3, 5, 2)).unwrap();
    run(&args(b.path(), 3, 5, 2)).unwrap();
    run(&args(c.path(), 4, 5, 2)).unwrap();
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert_eq!(ta.len(), 2 * (5 + 2) * 2);
    assert!(ta == tb, "same seed must give identical files");
    assert_eq!(ta.keys().collect::<Vec<_>>(), tc.keys().collect::<Vec<_>>());
    let differing = ta.iter().filter(|(k, v)| tc[*k] != **v).count();
    assert_eq!(differing, ta.len(), "another seed must change every file");
    // Re-running into the same folder replaces it (no stale files), same bytes again.
    run(&args(a.path(), 3, 3, 1)).unwrap();
    assert_eq!(tree(a.path()).len(), 2 * (3 + 1) * 2);
}

#[test]
fn layouts_are_read_by_the_real_loaders_with_valid_labels() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&args(dir.path(), 0, 6, 4)).unwrap();
    let out = dir.path();
    // File names of the real layouts.
    assert!(out.join("gta5/images/00001.png").is_file());
    assert!(out.join("gta5/labels/00006.png").is_file());
    assert!(out.join("gta5-val/labels/00004.png").is_file());
    let cs_train: Vec<_> = walkdir::WalkDir::new(out.join("cityscapes/leftImg8bit/train"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(cs_train.len(), 6);
    for e in &cs_train {
        let name = e.file_name().to_string_lossy().into_owned();
        let city = e
            .path()
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!("{city}_")) && name.ends_with("_000019_leftImg8bit.png"),
            "{name}"
        );
        let parts: Vec<&str> = name
            .trim_end_matches("_leftImg8bit.png")
            .split('_')
            .collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[1].len() == 6 && parts[2].len() == 6);
        let label = out
            .join("cityscapes/gtFine/train")
            .join(&city)
            .join(name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"));
        assert!(label.is_file(), "{}", label.display());
    }

    // Label files: GTA5 paletted, Cityscapes grey; every value a training labelId.
    for (dir, kind) in [
        ("gta5/labels", png::ColorType::Indexed),
        ("cityscapes/gtFine/val", png::ColorType::Grayscale),
    ] {
        for path in files_under(&out.join(dir)) {
            let (ct, values) = raw_label(&path);
            assert_eq!(ct, kind, "{}", path.display());
            assert_eq!(values.len(), 160 * 80);
            assert!(
                values.iter().all(|v| TRAIN_LABEL_IDS.contains(v)),
                "{}",
                path.display()
            );
        }
    }

    // The real loaders read every set; labels come out as trainIds 0..19 (no ignore).
    let spec = |s: &str| s.parse::<DatasetSpec>().unwrap();
    let cfg = loader_config(64, 2, 1, 2);
    for s in [&report.source_spec, &report.target_spec] {
        let mut l = TrainLoader::open(&spec(s), &cfg, 0).unwrap();
        assert_eq!(l.len(), 6);
        let b = l.next_batch().unwrap();
        let labels = Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap();
        assert!(labels.iter().all(|&v| (0..19).contains(&v)), "{s}");
        assert_eq!(l.skipped(), 0);
    }
    for (s, n) in [(&report.source_val_spec, 4), (&report.target_spec, 4)] {
        let v = ValSet::open(&spec(s), Some((160, 80)), None).unwrap();
        assert_eq!(v.len(), n);
        for sample in v.iter() {
            let sample = sample.unwrap();
            assert_eq!((sample.width, sample.height), (160, 80));
            assert!(sample.label.iter().all(|&l| l < 19));
        }
    }
}

/// Classes present (as labelIds) in the label files under `dir`.
fn classes_in(dir: &Path) -> std::collections::BTreeSet<u8> {
    let mut set = std::collections::BTreeSet::new();
    for path in files_under(dir) {
        set.extend(raw_label(&path).1);
    }
    set
}

#[test]
fn at_least_ten_classes_in_both_domains() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&args(dir.path(), 11, 24, 8)).unwrap();
    let src = classes_in(&dir.path().join("gta5/labels"));
    let tgt = classes_in(&dir.path().join("cityscapes/gtFine/train"));
    let both: Vec<_> = src.intersection(&tgt).collect();
    assert!(both.len() >= 10, "classes in both domains: {both:?}");
    // The staple classes are all there.
    for id in [7u8, 8, 11, 17, 21, 23, 24, 26] {
        assert!(src.contains(&id) && tgt.contains(&id), "labelId {id}");
    }
    assert!(report.source_classes.len() >= 10 && report.target_classes.len() >= 10);
    let sum: f64 = report.source_class_fraction.iter().sum();
    assert!((sum - 1.0).abs() < 1e-9);
    assert!(report.images_per_second > 0.0);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("synth.json")).unwrap()).unwrap();
    assert_eq!(json["report"]["source_train"], 24);
}

/// Mean RGB of the pixels of trainId `class` over all pairs of a loader's first batches.
fn mean_colour(spec: &str, class: i64) -> [f64; 3] {
    let cfg = loader_config(80, 4, 0, 1);
    let mut l = TrainLoader::open(&spec.parse().unwrap(), &cfg, 0).unwrap();
    let (mut sum, mut n) = ([0f64; 3], 0f64);
    for _ in 0..2 {
        let b = l.next_batch().unwrap();
        let img = Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap();
        let lab = Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap();
        let plane = 80 * 80;
        for (i, &c) in lab.iter().enumerate() {
            if c == class {
                let (bi, p) = (i / plane, i % plane);
                for (k, s) in sum.iter_mut().enumerate() {
                    *s += img[bi * 3 * plane + k * plane + p] as f64;
                }
                n += 1.0;
            }
        }
    }
    assert!(n > 0.0, "class {class} absent");
    sum.map(|s| s / n)
}

#[test]
fn target_colours_shift_away_from_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&args(dir.path(), 5, 8, 1)).unwrap();
    // Sky and building change colour clearly between the domains (road, the largest class,
    // too); the shift is a rendering change only.
    for class in [0i64, 2, 10] {
        let (s, t) = (
            mean_colour(&r.source_spec, class),
            mean_colour(&r.target_spec, class),
        );
        let dist = ((s[0] - t[0]).powi(2) + (s[1] - t[1]).powi(2) + (s[2] - t[2]).powi(2)).sqrt();
        assert!(dist > 25.0, "class {class}: source {s:?} target {t:?}");
    }
    // --shift 0 renders the target like the source: sky colour matches the source palette.
    let flat = tempfile::tempdir().unwrap();
    let mut a = args(flat.path(), 5, 8, 1);
    a.shift = Some(0.0);
    let r0 = run(&a).unwrap();
    let (s, t) = (
        mean_colour(&r0.source_spec, 10),
        mean_colour(&r0.target_spec, 10),
    );
    for k in 0..3 {
        assert!((s[k] - t[k]).abs() < 1.0, "{s:?} vs {t:?}");
    }
}

#[test]
fn refuses_foreign_folders_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("gta5/images")).unwrap();
    std::fs::write(dir.path().join("gta5/images/mine.png"), b"x").unwrap();
    let err = run(&args(dir.path(), 0, 1, 1)).unwrap_err();
    assert!(matches!(err, Error::NotOurs { .. }), "{err}");
    assert!(
        dir.path().join("gta5/images/mine.png").is_file(),
        "must not delete user data"
    );
    assert!("512x".parse::<ImageSize>().is_err());
    assert!("8x8".parse::<ImageSize>().is_err());
    assert_eq!(
        "640X320".parse::<ImageSize>().unwrap(),
        ImageSize {
            width: 640,
            height: 320
        }
    );
    let mut a = args(dir.path(), 0, 0, 1);
    assert!(matches!(run(&a), Err(Error::BadArgs { .. })));
    a.count = 1;
    a.shift = Some(f32::NAN);
    assert!(matches!(run(&a), Err(Error::BadArgs { .. })));
}
