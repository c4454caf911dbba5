//! The scoring benchmark (`rccr-infer bench-score`): megapixels of ground truth per second
//! for `score` (all threads and one thread), for the official
//! `cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling` on the same files, and
//! for bare PNG decoding of the same pairs (the ceiling any PNG-based scorer can reach),
//! printed as ratios from one run.
//!
//! Also the synthetic Cityscapes-layout split it (and the tests) run on:
//! `gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,instanceIds}.png` and
//! `results/<city>/<city>_<seq>_<frame>_pred.png`, blocky label maps with every labelId
//! 0..=33 in play (void ids included), predictions = ground truth with rectangles replaced
//! by other ids (void, absent classes), so every branch of the official rules is exercised.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::imageio;
use crate::seed::SplitMix;
use crate::labelmap::LabelMap;
use crate::score::{self, ScoreOptions};
use crate::taxonomy::MAX_LABEL_ID;

fn fill_rect(m: &mut LabelMap, x0: u32, y0: u32, w: u32, h: u32, v: u8) {
    for y in y0..(y0 + h).min(m.height) {
        let row = y as usize * m.width as usize;
        for x in x0..(x0 + w).min(m.width) {
            m.data[row + x as usize] = v;
        }
    }
}

/// A blocky ground-truth labelId map and a prediction derived from it.
pub fn synthetic_pair(width: u32, height: u32, rng: &mut SplitMix) -> (LabelMap, LabelMap) {
    let mut gt = LabelMap::filled(width, height, 7);
    // Mostly training classes, some void ids; never 27 (truck) so one class is only ever
    // predicted, never 31 (train) so one class is absent everywhere.
    let ids: Vec<u8> = (0..=MAX_LABEL_ID).filter(|&i| i != 27 && i != 31).collect();
    for _ in 0..40 {
        let (w, h) = (1 + rng.below(width / 3 + 1), 1 + rng.below(height / 3 + 1));
        let (x, y) = (rng.below(width), rng.below(height));
        let v = ids[rng.below(ids.len() as u32) as usize];
        fill_rect(&mut gt, x, y, w, h, v);
    }
    let mut pred = gt.clone();
    for _ in 0..25 {
        let (w, h) = (1 + rng.below(width / 4 + 1), 1 + rng.below(height / 4 + 1));
        let (x, y) = (rng.below(width), rng.below(height));
        // Any id 0..=33 except 31: void predictions, wrong classes, truck (absent in GT).
        let v = loop {
            let v = rng.below(MAX_LABEL_ID as u32 + 1) as u8;
            if v != 31 {
                break v;
            }
        };
        fill_rect(&mut pred, x, y, w, h, v);
    }
    (gt, pred)
}

/// Writes a synthetic split of `count` pairs under `root` in the Cityscapes layout (see the
/// module docs). Returns (ground-truth folder `root/gtFine/val`, prediction folder
/// `root/results`).
pub fn write_synthetic_split(
    root: &Path,
    count: usize,
    width: u32,
    height: u32,
    seed: u64,
) -> Result<(PathBuf, PathBuf)> {
    let gt_dir = root.join("gtFine").join("val");
    let pred_dir = root.join("results");
    let cities = ["aachen", "bochum", "ulm"];
    (0..count).into_par_iter().try_for_each(|i| -> Result<()> {
        let mut rng = SplitMix(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let (gt, pred) = synthetic_pair(width, height, &mut rng);
        let city = cities[i % cities.len()];
        let key = format!("{city}_{:06}_{:06}", i / cities.len(), 19 + i);
        imageio::write_label_png(
            &gt_dir.join(city).join(format!("{key}_gtFine_labelIds.png")),
            &gt,
        )?;
        // Instance ids as the official script reads them (values < 1000: no instances).
        imageio::write_label_png(
            &gt_dir
                .join(city)
                .join(format!("{key}_gtFine_instanceIds.png")),
            &gt,
        )?;
        imageio::write_label_png(&pred_dir.join(city).join(format!("{key}_pred.png")), &pred)
    })?;
    Ok((gt_dir, pred_dir))
}

/// The Python that runs the official script: `PYTHON` or `python3`, with `PYTHONPATH`
/// prefixed by the project's `.deps/py` (where `make setup` installs cityscapesscripts).
pub fn python_command() -> Command {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(py);
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/py");
    let mut path = deps.into_os_string();
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        path.push(":");
        path.push(old);
    }
    cmd.env("PYTHONPATH", path);
    cmd
}

/// Runs the unmodified official script as `python -m` would. NumPy 2.4 removed `np.in1d`,
/// which the script's instance-level (nIoU) part calls; it is restored as the `np.isin`
/// equivalent first (class IoUs do not depend on it).
pub const OFFICIAL_MAIN: &str = "import numpy as np, runpy\n\
if not hasattr(np, 'in1d'):\n    \
np.in1d = lambda a, b, invert=False: np.isin(a, b, invert=invert).ravel()\n\
runpy.run_module('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling', run_name='__main__')\n";

/// The official evaluation's results on a split laid out as by [`write_synthetic_split`]
/// (`dataset` holds `gtFine/val`, predictions in `results`): the parsed
/// `resultPixelLevelSemanticLabeling.json` and the seconds it took, its interpreter start
/// and imports excluded.
pub fn run_official(
    dataset: &Path,
    results: &Path,
    export: &Path,
) -> Result<(serde_json::Value, f64)> {
    let io = |e: std::io::Error| InferError::io("cannot run python3 for", dataset, e);
    // Import cost, measured alone, is subtracted.
    let t = Instant::now();
    let st = python_command()
        .args([
            "-c",
            "import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        ])
        .env("CITYSCAPES_DATASET", dataset)
        .output()
        .map_err(io)?;
    let import_s = t.elapsed().as_secs_f64();
    if !st.status.success() {
        return Err(InferError::External {
            tool: "importing cityscapesscripts (run scripts/setup.sh)",
            reason: String::from_utf8_lossy(&st.stderr).into_owned(),
        });
    }
    std::fs::create_dir_all(export).map_err(|e| InferError::io("cannot create", export, e))?;
    let t = Instant::now();
    let out = python_command()
        .args(["-c", OFFICIAL_MAIN])
        .env("CITYSCAPES_DATASET", dataset)
        .env("CITYSCAPES_RESULTS", results)
        .env("CITYSCAPES_EXPORT_DIR", export)
        .output()
        .map_err(io)?;
    let secs = (t.elapsed().as_secs_f64() - import_s).max(1e-9);
    if !out.status.success() {
        return Err(InferError::External {
            tool: "the official evaluation",
            reason: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let file = export.join("resultPixelLevelSemanticLabeling.json");
    let text =
        std::fs::read_to_string(&file).map_err(|e| InferError::io("cannot read", &file, e))?;
    // The official JSON writes NaN for undefined scores; make it parseable.
    let text = text.replace("NaN", "null");
    let json = serde_json::from_str(&text)
        .map_err(|e| InferError::Invalid(format!("{}: {e}", file.display())))?;
    Ok((json, secs))
}

/// Throughput figures of one benchmark run (megapixels of ground truth per second).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreBench {
    /// Pairs scored.
    pub images: usize,
    /// Ground-truth megapixels.
    pub megapixels: f64,
    /// Threads in the parallel runs.
    pub threads: usize,
    /// Bare PNG decoding of both files of each pair, all threads.
    pub decode_mps: f64,
    /// Bare PNG decoding, one thread.
    pub decode_1t_mps: f64,
    /// `score`, all threads.
    pub score_mps: f64,
    /// `score`, one thread.
    pub score_1t_mps: f64,
    /// The official script (single-threaded Python), if run.
    pub official_mps: Option<f64>,
    /// |mIoU(score) - mIoU(official)|, if run.
    pub official_miou_diff: Option<f64>,
}

fn best_of<T>(repeat: usize, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    Ok((last.expect("at least one run"), best.max(1e-9)))
}

/// Runs the benchmark on `pred_dir` vs `gt_dir` (`dataset` = the folder holding
/// `gtFine/val`, for the official script; `None` skips it). Timings are the best of
/// `repeat` runs.
pub fn bench_score(
    pred_dir: &Path,
    gt_dir: &Path,
    dataset: Option<&Path>,
    repeat: usize,
) -> Result<ScoreBench> {
    let pairs = score::pair_dirs(pred_dir, gt_dir)?;
    let decode = |pairs: &[(PathBuf, PathBuf)]| -> Result<u64> {
        pairs
            .par_iter()
            .map(|(g, p)| {
                let a = imageio::read_label_png(g)?;
                let b = imageio::read_label_png(p)?;
                std::hint::black_box(&b);
                Ok(a.len() as u64)
            })
            .sum()
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| InferError::Invalid(e.to_string()))?;
    let opts = ScoreOptions {
        strict: true,
        ..ScoreOptions::default()
    };
    let noop = || {};
    // Warm the page cache once.
    let (pixels, _) = best_of(1, || decode(&pairs))?;
    let mp = pixels as f64 / 1e6;
    let (_, t_dec) = best_of(repeat, || decode(&pairs))?;
    let (_, t_dec1) = best_of(repeat, || one.install(|| decode(&pairs)))?;
    let (ours, t_score) = best_of(repeat, || score::score_dirs(pred_dir, gt_dir, &opts, &noop))?;
    let (_, t_score1) = best_of(repeat, || {
        one.install(|| score::score_dirs(pred_dir, gt_dir, &opts, &noop))
    })?;
    let (official_mps, official_miou_diff) = match dataset {
        Some(ds) => {
            let export = tempfile_dir()?;
            let (json, secs) = run_official(ds, pred_dir, &export)?;
            let _ = std::fs::remove_dir_all(&export);
            let theirs = json["averageScoreClasses"].as_f64();
            let diff = match (theirs, ours.scores.miou()) {
                (Some(a), Some(b)) => Some((a - b).abs()),
                _ => None,
            };
            (Some(mp / secs), diff)
        }
        None => (None, None),
    };
    Ok(ScoreBench {
        images: pairs.len(),
        megapixels: mp,
        threads: rayon::current_num_threads(),
        decode_mps: mp / t_dec,
        decode_1t_mps: mp / t_dec1,
        score_mps: mp / t_score,
        score_1t_mps: mp / t_score1,
        official_mps,
        official_miou_diff,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("rccr-bench-score-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| InferError::io("cannot create", &p, e))?;
    Ok(p)
}

impl ScoreBench {
    /// The printed table with ratios.
    pub fn table(&self) -> String {
        let mut s = format!(
            "scoring benchmark: {} pairs, {:.1} megapixels of ground truth, {} threads\n",
            self.images, self.megapixels, self.threads
        );
        let row = |name: &str, v: f64| {
            format!(
                "  {name:<34} {v:9.1} MP/s   {:5.2}x decode ceiling\n",
                v / self.decode_mps
            )
        };
        s.push_str(&row("PNG decode only (ceiling)", self.decode_mps));
        s.push_str(&row("PNG decode only, 1 thread", self.decode_1t_mps));
        s.push_str(&row("rccr-infer score", self.score_mps));
        s.push_str(&row("rccr-infer score, 1 thread", self.score_1t_mps));
        if let Some(o) = self.official_mps {
            s.push_str(&row("official cityscapesscripts (1 thread)", o));
            s.push_str(&format!(
                "  score / official: {:.1}x (all threads), {:.1}x (1 thread vs 1 thread)\n",
                self.score_mps / o,
                self.score_1t_mps / o
            ));
        }
        s.push_str(&format!(
            "  score / decode ceiling: {:.2} (all threads), {:.2} (1 thread)\n",
            self.score_mps / self.decode_mps,
            self.score_1t_mps / self.decode_1t_mps
        ));
        if let Some(d) = self.official_miou_diff {
            s.push_str(&format!("  |mIoU(score) - mIoU(official)| = {d:.2e}\n"));
        }
        s
    }
}
