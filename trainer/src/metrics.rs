//! `RUN_DIR/metrics.jsonl`: one JSON object per line, `"kind": "train"` for each logged
//! iteration (iteration, every loss term of Eq. 9, lr, mu, kept anchors, q, seconds per
//! iteration) and `"kind": "val"` for each validation (iteration, mIoU, per-class IoU).
//! Lines are appended and flushed as they are written, so a stopped run keeps its log.

use crate::trainer::StepStats;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The log of one training iteration: the step's figures (iteration, every loss term of
/// Eq. 9, lr, mu, alpha, kept / box anchors, negatives, q) and its wall time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrainRecord {
    /// Always "train".
    pub kind: &'static str,
    /// What the step measured (flattened into the same JSON object).
    #[serde(flatten)]
    pub step: StepStats,
    /// Wall time of this iteration (data wait included).
    pub seconds_per_iteration: f64,
    /// Processes of the run (losses are their mean when above 1).
    pub world_size: usize,
}

/// One validation.
#[derive(Debug, Clone, Serialize)]
pub struct ValRecord {
    /// Always "val".
    pub kind: &'static str,
    /// Iterations completed.
    pub iteration: u64,
    /// mIoU over the 19 classes (0..1).
    pub miou: f64,
    /// mIoU over SYNTHIA's 16 classes, when the source is SYNTHIA.
    pub miou_16: Option<f64>,
    /// mIoU over SYNTHIA's 13 classes, when the source is SYNTHIA.
    pub miou_13: Option<f64>,
    /// IoU per class name, in train-id order (null when the class is absent from both
    /// labels and predictions).
    pub per_class_iou: ClassIous,
    /// Images scored.
    pub images: usize,
    /// Wall time of the validation.
    pub seconds: f64,
}

/// Per-class IoUs, serialised as one JSON object `{"road": 0.97, ...}` in class order
/// (the type of rccr-infer's reports).
pub use rccr_infer::report::PerClass as ClassIous;

/// Appends JSON lines to a file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens `path` for appending (created if needed).
    pub fn open(path: &Path) -> std::io::Result<MetricsLog> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record as a line and flushes.
    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
