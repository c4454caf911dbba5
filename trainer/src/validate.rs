//! Validation of the teacher (Algorithm 1 returns the teacher encoder and head): on each
//! image of the validation split, the teacher in evaluation mode (BN running
//! statistics), logits bilinearly upsampled (align_corners = true) to the label's size,
//! argmax; one confusion matrix over the split gives per-class IoU and mIoU with the
//! official Cityscapes semantics (`rccr_infer::metrics`), on 19 classes and, for SYNTHIA
//! runs, on the 16- and 13-class protocols as well.

use crate::data::ValSet;
use crate::error::{Error, Result};
use crate::metrics::{ClassIous, ValRecord};
use rccr_infer::contract::default_class_names;
use rccr_infer::metrics::ConfusionMatrix;
use rccr_infer::report::class_table;
use rccr_infer::taxonomy::{class_names, Protocol};
use rccr_models::RccrNet;
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The scores of one pass.
#[derive(Debug, Clone, Serialize)]
pub struct ValResult {
    /// mIoU over all classes (0..1).
    pub miou: f64,
    /// SYNTHIA's 16-class mIoU, when asked for.
    pub miou_16: Option<f64>,
    /// SYNTHIA's 13-class mIoU, when asked for.
    pub miou_13: Option<f64>,
    /// Per-class (name, IoU), in train-id order.
    pub per_class_iou: ClassIous,
    /// Pixel accuracy.
    pub pixel_accuracy: Option<f64>,
    /// Images scored.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
}

impl ValResult {
    /// As a metrics.jsonl record.
    pub fn record(&self, iteration: u64) -> ValRecord {
        ValRecord {
            kind: "val",
            iteration,
            miou: self.miou,
            miou_16: self.miou_16,
            miou_13: self.miou_13,
            per_class_iou: self.per_class_iou.clone(),
            images: self.images,
            seconds: self.seconds,
        }
    }
}

impl std::fmt::Display for ValResult {
    /// The per-class table of rccr-infer's reports, the mIoUs below it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut summary = vec![("mIoU".to_string(), Some(self.miou))];
        for (name, m) in [("mIoU (16)", self.miou_16), ("mIoU (13)", self.miou_13)] {
            if m.is_some() {
                summary.push((name.to_string(), m));
            }
        }
        f.write_str(&class_table(&self.per_class_iou.0, &summary))?;
        write!(f, "({} images, {:.1} s)", self.images, self.seconds)
    }
}

/// Predicted train ids (`H x W`, row-major) of one image `1 x 3 x h x w` (RGB 0..255)
/// for a label of `height x width`.
pub(crate) fn predict(
    net: &RccrNet,
    image: &Tensor,
    height: usize,
    width: usize,
    device: Device,
    bf16: bool,
) -> Result<Vec<u8>> {
    let pred = tch::no_grad(|| {
        let x = net.seg.normalize(&image.to_device(device));
        let logits = crate::amp::bf16_autocast(bf16, || net.seg.forward_t(&x, false).logits);
        let up =
            (net.seg).upsample_logits(&logits.to_kind(Kind::Float), height as i64, width as i64);
        up.argmax(1, false)
            .to_kind(Kind::Uint8)
            .flatten(0, -1)
            .to_device(Device::Cpu)
    });
    Ok(Vec::<u8>::try_from(&pred)?)
}

/// Scores `net` (in evaluation mode) on `set`. `synthia` adds the 16 / 13-class mIoUs.
pub fn evaluate(
    net: &RccrNet,
    set: &ValSet,
    device: Device,
    bf16: bool,
    synthia: bool,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<ValResult> {
    let start = Instant::now();
    let n = net.seg.config().num_classes as usize;
    let mut cm = ConfusionMatrix::new(n);
    let mut images = 0;
    for sample in set.iter() {
        let s = sample?;
        if s.label.len() != s.height * s.width {
            return Err(Error::ValSample {
                name: s.name,
                msg: format!(
                    "label has {} pixels for {}x{}",
                    s.label.len(),
                    s.width,
                    s.height
                ),
            });
        }
        let pred = predict(net, &s.image, s.height, s.width, device, bf16)?;
        cm.add(&s.label, &pred).map_err(|e| Error::ValSample {
            name: s.name.clone(),
            msg: e.to_string(),
        })?;
        images += 1;
        if let Some(pb) = progress {
            pb.inc(1);
        }
    }
    Ok(scores(&cm, synthia, images, start.elapsed().as_secs_f64()))
}

/// Per-class IoU and mIoUs of a confusion matrix.
pub fn scores(cm: &ConfusionMatrix, synthia: bool, images: usize, seconds: f64) -> ValResult {
    let n = cm.num_classes();
    let names = default_class_names(n);
    let per_class_iou = ClassIous(names.into_iter().zip(cm.per_class_iou()).collect());
    let cityscapes = n == class_names().len();
    ValResult {
        miou: cm.mean_iou().unwrap_or(0.0),
        miou_16: (synthia && cityscapes)
            .then(|| cm.mean_iou_protocol(Protocol::Classes16).unwrap_or(0.0)),
        miou_13: (synthia && cityscapes)
            .then(|| cm.mean_iou_protocol(Protocol::Classes13).unwrap_or(0.0)),
        per_class_iou,
        pixel_accuracy: cm.pixel_accuracy(),
        images,
        seconds,
    }
}
