//! Shared helpers of rccr-infer's integration tests: tiny ONNX models built with the
//! official `onnx` Python package (tests/support/make_model.py), painted test images, PNG
//! I/O through the `image` crate (independent of rccr-infer's own PNG code), running the
//! CLI and the official Cityscapes evaluation.
#![allow(dead_code)]

use rccr_test_support::{run_python, Deps};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The 19 Cityscapes classes as (labelId, colour), in train-id order, written out from
/// cityscapesscripts/helpers/labels.py.
pub const TABLE: [(u8, [u8; 3]); 19] = [
    (7, [128, 64, 128]),
    (8, [244, 35, 232]),
    (11, [70, 70, 70]),
    (12, [102, 102, 156]),
    (13, [190, 153, 153]),
    (17, [153, 153, 153]),
    (19, [250, 170, 30]),
    (20, [220, 220, 0]),
    (21, [107, 142, 35]),
    (22, [152, 251, 152]),
    (23, [70, 130, 180]),
    (24, [220, 20, 60]),
    (25, [255, 0, 0]),
    (26, [0, 0, 142]),
    (27, [0, 0, 70]),
    (28, [0, 60, 100]),
    (31, [0, 80, 100]),
    (32, [0, 0, 230]),
    (33, [119, 11, 32]),
];

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rccr-infer"))
}

/// `Segmenter` options on the CPU with one intra-op thread, `input` size and `batch`.
pub fn cpu_options(input: Option<(u32, u32)>, batch: usize) -> rccr_infer::SegmenterOptions {
    rccr_infer::SegmenterOptions {
        session: rccr_infer::SessionOptions {
            provider: rccr_infer::Provider::Cpu,
            intra_threads: Some(1),
            ..rccr_infer::SessionOptions::default()
        },
        batch_size: batch,
        input_size: input,
    }
}

/// `rccr-infer --provider cpu --quiet --model MODEL --images IMAGES` (the set-up every
/// CPU run test shares).
pub fn cpu_cli(model: &Path, images: &Path) -> Cli {
    cli("--provider cpu --quiet")
        .path("--model", model)
        .path("--images", images)
}

/// Runs [`cpu_cli`] followed by `extra`.
pub fn run_infer(model: &Path, images: &Path, extra: &[&str]) -> Output {
    cpu_cli(model, images).words(extra).run()
}

/// Runs `rccr-infer score --pred PRED --labels LABELS --quiet` followed by `extra`.
pub fn run_score(pred: &Path, labels: &Path, extra: &[&str]) -> Output {
    cli("score --quiet")
        .path("--pred", pred)
        .path("--labels", labels)
        .words(extra)
        .run()
}

/// Runs the CLI with `args`.
pub fn run_cli(args: &[&str]) -> Output {
    cli("").words(args).run()
}

/// A command line of the CLI under construction: words (flags and values without
/// spaces, written as typed) and paths.
pub struct Cli(Vec<std::ffi::OsString>);

/// The CLI with the words of `line` (split at whitespace).
pub fn cli(line: &str) -> Cli {
    Cli(line.split_whitespace().map(Into::into).collect())
}

impl Cli {
    /// Appends `flag path`.
    pub fn path(mut self, flag: &str, path: &Path) -> Cli {
        self.0.extend([flag.into(), path.into()]);
        self
    }

    /// Appends `args` as they are.
    pub fn words(mut self, args: &[&str]) -> Cli {
        self.0.extend(args.iter().map(Into::into));
        self
    }

    /// The command, with backtraces off and warnings only in the log.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.args(&self.0)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LOG", "warn");
        c
    }

    /// Runs it.
    pub fn run(&self) -> Output {
        self.command().output().expect("run rccr-infer")
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The repository's `.deps/py` (where `make setup` installs onnx, Pillow and
/// cityscapesscripts): the test build tree, never known to the library.
pub fn deps_py() -> PathBuf {
    rccr_test_support::repo_root().join(".deps/py")
}

/// `python3` with [`deps_py`] on `PYTHONPATH`.
pub fn python() -> Command {
    rccr_test_support::python(Deps::Py)
}

/// Builds a test model with tests/support/make_model.py; `args` are its options.
pub fn make_model(out: &Path, args: &[&str]) -> PathBuf {
    let script = "infer/tests/support/make_model.py";
    let args = [
        &[out.as_os_str()][..],
        &args.iter().map(OsStr::new).collect::<Vec<_>>(),
    ]
    .concat();
    run_python(Deps::Py, script, &args);
    out.to_path_buf()
}

/// The train id painted at (x, y) of test image `i`: vertical stripes 8 px wide, the two
/// halves shifted, cycling through every class except 16 (train), which never appears.
pub fn painted_id(i: usize, x: u32, y: u32) -> u8 {
    let ids: Vec<u8> = (0..19).filter(|&t| t != 16).collect();
    let k = (x / 8) as usize + 3 * i + (y / 16) as usize * 5;
    ids[k % ids.len()]
}

/// Train-id map of test image `i`.
pub fn painted_map(i: usize, w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for y in 0..h {
        for x in 0..w {
            v.push(painted_id(i, x, y));
        }
    }
    v
}

/// RGB image painted with the palette colours of a train-id map.
pub fn paint(ids: &[u8], w: u32, h: u32) -> image::RgbImage {
    let mut img = image::RgbImage::new(w, h);
    for (i, px) in img.pixels_mut().enumerate() {
        *px = image::Rgb(TABLE[ids[i] as usize].1);
    }
    img
}

pub fn save_gray(path: &Path, w: u32, h: u32, data: Vec<u8>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(w, h, data)
        .unwrap()
        .save(path)
        .unwrap();
}

pub fn save_rgb(path: &Path, img: &image::RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

pub fn load_gray(path: &Path) -> image::GrayImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_luma8()
}

pub fn load_rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_rgb8()
}

/// A Cityscapes-layout dataset under `root`: `leftImg8bit/val/<city>/*_leftImg8bit.png`
/// painted from [`painted_map`], and `gtFine/val/<city>/*_gtFine_{labelIds,instanceIds}.png`
/// equal to the painting except: the top-left 8x4 block is void (labelId 1, ego vehicle)
/// and the top-right 8x16 block carries the next class (so predictions are wrong there).
/// Returns the image file names' keys.
pub fn cityscapes_dataset(root: &Path, count: usize, w: u32, h: u32) -> Vec<String> {
    let cities = ["aachen", "ulm"];
    let mut keys = Vec::new();
    for i in 0..count {
        let city = cities[i % 2];
        let key = format!("{city}_{:06}_{:06}", i, 19 + i);
        let ids = painted_map(i, w, h);
        save_rgb(
            &root
                .join("leftImg8bit/val")
                .join(city)
                .join(format!("{key}_leftImg8bit.png")),
            &paint(&ids, w, h),
        );
        let mut gt: Vec<u8> = ids.iter().map(|&t| TABLE[t as usize].0).collect();
        for y in 0..h {
            for x in 0..w {
                let k = (y * w + x) as usize;
                if x < 8 && y < 4 {
                    gt[k] = 1;
                } else if x >= w - 8 && y < 16 {
                    gt[k] = TABLE[(ids[k] as usize + 1) % 19].0;
                }
            }
        }
        let dir = root.join("gtFine/val").join(city);
        save_gray(
            &dir.join(format!("{key}_gtFine_labelIds.png")),
            w,
            h,
            gt.clone(),
        );
        save_gray(&dir.join(format!("{key}_gtFine_instanceIds.png")), w, h, gt);
        keys.push(key);
    }
    keys
}

/// The official evaluation's JSON on `dataset` (holding gtFine/val) with predictions in
/// `results`.
pub fn official(dataset: &Path, results: &Path) -> serde_json::Value {
    let export = dataset.join("official-export");
    rccr_infer::bench::run_official(dataset, results, &export, Some(&deps_py()))
        .unwrap_or_else(|e| panic!("official evaluation (run scripts/setup.sh): {e}"))
        .0
}

/// Asserts that an rccr-infer JSON report's per-class IoUs and mIoU equal the official
/// `classScores` / `averageScoreClasses` (NaN = null).
pub fn assert_matches_official(report: &serde_json::Value, official: &serde_json::Value) {
    let per = report["per_class"].as_object().expect("per_class object");
    assert_eq!(per.len(), 19);
    for (name, v) in per {
        let theirs = &official["classScores"][name];
        match (v.as_f64(), theirs.as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{name}: {a} vs official {b}"),
            (None, None) => {}
            (a, b) => panic!("{name}: {a:?} vs official {b:?}"),
        }
    }
    let (a, b) = (
        report["miou"].as_f64().unwrap(),
        official["averageScoreClasses"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-12, "mIoU {a} vs official {b}");
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
