//! Cross-domain mixing (Algorithm 1 lines 3 and 8) and the strong augmentation of the
//! mixed images.
//!
//! - ClassMix (L_cons): per source image, ceil(n/2) of the n classes present in its label
//!   (the ignore label 255 is not a candidate) chosen without replacement; mask = their
//!   pixels; x_class = mask * x_s + (1 - mask) * x_t; y_class = y_s where the mask is set,
//!   the teacher's argmax on the target elsewhere; pixel weight 1 on source pixels and
//!   q on target pixels, q = fraction of the batch's target pixels whose teacher
//!   max-softmax >= 0.968 (DACS).
//! - CutMix (L_cont, paper Eq. 3): one square box per batch, side
//!   floor(sqrt(a) * crop / 8) * 8 (>= 8) with a ~ Beta(1, 1), top-left corner on the
//!   8-pixel grid; the TARGET patch is pasted INTO the SOURCE: x_cut = m x_t + (1 - m) x_s.
//! - Strong augmentation of both mixed images (DACS): colour jitter (brightness,
//!   contrast, saturation, hue, strength 0.2) with probability 0.8 and Gaussian blur
//!   (sigma ~ U(0.15, 1.15)) with probability 0.5, per image. The blur kernel is cut at
//!   4 sigma (DACS uses a 10%-of-height kernel; the weights beyond 4 sigma are below 4e-4
//!   of the centre). The hue shift is a rotation of the YIQ chroma plane (an
//!   approximation of kornia's HSV shift).
//!
//! Every random choice comes from the caller's `rand` generator (a seeded ChaCha8 in
//! training), so runs are reproducible and resumable.

use rand::seq::index::sample;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use tch::{Device, Kind, Tensor};

/// The ignore label (rccr-infer's taxonomy) as the label tensors' integer.
pub const IGNORE: i64 = rccr_infer::taxonomy::IGNORE as i64;

/// ceil(n/2) of `present`, chosen without replacement, ascending.
pub(crate) fn choose_half<R: Rng + ?Sized>(present: &[i64], rng: &mut R) -> Vec<i64> {
    let n = present.len();
    let k = n.div_ceil(2);
    let mut chosen: Vec<i64> = sample(rng, n, k).into_iter().map(|i| present[i]).collect();
    chosen.sort_unstable();
    chosen
}

/// ClassMix masks `N x H x W` (f32 0/1) from source labels `N x H x W`, and the classes
/// chosen per image. The class counts of all images come to the host in one copy and the
/// per-image class tables go back in one (no copy per image).
pub(crate) fn classmix_masks<R: Rng + ?Sized>(
    labels: &Tensor,
    num_classes: i64,
    rng: &mut R,
) -> (Tensor, Vec<Vec<i64>>) {
    let n = labels.size()[0];
    let bins = IGNORE + 1;
    // Label of image b shifted into bins [b * bins, (b + 1) * bins).
    let offsets = Tensor::arange(n, (Kind::Int64, labels.device())).view([n, 1, 1]) * bins;
    let idx = (labels.to_kind(Kind::Int64).clamp(0, IGNORE) + offsets).flatten(0, -1);
    let counts = Vec::<i64>::try_from(
        &idx.bincount::<Tensor>(None, n * bins)
            .to_device(Device::Cpu),
    )
    .unwrap_or_default();
    let mut table = vec![0f32; (n * bins) as usize];
    let mut chosen_all = Vec::with_capacity(n as usize);
    for (b, counts) in counts.chunks(bins as usize).enumerate() {
        let present: Vec<i64> = (0..num_classes.min(bins))
            .filter(|&c| counts[c as usize] > 0)
            .collect();
        let chosen = choose_half(&present, rng);
        for &c in &chosen {
            table[b * bins as usize + c as usize] = 1.0;
        }
        chosen_all.push(chosen);
    }
    let table = crate::upload::small(&Tensor::from_slice(&table), labels.device());
    (table.index_select(0, &idx).view_as(labels), chosen_all)
}

/// `mask * a + (1 - mask) * b` for images `N x 3 x H x W` and a mask `N x H x W` or
/// `N x 1 x H x W` / `1 x 1 x H x W`.
pub fn mix(mask: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let m = if mask.dim() == 3 {
        mask.unsqueeze(1)
    } else {
        mask.shallow_clone()
    }
    .to_kind(a.kind());
    &m * a + (1.0 - &m) * b
}

/// Mixed label: `source` where the mask is set, `pseudo` elsewhere (both `N x H x W`).
pub(crate) fn mix_labels(mask: &Tensor, source: &Tensor, pseudo: &Tensor) -> Tensor {
    source.where_self(&mask.gt(0.5), pseudo)
}

/// Pixel weights of L_cons: 1 where the mask is set, `q` elsewhere (`q` a scalar tensor).
pub(crate) fn mix_weights(mask: &Tensor, q: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    &m + (1.0 - &m) * q
}

/// q = fraction of the pixels whose teacher max-softmax is >= `threshold` (scalar tensor).
pub(crate) fn confident_fraction(max_prob: &Tensor, threshold: f64) -> Tensor {
    max_prob
        .ge(threshold)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
}

/// A CutMix box on the 8-pixel grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CutBox {
    /// Top row (multiple of 8).
    pub y0: i64,
    /// Left column (multiple of 8).
    pub x0: i64,
    /// Side (multiple of 8, >= 8).
    pub side: i64,
}

impl CutBox {
    /// The box's cells on the 1/8 feature grid: rows `y0/8 .. (y0+side)/8`, clipped to `h x w`.
    pub fn cells(&self, h: i64, w: i64) -> (std::ops::Range<i64>, std::ops::Range<i64>) {
        let r = (self.y0 / 8).min(h)..((self.y0 + self.side) / 8).min(h);
        let c = (self.x0 / 8).min(w)..((self.x0 + self.side) / 8).min(w);
        (r, c)
    }

    /// The pixel mask `1 x 1 x crop x crop` (f32), 1 inside the box.
    pub(crate) fn pixel_mask(&self, crop: i64, device: Device) -> Tensor {
        let m = Tensor::zeros([1, 1, crop, crop], (Kind::Float, device));
        let _ = m
            .narrow(2, self.y0, self.side)
            .narrow(3, self.x0, self.side)
            .fill_(1.0);
        m
    }

    /// The cell mask `h x w` (bool) on the 1/8 grid.
    pub(crate) fn cell_mask(&self, h: i64, w: i64, device: Device) -> Tensor {
        let m = Tensor::zeros([h, w], (Kind::Bool, device));
        let (r, c) = self.cells(h, w);
        if !r.is_empty() && !c.is_empty() {
            let _ = m
                .narrow(0, r.start, r.end - r.start)
                .narrow(1, c.start, c.end - c.start)
                .fill_(1);
        }
        m
    }
}

/// Samples a box for a square `crop` (a multiple of 8): area fraction ~ Beta(1, 1),
/// side = floor(sqrt(area) * crop / 8) * 8 clamped to [8, crop], corner on the 8-px grid.
pub(crate) fn sample_box<R: Rng + ?Sized>(crop: i64, rng: &mut R) -> CutBox {
    let area: f64 = Beta::new(1.0, 1.0).expect("valid Beta").sample(rng);
    let side = ((area.sqrt() * crop as f64 / 8.0).floor() as i64 * 8).clamp(8, crop);
    let slots = (crop - side) / 8;
    let y0 = 8 * rng.gen_range(0..=slots);
    let x0 = 8 * rng.gen_range(0..=slots);
    CutBox { y0, x0, side }
}

/// x_cut = m * x_t + (1 - m) * x_s (Eq. 3): the target patch pasted into the source.
pub fn cutmix(source: &Tensor, target: &Tensor, b: &CutBox) -> Tensor {
    let crop = source.size()[2];
    mix(&b.pixel_mask(crop, source.device()), target, source)
}

/// Per-image parameters of the strong augmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugParams {
    /// (brightness, contrast, saturation, hue) factors, or none.
    pub jitter: Option<[f64; 4]>,
    /// Gaussian-blur sigma, or none.
    pub blur_sigma: Option<f64>,
}

/// Strength and probabilities of the strong augmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugConfig {
    /// Jitter strength s: factors in [1 - s, 1 + s], hue in [-s, s] of a turn. DACS: 0.2.
    pub strength: f64,
    /// Probability of jitter. DACS: 0.8.
    pub jitter_prob: f64,
    /// Probability of blur. DACS: 0.5.
    pub blur_prob: f64,
}

impl AugConfig {
    /// Draws the parameters of one image.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> AugParams {
        let s = self.strength;
        let u = |rng: &mut R, lo: f64, hi: f64| if hi > lo { rng.gen_range(lo..hi) } else { lo };
        let jitter = if rng.gen::<f64>() < self.jitter_prob {
            Some([
                u(rng, 1.0 - s, 1.0 + s),
                u(rng, 1.0 - s, 1.0 + s),
                u(rng, 1.0 - s, 1.0 + s),
                u(rng, -s, s),
            ])
        } else {
            None
        };
        let blur_sigma = (rng.gen::<f64>() < self.blur_prob).then(|| rng.gen_range(0.15..1.15));
        AugParams { jitter, blur_sigma }
    }
}

/// Applies `params[i]` to image `i` of `images` (`N x 3 x H x W`, RGB 0..255).
pub(crate) fn augment(images: &Tensor, params: &[AugParams]) -> Tensor {
    let outs: Vec<Tensor> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut x = images.narrow(0, i as i64, 1) / 255.0;
            if let Some(j) = p.jitter {
                x = color_jitter(&x, j);
            }
            if let Some(sigma) = p.blur_sigma {
                x = gaussian_blur(&x, sigma);
            }
            x * 255.0
        })
        .collect();
    Tensor::cat(&outs, 0)
}

fn gray(x: &Tensor) -> Tensor {
    let w = crate::upload::small(&Tensor::from_slice(&[0.299f32, 0.587, 0.114]), x.device())
        .view([1, 3, 1, 1]);
    (x * w).sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
}

/// Brightness, contrast, saturation, hue on `1 x 3 x H x W` in [0, 1], clamped after each.
pub(crate) fn color_jitter(x: &Tensor, [b, c, s, h]: [f64; 4]) -> Tensor {
    let x = (x * b).clamp(0.0, 1.0);
    let m = gray(&x).mean(Kind::Float);
    let x = ((&x - &m) * c + &m).clamp(0.0, 1.0);
    let g = gray(&x);
    let x = ((&x - &g) * s + &g).clamp(0.0, 1.0);
    // Hue: rotate the (I, Q) chroma of YIQ by 2 pi h.
    let theta = 2.0 * std::f64::consts::PI * h;
    let (cos, sin) = (theta.cos() as f32, theta.sin() as f32);
    let to_yiq = [
        [0.299f32, 0.587, 0.114],
        [0.595_716, -0.274_453, -0.321_263],
        [0.211_456, -0.522_591, 0.311_135],
    ];
    let to_rgb = [
        [1.0f32, 0.956_3, 0.621_0],
        [1.0, -0.272_1, -0.647_4],
        [1.0, -1.107_0, 1.704_6],
    ];
    let rot = [[1.0f32, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]];
    let mat = matmul3(&to_rgb, &matmul3(&rot, &to_yiq));
    let flat: Vec<f32> = mat.iter().flatten().copied().collect();
    let m = crate::upload::small(&Tensor::from_slice(&flat), x.device()).view([3, 3]);
    let (n, _, hh, ww) = x.size4().expect("4-d image");
    let y = m.matmul(&x.view([n, 3, hh * ww]));
    y.view([n, 3, hh, ww]).clamp(0.0, 1.0)
}

fn matmul3(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut out = [[0f32; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// The normalised 1-d Gaussian kernel of `sigma`, radius ceil(4 sigma).
pub(crate) fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (4.0 * sigma).ceil().max(1.0) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| (v / s) as f32).collect()
}

/// Separable Gaussian blur with reflected borders on `N x 3 x H x W`.
pub(crate) fn gaussian_blur(x: &Tensor, sigma: f64) -> Tensor {
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let (h, w) = (x.size()[2], x.size()[3]);
    if r >= h || r >= w {
        return x.shallow_clone();
    }
    let kt = crate::upload::small(&Tensor::from_slice(&k), x.device()).to_kind(x.kind());
    let kh = kt.view([1, 1, 1, -1]).repeat([3, 1, 1, 1]);
    let kv = kt.view([1, 1, -1, 1]).repeat([3, 1, 1, 1]);
    let y = x
        .reflection_pad2d([r, r, 0, 0])
        .conv2d(&kh, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3);
    y.reflection_pad2d([0, 0, r, r])
        .conv2d(&kv, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn vec2d(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn classmix_takes_half_of_the_classes_and_never_ignore() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // 2 images of 4 x 4: image 0 has classes {0, 2, 5, 7, 9} and 255; image 1 has {1, 3}.
        let l0: Vec<i64> = vec![0, 0, 2, 2, 5, 5, 7, 7, 9, 9, 255, 255, 0, 2, 5, 7];
        let l1: Vec<i64> = vec![1; 8].into_iter().chain(vec![3; 8]).collect();
        let labels = Tensor::from_slice(&[l0.clone(), l1.clone()].concat()).view([2, 4, 4]);
        for _ in 0..20 {
            let (masks, chosen) = classmix_masks(&labels, 19, &mut rng);
            assert_eq!(chosen[0].len(), 3, "ceil(5 / 2) = 3 classes");
            assert_eq!(chosen[1].len(), 1, "ceil(2 / 2) = 1 class");
            assert!(chosen[0].iter().all(|c| [0, 2, 5, 7, 9].contains(c)));
            assert!(chosen[1].iter().all(|c| [1, 3].contains(c)));
            let m = vec2d(&masks);
            for (i, &l) in l0.iter().chain(&l1).enumerate() {
                let img = i / 16;
                let expect = chosen[img].contains(&l);
                assert_eq!(m[i] == 1.0, expect, "pixel {i} label {l}");
            }
        }
    }

    #[test]
    fn classmix_label_weight_and_q() {
        let mask = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([1, 2, 2]);
        let ys = Tensor::from_slice(&[4i64, 4, 4, 4]).view([1, 2, 2]);
        let yt = Tensor::from_slice(&[7i64, 8, 9, 10]).view([1, 2, 2]);
        let y = mix_labels(&mask, &ys, &yt);
        assert_eq!(
            Vec::<i64>::try_from(&y.flatten(0, -1)).unwrap(),
            vec![4, 8, 9, 4]
        );
        // max probs 0.99, 0.5, 0.968, 0.1 -> 2 of 4 at or above 0.968 -> q = 0.5
        let p = Tensor::from_slice(&[0.99f32, 0.5, 0.968, 0.1]);
        let q = confident_fraction(&p, 0.968);
        assert!((q.double_value(&[]) - 0.5).abs() < 1e-7);
        let w = mix_weights(&mask, &q);
        assert_eq!(vec2d(&w), vec![1.0, 0.5, 0.5, 1.0]);
        // Images: source where the mask is set.
        let xs = Tensor::full([1, 3, 2, 2], 10.0, (Kind::Float, Device::Cpu));
        let xt = Tensor::full([1, 3, 2, 2], 20.0, (Kind::Float, Device::Cpu));
        let x = mix(&mask, &xs, &xt);
        assert_eq!(vec2d(&x.get(0).get(2)), vec![10.0, 20.0, 20.0, 10.0]);
    }

    #[test]
    fn cutmix_box_on_the_grid_and_target_into_source() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let crop = 64;
        let mut sides = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let b = sample_box(crop, &mut rng);
            assert_eq!(b.y0 % 8, 0);
            assert_eq!(b.x0 % 8, 0);
            assert_eq!(b.side % 8, 0);
            assert!(b.side >= 8 && b.y0 + b.side <= crop && b.x0 + b.side <= crop);
            sides.insert(b.side);
        }
        assert!(sides.len() >= 5, "box sides vary: {sides:?}");
        let b = CutBox {
            y0: 8,
            x0: 16,
            side: 16,
        };
        let xs = Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let xt = Tensor::ones([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let x = cutmix(&xs, &xt, &b);
        for y in 0..32 {
            for xx in 0..32 {
                let inside = (8..24).contains(&y) && (16..32).contains(&xx);
                let v = x.double_value(&[1, 2, y, xx]);
                assert_eq!(v, if inside { 1.0 } else { 0.0 }, "({y}, {xx})");
            }
        }
        assert_eq!(b.cells(4, 4), (1..3, 2..4));
        let cm = b.cell_mask(4, 4, Device::Cpu);
        assert_eq!(cm.sum(Kind::Int64).int64_value(&[]), 4);
        assert!(cm.int64_value(&[1, 2]) == 1 && cm.int64_value(&[0, 2]) == 0);
    }

    #[test]
    fn blur_preserves_constants_and_jitter_identity() {
        let k = gaussian_kernel(1.0);
        assert_eq!(k.len(), 9);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Hand value: the centre weight of a sigma-1 Gaussian cut at 4 sigma: 1 / sum
        // exp(-i^2/2) for |i| <= 4 = 1 / 2.5066208 = 0.3989435.
        assert!((k[4] - 0.398_943_5).abs() < 1e-6);
        let x = Tensor::full([1, 3, 16, 16], 0.25, (Kind::Float, Device::Cpu));
        let y = gaussian_blur(&x, 1.0);
        assert!((y - &x).abs().max().double_value(&[]) < 1e-6);
        let img = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let same = color_jitter(&img, [1.0, 1.0, 1.0, 0.0]);
        assert!((same - &img).abs().max().double_value(&[]) < 2e-3);
    }
}
