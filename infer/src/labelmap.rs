//! Single-channel label maps (train ids or Cityscapes labelIds, one byte per pixel) and the
//! pixel operations on them: nearest-neighbour resizing (the prediction brought to the
//! label resolution before scoring: docs/design.md#evaluation-protocols), id remapping
//! through a lookup table (trainId <-> labelId), colouring with a palette and blending a
//! colour map over the input image.

use crate::taxonomy::{self, IGNORE};

/// A `width x height` map of one byte per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` ids, row-major.
    pub data: Vec<u8>,
}

/// The nearest source index of destination index `d` when `src` pixels are stretched to
/// `dst`: pixel centres are aligned, `floor((d + 0.5) * src / dst)` (as PIL's NEAREST and
/// `torch.nn.functional.interpolate(mode="nearest-exact")`). For integer upscaling factors
/// this equals PyTorch's default `nearest` (`floor(d * src / dst)`).
fn nearest_index(d: u32, src: u32, dst: u32) -> u32 {
    let s = ((2 * d as u64 + 1) * src as u64) / (2 * dst as u64);
    (s as u32).min(src - 1)
}

/// A row-major `src` id map of size `from` resized to `to` with nearest-neighbour
/// sampling (`nearest_index`; ids are never blended). A copy when the sizes match; an
/// empty source gives a map of [`IGNORE`].
pub fn resize_nearest(src: &[u8], from: (u32, u32), to: (u32, u32)) -> Vec<u8> {
    let ((sw, sh), (width, height)) = (from, to);
    if from == to {
        return src.to_vec();
    }
    if src.is_empty() || sw == 0 || sh == 0 {
        return vec![IGNORE; width as usize * height as usize];
    }
    let xs: Vec<usize> = (0..width)
        .map(|x| nearest_index(x, sw, width) as usize)
        .collect();
    let mut data = Vec::with_capacity(width as usize * height as usize);
    // (source row, start of its copy in `data`) of the previous output row.
    let mut last_row: Option<(u32, usize)> = None;
    for y in 0..height {
        let sy = nearest_index(y, sh, height);
        if let Some((_, start)) = last_row.filter(|&(prev, _)| prev == sy) {
            data.extend_from_within(start..start + width as usize);
            continue;
        }
        let row = &src[sy as usize * sw as usize..][..sw as usize];
        let start = data.len();
        data.extend(xs.iter().map(|&sx| row[sx]));
        last_row = Some((sy, start));
    }
    data
}

/// Per-pixel argmax over `c` planes of `plane` values each (the first maximum wins, as
/// ONNX `ArgMax` and `torch.argmax`); NaN scores never win.
pub fn argmax_planes(logits: &[f32], c: usize, plane: usize) -> Vec<u8> {
    let mut best = logits[..plane].to_vec();
    let mut out = vec![0u8; plane];
    for k in 1..c {
        let s = &logits[k * plane..(k + 1) * plane];
        for ((o, b), &v) in out.iter_mut().zip(best.iter_mut()).zip(s) {
            if v > *b || (b.is_nan() && !v.is_nan()) {
                *b = v;
                *o = k as u8;
            }
        }
    }
    out
}

impl LabelMap {
    /// A map filled with `value`.
    pub fn filled(width: u32, height: u32, value: u8) -> LabelMap {
        LabelMap {
            width,
            height,
            data: vec![value; width as usize * height as usize],
        }
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the map has no pixels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Id at (`x`, `y`).
    pub fn get(&self, x: u32, y: u32) -> u8 {
        self.data[y as usize * self.width as usize + x as usize]
    }

    /// This map resized to `width x height` with nearest-neighbour sampling
    /// ([`resize_nearest`]).
    pub fn resize_nearest(&self, width: u32, height: u32) -> LabelMap {
        LabelMap {
            width,
            height,
            data: resize_nearest(&self.data, (self.width, self.height), (width, height)),
        }
    }

    /// Every id replaced by `lut[id]`.
    pub fn map(&self, lut: &[u8; 256]) -> LabelMap {
        LabelMap {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| lut[v as usize]).collect(),
        }
    }

    /// Train ids -> official Cityscapes labelIds (the result format of the official
    /// evaluation); 255 and ids without a class become labelId 0 (`unlabeled`).
    pub fn train_to_label_ids(&self) -> LabelMap {
        self.map(&TRAIN_TO_LABEL_LUT)
    }

    /// Cityscapes labelIds -> train ids (255 for every id that is not a training class).
    pub fn label_to_train_ids(&self) -> LabelMap {
        self.map(&taxonomy::LABEL_TO_TRAIN)
    }

    /// RGB bytes (`3 * len`) with id `i` coloured `palette[i]`, black for ids without one.
    pub fn colorize(&self, palette: &[[u8; 3]]) -> Vec<u8> {
        let mut lut = [[0u8; 3]; 256];
        for (i, c) in palette.iter().take(256).enumerate() {
            lut[i] = *c;
        }
        let mut out = Vec::with_capacity(self.len() * 3);
        for &v in &self.data {
            out.extend_from_slice(&lut[v as usize]);
        }
        out
    }
}

const fn build_train_to_label() -> [u8; 256] {
    let mut lut = [0u8; 256];
    let mut i = 0;
    while i < taxonomy::NUM_CLASSES {
        lut[taxonomy::CLASSES[i].train_id as usize] = taxonomy::CLASSES[i].label_id;
        i += 1;
    }
    lut
}

/// trainId -> labelId lookup table; ids without a class map to 0 (`unlabeled`).
pub const TRAIN_TO_LABEL_LUT: [u8; 256] = build_train_to_label();

/// `alpha * colour + (1 - alpha) * image` per pixel, both RGB bytes of the same length;
/// pixels whose colour is black (no class) keep the image.
pub fn blend(image: &[u8], colour: &[u8], alpha: f32) -> Vec<u8> {
    let a = alpha.clamp(0.0, 1.0);
    image
        .chunks_exact(3)
        .zip(colour.chunks_exact(3))
        .flat_map(|(i, c)| {
            let keep = c == [0, 0, 0];
            let mix = move |k: usize| {
                if keep {
                    i[k]
                } else {
                    (a * c[k] as f32 + (1.0 - a) * i[k] as f32).round() as u8
                }
            };
            [mix(0), mix(1), mix(2)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_maximum_wins() {
        // 3 classes, 4 pixels.
        let logits = [
            1.0,
            5.0,
            0.0,
            f32::NAN, // class 0
            2.0,
            5.0,
            0.0,
            1.0, // class 1
            0.0,
            1.0,
            3.0,
            0.5, // class 2
        ];
        assert_eq!(argmax_planes(&logits, 3, 4), vec![1, 0, 2, 1]);
    }

    #[test]
    fn nearest_upsample_by_two_repeats_pixels() {
        let m = LabelMap {
            width: 2,
            height: 2,
            data: vec![1, 2, 3, 4],
        };
        let up = m.resize_nearest(4, 4);
        assert_eq!(
            up.data,
            vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
        );
    }

    #[test]
    fn nearest_downsample_takes_centre_samples() {
        // 6 -> 3: destination centres 0.5, 2.5, 4.5 in units of 1/2 -> sources 1, 3, 5.
        let m = LabelMap {
            width: 6,
            height: 1,
            data: vec![10, 11, 12, 13, 14, 15],
        };
        assert_eq!(m.resize_nearest(3, 1).data, vec![11, 13, 15]);
        // 3 -> 2: centres at 0.75 and 2.25 -> sources 0 and 2.
        let m = LabelMap {
            width: 3,
            height: 1,
            data: vec![7, 8, 9],
        };
        assert_eq!(m.resize_nearest(2, 1).data, vec![7, 9]);
        assert_eq!(m.resize_nearest(3, 1), m);
    }

    #[test]
    fn train_label_luts_round_trip() {
        let m = LabelMap {
            width: 21,
            height: 1,
            data: (0..19u8).chain([19, IGNORE]).collect(),
        };
        let ids = m.train_to_label_ids();
        assert_eq!(ids.data[0], 7); // road
        assert_eq!(ids.data[18], 33); // bicycle
        assert_eq!(ids.data[19], 0);
        assert_eq!(ids.data[20], 0);
        let back = ids.label_to_train_ids();
        assert_eq!(&back.data[..19], &m.data[..19]);
        assert_eq!(&back.data[19..], &[IGNORE, IGNORE]);
    }

    #[test]
    fn colorize_and_blend() {
        let m = LabelMap {
            width: 2,
            height: 1,
            data: vec![0, 200],
        };
        let c = m.colorize(&[[128, 64, 128]]);
        assert_eq!(c, vec![128, 64, 128, 0, 0, 0]);
        let b = blend(&[0, 0, 0, 9, 9, 9], &c, 0.5);
        assert_eq!(b, vec![64, 32, 64, 9, 9, 9]);
    }
}
