//! Resizing and deterministic random cropping of image/label pairs (paper Section 4, the
//! DACS protocol: bicubic image + nearest label resize to the dataset size, then a random square
//! crop, paper: 512x512). Crops that do not fit are padded at the bottom/right with image 0
//! and label 255. The random numbers come from seeds derived with [`mix`], so a sample's
//! augmentation depends only on (seed, global sample index), never on thread timing.

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rccr_infer::seed::splitmix64;
use rccr_infer::taxonomy::IGNORE;

/// Derives an independent seed from a base seed, a stream tag and an index (SplitMix64,
/// [`rccr_infer::seed::splitmix64`]).
pub(crate) fn mix(seed: u64, tag: u64, index: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(tag)) ^ index)
}

/// A ChaCha8 generator for (seed, tag, index).
pub(crate) fn rng_for(seed: u64, tag: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, tag, index))
}

/// Resizes `img` to `size` (W, H) with `filter`; returns it unchanged when already that size.
pub(crate) fn resize_rgb(img: RgbImage, size: (u32, u32), filter: FilterType) -> RgbImage {
    if img.dimensions() == size {
        img
    } else {
        imageops::resize(&img, size.0, size.1, filter)
    }
}

/// Top-left corner of a random `crop x crop` window in a `w x h` image (0 along an axis
/// where the image is smaller than the crop; that part is padded).
pub(crate) fn random_crop_origin(rng: &mut impl Rng, w: u32, h: u32, crop: u32) -> (u32, u32) {
    let x = if w > crop {
        rng.gen_range(0..=w - crop)
    } else {
        0
    };
    let y = if h > crop {
        rng.gen_range(0..=h - crop)
    } else {
        0
    };
    (x, y)
}

/// Copies the `crop x crop` window at (x0, y0) into a planar CHW float buffer (RGB, 0..255)
/// and a label buffer, padding outside the image with 0 / 255.
pub(crate) fn crop_chw(
    img: &RgbImage,
    label: &[u8],
    origin: (u32, u32),
    crop: u32,
    image_out: &mut Vec<f32>,
    label_out: &mut Vec<u8>,
) {
    let (w, h) = img.dimensions();
    let c = crop as usize;
    let plane = c * c;
    image_out.clear();
    image_out.resize(3 * plane, 0.0);
    label_out.clear();
    label_out.resize(plane, IGNORE);
    let raw = img.as_raw();
    let (x0, y0) = (origin.0 as usize, origin.1 as usize);
    let cw = (w as usize).saturating_sub(x0).min(c);
    let ch = (h as usize).saturating_sub(y0).min(c);
    let (r, rest) = image_out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for y in 0..ch {
        let src = (y0 + y) * w as usize + x0;
        let dst = y * c;
        let px = &raw[src * 3..(src + cw) * 3];
        for (x, p) in px.chunks_exact(3).enumerate() {
            r[dst + x] = p[0] as f32;
            g[dst + x] = p[1] as f32;
            b[dst + x] = p[2] as f32;
        }
        label_out[dst..dst + cw].copy_from_slice(&label[src..src + cw]);
    }
}

/// Planar CHW float copy (RGB 0..255) of a whole image.
pub(crate) fn to_chw(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = w as usize * h as usize;
    let mut out = vec![0.0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = p[0] as f32;
        g[i] = p[1] as f32;
        b[i] = p[2] as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_pads_outside() {
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8 + 1, 10, 20]));
        let label = [3, 4];
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        crop_chw(&img, &label, (1, 0), 2, &mut im, &mut lb);
        assert_eq!(lb, vec![4, IGNORE, IGNORE, IGNORE]);
        assert_eq!(&im[0..4], &[2.0, 0.0, 0.0, 0.0]);
        assert_eq!(&im[4..8], &[10.0, 0.0, 0.0, 0.0]);
        assert_eq!(&im[8..12], &[20.0, 0.0, 0.0, 0.0]);
    }
}
