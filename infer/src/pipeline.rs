//! The `rccr-infer` run: a folder of images through a [`Segmenter`], with outputs written
//! and, given ground truth, a Cityscapes score — pipelined so the model never waits for the
//! disk:
//!
//! ```text
//! decode workers (read + decode image and label, resize, to CHW f32)
//!     --bounded channel--> model thread (batches of N, one ORT run each)
//!     --bounded channel--> post workers (resize back with nearest, score, write PNGs)
//! ```
//!
//! A bad input (unreadable, corrupt, label of another size, label ids outside the table) is
//! reported and skipped, or aborts the run with `strict`. Output files are written
//! atomically under `out/{trainIds,labelIds,color,overlay}/` with the input's relative path
//! (see [`files::output_path`]), so `out/labelIds` is a valid `CITYSCAPES_RESULTS` folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use image::RgbImage;

use crate::error::{InferError, Result};
use crate::files::{self, Shard};
use crate::imageio;
use crate::labelmap::{self, LabelMap};
use crate::provider::physical_cores;
use crate::report::{Report, Skipped, StageTimes};
use crate::score::{self, IdFormat, PairHistogram, Scores};
use crate::segmenter::{preprocess, Segmenter, SegmenterOptions};
use crate::taxonomy::{self, Protocol};

/// Folder names of the outputs under `--out`.
pub mod kinds {
    /// Train-id PNGs (0..19, 255 void).
    pub const TRAIN_IDS: &str = "trainIds";
    /// Official Cityscapes labelId PNGs (the evaluation's result format).
    pub const LABEL_IDS: &str = "labelIds";
    /// Colour PNGs in the model's palette.
    pub const COLOR: &str = "color";
    /// Colour blended over the input image.
    pub const OVERLAY: &str = "overlay";
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The ONNX model.
    pub model: PathBuf,
    /// Folder of input images (walked recursively).
    pub images: PathBuf,
    /// Output folder; nothing is written when `None`. Default `None`.
    pub out: Option<PathBuf>,
    /// Ground-truth labelIds folder; scores the predictions when given. Default `None`.
    pub labels: Option<PathBuf>,
    /// Model / provider / batch / input-size options.
    pub segmenter: SegmenterOptions,
    /// Classes averaged into the mIoU. Default 19.
    pub protocol: Protocol,
    /// Abort on the first bad input instead of skipping it. Default false.
    pub strict: bool,
    /// Also write the colour map blended over the input. Default false.
    pub overlay: bool,
    /// Decode / post-process threads each. Default none: half the physical cores, at
    /// least 1 (the model uses all cores while they wait on I/O).
    pub workers: Option<usize>,
    /// Show a progress bar. Default true in the CLI.
    pub progress: bool,
    /// Process only this part of the sorted image list ([`Shard`]). Default `None`: all.
    pub shard: Option<Shard>,
}

impl PipelineOptions {
    /// Options for `model` on `images` with everything else at its default.
    pub fn new(model: impl Into<PathBuf>, images: impl Into<PathBuf>) -> Self {
        PipelineOptions {
            model: model.into(),
            images: images.into(),
            out: None,
            labels: None,
            segmenter: SegmenterOptions::default(),
            protocol: Protocol::Classes19,
            strict: false,
            overlay: false,
            workers: None,
            progress: false,
            shard: None,
        }
    }
}

struct Prepared {
    path: PathBuf,
    size: (u32, u32),
    chw: Vec<f32>,
    original: Option<RgbImage>,
    label: Option<(PathBuf, LabelMap)>,
}

#[derive(Default)]
struct Acc {
    hist: PairHistogram,
    decode: Duration,
    preprocess: Duration,
    post: Duration,
    write: Duration,
    done: usize,
}

/// Reads, checks and preprocesses one input.
fn load(
    path: &Path,
    label: Option<&Path>,
    input: (u32, u32),
    keep_original: bool,
    acc: &mut Acc,
) -> Result<Prepared> {
    let t = Instant::now();
    let img = imageio::read_rgb(path)?;
    let label = match label {
        Some(lp) => {
            let l = imageio::read_label_png(lp)?;
            if (l.width, l.height) != img.dimensions() {
                return Err(InferError::SizeMismatch {
                    a: path.to_path_buf(),
                    aw: img.width(),
                    ah: img.height(),
                    b: lp.to_path_buf(),
                    bw: l.width,
                    bh: l.height,
                });
            }
            score::validate_ids(&l, lp, IdFormat::LabelIds)?;
            Some((lp.to_path_buf(), l))
        }
        None => None,
    };
    acc.decode += t.elapsed();
    let t = Instant::now();
    let chw = preprocess(&img, input.0, input.1);
    acc.preprocess += t.elapsed();
    Ok(Prepared {
        path: path.to_path_buf(),
        size: img.dimensions(),
        chw,
        original: keep_original.then_some(img),
        label,
    })
}

struct PostContext<'a> {
    out: Option<&'a Path>,
    root: &'a Path,
    palette: &'a [[u8; 3]],
    label_ids: bool,
}

/// Resizes a prediction back, scores and writes it.
fn post(ctx: &PostContext<'_>, item: Prepared, pred: LabelMap, acc: &mut Acc) -> Result<()> {
    let t = Instant::now();
    let full = pred.resize_nearest(item.size.0, item.size.1);
    if let Some((lp, label)) = &item.label {
        let h = score::score_pair(
            label,
            lp,
            IdFormat::LabelIds,
            &full,
            &item.path,
            IdFormat::TrainIds,
        )?;
        acc.hist.merge(&h);
    }
    acc.post += t.elapsed();
    if let Some(out) = ctx.out {
        let t = Instant::now();
        let dest = |kind: &str| files::output_path(out, kind, ctx.root, &item.path);
        imageio::write_label_png(&dest(kinds::TRAIN_IDS), &full)?;
        if ctx.label_ids {
            imageio::write_label_png(&dest(kinds::LABEL_IDS), &full.train_to_label_ids())?;
        }
        let colour = full.colorize(ctx.palette);
        imageio::write_rgb_png(&dest(kinds::COLOR), full.width, full.height, &colour)?;
        if let Some(orig) = &item.original {
            let blended = labelmap::blend(orig.as_raw(), &colour, 0.5);
            imageio::write_rgb_png(&dest(kinds::OVERLAY), full.width, full.height, &blended)?;
        }
        acc.write += t.elapsed();
    }
    acc.done += 1;
    Ok(())
}

fn progress_bar(len: usize, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// The images of this run (the shard's, in sorted order) with their labels, after the
/// checks that must hold for the whole list: no two inputs write the same output file,
/// no two inputs pair with the same label, every image has a label.
fn plan_inputs(opts: &PipelineOptions) -> Result<(Vec<PathBuf>, Vec<Option<PathBuf>>)> {
    let list = files::list_images(&opts.images)?;
    for s in &list.skipped {
        tracing::warn!("skipping {}: not a .png/.jpg/.jpeg image", s.display());
    }
    if let Some(out) = &opts.out {
        files::check_output_collisions(out, &opts.images, &list.images)?;
    }
    let images = match opts.shard {
        Some(shard) => shard.select(&list.images),
        None => list.images,
    };
    let Some(dir) = &opts.labels else {
        let none = vec![None; images.len()];
        return Ok((images, none));
    };
    let map = files::list_labels(dir)?;
    let mut missing = Vec::new();
    let mut used: std::collections::BTreeMap<&PathBuf, &PathBuf> = Default::default();
    let mut labels = Vec::with_capacity(images.len());
    for p in &images {
        let found = map.get(&files::pair_key(p));
        match found.map(|l| (l, used.insert(l, p))) {
            None => missing.push(p.display().to_string()),
            Some((l, Some(first))) => {
                tracing::debug!("{} pairs with {}", p.display(), l.display());
                return Err(InferError::DuplicateKey {
                    key: files::pair_key(p),
                    first: first.clone(),
                    second: p.clone(),
                });
            }
            Some(_) => {}
        }
        labels.push(found.cloned());
    }
    if !missing.is_empty() {
        return Err(InferError::Missing {
            what: "labels",
            dir: dir.clone(),
            missing,
        });
    }
    Ok((images, labels))
}

/// A run ready to start: the inputs paired and checked, the model open.
pub struct PreparedRun<'a> {
    opts: &'a PipelineOptions,
    images: Vec<PathBuf>,
    labels: Vec<Option<PathBuf>>,
    seg: Segmenter,
    cityscapes: bool,
}

/// Pairs the inputs (`plan_inputs`), opens the model and checks that it fits the run
/// (scoring against Cityscapes labelIds needs the 19 Cityscapes classes).
pub fn prepare(opts: &PipelineOptions) -> Result<PreparedRun<'_>> {
    let (images, labels) = plan_inputs(opts)?;
    let seg = Segmenter::open(&opts.model, &opts.segmenter)?;
    let cityscapes = seg.info().metadata.num_classes == taxonomy::NUM_CLASSES;
    if opts.labels.is_some() && !cityscapes {
        return Err(InferError::Invalid(format!(
            "{} predicts {} classes; scoring against Cityscapes labelIds needs the 19 Cityscapes classes",
            opts.model.display(),
            seg.info().metadata.num_classes
        )));
    }
    if opts.out.is_some() && !cityscapes {
        tracing::warn!("the model is not a 19-class Cityscapes model: no labelIds outputs");
    }
    Ok(PreparedRun {
        opts,
        images,
        labels,
        seg,
        cityscapes,
    })
}

/// Runs the model over every image of `opts.images` (or of its shard); see the module
/// docs. [`prepare`] then [`PreparedRun::execute`].
pub fn run(opts: &PipelineOptions) -> Result<Report> {
    prepare(opts)?.execute()
}

/// How a failed input ends: the run (`strict`, or a fatal error) or only itself.
struct Failures<'a> {
    strict: bool,
    abort: AtomicBool,
    skipped: Mutex<Vec<Skipped>>,
    fatal: Mutex<Option<InferError>>,
    pb: &'a indicatif::ProgressBar,
}

impl Failures<'_> {
    /// Records `e` about `path`: skipped, or (strict or `fatal_anyway`) the run's error.
    fn fail(&self, path: &Path, e: InferError, fatal_anyway: bool) {
        if self.strict || fatal_anyway {
            self.abort.store(true, Ordering::SeqCst);
            let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(e);
            }
        } else {
            self.pb
                .suspend(|| tracing::warn!("skipped {}: {e}", path.display()));
            self.skipped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Skipped {
                    file: path.display().to_string(),
                    error: e.to_string(),
                });
            self.pb.inc(1);
        }
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// The fatal error, else the skipped inputs sorted by file.
    fn finish(self) -> Result<Vec<Skipped>> {
        if let Some(e) = self.fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let mut skipped = self.skipped.into_inner().unwrap_or_else(|p| p.into_inner());
        skipped.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(skipped)
    }
}

/// A decode worker: jobs in, preprocessed inputs out, until the jobs end or the run aborts.
fn decode_worker(
    jobs: crossbeam_channel::Receiver<(PathBuf, Option<PathBuf>)>,
    loaded: crossbeam_channel::Sender<Prepared>,
    input: (u32, u32),
    overlay: bool,
    failures: &Failures<'_>,
) -> Acc {
    let mut acc = Acc::default();
    for (path, label) in jobs.iter() {
        if failures.aborted() {
            break;
        }
        match load(&path, label.as_deref(), input, overlay, &mut acc) {
            Ok(p) => {
                if loaded.send(p).is_err() {
                    break;
                }
            }
            Err(e) => failures.fail(&path, e, false),
        }
    }
    acc
}

/// A post worker: predictions in, scored and written. Scoring errors are bad inputs;
/// write errors end the run.
fn post_worker(
    predictions: crossbeam_channel::Receiver<(Prepared, LabelMap)>,
    ctx: &PostContext<'_>,
    failures: &Failures<'_>,
) -> Acc {
    let mut acc = Acc::default();
    // Always drain the channel so the model thread never blocks on a dead stage.
    for (item, pred) in predictions.iter() {
        if failures.aborted() {
            continue;
        }
        let path = item.path.clone();
        match post(ctx, item, pred, &mut acc) {
            Ok(()) => failures.pb.inc(1),
            Err(e) => {
                let is_io = matches!(e, InferError::Io { .. });
                failures.fail(&path, e, is_io);
            }
        }
    }
    acc
}

/// The model stage: batches of `seg.batch_size()` preprocessed inputs, one run each,
/// predictions on to the post workers. Returns the time spent in the model.
fn model_stage(
    seg: &mut Segmenter,
    loaded: crossbeam_channel::Receiver<Prepared>,
    predictions: crossbeam_channel::Sender<(Prepared, LabelMap)>,
    failures: &Failures<'_>,
) -> Duration {
    let batch_size = seg.batch_size();
    let mut model_time = Duration::ZERO;
    let mut batch = seg.new_batch();
    let mut items: Vec<Prepared> = Vec::with_capacity(batch_size);
    loop {
        let next = loaded.recv().ok();
        if failures.aborted() {
            break;
        }
        let closed = next.is_none();
        if let Some(item) = next {
            batch.push_preprocessed(&item.chw);
            items.push(item);
        }
        if items.len() == batch_size || (closed && !items.is_empty()) {
            let t = Instant::now();
            let result = seg.run(&batch);
            model_time += t.elapsed();
            batch.clear();
            match result {
                Ok(maps) => {
                    for (mut item, map) in items.drain(..).zip(maps) {
                        item.chw = Vec::new();
                        if predictions.send((item, map)).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let first = items[0].path.clone();
                    items.clear();
                    failures.fail(&first, e, true);
                    break;
                }
            }
        }
        if closed {
            break;
        }
    }
    // Dropping `loaded` unblocks decode workers still sending; dropping `predictions`
    // lets the post workers finish.
    model_time
}

/// The per-stage totals of the workers, summed.
fn sum_accs(accs: &[Acc]) -> Acc {
    let mut total = Acc::default();
    for a in accs {
        total.hist.merge(&a.hist);
        total.decode += a.decode;
        total.preprocess += a.preprocess;
        total.post += a.post;
        total.write += a.write;
        total.done += a.done;
    }
    total
}

impl PreparedRun<'_> {
    /// One line about the run: images, provider, input size, batch size.
    pub fn summary(&self) -> String {
        let (w, h) = self.seg.input_size();
        format!(
            "rccr-infer: {} images, provider {}, input {w}x{h}, batch {}",
            self.images.len(),
            self.seg.provider(),
            self.seg.batch_size()
        )
    }

    /// Runs the decode, model and post stages (see the module docs) and reports.
    pub fn execute(mut self) -> Result<Report> {
        let opts = self.opts;
        let workers = opts
            .workers
            .unwrap_or_else(|| (physical_cores() / 2).max(1))
            .max(1);
        let pb = progress_bar(self.images.len(), opts.progress);
        let failures = Failures {
            strict: opts.strict,
            abort: AtomicBool::new(false),
            skipped: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            pb: &pb,
        };
        let start = Instant::now();
        let (accs, model_time) = self.run_stages(workers, &failures);
        pb.finish_and_clear();
        let skipped = failures.finish()?;
        let seconds = start.elapsed().as_secs_f64();
        Ok(self.report(&sum_accs(&accs), model_time, skipped, seconds))
    }

    /// The stages on scoped threads: `workers` decode and `workers` post workers, the
    /// model on this thread.
    fn run_stages(&mut self, workers: usize, failures: &Failures<'_>) -> (Vec<Acc>, Duration) {
        let opts = self.opts;
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<(PathBuf, Option<PathBuf>)>();
        for job in self.images.iter().cloned().zip(self.labels.iter().cloned()) {
            let _ = job_tx.send(job);
        }
        drop(job_tx);
        let depth = 2 * self.seg.batch_size() + workers;
        let (load_tx, load_rx) = bounded::<Prepared>(depth);
        let (post_tx, post_rx) = bounded::<(Prepared, LabelMap)>(depth);
        let input = self.seg.input_size();
        let palette = self.seg.info().metadata.palette.clone();
        let ctx = PostContext {
            out: opts.out.as_deref(),
            root: &opts.images,
            palette: &palette,
            label_ids: self.cityscapes,
        };
        let seg = &mut self.seg;
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 0..workers {
                let (jobs, loaded) = (job_rx.clone(), load_tx.clone());
                handles.push(
                    s.spawn(move || decode_worker(jobs, loaded, input, opts.overlay, failures)),
                );
            }
            drop(load_tx);
            for _ in 0..workers {
                let (predictions, ctx) = (post_rx.clone(), &ctx);
                handles.push(s.spawn(move || post_worker(predictions, ctx, failures)));
            }
            drop(post_rx);
            let model_time = model_stage(seg, load_rx, post_tx, failures);
            let accs = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect();
            (accs, model_time)
        })
    }

    /// The report of a finished run.
    fn report(
        &self,
        total: &Acc,
        model_time: Duration,
        skipped: Vec<Skipped>,
        seconds: f64,
    ) -> Report {
        let opts = self.opts;
        let done = total.done;
        let per = |d: Duration| {
            if done == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e3 / done as f64
            }
        };
        let (w, h) = self.seg.input_size();
        let mut report = Report {
            images: done,
            skipped,
            provider: Some(self.seg.provider().name().to_string()),
            images_per_second: if seconds > 0.0 {
                done as f64 / seconds
            } else {
                0.0
            },
            seconds,
            model: Some(opts.model.display().to_string()),
            input_size: Some([w, h]),
            batch_size: Some(self.seg.batch_size()),
            stage_ms: Some(StageTimes {
                decode_ms: per(total.decode),
                preprocess_ms: per(total.preprocess),
                model_ms: per(model_time),
                postprocess_ms: per(total.post),
                write_ms: per(total.write),
            }),
            classes: opts.protocol.count(),
            shard: opts.shard,
            ..Report::default()
        };
        if opts.labels.is_some() {
            report.set_scores(&Scores {
                confusion: total.hist.confusion(IdFormat::LabelIds, IdFormat::TrainIds),
                protocol: opts.protocol,
            });
        }
        report
    }
}
