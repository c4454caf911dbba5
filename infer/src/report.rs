//! The JSON report of a run (`--json FILE`) and its printed per-class IoU table.
//!
//! `miou` and `per_class` are fractions in 0..1 (`null` for a class that occurs in neither
//! ground truth nor prediction); `per_class` keeps train-id order. A scored report also
//! carries its train-id confusion matrix (`confusion`), so reports of disjoint image sets
//! (`--shard K/N` runs) merge into exactly the report of one run over all of them
//! ([`crate::merge`]).

use std::path::Path;

use serde::ser::{SerializeMap, Serializer};

use crate::error::Result;
use crate::files::Shard;
use crate::imageio;
use crate::metrics::ConfusionMatrix;
use crate::score::Scores;

/// Milliseconds per image spent in each stage (summed over worker threads, so stages that
/// overlap can add up to more than the wall time).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// The train-id confusion matrix of a report: `counts[gt][pred]` pixels, and per
/// ground-truth class the pixels predicted as void (false negatives of no class's FP).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionCounts {
    /// Rows = ground-truth train id, columns = predicted train id.
    pub counts: Vec<Vec<u64>>,
    /// Per ground-truth train id: pixels predicted as void.
    pub void_predictions: Vec<u64>,
}

impl ConfusionCounts {
    /// The counts of `cm`.
    pub fn of(cm: &ConfusionMatrix) -> Self {
        ConfusionCounts {
            counts: cm.rows(),
            void_predictions: (0..cm.num_classes())
                .map(|c| cm.void_predictions(c))
                .collect(),
        }
    }

    /// The matrix back; `None` when the rows are not square or the void counts do not
    /// match them.
    pub fn matrix(&self) -> Option<ConfusionMatrix> {
        ConfusionMatrix::from_counts(&self.counts, &self.void_predictions)
    }
}

/// A skipped input and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Images processed (scored, when scoring): outputs written for each of them.
    pub images: usize,
    /// The part of the sorted image list this run covered (`--shard K/N`), `null` for all.
    pub shard: Option<Shard>,
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
    /// The train-id confusion matrix behind the scores (`null` without labels).
    pub confusion: Option<ConfusionCounts>,
}

impl Report {
    /// Fills the score fields from `scores`.
    pub fn set_scores(&mut self, scores: &Scores) {
        self.miou = scores.miou();
        self.per_class = PerClass(scores.per_class());
        self.pixel_accuracy = scores.pixel_accuracy();
        self.classes = scores.protocol.count();
        self.scored_pixels = scores.confusion.total();
        self.confusion = Some(ConfusionCounts::of(&scores.confusion));
    }

    /// The per-class table, the mean and the pixel accuracy, in percent
    /// ([`class_table`]).
    pub fn table(&self) -> String {
        class_table(
            &self.per_class.0,
            &[
                (format!("mIoU ({} classes)", self.classes), self.miou),
                ("pixel accuracy".to_string(), self.pixel_accuracy),
            ],
        )
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a report always serialises");
        imageio::write_output(path, text.as_bytes())
    }
}

/// Width of the name column of [`class_table`].
const NAME_WIDTH: usize = 18;

/// The per-class result table: a header, one `name  IoU%` row per class (`-` for an
/// undefined IoU), a rule, then the `summary` rows (means, accuracies) in the same
/// columns. Values are fractions, printed as percentages with two decimals.
pub fn class_table(per_class: &[(String, Option<f64>)], summary: &[(String, Option<f64>)]) -> String {
    let row = |name: &str, v: Option<f64>| {
        let value = v.map_or_else(|| "-".to_string(), |x| format!("{:.2}", 100.0 * x));
        format!("{name:<NAME_WIDTH$} {value:>7}\n")
    };
    let rule = format!("{}\n", "-".repeat(NAME_WIDTH + 8));
    let mut s = format!("{:<NAME_WIDTH$} {:>7}\n", "class", "IoU %");
    s.push_str(&rule);
    for (name, v) in per_class {
        s.push_str(&row(name, *v));
    }
    s.push_str(&rule);
    for (name, v) in summary {
        s.push_str(&row(name, *v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table_rows_and_summary() {
        let t = class_table(
            &[("road".into(), Some(0.5)), ("train".into(), None)],
            &[("mIoU".into(), Some(0.123456))],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], "class                IoU %");
        assert_eq!(lines[2], "road                 50.00");
        assert_eq!(lines[3], "train                    -");
        assert_eq!(lines[5], "mIoU                 12.35");
    }
}
