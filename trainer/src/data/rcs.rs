//! Rare-class sampling (RCS) of the source images: DAFormer (Hoyer et al., CVPR 2022),
//! Sec. 3.3; docs/method.md "Rare-class sampling".
//!
//! - Statistics: for every source label, at the loader's resize (the loader's own nearest
//!   resize, trainIds, 255 ignored), the pixel count of each class. Computed once on the
//!   loader's worker count and cached as JSON in the dataset root ([`cache_path`]), keyed
//!   per label file by its path, size in bytes and modification time, and as a whole by
//!   the resize: a changed, added or removed label is recounted, the rest reused. A root
//!   that cannot be written keeps the statistics in memory (one warning).
//! - Probabilities: f_c = n_c / sum_k n_k over the set; P(c) = exp((1 - f_c) / T) / Z over
//!   the usable classes, a class being usable when f_c > 0 and at least one image holds
//!   min_pixels = ceil(min_pixel_share W H) pixels of it (its candidates), 0 elsewhere.
//! - The draw of global sample g: c ~ P, then an image uniform among c's candidates, both
//!   from one RNG keyed by (seed, g); the crop: up to `crop_tries` crops from the sample's
//!   crop RNG, the first holding more than min_crop_ratio * min_pixels pixels of c kept,
//!   else the last one tried ([`RcsSampler::crop`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use rayon::prelude::*;
use rccr_infer::taxonomy::{CLASSES, IGNORE};

use super::augment::random_crop_origin;
use super::decode::decode_label_resized;
use super::layout::Pair;
use super::{DatasetKind, DatasetSpec, Error, Split};
use crate::config::RcsConfig;

/// Class ids that can carry pixels: trainIds 0..=254 (255 is the ignore label).
pub const CLASS_SLOTS: usize = IGNORE as usize;

/// The `format` of the statistics cache.
const CACHE_FORMAT: &str = "rccr-rcs-stats-v1";

/// Label files decoded before progress is logged (every tenth of the set).
const PROGRESS_FROM: usize = 1000;

/// (trainId, pixels) of the classes present in one label, ascending by id.
type Counts = Vec<(u8, u64)>;

/// One label file in the cache: its key (path, size, modification time) and its counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// The label's path relative to the dataset root.
    label: String,
    /// Its size in bytes.
    bytes: u64,
    /// Its modification time, nanoseconds since the Unix epoch (0 when unknown).
    mtime_ns: u64,
    /// Its class counts; `null` when it could not be read or decoded.
    counts: Option<Counts>,
}

/// The statistics cache file (`.rccr-rcs-stats-*.json` in the dataset root).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    /// [`CACHE_FORMAT`].
    format: String,
    /// The dataset kind (`gta5`, `synthia`, `cityscapes`).
    dataset: String,
    /// The resize (W, H) the labels were counted at.
    size: (u32, u32),
    /// One entry per label file, in the loader's pair order.
    images: Vec<Entry>,
}

/// The cache file of a dataset at resize `size`: `ROOT/.rccr-rcs-stats-<W>x<H>.json`
/// (Cityscapes: `ROOT/.rccr-rcs-stats-<split>-<W>x<H>.json`), so runs at other sizes or
/// splits keep their own.
pub fn cache_path(spec: &DatasetSpec, split: Split, size: (u32, u32)) -> PathBuf {
    let (w, h) = size;
    let name = match spec.kind {
        DatasetKind::Cityscapes => format!(".rccr-rcs-stats-{}-{w}x{h}.json", split.dir_name()),
        DatasetKind::Gta5 | DatasetKind::Synthia => format!(".rccr-rcs-stats-{w}x{h}.json"),
    };
    spec.root.join(name)
}

/// What rare-class sampling draws from (see the module doc); per-class vectors are indexed
/// by trainId 0..[`CLASS_SLOTS`].
#[derive(Debug, Clone, PartialEq)]
pub struct RcsTable {
    /// min_pixels = ceil(min_pixel_share W H), at least 1.
    pub min_pixels: u64,
    /// Pixels of each class over the set.
    pub class_pixels: Vec<u64>,
    /// P(c) of each class (0 for unusable ones); sums to 1.
    pub prob: Vec<f64>,
    /// Candidate images (pair indices, ascending) of each class.
    candidates: Vec<Vec<usize>>,
    /// Label files decoded when the loader opened (0 when the cache held every one).
    pub labels_decoded: usize,
    /// The statistics cache, or `None` when it could not be written.
    pub cache: Option<PathBuf>,
}

impl RcsTable {
    /// The number of candidate images of class `c`.
    pub fn candidate_count(&self, c: usize) -> usize {
        self.candidates.get(c).map_or(0, Vec::len)
    }

    /// The classes with P(c) > 0, ascending.
    pub fn classes(&self) -> Vec<usize> {
        (0..CLASS_SLOTS).filter(|&c| self.prob[c] > 0.0).collect()
    }
}

/// P(c) = softmax over the usable classes of (1 - f_c) / T, f_c = n_c / sum_k n_k
/// (DAFormer Eq. 6); a class is usable when n_c > 0 and `usable[c]`; 0 elsewhere. All 0
/// when no class is usable. Subtracting the largest exponent keeps T = 0.01 finite.
pub fn class_probabilities(class_pixels: &[u64], usable: &[bool], temperature: f64) -> Vec<f64> {
    let total: u64 = class_pixels.iter().sum();
    let mut prob = vec![0.0; class_pixels.len()];
    let logit = |n: u64| (1.0 - n as f64 / total as f64) / temperature;
    let keep = |c: usize| class_pixels[c] > 0 && usable.get(c).copied().unwrap_or(false);
    let Some(max) = (0..class_pixels.len())
        .filter(|&c| keep(c))
        .map(|c| logit(class_pixels[c]))
        .reduce(f64::max)
    else {
        return prob;
    };
    for (c, p) in prob.iter_mut().enumerate() {
        if keep(c) {
            *p = (logit(class_pixels[c]) - max).exp();
        }
    }
    let z: f64 = prob.iter().sum();
    prob.iter_mut().for_each(|p| *p /= z);
    prob
}

/// One class in [`RcsReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RcsClass {
    /// trainId.
    pub id: usize,
    /// Its Cityscapes name (`rccr_infer::taxonomy`), or `class <id>` beyond the 19.
    pub name: String,
    /// Pixels of the class over the set.
    pub pixels: u64,
    /// f_c, its share of the set's class pixels.
    pub frequency: f64,
    /// Images holding at least min_pixels pixels of it.
    pub candidates: usize,
    /// P(c).
    pub prob: f64,
}

/// The summary a run logs and writes to `RUN_DIR/rcs.json`: every class present in the
/// set with its frequency, candidates and probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RcsReport {
    /// min_pixels = ceil(min_pixel_share W H).
    pub min_pixels: u64,
    /// The statistics cache (`None`: kept in memory).
    pub cache: Option<PathBuf>,
    /// The classes with pixels in the set, ascending by id.
    pub classes: Vec<RcsClass>,
}

impl RcsTable {
    /// The summary of the table (see [`RcsReport`]).
    pub fn report(&self) -> RcsReport {
        let total: u64 = self.class_pixels.iter().sum();
        let classes = (0..CLASS_SLOTS)
            .filter(|&c| self.class_pixels[c] > 0)
            .map(|c| RcsClass {
                id: c,
                name: CLASSES
                    .get(c)
                    .map_or_else(|| format!("class {c}"), |k| k.name.to_string()),
                pixels: self.class_pixels[c],
                frequency: self.class_pixels[c] as f64 / total as f64,
                candidates: self.candidate_count(c),
                prob: self.prob[c],
            })
            .collect();
        RcsReport {
            min_pixels: self.min_pixels,
            cache: self.cache.clone(),
            classes,
        }
    }

    /// Logs each class's P(c) and candidate count (one line per class present).
    pub fn log(&self) {
        for c in self.report().classes {
            tracing::info!(
                class = %c.name,
                id = c.id,
                frequency = format!("{:.5}", c.frequency),
                candidates = c.candidates,
                prob = format!("{:.5}", c.prob),
                "rare-class sampling"
            );
        }
    }
}

/// One sample's rare-class draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcsDraw {
    /// The class c drawn.
    pub class: u8,
    /// Whether the kept crop holds more than min_crop_ratio * min_pixels pixels of c.
    pub crop_hit: bool,
}

/// The sampler of a source loader: the table, the class distribution and the crop rule.
#[derive(Debug)]
pub(crate) struct RcsSampler {
    pub(crate) table: RcsTable,
    /// The classes with P(c) > 0, ascending; `dist` indexes them.
    classes: Vec<u8>,
    dist: WeightedIndex<f64>,
    /// min_crop_ratio * min_pixels.
    crop_threshold: f64,
    crop_tries: usize,
}

/// Checks the ranges of `cfg` (a loader may be configured without the config checks).
fn check_config(cfg: &RcsConfig) -> Result<(), Error> {
    let bad = |reason: String| Err(Error::LoaderConfig { reason });
    if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
        return bad(format!(
            "data.rcs.temperature {} must be a positive number (DAFormer: 0.01)",
            cfg.temperature
        ));
    }
    if !(0.0..=1.0).contains(&cfg.min_pixel_share) {
        return bad(format!(
            "data.rcs.min_pixel_share {} must lie in 0..=1 (DAFormer: 0.0015)",
            cfg.min_pixel_share
        ));
    }
    if !(cfg.min_crop_ratio.is_finite() && cfg.min_crop_ratio >= 0.0) {
        return bad(format!(
            "data.rcs.min_crop_ratio {} must be 0 or more (DAFormer: 0.5)",
            cfg.min_crop_ratio
        ));
    }
    if cfg.crop_tries == 0 {
        return bad("data.rcs.crop_tries must be at least 1 (DAFormer: 10)".into());
    }
    Ok(())
}

/// min_pixels = ceil(min_pixel_share W H), at least 1 (a candidate must hold the class).
pub fn min_pixels(min_pixel_share: f64, size: (u32, u32)) -> u64 {
    let area = f64::from(size.0) * f64::from(size.1);
    ((min_pixel_share * area).ceil() as u64).max(1)
}

impl RcsSampler {
    /// Counts (or loads) the statistics of `pairs` at `size` and builds the sampler; an
    /// error when no class is usable.
    pub(crate) fn open(
        spec: &DatasetSpec,
        split: Split,
        pairs: &[Pair],
        size: (u32, u32),
        cfg: &RcsConfig,
        workers: usize,
    ) -> Result<RcsSampler, Error> {
        check_config(cfg)?;
        let stats = Stats::load_or_count(spec, split, pairs, size, workers)?;
        let min_pixels = min_pixels(cfg.min_pixel_share, size);
        let table = stats.table(min_pixels, cfg.temperature);
        let classes: Vec<u8> = table.classes().iter().map(|&c| c as u8).collect();
        let weights: Vec<f64> = classes.iter().map(|&c| table.prob[c as usize]).collect();
        let dist = WeightedIndex::new(&weights).map_err(|_| Error::NoRareClasses {
            kind: spec.kind,
            root: spec.root.clone(),
            min_pixels,
            size,
            readable: stats.readable(),
        })?;
        Ok(RcsSampler {
            table,
            classes,
            dist,
            crop_threshold: cfg.min_crop_ratio * min_pixels as f64,
            crop_tries: cfg.crop_tries,
        })
    }

    /// The class and the pair index of a global sample, from its RCS RNG: c ~ P, then an
    /// image uniform among c's candidates.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> (u8, usize) {
        let class = self.classes[self.dist.sample(rng)];
        let cands = &self.table.candidates[class as usize];
        (class, cands[rng.gen_range(0..cands.len())])
    }

    /// The crop origin of a sample of class `class` in its resized `label` (W x H = `size`):
    /// up to `crop_tries` origins from `rng` (the sample's crop RNG), the first whose crop
    /// holds more than the threshold of pixels of `class` kept, else the last one; and
    /// whether the kept one met the threshold.
    pub(crate) fn crop(
        &self,
        rng: &mut impl Rng,
        label: &[u8],
        size: (u32, u32),
        crop: u32,
        class: u8,
    ) -> ((u32, u32), bool) {
        let mut origin = (0, 0);
        for _ in 0..self.crop_tries {
            origin = random_crop_origin(rng, size.0, size.1, crop);
            if count_in_window(label, size, origin, crop, class) as f64 > self.crop_threshold {
                return (origin, true);
            }
        }
        (origin, false)
    }
}

/// Pixels of `class` in the `crop x crop` window at `origin` of a W x H label (the part
/// outside the label is padding, never a class).
fn count_in_window(
    label: &[u8],
    size: (u32, u32),
    origin: (u32, u32),
    crop: u32,
    class: u8,
) -> u64 {
    let (w, h) = (size.0 as usize, size.1 as usize);
    let (x0, y0) = (origin.0 as usize, origin.1 as usize);
    let x1 = (x0 + crop as usize).min(w);
    let y1 = (y0 + crop as usize).min(h);
    (y0..y1)
        .map(|y| {
            label[y * w + x0..y * w + x1]
                .iter()
                .filter(|&&v| v == class)
                .count() as u64
        })
        .sum()
}

/// Pixels of each class in one resized label.
fn count_classes(label: &[u8]) -> Counts {
    let mut hist = [0u64; 256];
    for &v in label {
        hist[v as usize] += 1;
    }
    (0..CLASS_SLOTS)
        .filter(|&c| hist[c] > 0)
        .map(|c| (c as u8, hist[c]))
        .collect()
}

/// The per-image class counts of a dataset, aligned with its pairs (`None`: no label, or
/// an unreadable one).
struct Stats {
    per_image: Vec<Option<Counts>>,
    decoded: usize,
    cache: Option<PathBuf>,
}

/// The cache key of a label file: its path relative to `root`, size and mtime.
fn entry_key(root: &Path, label: &Path) -> Entry {
    let rel = label.strip_prefix(root).unwrap_or(label);
    let meta = std::fs::metadata(label).ok();
    let mtime_ns = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    Entry {
        label: rel.to_string_lossy().replace('\\', "/"),
        bytes: meta.map_or(0, |m| m.len()),
        mtime_ns,
        counts: None,
    }
}

/// The cache at `path` when it is one of this dataset at this size, else `None`.
fn read_cache(path: &Path, kind: DatasetKind, size: (u32, u32)) -> Option<CacheFile> {
    let bytes = std::fs::read(path).ok()?;
    let file: CacheFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "unreadable RCS statistics cache, recounting");
            return None;
        }
    };
    (file.format == CACHE_FORMAT && file.dataset == kind.name() && file.size == size)
        .then_some(file)
}

/// Decodes and counts the labels at `paths` on `workers` threads; an unreadable label is
/// skipped with a warning (counts `None`).
fn count_labels(
    paths: &[&Path],
    kind: DatasetKind,
    size: (u32, u32),
    workers: usize,
) -> Result<Vec<Option<Counts>>, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .thread_name(|i| format!("rccr-rcs-{i}"))
        .build()
        .map_err(|e| Error::Worker {
            reason: format!("cannot start the RCS statistics threads: {e}"),
        })?;
    let done = AtomicUsize::new(0);
    let step = (paths.len() / 10).max(1);
    let count = |path: &&Path| {
        let counts = match decode_label_resized(path, kind, size) {
            Ok(label) => Some(count_classes(&label)),
            Err(e) => {
                tracing::warn!(error = %e, "RCS statistics: skipping unreadable label");
                None
            }
        };
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if paths.len() >= PROGRESS_FROM && n.is_multiple_of(step) {
            tracing::info!(
                done = n,
                total = paths.len(),
                "RCS statistics: counting labels"
            );
        }
        counts
    };
    Ok(pool.install(|| paths.par_iter().map(count).collect()))
}

/// The cache entries of `labels` (their keys, the counts taken from `old` where the key
/// matches) and the indices of those left to count.
fn reuse(root: &Path, labels: &[&Path], old: Option<&CacheFile>) -> (Vec<Entry>, Vec<usize>) {
    let known: HashMap<(&str, u64, u64), &Option<Counts>> = old
        .iter()
        .flat_map(|f| &f.images)
        .map(|e| ((e.label.as_str(), e.bytes, e.mtime_ns), &e.counts))
        .collect();
    let mut entries: Vec<Entry> = labels.iter().map(|l| entry_key(root, l)).collect();
    let mut todo = Vec::new();
    for (e, entry) in entries.iter_mut().enumerate() {
        match known.get(&(entry.label.as_str(), entry.bytes, entry.mtime_ns)) {
            Some(&c) => entry.counts = c.clone(),
            None => todo.push(e),
        }
    }
    (entries, todo)
}

impl Stats {
    /// The statistics of `pairs`, from the cache where its keys still match, the rest
    /// counted; the cache rewritten when anything changed (see the module doc).
    fn load_or_count(
        spec: &DatasetSpec,
        split: Split,
        pairs: &[Pair],
        size: (u32, u32),
        workers: usize,
    ) -> Result<Stats, Error> {
        let path = cache_path(spec, split, size);
        let old = read_cache(&path, spec.kind, size);
        let (index, labels): (Vec<usize>, Vec<&Path>) = pairs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.label.as_deref().map(|l| (i, l)))
            .unzip();
        let (mut entries, todo) = reuse(&spec.root, &labels, old.as_ref());
        let paths: Vec<&Path> = todo.iter().map(|&e| labels[e]).collect();
        let counted = count_labels(&paths, spec.kind, size, workers)?;
        for (&e, c) in todo.iter().zip(counted) {
            entries[e].counts = c;
        }
        let file = CacheFile {
            format: CACHE_FORMAT.into(),
            dataset: spec.kind.name().into(),
            size,
            images: entries,
        };
        let cache = store(&path, &file, old.as_ref());
        let mut per_image = vec![None; pairs.len()];
        for (&i, entry) in index.iter().zip(file.images) {
            per_image[i] = entry.counts;
        }
        log_stats(&per_image, todo.len(), labels.len(), cache.as_deref());
        Ok(Stats {
            per_image,
            decoded: todo.len(),
            cache,
        })
    }

    /// Labels whose counts are known.
    fn readable(&self) -> usize {
        self.per_image.iter().filter(|c| c.is_some()).count()
    }

    /// The table at `min_pixels` and temperature `t`.
    fn table(&self, min_pixels: u64, t: f64) -> RcsTable {
        let mut class_pixels = vec![0u64; CLASS_SLOTS];
        let mut candidates = vec![Vec::new(); CLASS_SLOTS];
        for (i, counts) in self.per_image.iter().enumerate() {
            for &(c, n) in counts.iter().flatten() {
                class_pixels[c as usize] += n;
                if n >= min_pixels {
                    candidates[c as usize].push(i);
                }
            }
        }
        let usable: Vec<bool> = candidates.iter().map(|c| !c.is_empty()).collect();
        RcsTable {
            min_pixels,
            prob: class_probabilities(&class_pixels, &usable, t),
            class_pixels,
            candidates,
            labels_decoded: self.decoded,
            cache: self.cache.clone(),
        }
    }
}

/// Writes `file` to `path` unless `old` already holds it; returns the cache path, or
/// `None` with a warning when it cannot be written (the statistics stay in memory).
fn store(path: &Path, file: &CacheFile, old: Option<&CacheFile>) -> Option<PathBuf> {
    if old == Some(file) {
        return Some(path.to_path_buf());
    }
    let written = serde_json::to_vec(file)
        .map_err(std::io::Error::other)
        .and_then(|bytes| rccr_infer::files::write_atomic_synced(path, &bytes));
    match written {
        Ok(()) => Some(path.to_path_buf()),
        Err(e) => {
            tracing::warn!(
                cache = %path.display(),
                error = %e,
                "cannot write the RCS statistics cache beside the data; keeping them in \
                 memory (they are recounted at every start until the folder is writable)"
            );
            None
        }
    }
}

/// The log line of the statistics pass.
fn log_stats(per_image: &[Option<Counts>], decoded: usize, labelled: usize, cache: Option<&Path>) {
    let unreadable = per_image.len() - per_image.iter().filter(|c| c.is_some()).count();
    tracing::info!(
        labels = labelled,
        decoded,
        reused = labelled - decoded,
        without_counts = unreadable,
        cache = %cache.map_or("(in memory)".into(), |p| p.display().to_string()),
        "RCS class statistics"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_clip_at_the_border() {
        // 4 x 3 label, class 1 in the right column.
        let label = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(count_in_window(&label, (4, 3), (2, 1), 4, 1), 2);
        assert_eq!(count_in_window(&label, (4, 3), (0, 0), 2, 1), 0);
        assert_eq!(count_classes(&[3, 255, 3, 0]), vec![(0, 1), (3, 2)]);
    }
}
