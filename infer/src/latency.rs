//! Per-call latency of a [`Segmenter`] (`rccr-infer bench`): what a perception stack
//! waits for one frame (batch 1) or one batch (throughput), as p50 / p90 / p99 / max.
//!
//! One call = preprocessing (resizing `batch` camera frames of `image_size` into the
//! model's input, HWC u8 -> CHW f32), the model run, and postprocessing (the train-id
//! maps resized back to `image_size` with nearest sampling, as `rccr-infer --out` does
//! before writing); the three are timed apart and together. Decoding and PNG writing are
//! left out (they depend on the disk and the codec, not the model). Frames are synthetic
//! and generated once, so every call does the same work. Percentiles are nearest-rank:
//! the `ceil(q/100 * K)`-th smallest of K calls (so p99 differs from max only from 101
//! calls on).

use std::time::Instant;

use image::RgbImage;

use crate::seed::SplitMix;
use crate::error::{InferError, Result};
use crate::segmenter::{Batch, Segmenter};

/// What to measure.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Camera frame `(width, height)` fed to each call. Default none: the model's input
    /// size (no resize, only the layout conversion).
    pub image_size: Option<(u32, u32)>,
    /// Timed calls (at least 1). Default 20.
    pub iterations: usize,
    /// Untimed calls first (allocator, thread pool and kernel selection warm-up). Default 3.
    pub warmup: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            image_size: None,
            iterations: 20,
            warmup: 3,
        }
    }
}

/// Summary of one series of call times, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest call.
    pub max: f64,
    /// Fastest call.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (not empty).
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let r = (q / 100.0 * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// The figures of one latency run (`rccr-infer bench --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyReport {
    /// Model file.
    pub model: String,
    /// Execution provider that ran it.
    pub provider: String,
    /// ONNX Runtime intra-op threads, when known.
    pub threads: Option<usize>,
    /// Model input `[width, height]`.
    pub input_size: [u32; 2],
    /// Camera frame `[width, height]` each call starts from and returns to.
    pub image_size: [u32; 2],
    /// Images per call.
    pub batch_size: usize,
    /// Timed calls.
    pub iterations: usize,
    /// Untimed warm-up calls.
    pub warmup: usize,
    /// Whole call (pre + model + post), ms.
    pub total_ms: Percentiles,
    /// Preprocessing per call, ms.
    pub preprocess_ms: Percentiles,
    /// Model run per call, ms.
    pub model_ms: Percentiles,
    /// Postprocessing per call, ms.
    pub postprocess_ms: Percentiles,
    /// Images over the summed call times.
    pub images_per_second: f64,
}

/// A deterministic synthetic camera frame: smooth gradients with blocky structure and
/// noise (the resize cost does not depend on content; this only keeps it plausible).
pub fn synthetic_frame(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = SplitMix(seed);
    RgbImage::from_fn(width, height, |x, y| {
        let n = (rng.next_u64() & 15) as u32;
        let block = ((x / 32 + y / 32) % 7) * 20;
        image::Rgb([
            ((x * 255 / width.max(1)) + n) as u8,
            ((y * 255 / height.max(1)) + block) as u8,
            (block * 3 + n) as u8,
        ])
    })
}

/// Times of one call, in ms: (pre, model, post).
fn one_call(
    seg: &mut Segmenter,
    frames: &[RgbImage],
    batch: &mut Batch,
) -> Result<(f64, f64, f64)> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    batch.clear();
    for f in frames {
        batch.push(f);
    }
    let pre = ms(t);
    let t = Instant::now();
    let maps = seg.run(batch)?;
    let model = ms(t);
    let t = Instant::now();
    let back: usize = maps
        .iter()
        .zip(frames)
        .map(|(m, f)| m.resize_nearest(f.width(), f.height()).len())
        .sum();
    std::hint::black_box(back);
    Ok((pre, model, ms(t)))
}

/// Measures `seg` (see the module docs).
pub fn measure(seg: &mut Segmenter, opts: &LatencyOptions) -> Result<LatencyReport> {
    if opts.iterations == 0 {
        return Err(InferError::Invalid(
            "--iterations 0: time at least one call".into(),
        ));
    }
    let input = seg.input_size();
    let (w, h) = opts.image_size.unwrap_or(input);
    let n = seg.batch_size();
    let frames: Vec<RgbImage> = (0..n).map(|i| synthetic_frame(w, h, i as u64)).collect();
    let mut batch = seg.new_batch();
    for _ in 0..opts.warmup {
        one_call(seg, &frames, &mut batch)?;
    }
    let mut series = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..opts.iterations {
        let (pre, model, post) = one_call(seg, &frames, &mut batch)?;
        for (s, v) in series
            .iter_mut()
            .zip([pre, model, post, pre + model + post])
        {
            s.push(v);
        }
    }
    let total_s: f64 = series[3].iter().sum::<f64>() / 1e3;
    Ok(LatencyReport {
        model: seg.model_path().display().to_string(),
        provider: seg.provider().name().to_string(),
        threads: None,
        input_size: [input.0, input.1],
        image_size: [w, h],
        batch_size: n,
        iterations: opts.iterations,
        warmup: opts.warmup,
        total_ms: Percentiles::of(&series[3]),
        preprocess_ms: Percentiles::of(&series[0]),
        model_ms: Percentiles::of(&series[1]),
        postprocess_ms: Percentiles::of(&series[2]),
        images_per_second: (n * opts.iterations) as f64 / total_s.max(1e-12),
    })
}

impl LatencyReport {
    /// The figures as a table (ms per call).
    pub fn table(&self) -> String {
        let mut s = format!(
            "latency of {} on {}: input {}x{}, frames {}x{}, batch {}, {} calls after {} warm-up\n",
            self.model,
            self.provider,
            self.input_size[0],
            self.input_size[1],
            self.image_size[0],
            self.image_size[1],
            self.batch_size,
            self.iterations,
            self.warmup
        );
        s.push_str("ms per call       p50      p90      p99      max     mean\n");
        for (name, p) in [
            ("preprocess", &self.preprocess_ms),
            ("model", &self.model_ms),
            ("postprocess", &self.postprocess_ms),
            ("total", &self.total_ms),
        ] {
            s.push_str(&format!(
                "{name:<12} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                p.p50, p.p90, p.p99, p.max, p.mean
            ));
        }
        s.push_str(&format!(
            "throughput: {:.3} images/s\n",
            self.images_per_second
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=10 ms: p50 = 5th = 5, p90 = 9th = 9, p99 = ceil(9.9) = 10th = 10.
        let v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.min),
            (5.0, 9.0, 10.0, 10.0, 1.0)
        );
        assert!((p.mean - 5.5).abs() < 1e-12);
        // 200 samples 1..=200: p99 = 198th.
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50, p.p90, p.p99), (100.0, 180.0, 198.0));
        // One sample: every percentile is it.
        let p = Percentiles::of(&[7.0]);
        assert_eq!((p.p50, p.p99, p.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn synthetic_frames_are_deterministic() {
        assert_eq!(synthetic_frame(33, 17, 4), synthetic_frame(33, 17, 4));
        assert_ne!(synthetic_frame(33, 17, 4), synthetic_frame(33, 17, 5));
    }
}
