//! The training loader: an infinite, epoch-reshuffled, deterministic stream of batches
//! (the x_s / y_s and x_t of paper Algorithm 1), decoded and augmented on worker threads
//! ahead of training.
//!
//! Determinism: the batch of iteration i holds the global samples g = i*B .. i*B + B - 1.
//! Sample g is element g mod N of the permutation of epoch g / N, drawn from (seed, epoch);
//! its crop comes from an RNG seeded by (seed, g). A corrupt file is replaced by candidates
//! drawn from (seed, g) as well, so a loader started at iteration k yields exactly the
//! batches an uninterrupted one yields from k on, whatever the worker timing. Workers take
//! jobs in any order; results are re-ordered before delivery; at most `prefetch * B` samples
//! are in flight (the bounded queue).
//!
//! With rare-class sampling ([`super::rcs`], DAFormer Sec. 3.3) the pair of sample g is
//! not taken from the permutation: a class c and one of its candidate images are drawn
//! from an RNG seeded by (seed, g), and the crop is searched for c with the same crop RNG,
//! so resuming stays exact. Without it, the batches are those of the plain loader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::Rng;
use rccr_infer::taxonomy::IGNORE;
use tch::Tensor;

use super::ahead::{Ahead, Names};
use super::augment::{crop_chw, random_crop_origin, resize_rgb, rng_for};
use super::decode::{decode_label_resized, decode_rgb};
use super::layout::{discover, Pair};
use super::rcs::{RcsDraw, RcsSampler, RcsTable};
use super::{tensor, DatasetKind, DatasetSpec, Error, LoaderConfig};

/// RNG stream tags (see [`super::augment::mix`]).
const TAG_PERMUTATION: u64 = 1;
const TAG_CROP: u64 = 2;
const TAG_FALLBACK: u64 = 3;
const TAG_RCS: u64 = 4;
/// Random replacement draws for a corrupt sample before a linear scan.
const FALLBACK_DRAWS: usize = 32;

/// One training batch.
#[derive(Debug)]
pub struct Batch {
    /// N x 3 x crop x crop, float32 RGB in 0..255.
    pub images: Tensor,
    /// N x crop x crop, int64 trainIds, 255 = ignore.
    pub labels: Tensor,
    /// The sample names (file stems), in batch order.
    pub names: Vec<String>,
    /// Rare-class sampling: the draw of each sample (class c, whether the crop met the
    /// threshold), in batch order; `None` when the loader does not sample by class.
    pub rcs: Option<Vec<RcsDraw>>,
}

/// A decoded, augmented sample, before batching.
struct Prepared {
    image: Vec<f32>,
    label: Vec<u8>,
    name: String,
    rcs: Option<RcsDraw>,
}

/// The dataset and augmentation shared by the workers.
struct Shared {
    kind: DatasetKind,
    pairs: Vec<Pair>,
    size: (u32, u32),
    filter: FilterType,
    crop: u32,
    seed: u64,
    bad: Vec<AtomicBool>,
    skipped: AtomicUsize,
    rcs: Option<RcsSampler>,
}

/// The image filter of a dataset's resize: bicubic for the source games (the DACS loaders),
/// bilinear for Cityscapes (as the DACS loader).
pub(crate) fn filter_for(kind: DatasetKind) -> FilterType {
    match kind {
        DatasetKind::Cityscapes => FilterType::Triangle,
        DatasetKind::Gta5 | DatasetKind::Synthia => FilterType::CatmullRom,
    }
}

impl Shared {
    /// Decodes, resizes and crops pair `index` with the crop of global sample `g` (with
    /// rare-class sampling, a crop searched for `class`).
    fn prepare(&self, index: usize, g: u64, class: Option<u8>) -> Result<Prepared, Error> {
        let pair = &self.pairs[index];
        let img = decode_rgb(&pair.image)?;
        let (w, h) = self.size;
        let label = match &pair.label {
            Some(path) => decode_label_resized(path, self.kind, self.size)?,
            None => vec![IGNORE; w as usize * h as usize],
        };
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::Decode {
                path: pair.image.clone(),
                reason: "empty image".into(),
            });
        }
        let img = resize_rgb(img, self.size, self.filter);
        let (origin, rcs) = self.crop_origin(g, &label, class);
        let (mut image, mut lbl) = (Vec::new(), Vec::new());
        crop_chw(&img, &label, origin, self.crop, &mut image, &mut lbl);
        Ok(Prepared {
            image,
            label: lbl,
            name: pair.name.clone(),
            rcs,
        })
    }

    /// The crop origin of global sample `g` from its crop RNG: one random origin, or with
    /// rare-class sampling the one [`RcsSampler::crop`] keeps for `class`, with the draw.
    fn crop_origin(
        &self,
        g: u64,
        label: &[u8],
        class: Option<u8>,
    ) -> ((u32, u32), Option<RcsDraw>) {
        let mut rng = rng_for(self.seed, TAG_CROP, g);
        match (&self.rcs, class) {
            (Some(s), Some(class)) => {
                let (origin, crop_hit) = s.crop(&mut rng, label, self.size, self.crop, class);
                (origin, Some(RcsDraw { class, crop_hit }))
            }
            _ => {
                let (w, h) = self.size;
                (random_crop_origin(&mut rng, w, h, self.crop), None)
            }
        }
    }

    /// Tries `index`; marks, logs and counts it when corrupt.
    fn try_index(&self, index: usize, g: u64, class: Option<u8>) -> Option<Prepared> {
        if self.bad[index].load(Ordering::Relaxed) {
            return None;
        }
        match self.prepare(index, g, class) {
            Ok(p) => Some(p),
            Err(e) => {
                if !self.bad[index].swap(true, Ordering::Relaxed) {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "skipping unreadable sample");
                }
                None
            }
        }
    }

    /// Global sample `g`, drawn as pair `first` (with rare-class sampling: as the pair of
    /// its class draw, `first` unused), or its deterministic replacement.
    fn produce(&self, g: u64, first: usize) -> Result<Prepared, Error> {
        let (first, class) = match &self.rcs {
            Some(s) => {
                let (class, index) = s.draw(&mut rng_for(self.seed, TAG_RCS, g));
                (index, Some(class))
            }
            None => (first, None),
        };
        if let Some(p) = self.try_index(first, g, class) {
            return Ok(p);
        }
        let n = self.pairs.len();
        let mut rng = rng_for(self.seed, TAG_FALLBACK, g);
        for _ in 0..FALLBACK_DRAWS {
            if let Some(p) = self.try_index(rng.gen_range(0..n), g, class) {
                return Ok(p);
            }
        }
        for k in 1..n {
            if let Some(p) = self.try_index((first + k) % n, g, class) {
                return Ok(p);
            }
        }
        Err(Error::NoSamples {
            kind: self.kind,
            root: self
                .pairs
                .first()
                .and_then(|p| p.image.parent())
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            detail: format!(": all {n} samples are corrupt or unreadable (see the warnings)"),
            expected: self.kind.expected_layout(),
        })
    }
}

/// Infinite, epoch-reshuffled, deterministic batches of a dataset (see the module doc).
pub struct TrainLoader {
    shared: Arc<Shared>,
    batch_size: usize,
    in_flight: u64,
    pool: Ahead<Prepared>,
    next_sample: u64,
    next_dispatch: u64,
    permutation: (u64, Vec<usize>),
}

/// The (W, H) images are resized to, after checking that `cfg` can work.
fn checked_size(spec: &DatasetSpec, cfg: &LoaderConfig) -> Result<(u32, u32), Error> {
    if cfg.crop == 0 || cfg.batch_size == 0 {
        return Err(Error::LoaderConfig {
            reason: format!(
                "crop ({}) and batch size ({}) must be at least 1",
                cfg.crop, cfg.batch_size
            ),
        });
    }
    let size = cfg.resize.unwrap_or(spec.kind.paper_size());
    if size.0 == 0 || size.1 == 0 {
        return Err(Error::LoaderConfig {
            reason: format!("resize {}x{} must be at least 1x1", size.0, size.1),
        });
    }
    Ok(size)
}

/// The worker pool producing global samples (job key g, payload: the pair drawn).
fn start_workers(shared: &Arc<Shared>, workers: usize) -> Result<Ahead<Prepared>, Error> {
    let names = Names {
        thread: "rccr-data",
        job: "preparing sample",
        pool: "data",
    };
    let s = shared.clone();
    let (pool, failed) = Ahead::start(names, workers.max(1), move |g, first| s.produce(g, first));
    match failed.into_iter().next() {
        Some(e) => Err(Error::Worker {
            reason: format!("cannot start a worker thread: {e}"),
        }),
        None => Ok(pool),
    }
}

impl TrainLoader {
    /// Finds the dataset's pairs (an error naming the expected layout if there are none),
    /// starts the workers and queues the samples of `start_iteration` onwards.
    pub fn open(
        spec: &DatasetSpec,
        cfg: &LoaderConfig,
        start_iteration: u64,
    ) -> Result<TrainLoader, Error> {
        let size = checked_size(spec, cfg)?;
        let found = discover(spec, cfg.split, false)?;
        let n = found.pairs.len();
        tracing::info!(
            dataset = %spec,
            samples = n,
            unpaired = found.unpaired,
            resize = format!("{}x{}", size.0, size.1),
            crop = cfg.crop,
            "training data"
        );
        let rcs = match cfg.rcs.enabled {
            true => Some(RcsSampler::open(
                spec,
                cfg.split,
                &found.pairs,
                size,
                &cfg.rcs,
                cfg.workers,
            )?),
            false => None,
        };
        let shared = Arc::new(Shared {
            kind: spec.kind,
            bad: (0..n).map(|_| AtomicBool::new(false)).collect(),
            pairs: found.pairs,
            size,
            filter: filter_for(spec.kind),
            crop: cfg.crop,
            seed: cfg.seed,
            skipped: AtomicUsize::new(0),
            rcs,
        });
        let pool = start_workers(&shared, cfg.workers)?;
        let first = start_iteration.saturating_mul(cfg.batch_size as u64);
        let mut loader = TrainLoader {
            shared,
            batch_size: cfg.batch_size,
            in_flight: (cfg.prefetch.max(1) * cfg.batch_size) as u64,
            pool,
            next_sample: first,
            next_dispatch: first,
            permutation: (u64::MAX, Vec::new()),
        };
        loader.fill_queue();
        Ok(loader)
    }

    /// The pair index of global sample `g` (element g mod N of epoch g / N's permutation).
    fn sample_index(&mut self, g: u64) -> usize {
        let n = self.shared.pairs.len() as u64;
        let (epoch, pos) = (g / n, (g % n) as usize);
        if self.permutation.0 != epoch {
            let mut perm: Vec<usize> = (0..n as usize).collect();
            perm.shuffle(&mut rng_for(self.shared.seed, TAG_PERMUTATION, epoch));
            self.permutation = (epoch, perm);
        }
        self.permutation.1[pos]
    }

    fn fill_queue(&mut self) {
        while self.next_dispatch < self.next_sample + self.in_flight {
            let g = self.next_dispatch;
            // With rare-class sampling the worker draws the pair (Shared::produce).
            let index = match self.shared.rcs {
                Some(_) => 0,
                None => self.sample_index(g),
            };
            self.pool.submit(g, index);
            self.next_dispatch += 1;
        }
    }

    /// The rare-class sampling table, when the loader samples by class.
    pub fn rcs(&self) -> Option<&RcsTable> {
        self.shared.rcs.as_ref().map(|s| &s.table)
    }

    /// The size (W, H) images are resized to before cropping.
    pub fn image_size(&self) -> (u32, u32) {
        self.shared.size
    }

    /// The share of a crop that is padding (image 0, label 255) when the resized images
    /// are smaller than the crop: 1 - min(W, crop) min(H, crop) / crop^2.
    pub fn padding_share(&self, crop: u32) -> f64 {
        let (w, h) = self.shared.size;
        let c = f64::from(crop);
        1.0 - f64::from(w.min(crop)) * f64::from(h.min(crop)) / (c * c)
    }

    /// The batch of the next iteration (start_iteration, start_iteration + 1, ...).
    pub fn next_batch(&mut self) -> Result<Batch, Error> {
        let c = self.shared.crop as usize;
        let b = self.batch_size;
        let mut images = Vec::with_capacity(b * 3 * c * c);
        let mut labels = Vec::with_capacity(b * c * c);
        let mut names = Vec::with_capacity(b);
        let mut draws = Vec::with_capacity(b);
        for _ in 0..b {
            let g = self.next_sample;
            let sample = self.pool.take(g)?;
            self.next_sample += 1;
            self.fill_queue();
            images.extend_from_slice(&sample.image);
            labels.extend(sample.label.iter().map(|&v| v as i64));
            names.push(sample.name);
            draws.extend(sample.rcs);
        }
        let (bi, ci) = (b as i64, c as i64);
        let images = tensor(&images, &[bi, 3, ci, ci], "batch images")?;
        // Built as i64 here (a plain copy into libtorch): no tensor op runs on this thread,
        // so libtorch's worker pool never competes with the decoders.
        let labels = tensor(&labels, &[bi, ci, ci], "batch labels")?;
        Ok(Batch {
            images,
            labels,
            names,
            rcs: self.shared.rcs.as_ref().map(|_| draws),
        })
    }

    /// Usable samples: pairs found minus those found corrupt so far.
    pub fn len(&self) -> usize {
        self.shared.pairs.len() - self.skipped()
    }

    /// Whether no usable sample is left (never true right after a successful `open`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Corrupt or unreadable files skipped so far (each counted once).
    pub fn skipped(&self) -> usize {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Total time `next_batch` has spent waiting for the workers (0 when decoding keeps up).
    pub fn wait_time(&self) -> Duration {
        self.pool.waited()
    }
}
