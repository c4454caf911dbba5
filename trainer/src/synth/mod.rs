//! The built-in synthetic "game -> real" street-scene benchmark (docs/benchmark.md), a
//! stand-in for GTA5 -> Cityscapes (paper Section 4)
//! that runs on a laptop CPU: procedural scenes (`scene`) rasterised into label canvases
//! (`raster`) and rendered in two domains (`style`), written in the real on-disk
//! layouts so the real loaders read them. Version 2 (`--gap content`, the default;
//! docs/benchmark.md) gives each domain its own camera, layout, class priors, looks and
//! sensor (`gap`); version 1 (`--gap appearance`) is the earlier, appearance-only gap.
//! Files:
//!
//! - `DIR/gta5/{images,labels}/NNNNN.png`: source train ("game": flat colours), labels as
//!   paletted labelId PNGs like the real GTA5 release;
//! - `DIR/gta5-val/{images,labels}/`: held-out source validation (same layout);
//! - `DIR/cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`
//!   and `DIR/cityscapes/gtFine/{train,val}/<city>/..._gtFine_labelIds.png`: target ("real").
//! - `DIR/synth.json`: the arguments and the [`SynthReport`] (version, knobs, per-class
//!   pixel frequencies of both domains).
//!
//! Every image is a function of (seed, set, index) only, so the same seed gives the same
//! bytes whatever the thread count. Files are written to a temporary name and renamed.

pub mod gap;
pub(crate) mod raster;
pub(crate) mod scene;
pub(crate) mod style;

use crate::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use rayon::prelude::*;
use rccr_infer::imageio::PngColor;
use rccr_infer::taxonomy::{train_to_label, CLASSES, NUM_CLASSES};

use crate::data::augment::rng_for;
pub use gap::{Gap, Knobs};
use scene::Scene;
use style::{render, render_v2, Domain};

/// An image size written `WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl FromStr for ImageSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::BadSize {
            text: s.to_string(),
        };
        let size: rccr_infer::Size = s.parse().map_err(|_| bad())?;
        let (width, height) = size.pair();
        if !(32..=8192).contains(&width) || !(32..=8192).contains(&height) {
            return Err(bad());
        }
        Ok(ImageSize { width, height })
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl serde::Serialize for ImageSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `rccr-train synth`: generate the synthetic benchmark.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthArgs {
    /// Output folder (created; a folder holding other data is refused).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training images per domain (source `gta5/` and target `cityscapes/.../train`).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Validation images per domain (source `gta5-val/` and target `cityscapes/.../val`).
    #[arg(long, default_value_t = 50)]
    pub val_count: usize,
    /// Image size WxH.
    #[arg(long, default_value = "512x256")]
    pub size: ImageSize,
    /// Strength of the target's appearance shift (its "real" palette, texture and
    /// shadows): 0 renders the target in the source's colours, 1 the full "real" palette.
    /// Default: 0.7 with `--gap appearance` (version 1: a colour-only classifier fit on
    /// the source falls from 37% to 8% mIoU on the target), 0.2 with `--gap content`
    /// (`gap::CONTENT_SHIFT`, calibrated: docs/benchmark.md, "Calibration").
    #[arg(long)]
    pub shift: Option<f32>,
    /// Benchmark version: `content` (version 2: camera, layout, class priors, looks and
    /// sensor differ between domains; docs/benchmark.md) or `appearance` (version 1, the
    /// earlier generator: the same scenes, rendered differently).
    #[arg(long, value_enum, default_value_t = Gap::Content)]
    #[serde(default = "appearance")]
    pub gap: Gap,
    /// TOML file overriding version 2's knobs (any subset, e.g. `[target.camera]
    /// pitch_deg = [4.0, 5.0]`; docs/benchmark.md lists them). Ignored by `--gap appearance`.
    #[arg(long)]
    #[serde(default)]
    pub knobs: Option<PathBuf>,
}

/// What a `synth.json` without a `gap` key was written by: version 1.
fn appearance() -> Gap {
    Gap::Appearance
}

impl SynthArgs {
    /// The target's appearance shift: `--shift`, else the version's default.
    pub fn shift(&self) -> f32 {
        self.shift.unwrap_or(match self.gap {
            Gap::Appearance => gap::APPEARANCE_SHIFT,
            Gap::Content => gap::CONTENT_SHIFT,
        })
    }

    /// The default arguments writing to `out`.
    pub fn new(out: impl Into<PathBuf>) -> SynthArgs {
        SynthArgs {
            out: out.into(),
            seed: 0,
            count: 200,
            val_count: 50,
            size: ImageSize {
                width: 512,
                height: 256,
            },
            shift: None,
            gap: Gap::Content,
            knobs: None,
        }
    }
}

/// What a run wrote, and how fast.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SynthReport {
    /// Benchmark version (`synth-v1`: appearance gap, `synth-v2`: content gap).
    pub version: String,
    /// Every knob of version 2 as used (absent for version 1).
    pub knobs: Option<Knobs>,
    /// The output folder.
    pub out: PathBuf,
    /// The seed.
    pub seed: u64,
    /// Image size.
    pub size: ImageSize,
    /// Target shift strength used (the default of the version when `--shift` is not given).
    pub shift: f32,
    /// Source training pairs (`gta5/`).
    pub source_train: usize,
    /// Source validation pairs (`gta5-val/`).
    pub source_val: usize,
    /// Target training pairs (`cityscapes/.../train`).
    pub target_train: usize,
    /// Target validation pairs (`cityscapes/.../val`).
    pub target_val: usize,
    /// Dataset spec of the source training set (`gta5:DIR/gta5`).
    pub source_spec: String,
    /// Dataset spec of the source validation set (`gta5:DIR/gta5-val`).
    pub source_val_spec: String,
    /// Dataset spec of the target (`cityscapes:DIR/cityscapes`).
    pub target_spec: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Image/label pairs written per second.
    pub images_per_second: f64,
    /// The 19 class names, in the order of the fractions below.
    pub class_names: Vec<String>,
    /// Pixel fraction of each of the 19 classes in the source images (train + val),
    /// over all pixels (void included).
    pub source_class_fraction: Vec<f64>,
    /// Pixel fraction of each of the 19 classes in the target images (train + val),
    /// over all pixels (void, e.g. the hood, included).
    pub target_class_fraction: Vec<f64>,
    /// Names of the classes present in the source images.
    pub source_classes: Vec<String>,
    /// Names of the classes present in the target images.
    pub target_classes: Vec<String>,
}

/// The four sets written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Set {
    SourceTrain,
    SourceVal,
    TargetTrain,
    TargetVal,
}

impl Set {
    /// The sets in the order they are generated.
    const ALL: [Set; 4] = [
        Set::SourceTrain,
        Set::SourceVal,
        Set::TargetTrain,
        Set::TargetVal,
    ];

    /// How many images of this set `args` asks for.
    fn count(self, args: &SynthArgs) -> usize {
        match self {
            Set::SourceTrain | Set::TargetTrain => args.count,
            Set::SourceVal | Set::TargetVal => args.val_count,
        }
    }

    fn domain(self) -> Domain {
        match self {
            Set::SourceTrain | Set::SourceVal => Domain::Source,
            Set::TargetTrain | Set::TargetVal => Domain::Target,
        }
    }
    fn tag(self) -> u64 {
        match self {
            Set::SourceTrain => 0x5_0001,
            Set::SourceVal => 0x5_0002,
            Set::TargetTrain => 0x5_0003,
            Set::TargetVal => 0x5_0004,
        }
    }
}

/// Made-up city names of the target domain's train and val splits.
pub(crate) const TRAIN_CITIES: [&str; 3] = ["arkham", "brisbury", "coldharbour"];
/// Made-up city names of the target's val split.
pub(crate) const VAL_CITIES: [&str; 2] = ["dunwich", "eastmarch"];

/// The (image, label) paths of sample `i` of `set` under `out`.
fn paths(out: &Path, set: Set, i: usize) -> (PathBuf, PathBuf) {
    match set {
        Set::SourceTrain | Set::SourceVal => {
            let dir = out.join(if set == Set::SourceTrain {
                "gta5"
            } else {
                "gta5-val"
            });
            let file = format!("{:05}.png", i + 1);
            (
                dir.join("images").join(&file),
                dir.join("labels").join(&file),
            )
        }
        Set::TargetTrain | Set::TargetVal => {
            let (split, cities): (&str, &[&str]) = if set == Set::TargetTrain {
                ("train", &TRAIN_CITIES)
            } else {
                ("val", &VAL_CITIES)
            };
            let city = cities[i % cities.len()];
            let stem = format!("{city}_{:06}_{:06}", i / cities.len(), 19);
            let root = out.join("cityscapes");
            (
                root.join("leftImg8bit")
                    .join(split)
                    .join(city)
                    .join(format!("{stem}_leftImg8bit.png")),
                root.join("gtFine")
                    .join(split)
                    .join(city)
                    .join(format!("{stem}_gtFine_labelIds.png")),
            )
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Write {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename
/// ([`rccr_infer::files::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    rccr_infer::files::write_atomic(path, bytes).map_err(io(path))
}

/// PNG bytes of an 8-bit image ([`rccr_infer::imageio::encode_png`]), naming `path` in
/// the error.
fn encode_png(
    path: &Path,
    data: &[u8],
    size: ImageSize,
    color: PngColor,
) -> Result<Vec<u8>, Error> {
    rccr_infer::imageio::encode_png(size.width, size.height, color, data).map_err(|e| {
        Error::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

/// The GTA5-style palette: index = labelId, colour = the Cityscapes colour of its class.
fn label_palette() -> Vec<u8> {
    let mut pal = vec![0u8; 256 * 3];
    for c in CLASSES.iter() {
        let i = c.label_id as usize * 3;
        pal[i..i + 3].copy_from_slice(&c.color);
    }
    pal
}

/// The labelIds of a canvas of trainIds, and the histogram of its trainIds (index 19:
/// void pixels). The ego-car hood is written as labelId 1 ("ego vehicle"), the rest of
/// void as 0.
fn label_ids(train_ids: &[u8]) -> (Vec<u8>, [u64; NUM_CLASSES + 1]) {
    let mut hist = [0u64; NUM_CLASSES + 1];
    let labels = train_ids
        .iter()
        .map(|&t| {
            hist[(t as usize).min(NUM_CLASSES)] += 1;
            match t {
                scene::HOOD => 1,
                _ => train_to_label(t).unwrap_or(0),
            }
        })
        .collect();
    (labels, hist)
}

/// The RGB image and label canvas of sample `i` of `set`: version 1 when `knobs` is
/// `None`, else version 2 with the knobs of the set's domain.
pub(crate) fn sample(
    args: &SynthArgs,
    knobs: Option<&Knobs>,
    set: Set,
    i: usize,
) -> (Vec<u8>, raster::Canvas) {
    let (w, h) = (args.size.width as usize, args.size.height as usize);
    let mut rng = rng_for(args.seed, set.tag(), i as u64);
    let image_seed = crate::data::augment::mix(args.seed, set.tag() ^ 0xC0_1005, i as u64);
    match knobs {
        None => {
            let scene = Scene::sample(&mut rng, w, h);
            let canvas = scene.draw(w, h);
            let rgb = render(
                &canvas,
                scene.cam.hy,
                set.domain(),
                args.shift(),
                image_seed,
            );
            (rgb, canvas)
        }
        Some(k) => {
            let k = match set.domain() {
                Domain::Source => &k.source,
                Domain::Target => &k.target,
            };
            let scene = Scene::sample_street(&mut rng, w, h, k);
            let canvas = scene.draw(w, h);
            let rgb = render_v2(&canvas, scene.cam.hy, k, args.shift(), image_seed);
            (rgb, canvas)
        }
    }
}

/// Generates, writes and returns the class histogram of one sample.
fn generate_one(
    args: &SynthArgs,
    knobs: Option<&Knobs>,
    set: Set,
    i: usize,
    palette: &[u8],
) -> Result<[u64; NUM_CLASSES + 1], Error> {
    let (rgb, canvas) = sample(args, knobs, set, i);
    let (labels, hist) = label_ids(&canvas.class);
    let (image_path, label_path) = paths(&args.out, set, i);
    let img = encode_png(&image_path, &rgb, args.size, PngColor::Rgb)?;
    // GTA5 ships paletted labels, Cityscapes greyscale ones.
    let label_color = match set.domain() {
        Domain::Source => PngColor::Indexed(palette),
        Domain::Target => PngColor::Gray,
    };
    let lbl = encode_png(&label_path, &labels, args.size, label_color)?;
    write_atomic(&image_path, &img)?;
    write_atomic(&label_path, &lbl)?;
    Ok(hist)
}

/// Refuses an output folder holding data we did not write; clears ours.
fn prepare_out(out: &Path) -> Result<(), Error> {
    let marker = out.join("synth.json");
    let ours = marker.is_file();
    for sub in ["gta5", "gta5-val", "cityscapes"] {
        let dir = out.join(sub);
        if !dir.exists() {
            continue;
        }
        if !ours {
            let empty = std::fs::read_dir(&dir).map_err(io(&dir))?.next().is_none();
            if !empty {
                return Err(Error::NotOurs { path: dir });
            }
        }
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    if ours {
        std::fs::remove_file(&marker).map_err(io(&marker))?;
    }
    Ok(())
}

fn class_fraction(hist: &[u64; NUM_CLASSES + 1]) -> Vec<f64> {
    let total: u64 = hist.iter().sum();
    hist[..NUM_CLASSES]
        .iter()
        .map(|&n| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        })
        .collect()
}

fn class_names_present(hist: &[u64; NUM_CLASSES + 1]) -> Vec<String> {
    hist.iter()
        .zip(CLASSES.iter())
        .filter(|(&n, _)| n > 0)
        .map(|(_, c)| c.name.to_string())
        .collect()
}

/// Refuses arguments that cannot work: no training images, or a shift that is negative
/// or not finite.
fn check_args(args: &SynthArgs) -> Result<(), Error> {
    if args.count == 0 {
        return Err(Error::BadArgs {
            reason: "--count must be at least 1".into(),
        });
    }
    let shift = args.shift();
    if !shift.is_finite() || shift < 0.0 {
        return Err(Error::BadArgs {
            reason: format!("--shift {shift} must be a finite number >= 0"),
        });
    }
    Ok(())
}

/// Every (set, index) to generate, in the order of [`Set::ALL`].
fn jobs(args: &SynthArgs) -> Vec<(Set, usize)> {
    Set::ALL
        .into_iter()
        .flat_map(|set| (0..set.count(args)).map(move |i| (set, i)))
        .collect()
}

/// Creates every folder the `jobs` write into.
fn create_folders(out: &Path, jobs: &[(Set, usize)]) -> Result<(), Error> {
    let mut dirs: Vec<PathBuf> = jobs
        .iter()
        .flat_map(|&(set, i)| {
            let (a, b) = paths(out, set, i);
            [a, b]
        })
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    Ok(())
}

/// Generates every job on the rayon pool behind a progress bar; returns the class
/// histograms of the source and of the target images.
fn generate_all(
    args: &SynthArgs,
    knobs: Option<&Knobs>,
    jobs: &[(Set, usize)],
) -> Result<[[u64; NUM_CLASSES + 1]; 2], Error> {
    let palette = label_palette();
    let bar = indicatif::ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "synth {bar:40} {pos}/{len} images, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let results: Vec<(Set, [u64; NUM_CLASSES + 1])> = jobs
        .par_iter()
        .map(|&(set, i)| {
            let hist = generate_one(args, knobs, set, i, &palette)?;
            bar.inc(1);
            Ok((set, hist))
        })
        .collect::<Result<_, Error>>()?;
    bar.finish_and_clear();
    let mut by_domain = [[0u64; NUM_CLASSES + 1]; 2];
    for (set, hist) in &results {
        let acc = &mut by_domain[usize::from(set.domain() == Domain::Target)];
        for (a, h) in acc.iter_mut().zip(hist) {
            *a += h;
        }
    }
    Ok(by_domain)
}

/// The report of a finished run that took `seconds` for `images` pairs.
fn report(
    args: &SynthArgs,
    knobs: Option<&Knobs>,
    [src, tgt]: &[[u64; NUM_CLASSES + 1]; 2],
    images: usize,
    seconds: f64,
) -> SynthReport {
    SynthReport {
        version: args.gap.version().to_string(),
        knobs: knobs.copied(),
        class_names: CLASSES.iter().map(|c| c.name.to_string()).collect(),
        out: args.out.clone(),
        seed: args.seed,
        size: args.size,
        shift: args.shift(),
        source_train: args.count,
        source_val: args.val_count,
        target_train: args.count,
        target_val: args.val_count,
        source_spec: format!("gta5:{}", args.out.join("gta5").display()),
        source_val_spec: format!("gta5:{}", args.out.join("gta5-val").display()),
        target_spec: format!("cityscapes:{}", args.out.join("cityscapes").display()),
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        source_class_fraction: class_fraction(src),
        target_class_fraction: class_fraction(tgt),
        source_classes: class_names_present(src),
        target_classes: class_names_present(tgt),
    }
}

/// Generates the benchmark described in the module doc; returns (and writes as
/// `DIR/synth.json`) the report.
pub fn run(args: &SynthArgs) -> Result<SynthReport, Error> {
    check_args(args)?;
    let knobs = match args.gap {
        Gap::Appearance => None,
        Gap::Content => Some(gap::resolve(args.knobs.as_deref())?),
    };
    let start = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    prepare_out(&args.out)?;
    // The marker goes first, so that an interrupted run can be overwritten by the next one.
    let marker = args.out.join("synth.json");
    let pending = serde_json::json!({ "args": args, "report": null }).to_string();
    write_atomic(&marker, pending.as_bytes())?;
    let jobs = jobs(args);
    create_folders(&args.out, &jobs)?;
    let knobs = knobs.as_ref();
    let histograms = generate_all(args, knobs, &jobs)?;
    let seconds = start.elapsed().as_secs_f64();
    let images = jobs.len();
    let report = report(args, knobs, &histograms, images, seconds);
    let json = serde_json::json!({ "args": args, "report": &report });
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Encode {
        path: marker.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&marker, text.as_bytes())?;
    tracing::info!(
        out = %args.out.display(),
        images,
        seconds = format!("{seconds:.2}"),
        images_per_second = format!("{:.1}", report.images_per_second),
        "synthetic benchmark written"
    );
    Ok(report)
}
