//! Pictures of what the model sees: for a few fixed validation images, the input, the
//! ground truth and the teacher's prediction in the Cityscapes palette, side by side
//! (TensorBoard images at every validation; ignored pixels are black).

use crate::data::val::{ValSample, ValSet};
use crate::error::Error;
use crate::tensorboard::side_by_side;
use crate::validate::predict;
use image::RgbImage;
use rccr_infer::taxonomy::IGNORE;
use rccr_models::RccrNet;
use tch::{Device, Kind};

/// The first validation samples, decoded once.
pub(crate) struct ValPictures {
    samples: Vec<ValSample>,
}

impl ValPictures {
    /// The first `n` readable samples of `set` (None when there are none).
    pub(crate) fn new(set: &ValSet, n: usize) -> Option<ValPictures> {
        let samples: Vec<ValSample> = set.iter().filter_map(Result::ok).take(n).collect();
        (!samples.is_empty()).then_some(ValPictures { samples })
    }

    /// One picture per sample: input | ground truth | prediction of `net`.
    pub(crate) fn render(&self, net: &RccrNet, device: Device) -> Result<Vec<RgbImage>, Error> {
        let palette = rccr_infer::taxonomy::palette();
        self.samples
            .iter()
            .map(|s| {
                let (w, h) = (s.width as u32, s.height as u32);
                let pred = predict(net, &s.image, s.height, s.width, device, false)?;
                Ok(side_by_side(&[
                    input_image(s, w, h),
                    colorize(&s.label, w, h, &palette),
                    colorize(&pred, w, h, &palette),
                ]))
            })
            .collect()
    }
}

/// The sample's RGB input at the label's size.
fn input_image(s: &ValSample, w: u32, h: u32) -> RgbImage {
    let t = s
        .image
        .squeeze_dim(0)
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8);
    let (ih, iw) = (t.size()[1] as u32, t.size()[2] as u32);
    let hwc =
        Vec::<u8>::try_from(t.permute([1, 2, 0]).contiguous().flatten(0, -1)).unwrap_or_default();
    let img = RgbImage::from_raw(iw, ih, hwc).unwrap_or_else(|| RgbImage::new(iw, ih));
    if (iw, ih) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
    }
}

/// trainIds to colours (the ignore label and unknown ids black).
pub(crate) fn colorize(ids: &[u8], w: u32, h: u32, palette: &[[u8; 3]]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let id = ids.get((y * w + x) as usize).copied().unwrap_or(IGNORE) as usize;
        image::Rgb(palette.get(id).copied().unwrap_or([0, 0, 0]))
    })
}
