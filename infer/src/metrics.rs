//! Segmentation scores from one confusion matrix accumulated over a whole split, as the
//! official Cityscapes evaluation computes them: per-class IoU = TP / (TP + FP + FN),
//! NaN (reported as `None`) when a class occurs in neither ground truth nor prediction,
//! mIoU = the mean of the defined IoUs of the protocol's classes, pixel accuracy.
//!
//! Pixels whose ground truth is 255 or outside `0..n` are not counted. On a valid pixel a
//! prediction outside `0..n` (a void labelId in the official format) is a false negative
//! of the ground-truth class and a false positive of no class, exactly as in
//! `evalPixelLevelSemanticLabeling.py` (its FN is the whole ground-truth row of the labelId
//! matrix, void columns included; its FP only sums rows of evaluated classes). Such pixels
//! are also tallied in [`ConfusionMatrix::unscored`].

use crate::taxonomy::{Protocol, IGNORE};

/// An `n x n` confusion matrix, rows = ground truth, columns = prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n: usize,
    counts: Vec<u64>,
    /// Per ground-truth class: pixels predicted as void (outside `0..n`).
    void_pred: Vec<u64>,
    unscored: u64,
}

/// Two label maps of different sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("label maps differ in size: ground truth has {gt} pixels, prediction {pred}")]
pub struct LengthMismatch {
    /// Ground-truth pixels.
    pub gt: usize,
    /// Predicted pixels.
    pub pred: usize,
}

impl ConfusionMatrix {
    /// An empty matrix over `n` classes.
    pub fn new(n: usize) -> Self {
        ConfusionMatrix {
            n,
            counts: vec![0; n * n],
            void_pred: vec![0; n],
            unscored: 0,
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.n
    }

    /// Count at (ground truth `gt`, prediction `pred`).
    pub fn get(&self, gt: usize, pred: usize) -> u64 {
        self.counts[gt * self.n + pred]
    }

    /// A matrix from its counts: `counts[gt][pred]` (`n` rows of `n`) and the void
    /// predictions per ground-truth class (`n` values); `None` when the shapes disagree.
    pub fn from_counts(counts: &[Vec<u64>], void_predictions: &[u64]) -> Option<Self> {
        let n = counts.len();
        if void_predictions.len() != n || counts.iter().any(|row| row.len() != n) {
            return None;
        }
        Some(ConfusionMatrix {
            n,
            counts: counts.concat(),
            void_pred: void_predictions.to_vec(),
            unscored: void_predictions.iter().sum(),
        })
    }

    /// The counts as rows: `rows()[gt][pred]`.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.n.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Valid ground-truth pixels whose prediction was outside `0..n` (void): false
    /// negatives of their ground-truth class, false positives of none.
    pub fn unscored(&self) -> u64 {
        self.unscored
    }

    /// Pixels of ground-truth class `gt` predicted as void (outside `0..n`).
    pub fn void_predictions(&self, gt: usize) -> u64 {
        self.void_pred[gt]
    }

    /// Adds `count` pixels of ground truth `gt` predicted as `pred` (train ids; `gt` 255 or
    /// `>= n` is ignored, `pred >= n` is void). Returns the pixels counted.
    pub(crate) fn add_count(&mut self, gt: u8, pred: u8, count: u64) -> u64 {
        let (g, p) = (gt as usize, pred as usize);
        if gt == IGNORE || g >= self.n {
            return 0;
        }
        if p >= self.n {
            self.void_pred[g] += count;
            self.unscored += count;
        } else {
            self.counts[g * self.n + p] += count;
        }
        count
    }

    /// Adds one pair of train-id maps of equal length. Returns the pixels counted (every
    /// pixel with a valid ground truth, void predictions included).
    pub fn add(&mut self, gt: &[u8], pred: &[u8]) -> Result<u64, LengthMismatch> {
        if gt.len() != pred.len() {
            return Err(LengthMismatch {
                gt: gt.len(),
                pred: pred.len(),
            });
        }
        let n = self.n;
        let mut counted = 0;
        for (&g, &p) in gt.iter().zip(pred) {
            let (g, p) = (g as usize, p as usize);
            if g == IGNORE as usize || g >= n {
                continue;
            }
            counted += 1;
            if p >= n {
                self.void_pred[g] += 1;
                self.unscored += 1;
                continue;
            }
            self.counts[g * n + p] += 1;
        }
        Ok(counted)
    }

    /// Merges another matrix of the same size (returns false, merging nothing, otherwise).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> bool {
        if self.n != other.n {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.void_pred.iter_mut().zip(&other.void_pred) {
            *a += b;
        }
        self.unscored += other.unscored;
        true
    }

    /// IoU of class `c`, `None` when TP + FP + FN = 0 (or `c >= n`). FN includes the
    /// class's void predictions.
    pub fn iou(&self, c: usize) -> Option<f64> {
        let n = self.n;
        if c >= n {
            return None;
        }
        let tp = self.get(c, c);
        let fn_: u64 = (0..n)
            .filter(|&p| p != c)
            .map(|p| self.get(c, p))
            .sum::<u64>()
            + self.void_pred[c];
        let fp: u64 = (0..n).filter(|&g| g != c).map(|g| self.get(g, c)).sum();
        let denom = tp + fp + fn_;
        (denom > 0).then(|| tp as f64 / denom as f64)
    }

    /// Per-class IoU of all `n` classes.
    pub fn per_class_iou(&self) -> Vec<Option<f64>> {
        (0..self.n).map(|c| self.iou(c)).collect()
    }

    /// Mean of the defined IoUs over `classes` (ids >= n are skipped); `None` if none is defined.
    pub fn mean_iou_over(&self, classes: &[u8]) -> Option<f64> {
        let ious: Vec<f64> = classes
            .iter()
            .filter(|&&c| (c as usize) < self.n)
            .filter_map(|&c| self.iou(c as usize))
            .collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }

    /// mIoU over all `n` classes.
    pub fn mean_iou(&self) -> Option<f64> {
        let all: Vec<u8> = (0..self.n.min(255) as u8).collect();
        self.mean_iou_over(&all)
    }

    /// mIoU under a Cityscapes protocol (19, 16 or 13 classes).
    pub fn mean_iou_protocol(&self, protocol: Protocol) -> Option<f64> {
        self.mean_iou_over(&protocol.train_ids())
    }

    /// Correct pixels / counted pixels (void predictions count as wrong); `None` when
    /// nothing was counted.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total = self.total();
        let correct: u64 = (0..self.n).map(|c| self.get(c, c)).sum();
        (total > 0).then(|| correct as f64 / total as f64)
    }

    /// Pixels counted so far (every pixel with a valid ground truth).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.unscored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_classes() {
        // gt:   0 0 1 1 2 255
        // pred: 0 1 1 1 0 2
        // class 0: TP 1, FN 1 (gt0->1), FP 1 (gt2->0) -> 1/3
        // class 1: TP 2, FP 1 (gt0->1)               -> 2/3
        // class 2: TP 0, FN 1                        -> 0
        let mut cm = ConfusionMatrix::new(3);
        assert_eq!(
            cm.add(&[0, 0, 1, 1, 2, IGNORE], &[0, 1, 1, 1, 0, 2])
                .unwrap(),
            5
        );
        let iou = cm.per_class_iou();
        assert!((iou[0].unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((iou[1].unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou[2], Some(0.0));
        assert!((cm.mean_iou().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((cm.pixel_accuracy().unwrap() - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_undefined_and_skipped() {
        let mut cm = ConfusionMatrix::new(4);
        cm.add(&[0, 0, 1], &[0, 0, 1]).unwrap();
        assert_eq!(cm.iou(2), None);
        assert_eq!(cm.iou(3), None);
        assert_eq!(cm.mean_iou(), Some(1.0));
    }

    #[test]
    fn all_wrong_and_all_ignored() {
        let mut cm = ConfusionMatrix::new(2);
        cm.add(&[0, 0, 1], &[1, 1, 0]).unwrap();
        assert_eq!(cm.mean_iou(), Some(0.0));
        assert_eq!(cm.pixel_accuracy(), Some(0.0));
        let mut empty = ConfusionMatrix::new(2);
        assert_eq!(empty.add(&[IGNORE, IGNORE], &[0, 1]).unwrap(), 0);
        assert_eq!(empty.mean_iou(), None);
        assert_eq!(empty.pixel_accuracy(), None);
    }

    #[test]
    fn void_predictions_are_false_negatives_only() {
        // gt:   0   0 1 1
        // pred: 0 255 1 255
        // class 0: TP 1, FN 1 (void) -> 1/2; class 1: TP 1, FN 1 (void) -> 1/2.
        // No class gets a false positive from the void pixels.
        let mut cm = ConfusionMatrix::new(2);
        assert_eq!(cm.add(&[0, 0, 1, 1], &[0, IGNORE, 1, IGNORE]).unwrap(), 4);
        assert_eq!(cm.unscored(), 2);
        assert_eq!(cm.void_predictions(0), 1);
        assert_eq!(cm.iou(0), Some(0.5));
        assert_eq!(cm.iou(1), Some(0.5));
        assert_eq!(cm.pixel_accuracy(), Some(0.5));
        assert_eq!(cm.total(), 4);
        assert!(cm.add(&[0], &[0, 1]).is_err());
    }

    #[test]
    fn add_count_and_merge_equal_pixelwise_adds() {
        let gt = [0u8, 1, 2, 2, IGNORE, 7, 1];
        let pred = [0u8, 2, 2, 9, 1, 1, 1];
        let mut a = ConfusionMatrix::new(3);
        a.add(&gt[..3], &pred[..3]).unwrap();
        let mut b = ConfusionMatrix::new(3);
        b.add(&gt[3..], &pred[3..]).unwrap();
        assert!(a.merge(&b));
        let mut c = ConfusionMatrix::new(3);
        for (&g, &p) in gt.iter().zip(&pred) {
            c.add_count(g, p, 1);
        }
        assert_eq!(a, c);
        // gt 255 and gt 7 (>= n) ignored: 5 pixels counted, one of them void (pred 9).
        assert_eq!(c.total(), 5);
        assert_eq!(c.unscored(), 1);
        assert!(!a.merge(&ConfusionMatrix::new(4)));
    }

    #[test]
    fn protocol_mean_skips_excluded_classes() {
        // Class 9 (terrain) all wrong, everything else perfect: 19-class mIoU = 18/19 (the
        // wrong class-9 pixels are predicted as 0, so class 0 gets FP: IoU 1/2).
        let mut cm = ConfusionMatrix::new(19);
        let mut gt = Vec::new();
        let mut pred = Vec::new();
        for c in 0..19u8 {
            gt.push(c);
            pred.push(if c == 9 { 0 } else { c });
        }
        cm.add(&gt, &pred).unwrap();
        let m19 = cm.mean_iou_protocol(Protocol::Classes19).unwrap();
        assert!((m19 - (17.0 + 0.5) / 19.0).abs() < 1e-12);
        let m16 = cm.mean_iou_protocol(Protocol::Classes16).unwrap();
        assert!((m16 - (15.0 + 0.5) / 16.0).abs() < 1e-12);
    }

    #[test]
    fn from_counts_round_trips() {
        let mut cm = ConfusionMatrix::new(3);
        cm.add(&[0, 0, 1, 2, 2], &[0, 1, 1, 9, 0]).unwrap();
        let voids: Vec<u64> = (0..3).map(|c| cm.void_predictions(c)).collect();
        assert_eq!(voids, [0, 0, 1]);
        let back = ConfusionMatrix::from_counts(&cm.rows(), &voids).unwrap();
        assert_eq!(back, cm);
        assert!(ConfusionMatrix::from_counts(&[vec![1, 2]], &[0]).is_none());
    }
}
