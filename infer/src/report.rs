//! The JSON report of a run (`--json FILE`) and its printed per-class IoU table.
//!
//! `miou` and `per_class` are fractions in 0..1 (`null` for a class that occurs in neither
//! ground truth nor prediction); `per_class` keeps train-id order.

use std::path::Path;

use serde::ser::{SerializeMap, Serializer};

use crate::error::Result;
use crate::imageio;
use crate::score::Scores;

/// Milliseconds per image spent in each stage (summed over worker threads, so stages that
/// overlap can add up to more than the wall time).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageTimes {
    /// Reading and decoding the image (and its label).
    pub decode_ms: f64,
    /// Resizing and converting to the model's input.
    pub preprocess_ms: f64,
    /// The model run (per image: batch time / batch size).
    pub model_ms: f64,
    /// Resizing the prediction back, scoring.
    pub postprocess_ms: f64,
    /// Encoding and writing output PNGs.
    pub write_ms: f64,
}

/// (name, IoU) pairs serialised as a JSON object in their own order.
#[derive(Debug, Clone, Default)]
pub struct PerClass(pub Vec<(String, Option<f64>)>);

impl serde::Serialize for PerClass {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A skipped input and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The file.
    pub file: String,
    /// The error.
    pub error: String,
}

/// The report of an inference or scoring run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Mean IoU over the protocol's classes, a fraction (`null` without labels).
    pub miou: Option<f64>,
    /// IoU per class name, a fraction or `null`.
    pub per_class: PerClass,
    /// Correct / valid pixels (`null` without labels).
    pub pixel_accuracy: Option<f64>,
    /// Number of classes averaged (19, 16 or 13).
    pub classes: usize,
    /// Images processed (scored, when scoring).
    pub images: usize,
    /// Inputs skipped because of errors.
    pub skipped: Vec<Skipped>,
    /// Execution provider that ran the model (`null` for `score`).
    pub provider: Option<String>,
    /// Images per second over the whole run (decode to last write).
    pub images_per_second: f64,
    /// Megapixels of ground truth scored per second (scoring runs).
    pub megapixels_per_second: Option<f64>,
    /// Wall-clock seconds of the run (model loading excluded).
    pub seconds: f64,
    /// Model file (`null` for `score`).
    pub model: Option<String>,
    /// Model input `[width, height]`.
    pub input_size: Option<[u32; 2]>,
    /// Images per model run.
    pub batch_size: Option<usize>,
    /// Time per image and stage.
    pub stage_ms: Option<StageTimes>,
    /// Pixels counted in the confusion matrix.
    pub scored_pixels: u64,
}

impl Report {
    /// Fills the score fields from `scores`.
    pub fn set_scores(&mut self, scores: &Scores) {
        self.miou = scores.miou();
        self.per_class = PerClass(scores.per_class());
        self.pixel_accuracy = scores.pixel_accuracy();
        self.classes = scores.protocol.count();
        self.scored_pixels = scores.confusion.total();
    }

    /// The per-class table, the mean and the pixel accuracy, in percent.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("class            IoU (%)\n");
        s.push_str("------------------------\n");
        for (name, v) in &self.per_class.0 {
            let val = v.map_or_else(|| "    n/a".to_string(), |x| format!("{:7.2}", 100.0 * x));
            s.push_str(&format!("{name:<15} {val}\n"));
        }
        s.push_str("------------------------\n");
        let pct = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |x| format!("{:.2}", 100.0 * x));
        s.push_str(&format!(
            "mIoU ({} classes): {}   pixel accuracy: {}\n",
            self.classes,
            pct(self.miou),
            pct(self.pixel_accuracy)
        ));
        s
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a report always serialises");
        imageio::write_atomic(path, text.as_bytes())
    }
}
