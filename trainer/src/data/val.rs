//! The validation set: a whole split in fixed (sorted) order, uncropped, for the mIoU of
//! the teacher (paper Section 4 / Algorithm 1 output). Cityscapes follows the DACS protocol:
//! `val` split, image resized (bilinear) to 1024x512 and the
//! label NEAREST-resized to the same size. GTA5 / SYNTHIA use every image, at its own size
//! unless a resize is given (bicubic image, nearest label).
//!
//! Iteration decodes ahead on worker threads and delivers in order. A corrupt sample is
//! yielded as an `Err` naming the file (validation never silently drops data); the caller
//! decides whether to skip it.

use std::sync::Arc;

use image::imageops::FilterType;
use tch::Tensor;

use super::ahead::{Ahead, Names};
use super::augment::{resize_rgb, to_chw};
use super::decode::{decode_label_resized, decode_rgb};
use super::layout::{discover, Pair};
use super::loader::filter_for;
use super::{tensor, DatasetKind, DatasetSpec, Error, Split};

/// One validation image with its label.
#[derive(Debug)]
pub struct ValSample {
    /// 1 x 3 x H x W, float32 RGB in 0..255.
    pub image: Tensor,
    /// H * W trainIds (255 = ignore), row-major.
    pub label: Vec<u8>,
    /// H.
    pub height: usize,
    /// W.
    pub width: usize,
    /// The sample name (file stem; Cityscapes without `_leftImg8bit`).
    pub name: String,
}

struct ValShared {
    kind: DatasetKind,
    pairs: Vec<Pair>,
    resize: Option<(u32, u32)>,
    filter: FilterType,
}

struct Decoded {
    image: Vec<f32>,
    label: Vec<u8>,
    width: u32,
    height: u32,
    name: String,
}

impl ValShared {
    fn decode(&self, i: usize) -> Result<Decoded, Error> {
        let pair = &self.pairs[i];
        let img = decode_rgb(&pair.image)?;
        let size = self.resize.unwrap_or(img.dimensions());
        if size.0 == 0 || size.1 == 0 {
            return Err(Error::Decode {
                path: pair.image.clone(),
                reason: "empty image".into(),
            });
        }
        let img = resize_rgb(img, size, self.filter);
        let label_path = pair.label.as_ref().ok_or_else(|| Error::Decode {
            path: pair.image.clone(),
            reason: "no label for this validation image".into(),
        })?;
        let label = decode_label_resized(label_path, self.kind, size)?;
        Ok(Decoded {
            image: to_chw(&img),
            label,
            width: size.0,
            height: size.1,
            name: pair.name.clone(),
        })
    }
}

/// A validation split (see the module doc).
pub struct ValSet {
    shared: Arc<ValShared>,
}

impl ValSet {
    /// Finds the split's pairs. Cityscapes: the `val` split, `resize` defaulting to the
    /// DACS protocol's 1024x512; GTA5 / SYNTHIA: all images, at their own size when
    /// `resize` is `None`. `limit` keeps the first N samples in sorted order.
    pub fn open(
        spec: &DatasetSpec,
        resize: Option<(u32, u32)>,
        limit: Option<usize>,
    ) -> Result<ValSet, Error> {
        if let Some((w, h)) = resize {
            if w == 0 || h == 0 {
                return Err(Error::LoaderConfig {
                    reason: format!("validation resize {w}x{h} must be at least 1x1"),
                });
            }
        }
        let mut found = discover(spec, Split::Val, true)?;
        if let Some(n) = limit {
            found.pairs.truncate(n.max(1));
        }
        let resize = match spec.kind {
            DatasetKind::Cityscapes => Some(resize.unwrap_or(DatasetKind::Cityscapes.paper_size())),
            DatasetKind::Gta5 | DatasetKind::Synthia => resize,
        };
        tracing::info!(dataset = %spec, samples = found.pairs.len(), "validation data");
        Ok(ValSet {
            shared: Arc::new(ValShared {
                kind: spec.kind,
                pairs: found.pairs,
                resize,
                filter: filter_for(spec.kind),
            }),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.shared.pairs.len()
    }

    /// Whether the set is empty (never, after a successful `open`).
    pub fn is_empty(&self) -> bool {
        self.shared.pairs.is_empty()
    }

    /// The samples in order, decoded ahead on worker threads.
    pub fn iter(&self) -> impl Iterator<Item = Result<ValSample, Error>> + '_ {
        ValIter::new(self.shared.clone())
    }
}

struct ValIter {
    shared: Arc<ValShared>,
    pool: Ahead<Decoded>,
    next: usize,
    dispatched: usize,
    ahead: usize,
}

impl ValIter {
    fn new(shared: Arc<ValShared>) -> ValIter {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(shared.pairs.len().max(1));
        let names = Names {
            thread: "rccr-val",
            job: "decoding validation sample",
            pool: "validation",
        };
        let s = shared.clone();
        let (pool, failed) = Ahead::start(names, threads, move |k, _| s.decode(k as usize));
        for e in failed {
            tracing::warn!(error = %e, "cannot start a validation worker");
        }
        let mut it = ValIter {
            shared,
            pool,
            next: 0,
            dispatched: 0,
            ahead: 2 * threads.max(1),
        };
        it.fill();
        it
    }

    fn fill(&mut self) {
        let n = self.shared.pairs.len();
        while self.dispatched < n && self.dispatched < self.next + self.ahead {
            self.pool.submit(self.dispatched as u64, 0);
            self.dispatched += 1;
        }
    }

    fn take(&mut self, i: usize) -> Result<Decoded, Error> {
        if !self.pool.has_workers() {
            return self.shared.decode(i);
        }
        self.pool.take(i as u64)
    }
}

impl Iterator for ValIter {
    type Item = Result<ValSample, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.shared.pairs.len() {
            return None;
        }
        let i = self.next;
        let decoded = self.take(i);
        self.next += 1;
        self.fill();
        Some(decoded.and_then(|d| {
            let (h, w) = (d.height as i64, d.width as i64);
            let what = format!("validation image {}", d.name);
            let image = tensor(&d.image, &[1, 3, h, w], what)?;
            Ok(ValSample {
                image,
                label: d.label,
                height: d.height as usize,
                width: d.width as usize,
                name: d.name,
            })
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.shared.pairs.len() - self.next;
        (left, Some(left))
    }
}
