//! Rare-class sampling (DAFormer Sec. 3.3; docs/method.md "Rare-class sampling") on a tiny
//! GTA5-layout dataset written by the test, checked against brute-force counts decoded
//! with the `image` crate, the formula computed by hand, binomial bounds on the drawn
//! classes, resume at iteration k, and a fingerprint of the loader without RCS taken
//! before RCS existed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rccr_trainer::config::RcsConfig;
use rccr_trainer::data::{
    class_probabilities, min_pixels, DatasetSpec, LoaderConfig, RcsDraw, Split, TrainLoader,
};
use rccr_trainer::run::{run, RunOptions};
use tch::{Kind, Tensor};

/// Cityscapes labelIds used by the test data -> trainIds (docs/design.md#data-and-label-maps,
/// typed in independently of the crate's tables).
fn to_train(id: u8) -> u8 {
    match id {
        7 => 0,
        17 => 5,
        23 => 10,
        24 => 11,
        26 => 13,
        33 => 18,
        _ => 255,
    }
}

/// The labelId of grid cell (x, y) of image `k` on the 32 x 24 grid (each cell 2 x 2 pixels
/// of the 64 x 48 label file): sky on top, a void band, road below; a person in every third
/// image, a car in every fifth, a 3 x 3 bicycle in every seventh, and a one-cell pole speck.
fn grid_id(k: usize, x: usize, y: usize) -> u8 {
    let in_box = |x0: usize, y0: usize, w: usize, h: usize| {
        (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y)
    };
    if k % 7 == 2 && in_box((k * 3) % 29, 14, 3, 3) {
        33
    } else if k % 5 == 1 && in_box((k * 7) % 24, 16, 8, 4) {
        26
    } else if k.is_multiple_of(3) && in_box((k * 5) % 28, 10, 4, 6) {
        24
    } else if x == (k * 11) % 32 && y == 20 {
        17
    } else if y < 6 {
        23
    } else if y < 8 && x.is_multiple_of(4) {
        0
    } else {
        7
    }
}

fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
}

/// Writes label `k` (64 x 48 grey labelIds, 2 x 2 blocks of [`grid_id`]) to `path`.
fn write_label(path: &Path, k: usize) {
    let ids: Vec<u8> = (0..48 * 64)
        .map(|i| grid_id(k, (i % 64) / 2, (i / 64) / 2))
        .collect();
    write_png(path, 64, 48, png::ColorType::Grayscale, &ids);
}

/// A GTA5-layout dataset of `n` 64 x 48 images and labels in `root`.
fn dataset(root: &Path, n: usize) {
    for k in 0..n {
        let name = format!("{:05}.png", k + 1);
        let rgb: Vec<u8> = (0..48 * 64)
            .flat_map(|i| [(i % 64 * 4) as u8, (i / 64 * 5) as u8, k as u8])
            .collect();
        write_png(
            &root.join("images").join(&name),
            64,
            48,
            png::ColorType::Rgb,
            &rgb,
        );
        write_label(&root.join("labels").join(&name), k);
    }
}

/// FNV-1a over bytes (a fingerprint of batches).
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash = (*hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

/// A fingerprint of the names, images and labels of `n` batches from iteration 0.
fn fingerprint(spec: &DatasetSpec, cfg: &LoaderConfig, n: usize) -> u64 {
    let mut l = TrainLoader::open(spec, cfg, 0).unwrap();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..n {
        let b = l.next_batch().unwrap();
        for name in &b.names {
            fnv(&mut h, name.as_bytes());
        }
        let images = Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap();
        let labels = Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap();
        images.iter().for_each(|v| fnv(&mut h, &v.to_le_bytes()));
        labels.iter().for_each(|v| fnv(&mut h, &v.to_le_bytes()));
    }
    h
}

fn loader_config(size: (u32, u32), seed: u64) -> LoaderConfig {
    LoaderConfig {
        resize: Some(size),
        crop: 16,
        batch_size: 2,
        seed,
        workers: 2,
        prefetch: 2,
        split: Split::Train,
        ..LoaderConfig::default()
    }
}

/// Without RCS the loader yields the batches it yielded before RCS existed: fingerprints
/// of 40 batches at two seeds and sizes, taken from the loader of commit 0076841.
#[test]
fn rcs_off_batches_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 30);
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let a = fingerprint(&spec, &loader_config((32, 24), 7), 40);
    let b = fingerprint(&spec, &loader_config((30, 20), 8), 40);
    assert_eq!((a, b), (0x91dc_9466_3ab6_0d66, 0x47be_ee30_be55_a7b3));
    // The fingerprint sees a change: another seed gives another one.
    assert_ne!(fingerprint(&spec, &loader_config((32, 24), 9), 40), a);
    let l = TrainLoader::open(&spec, &loader_config((32, 24), 7), 0).unwrap();
    assert!(l.rcs().is_none());
    assert!(!dir.path().join(".rccr-rcs-stats-32x24.json").exists());
}

/// The 32 x 24 trainId map of label file `path` (64 x 48, 2 x 2 blocks), decoded with the
/// `image` crate and subsampled (every nearest resize agrees on 2 x 2 blocks).
fn brute_label(path: &Path) -> Vec<u8> {
    let grey = image::open(path).unwrap().to_luma8();
    assert_eq!(grey.dimensions(), (64, 48));
    (0..24 * 32)
        .map(|i| to_train(grey.get_pixel((i % 32 * 2) as u32, (i / 32 * 2) as u32)[0]))
        .collect()
}

/// (class, pixels) of the classes in a trainId map, ascending.
fn brute_counts(label: &[u8]) -> Vec<(u8, u64)> {
    let mut counts = BTreeMap::new();
    for &v in label.iter().filter(|&&v| v != 255) {
        *counts.entry(v).or_insert(0u64) += 1;
    }
    counts.into_iter().collect()
}

/// Brute-force counts of every label of a [`dataset`] of `n` images, by name.
fn brute_all(root: &Path, n: usize) -> BTreeMap<String, Vec<(u8, u64)>> {
    (0..n)
        .map(|k| {
            let name = format!("{:05}", k + 1);
            let path = root.join("labels").join(format!("{name}.png"));
            (name, brute_counts(&brute_label(&path)))
        })
        .collect()
}

/// Loader settings with rare-class sampling on: T = 0.01 (DAFormer), min_pixel_share 0.01
/// (min_pixels = ceil(7.68) = 8 at 32 x 24), crop ratio 0.5, 10 tries.
fn rcs_config(seed: u64) -> LoaderConfig {
    let mut c = loader_config((32, 24), seed);
    c.rcs = RcsConfig {
        enabled: true,
        min_pixel_share: 0.01,
        ..RcsConfig::default()
    };
    c
}

const MIN_PIXELS: u64 = 8;

fn spec_of(root: &Path) -> DatasetSpec {
    format!("gta5:{}", root.display()).parse().unwrap()
}

/// The cache's per-image counts, read from its JSON by label path (labels cached as
/// unreadable, `counts: null`, left out).
fn cached_counts(cache: &Path) -> BTreeMap<String, Vec<(u8, u64)>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(cache).unwrap()).unwrap();
    assert_eq!(v["size"], serde_json::json!([32, 24]));
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["counts"].is_null())
        .map(|e| {
            let label = e["label"].as_str().unwrap();
            let name = label
                .strip_prefix("labels/")
                .unwrap()
                .strip_suffix(".png")
                .unwrap();
            let counts = serde_json::from_value(e["counts"].clone()).unwrap();
            (name.to_string(), counts)
        })
        .collect()
}

#[test]
fn cached_statistics_match_brute_force_and_follow_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    dataset(root, 30);
    let (spec, cfg) = (spec_of(root), rcs_config(7));
    let cache = root.join(".rccr-rcs-stats-32x24.json");
    let l = TrainLoader::open(&spec, &cfg, 0).unwrap();
    let t = l.rcs().unwrap();
    assert_eq!(t.labels_decoded, 30);
    assert_eq!(t.cache.as_deref(), Some(cache.as_path()));
    assert_eq!(t.min_pixels, MIN_PIXELS);
    let brute = brute_all(root, 30);
    assert_eq!(cached_counts(&cache), brute);
    let mut totals = vec![0u64; 255];
    for &(c, n) in brute.values().flatten() {
        totals[c as usize] += n;
    }
    assert_eq!(t.class_pixels, totals);
    drop(l);

    // Unchanged data: nothing decoded, the cache not rewritten.
    let stamp = std::fs::metadata(&cache).unwrap().modified().unwrap();
    let l = TrainLoader::open(&spec, &cfg, 0).unwrap();
    assert_eq!(l.rcs().unwrap().labels_decoded, 0);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        stamp
    );
    drop(l);

    // One label changed (now image 3's content, with its bicycle): only it is recounted.
    let changed = root.join("labels/00005.png");
    write_label(&changed, 2);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let l = TrainLoader::open(&spec, &cfg, 0).unwrap();
    assert_eq!(l.rcs().unwrap().labels_decoded, 1);
    let now = cached_counts(&cache);
    assert_eq!(now, brute_all(root, 30));
    assert_ne!(now["00005"], brute["00005"]);
    assert_eq!(now["00005"], brute["00003"]);
    // Another resize keeps its own cache.
    let mut other = cfg.clone();
    other.resize = Some((16, 12));
    let l2 = TrainLoader::open(&spec, &other, 0).unwrap();
    assert_eq!(l2.rcs().unwrap().labels_decoded, 30);
    assert!(root.join(".rccr-rcs-stats-16x12.json").is_file());
}

/// exp(a_i) / sum_j exp(a_j) of the exponents worked out by hand.
fn softmax(a: &[f64]) -> Vec<f64> {
    let z: f64 = a.iter().map(|x| x.exp()).sum();
    a.iter().map(|x| x.exp() / z).collect()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-12 * y.abs().max(1e-300),
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn probabilities_follow_the_formula() {
    // Three classes of 600, 300, 100 pixels: f = 0.6, 0.3, 0.1; at T = 0.1 the exponents
    // (1 - f) / T are 4, 7, 9; class 3 has no pixels and class 4 no candidate.
    let pixels = [600, 300, 100, 0, 0];
    let all = [true; 5];
    let p = class_probabilities(&pixels, &all, 0.1);
    let want = softmax(&[4.0, 7.0, 9.0]);
    assert_close(&p, &[want[0], want[1], want[2], 0.0, 0.0]);
    // Class 2 without candidates: renormalised over 0 and 1.
    let p = class_probabilities(&pixels, &[true, true, false, true, true], 0.1);
    let want = softmax(&[4.0, 7.0]);
    assert_close(&p, &[want[0], want[1], 0.0, 0.0, 0.0]);
    // T = 0.01: exponents 40, 70, 90, i.e. e^-50, e^-20, 1 relative to the largest.
    let p = class_probabilities(&pixels, &all, 0.01);
    let z = 1.0 + (-20.0f64).exp() + (-50.0f64).exp();
    assert_close(
        &p,
        &[
            (-50.0f64).exp() / z,
            (-20.0f64).exp() / z,
            1.0 / z,
            0.0,
            0.0,
        ],
    );
    // A set with one pixel of a class among 10^12 stays finite at T = 0.001.
    let p = class_probabilities(&[1_000_000_000_000, 1], &[true, true], 0.001);
    assert!(p.iter().all(|x| x.is_finite()) && (p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(min_pixels(0.0015, (1280, 720)), 1383);
    assert_eq!(min_pixels(0.0, (32, 24)), 1);
}

/// The loader's table on the test set: P from the brute-force class totals and the
/// brute-force candidates (images with at least 8 pixels of the class).
#[test]
fn the_table_of_the_test_set_is_the_formula_on_brute_force_counts() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 30);
    let l = TrainLoader::open(&spec_of(dir.path()), &rcs_config(7), 0).unwrap();
    let t = l.rcs().unwrap();
    let brute = brute_all(dir.path(), 30);
    let mut pixels = BTreeMap::new();
    let mut cands = BTreeMap::new();
    for &(c, n) in brute.values().flatten() {
        *pixels.entry(c).or_insert(0u64) += n;
        *cands.entry(c).or_insert(0usize) += usize::from(n >= MIN_PIXELS);
    }
    let total: u64 = pixels.values().sum();
    let usable: Vec<u8> = pixels.keys().copied().filter(|c| cands[c] > 0).collect();
    // The pole speck (class 5) is one pixel per image: never a candidate, P = 0.
    assert!(pixels[&5] > 0 && cands[&5] == 0 && !usable.contains(&5));
    let exps: Vec<f64> = usable
        .iter()
        .map(|c| (1.0 - pixels[c] as f64 / total as f64) / 0.01)
        .collect();
    let m = exps.iter().cloned().fold(f64::MIN, f64::max);
    let want = softmax(&exps.iter().map(|e| e - m).collect::<Vec<_>>());
    for c in 0..255 {
        let expect = usable
            .iter()
            .position(|&u| u as usize == c)
            .map_or(0.0, |i| want[i]);
        assert!(
            (t.prob[c] - expect).abs() < 1e-12,
            "class {c}: {} vs {expect}",
            t.prob[c]
        );
        assert_eq!(
            t.candidate_count(c),
            cands.get(&(c as u8)).copied().unwrap_or(0)
        );
    }
}

/// Pixels of class `c` in sample `b` of a batch's labels.
fn in_crop(labels: &[i64], b: usize, c: u8) -> u64 {
    labels[b * 256..(b + 1) * 256]
        .iter()
        .filter(|&&v| v == i64::from(c))
        .count() as u64
}

#[test]
fn drawn_classes_follow_p_on_candidates_with_honest_crops() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 30);
    let mut l = TrainLoader::open(&spec_of(dir.path()), &rcs_config(11), 0).unwrap();
    let prob = l.rcs().unwrap().prob.clone();
    let brute = brute_all(dir.path(), 30);
    let count_of = |name: &str, c: u8| brute[name].iter().find(|e| e.0 == c).map_or(0, |e| e.1);
    let mut drawn = vec![0u64; 255];
    let (mut hits, mut n) = (0u64, 0u64);
    for _ in 0..1000 {
        let b = l.next_batch().unwrap();
        let labels = Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap();
        for (i, d) in b.rcs.as_ref().unwrap().iter().enumerate() {
            drawn[d.class as usize] += 1;
            n += 1;
            assert!(
                count_of(&b.names[i], d.class) >= MIN_PIXELS,
                "{} is no candidate of {}",
                b.names[i],
                d.class
            );
            let kept = in_crop(&labels, i, d.class);
            // The flag says whether the crop holds more than 0.5 * 8 pixels of c.
            assert_eq!(
                d.crop_hit,
                kept > 4,
                "sample {i}: {kept} pixels of {}",
                d.class
            );
            hits += u64::from(d.crop_hit);
        }
    }
    assert_eq!(n, 2000);
    // Binomial 99.9 % interval per class (normal approximation, z = 3.29).
    for c in 0..255 {
        let (p, k) = (prob[c], drawn[c] as f64);
        let (mean, sd) = (2000.0 * p, (2000.0 * p * (1.0 - p)).sqrt());
        assert!(
            (k - mean).abs() <= 3.29 * sd + 1e-9,
            "class {c}: {k} draws, expected {mean} +- {sd}"
        );
    }
    // At least three classes are drawn, and the crop search finds the class nearly always.
    assert!(drawn.iter().filter(|&&k| k > 100).count() >= 3, "{drawn:?}");
    assert!(hits as f64 >= 0.9 * n as f64, "{hits} hits of {n}");
}

/// A batch's names, images, labels and RCS draws.
type Drawn = (Vec<String>, Vec<f32>, Vec<i64>, Vec<RcsDraw>);

/// Names, images, labels and RCS draws of `n` batches from iteration `start`.
fn run_rcs(spec: &DatasetSpec, c: &LoaderConfig, start: u64, n: usize) -> Vec<Drawn> {
    let mut l = TrainLoader::open(spec, c, start).unwrap();
    (0..n)
        .map(|_| {
            let b = l.next_batch().unwrap();
            let images = Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap();
            let labels = Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap();
            (b.names.clone(), images, labels, b.rcs.clone().unwrap())
        })
        .collect()
}

#[test]
fn a_loader_opened_at_k_continues_the_uninterrupted_stream() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 30);
    let spec = spec_of(dir.path());
    let c = rcs_config(5);
    let full = run_rcs(&spec, &c, 0, 15);
    let tail = run_rcs(&spec, &c, 6, 9);
    assert_eq!(&full[6..], &tail[..]);
    let mut one = c.clone();
    one.workers = 1;
    assert_eq!(run_rcs(&spec, &one, 0, 15), full);
    // Another seed draws another stream; the draws are not constant.
    let mut other = c.clone();
    other.seed = 6;
    assert_ne!(run_rcs(&spec, &other, 0, 15), full);
    let classes: BTreeSet<u8> = full
        .iter()
        .flat_map(|b| b.3.iter().map(|d| d.class))
        .collect();
    assert!(classes.len() >= 2, "{classes:?}");
}

#[test]
fn unreadable_files_are_skipped_and_no_usable_class_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    dataset(root, 30);
    // Label 00001 corrupt: skipped by the statistics; image 00003 (a bicycle candidate)
    // corrupt: the loader replaces it as without RCS.
    std::fs::write(root.join("labels/00001.png"), b"not a png").unwrap();
    std::fs::write(root.join("images/00003.png"), b"not a png").unwrap();
    let mut l = TrainLoader::open(&spec_of(root), &rcs_config(3), 0).unwrap();
    let t = l.rcs().unwrap();
    let cached = cached_counts(&root.join(".rccr-rcs-stats-32x24.json"));
    assert_eq!(cached.len(), 29);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(".rccr-rcs-stats-32x24.json")).unwrap())
            .unwrap();
    assert!(v["images"][0]["counts"].is_null());
    assert_eq!(
        t.candidate_count(11),
        9,
        "person: images 4, 7, ..., 28 (not 1)"
    );
    for _ in 0..200 {
        let b = l.next_batch().unwrap();
        assert!(!b.names.iter().any(|n| n == "00003" || n == "00001"));
        assert_eq!(b.rcs.unwrap().len(), 2);
    }
    // Image 00003 is skipped; a replacement draw may also have met label 00001.
    assert!((1..=2).contains(&l.skipped()), "{}", l.skipped());
    // A cache that cannot be written (a folder in its place): the statistics stay in
    // memory and the loader works.
    let other = tempfile::tempdir().unwrap();
    dataset(other.path(), 6);
    std::fs::create_dir(other.path().join(".rccr-rcs-stats-32x24.json")).unwrap();
    let mut l = TrainLoader::open(&spec_of(other.path()), &rcs_config(3), 0).unwrap();
    assert_eq!(l.rcs().unwrap().cache, None);
    assert_eq!(l.rcs().unwrap().labels_decoded, 6);
    assert_eq!(l.next_batch().unwrap().rcs.unwrap().len(), 2);
    // Nothing covers all 768 pixels: no class to sample.
    let mut c = rcs_config(3);
    c.rcs.min_pixel_share = 1.0;
    let err = TrainLoader::open(&spec_of(root), &c, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&root.display().to_string()), "{err}");
    assert!(err.contains("min_pixel_share"), "{err}");
}

/// A traced run with RCS on writes `rcs.json` and, per step, the draws and the table
/// (`rcs.*`); checked as the replay does: P recomputed from `rcs.class_pixels` and
/// `rcs.candidates`, and every crop flagged a hit holds more than 0.5 * min_pixels pixels
/// of its class in `input.y_s`.
#[test]
fn a_traced_run_records_the_draws_and_writes_rcs_json() {
    let data = tempfile::tempdir().unwrap();
    common::synth_lib(data.path());
    let out = tempfile::tempdir().unwrap();
    let mut cfg = common::tiny_config(data.path(), 2);
    cfg.data.rcs.enabled = true;
    let opts = RunOptions {
        out: out.path().to_path_buf(),
        trace: true,
        quiet: true,
        ..Default::default()
    };
    run(&cfg, &opts).unwrap_or_else(|e| panic!("traced run failed: {e:#}"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("rcs.json")).unwrap()).unwrap();
    // ceil(0.0015 * 128 * 64) = ceil(12.288) = 13.
    assert_eq!(report["min_pixels"], 13);
    let classes = report["classes"].as_array().unwrap();
    assert!(classes.iter().any(|c| c["name"] == "road"), "{report}");
    for step in 1..=2 {
        let file = out.path().join(format!("step_{step:07}.safetensors"));
        let tf = rccr_models::weights::read_tensors(&file).unwrap();
        let get = |n: &str| tf.tensors.get(n).unwrap_or_else(|| panic!("{n} missing"));
        assert_eq!(get("rcs.min_pixels").int64_value(&[]), 13);
        assert_eq!(get("rcs.crop_hit").kind(), Kind::Uint8);
        let pixels = Vec::<i64>::try_from(get("rcs.class_pixels")).unwrap();
        let cands = Vec::<i64>::try_from(get("rcs.candidates")).unwrap();
        let prob = Vec::<f64>::try_from(get("rcs.prob")).unwrap();
        assert_eq!(prob.len(), 19);
        let total: i64 = pixels.iter().sum();
        let logits: Vec<Option<f64>> = (0..19)
            .map(|c| {
                (pixels[c] > 0 && cands[c] > 0)
                    .then(|| (1.0 - pixels[c] as f64 / total as f64) / 0.01)
            })
            .collect();
        let m = logits.iter().flatten().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().flatten().map(|l| (l - m).exp()).sum();
        for c in 0..19 {
            let want = logits[c].map_or(0.0, |l| (l - m).exp() / z);
            assert!(
                (prob[c] - want).abs() < 1e-12,
                "class {c}: {} vs {want}",
                prob[c]
            );
            let rep = classes.iter().find(|k| k["id"] == c);
            assert_eq!(rep.map_or(0, |k| k["pixels"].as_i64().unwrap()), pixels[c]);
        }
        let class = Vec::<i64>::try_from(get("rcs.class")).unwrap();
        let hit = Vec::<u8>::try_from(get("rcs.crop_hit")).unwrap();
        let ys: &Tensor = get("input.y_s");
        for b in 0..class.len() {
            assert!(prob[class[b] as usize] > 0.0);
            let n = ys
                .get(b as i64)
                .eq(class[b])
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert_eq!(hit[b] == 1, n as f64 > 0.5 * 13.0, "sample {b}: {n} pixels");
        }
    }
}
