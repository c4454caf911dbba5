//! Scoring predictions against Cityscapes ground truth exactly as the official
//! `cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling` does (class IoU =
//! TP / (TP + FP + FN) from one confusion matrix over the whole split, mIoU = the mean of
//! the defined class IoUs; the metric of the paper's Tables 1-3).
//!
//! Each pair of maps is reduced to a 256 x 256 histogram of (ground-truth id, predicted id)
//! pairs — one increment per pixel, no branches — which is then folded into the train-id
//! [`ConfusionMatrix`] through lookup tables. The official rules that follow:
//! - ground-truth labelIds must lie in the table (0..=33), else "unknown label" (an error
//!   naming the file); void ids (`ignoreInEval`) are ignored entirely;
//! - predicted labelIds must lie in 0..=33 (the official script fails on others); a void
//!   id predicted on a valid pixel is a false negative of its class and nobody's false
//!   positive;
//! - classes absent from both ground truth and prediction have no IoU (`null`) and are left
//!   out of the mean; a class absent from the ground truth but predicted has IoU 0.
//!
//! Predictions are matched to ground truth by the `<city>_<seq>_<frame>` key (the official
//! `<city>_<seq>_<frame>*.png` pattern); missing predictions are an error listing them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::files;
use crate::imageio;
use crate::labelmap::LabelMap;
use crate::metrics::ConfusionMatrix;
use crate::taxonomy::{self, Protocol, IGNORE, LABEL_TO_TRAIN, MAX_LABEL_ID};

/// How the ids of a map are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdFormat {
    /// Official Cityscapes labelIds (0..=33).
    LabelIds,
    /// Train ids (0..19, 255 = void / ignore).
    TrainIds,
}

impl IdFormat {
    /// The id -> train-id table of this format.
    pub fn to_train(self) -> &'static [u8; 256] {
        match self {
            IdFormat::LabelIds => &LABEL_TO_TRAIN,
            IdFormat::TrainIds => &TRAIN_IDENTITY,
        }
    }

    /// Whether `id` is allowed in a map of this format.
    pub fn valid(self, id: u8) -> bool {
        match self {
            IdFormat::LabelIds => id <= MAX_LABEL_ID,
            IdFormat::TrainIds => (id as usize) < taxonomy::NUM_CLASSES || id == IGNORE,
        }
    }
}

const fn identity_train() -> [u8; 256] {
    let mut lut = [IGNORE; 256];
    let mut i = 0;
    while i < taxonomy::NUM_CLASSES {
        lut[i] = i as u8;
        i += 1;
    }
    lut
}

const TRAIN_IDENTITY: [u8; 256] = identity_train();

/// Counts of (ground-truth id, predicted id) pairs over any number of map pairs.
#[derive(Clone, PartialEq, Eq)]
pub struct PairHistogram {
    counts: Vec<u64>,
}

impl std::fmt::Debug for PairHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PairHistogram({} pixels)", self.total())
    }
}

impl Default for PairHistogram {
    fn default() -> Self {
        PairHistogram {
            counts: vec![0; 256 * 256],
        }
    }
}

impl PairHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count of ground truth `gt` predicted as `pred`.
    pub fn get(&self, gt: u8, pred: u8) -> u64 {
        self.counts[gt as usize * 256 + pred as usize]
    }

    /// Adds a pair of equally long maps (the caller checks the lengths).
    ///
    /// Label maps are piecewise constant, so the loop works on 16-pixel words: a word that
    /// is uniform in both maps extends a run of one (gt, pred) pair kept in a register,
    /// anything else is counted pixel by pixel.
    pub fn add(&mut self, gt: &[u8], pred: &[u8]) {
        debug_assert_eq!(gt.len(), pred.len());
        let n = gt.len().min(pred.len());
        let counts = &mut self.counts[..];
        const SPLAT: u128 = u128::from_ne_bytes([1; 16]);
        let mut key = 0usize;
        let mut run = 0u64;
        let (gw, gt_tail) = gt[..n].split_at(n - n % 16);
        let (pw, pred_tail) = pred[..n].split_at(n - n % 16);
        for (g, p) in gw.chunks_exact(16).zip(pw.chunks_exact(16)) {
            let (g0, p0) = (g[0], p[0]);
            let gv = u128::from_ne_bytes(g.try_into().expect("16 bytes"));
            let pv = u128::from_ne_bytes(p.try_into().expect("16 bytes"));
            if gv == g0 as u128 * SPLAT && pv == p0 as u128 * SPLAT {
                let k = ((g0 as usize) << 8) | p0 as usize;
                if k != key {
                    counts[key] += run;
                    key = k;
                    run = 0;
                }
                run += 16;
            } else {
                for (&a, &b) in g.iter().zip(p) {
                    counts[((a as usize) << 8) | b as usize] += 1;
                }
            }
        }
        counts[key] += run;
        for (&a, &b) in gt_tail.iter().zip(pred_tail) {
            counts[((a as usize) << 8) | b as usize] += 1;
        }
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &PairHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Pixels counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The first ground-truth id (and its pixel count) that `format` rejects.
    pub fn invalid_gt(&self, format: IdFormat) -> Option<(u8, u64)> {
        self.invalid(format, true)
    }

    /// The first predicted id (and its pixel count) that `format` rejects.
    pub fn invalid_pred(&self, format: IdFormat) -> Option<(u8, u64)> {
        self.invalid(format, false)
    }

    fn invalid(&self, format: IdFormat, gt: bool) -> Option<(u8, u64)> {
        (0..=255u8).filter(|&id| !format.valid(id)).find_map(|id| {
            let n: u64 = (0..=255u8)
                .map(|o| if gt { self.get(id, o) } else { self.get(o, id) })
                .sum();
            (n > 0).then_some((id, n))
        })
    }

    /// The train-id confusion matrix (19 Cityscapes classes) of these counts.
    pub fn confusion(&self, gt: IdFormat, pred: IdFormat) -> ConfusionMatrix {
        let (gl, pl) = (gt.to_train(), pred.to_train());
        let mut cm = ConfusionMatrix::new(taxonomy::NUM_CLASSES);
        for g in 0..=255u8 {
            let row = &self.counts[g as usize * 256..][..256];
            if gl[g as usize] == IGNORE || row.iter().all(|&c| c == 0) {
                continue;
            }
            for (p, &c) in row.iter().enumerate() {
                if c > 0 {
                    cm.add_count(gl[g as usize], pl[p], c);
                }
            }
        }
        cm
    }
}

/// Histogram of one ground-truth / prediction pair after the official checks: equal sizes,
/// ids inside their tables.
pub fn score_pair(
    gt: &LabelMap,
    gt_path: &Path,
    gt_format: IdFormat,
    pred: &LabelMap,
    pred_path: &Path,
    pred_format: IdFormat,
) -> Result<PairHistogram> {
    if (gt.width, gt.height) != (pred.width, pred.height) {
        return Err(InferError::SizeMismatch {
            a: pred_path.to_path_buf(),
            aw: pred.width,
            ah: pred.height,
            b: gt_path.to_path_buf(),
            bw: gt.width,
            bh: gt.height,
        });
    }
    let mut h = PairHistogram::new();
    h.add(&gt.data, &pred.data);
    if let Some((id, count)) = h.invalid_gt(gt_format) {
        return Err(unknown_id(gt_path, gt_format, id, count));
    }
    if let Some((id, count)) = h.invalid_pred(pred_format) {
        return Err(unknown_id(pred_path, pred_format, id, count));
    }
    Ok(h)
}

/// The error for an id outside the table of `format`.
pub fn unknown_id(path: &Path, format: IdFormat, id: u8, count: u64) -> InferError {
    match format {
        IdFormat::LabelIds => InferError::UnknownLabelId {
            path: path.to_path_buf(),
            id,
            count,
        },
        IdFormat::TrainIds => InferError::LabelFormat {
            path: path.to_path_buf(),
            reason: format!("train id {id} on {count} pixels is neither a class (0..19) nor 255"),
        },
    }
}

/// Checks that every id of `map` belongs to `format`'s table.
pub fn validate_ids(map: &LabelMap, path: &Path, format: IdFormat) -> Result<()> {
    let mut seen = [0u64; 256];
    for &v in &map.data {
        seen[v as usize] += 1;
    }
    match (0..=255u8).find(|&id| seen[id as usize] > 0 && !format.valid(id)) {
        Some(id) => Err(unknown_id(path, format, id, seen[id as usize])),
        None => Ok(()),
    }
}

/// Scores of a split.
#[derive(Debug, Clone)]
pub struct Scores {
    /// The train-id confusion matrix.
    pub confusion: ConfusionMatrix,
    /// Protocol of the mean.
    pub protocol: Protocol,
}

impl Scores {
    /// mIoU over the protocol's classes (a fraction), `None` when no class is defined.
    pub fn miou(&self) -> Option<f64> {
        self.confusion.mean_iou_protocol(self.protocol)
    }

    /// (class name, IoU) of the protocol's classes in train-id order.
    pub fn per_class(&self) -> Vec<(String, Option<f64>)> {
        self.protocol
            .train_ids()
            .into_iter()
            .map(|t| {
                (
                    taxonomy::CLASSES[t as usize].name.to_string(),
                    self.confusion.iou(t as usize),
                )
            })
            .collect()
    }

    /// Correct / valid pixels.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        self.confusion.pixel_accuracy()
    }
}

/// Options of [`score_dirs`].
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Classes averaged. Default 19.
    pub protocol: Protocol,
    /// Format of the predictions. Default labelIds (the official result format).
    pub pred_format: IdFormat,
    /// Abort on the first bad pair instead of skipping it. Default false.
    pub strict: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            protocol: Protocol::Classes19,
            pred_format: IdFormat::LabelIds,
            strict: false,
        }
    }
}

/// The outcome of scoring a prediction folder.
#[derive(Debug, Clone)]
pub struct DirScores {
    /// The scores.
    pub scores: Scores,
    /// Pairs scored.
    pub images: usize,
    /// Pairs skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Pixels read (ground truth).
    pub pixels: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Ground-truth / prediction pairs: every ground-truth file of `gt_dir` with its prediction
/// in `pred_dir`; missing predictions are an error listing their keys.
pub fn pair_dirs(pred_dir: &Path, gt_dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let gts = files::list_labels(gt_dir)?;
    let preds = files::list_predictions(pred_dir)?;
    let missing: Vec<String> = gts
        .keys()
        .filter(|k| !preds.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(InferError::Missing {
            what: "predictions",
            dir: pred_dir.to_path_buf(),
            missing,
        });
    }
    Ok(gts
        .into_iter()
        .map(|(k, gt)| (gt, preds[&k].clone()))
        .collect())
}

/// Scores one (ground truth labelIds, prediction) pair of files. 8-bit non-interlaced
/// files (the usual case) are decoded row by row into the histogram, so no full map is
/// ever held in memory; others are decoded whole.
pub fn score_files(gt: &Path, pred: &Path, pred_format: IdFormat) -> Result<PairHistogram> {
    let mut g = imageio::LabelReader::open(gt)?;
    let mut p = imageio::LabelReader::open(pred)?;
    let ((gw, gh), (pw, ph)) = (g.size(), p.size());
    if (gw, gh) != (pw, ph) {
        return Err(InferError::SizeMismatch {
            a: pred.to_path_buf(),
            aw: pw,
            ah: ph,
            b: gt.to_path_buf(),
            bw: gw,
            bh: gh,
        });
    }
    if !(g.streamable() && p.streamable()) {
        let (gm, pm) = (g.read()?, p.read()?);
        return score_pair(&gm, gt, IdFormat::LabelIds, &pm, pred, pred_format);
    }
    let mut h = PairHistogram::new();
    while let Some(a) = g.next_row()? {
        let Some(b) = p.next_row()? else {
            return Err(InferError::LabelFormat {
                path: pred.to_path_buf(),
                reason: "fewer rows than its header says (truncated?)".into(),
            });
        };
        h.add(a, b);
    }
    if let Some((id, count)) = h.invalid_gt(IdFormat::LabelIds) {
        return Err(unknown_id(gt, IdFormat::LabelIds, id, count));
    }
    if let Some((id, count)) = h.invalid_pred(pred_format) {
        return Err(unknown_id(pred, pred_format, id, count));
    }
    Ok(h)
}

/// The running totals of a folder scoring: the merged histograms, the images scored, the
/// skipped predictions and the first fatal error.
#[derive(Default)]
struct DirTally {
    hist: PairHistogram,
    images: usize,
    skipped: Vec<(PathBuf, String)>,
    fatal: Option<InferError>,
}

impl DirTally {
    /// Adds the outcome of one pair: scored, skipped, or (`strict`) fatal.
    fn add(&mut self, pred: &Path, outcome: Result<PairHistogram>, strict: bool) {
        match outcome {
            Ok(h) => {
                self.hist.merge(&h);
                self.images += 1;
            }
            Err(e) if strict => {
                self.fatal.get_or_insert(e);
            }
            Err(e) => {
                tracing::warn!("skipped: {e}");
                self.skipped.push((pred.to_path_buf(), e.to_string()));
            }
        }
    }

    /// Both tallies in one (the first fatal error wins).
    fn merge(mut self, other: DirTally) -> DirTally {
        self.hist.merge(&other.hist);
        self.images += other.images;
        self.skipped.extend(other.skipped);
        if self.fatal.is_none() {
            self.fatal = other.fatal;
        }
        self
    }
}

/// Scores every prediction in `pred_dir` against the labelIds ground truth in `gt_dir`,
/// pairs in parallel (rayon); `tick` is called once per pair (for progress bars).
pub fn score_dirs(
    pred_dir: &Path,
    gt_dir: &Path,
    options: &ScoreOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<DirScores> {
    let start = Instant::now();
    let pairs = pair_dirs(pred_dir, gt_dir)?;
    let abort = AtomicBool::new(false);
    let tally = pairs
        .par_iter()
        .fold(DirTally::default, |mut tally, (gt, pred)| {
            if abort.load(Ordering::Relaxed) {
                return tally;
            }
            tally.add(
                pred,
                score_files(gt, pred, options.pred_format),
                options.strict,
            );
            if tally.fatal.is_some() {
                abort.store(true, Ordering::Relaxed);
            }
            tick();
            tally
        })
        .reduce(DirTally::default, DirTally::merge);
    if let Some(e) = tally.fatal {
        return Err(e);
    }
    let mut skipped = tally.skipped;
    skipped.sort();
    Ok(DirScores {
        pixels: tally.hist.total(),
        scores: Scores {
            confusion: tally
                .hist
                .confusion(IdFormat::LabelIds, options.pred_format),
            protocol: options.protocol,
        },
        images: tally.images,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(data: &[u8]) -> LabelMap {
        LabelMap {
            width: data.len() as u32,
            height: 1,
            data: data.to_vec(),
        }
    }

    #[test]
    fn official_rules_on_a_hand_case() {
        // labelIds: 7 road, 8 sidewalk, 26 car, 0 unlabeled (void), 4 static (void).
        // gt:   7 7 7 8 8  0 4 26
        // pred: 7 7 8 8 0  7 26 26
        // road:     TP 2, FN 1 (->8); FP: the void-gt pixel predicted 7 does not count -> 2/3
        // sidewalk: TP 1, FN 1 (-> void 0), FP 1 (road->8) -> 1/3
        // car:      TP 1; the void-gt pixel predicted 26 does not count -> 1
        let gt = map(&[7, 7, 7, 8, 8, 0, 4, 26]);
        let pred = map(&[7, 7, 8, 8, 0, 7, 26, 26]);
        let p = Path::new("p.png");
        let h = score_pair(&gt, p, IdFormat::LabelIds, &pred, p, IdFormat::LabelIds).unwrap();
        let s = Scores {
            confusion: h.confusion(IdFormat::LabelIds, IdFormat::LabelIds),
            protocol: Protocol::Classes19,
        };
        let c = &s.confusion;
        assert!((c.iou(0).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.iou(1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.iou(13), Some(1.0));
        assert_eq!(c.iou(2), None);
        let expect = (2.0 / 3.0 + 1.0 / 3.0 + 1.0) / 3.0;
        assert!((s.miou().unwrap() - expect).abs() < 1e-12);
        // 6 valid pixels, 4 correct.
        assert!((s.pixel_accuracy().unwrap() - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn histogram_equals_a_pixel_loop() {
        // Runs (uniform 16-byte words), mixed words and a ragged tail.
        let mut gt = Vec::new();
        let mut pred = Vec::new();
        let mut x = 12345u32;
        for i in 0..1000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let run = if i % 3 == 0 {
                1 + (x >> 16) % 5
            } else {
                16 + (x >> 16) % 40
            };
            let (g, p) = ((x >> 8) as u8 % 40, (x >> 20) as u8 % 40);
            for _ in 0..run {
                gt.push(g);
                pred.push(p);
            }
        }
        gt.truncate(gt.len() - 7);
        pred.truncate(gt.len());
        let mut h = PairHistogram::new();
        h.add(&gt, &pred);
        let mut brute = vec![0u64; 65536];
        for (&g, &p) in gt.iter().zip(&pred) {
            brute[g as usize * 256 + p as usize] += 1;
        }
        for g in 0..=255u8 {
            for p in 0..=255u8 {
                assert_eq!(h.get(g, p), brute[g as usize * 256 + p as usize]);
            }
        }
        assert_eq!(h.total(), gt.len() as u64);
    }

    #[test]
    fn predicted_but_absent_class_scores_zero() {
        let gt = map(&[7, 7]);
        let pred = map(&[7, 26]);
        let p = Path::new("p.png");
        let h = score_pair(&gt, p, IdFormat::LabelIds, &pred, p, IdFormat::LabelIds).unwrap();
        let c = h.confusion(IdFormat::LabelIds, IdFormat::LabelIds);
        assert_eq!(c.iou(13), Some(0.0));
        assert_eq!(c.iou(0), Some(0.5));
    }

    #[test]
    fn ids_outside_the_table_and_size_mismatch() {
        let ok = map(&[7, 8]);
        let bad = map(&[7, 34]);
        let (g, pr) = (Path::new("gt.png"), Path::new("pred.png"));
        let e = score_pair(&bad, g, IdFormat::LabelIds, &ok, pr, IdFormat::LabelIds)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gt.png") && e.contains("34"), "{e}");
        let e = score_pair(&ok, g, IdFormat::LabelIds, &bad, pr, IdFormat::LabelIds)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pred.png") && e.contains("34"), "{e}");
        let e = score_pair(
            &ok,
            g,
            IdFormat::LabelIds,
            &map(&[7]),
            pr,
            IdFormat::LabelIds,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("size mismatch") && e.contains("pred.png"), "{e}");
        // Train ids: 255 is fine, 19 is not.
        let t = map(&[0, 255, 18]);
        assert!(validate_ids(&t, pr, IdFormat::TrainIds).is_ok());
        assert!(validate_ids(&map(&[19]), pr, IdFormat::TrainIds).is_err());
    }
}
