//! The target-pixel masks of the successors' strategies (docs/method.md, "Successors'
//! strategies"):
//!
//! - MIC's patch mask (Hoyer et al. 2023, Sec. 3.2, Eq. 4): the crop is cut into squares
//!   of `patch` pixels aligned at the origin; each square is kept with probability
//!   1 - ratio (drawn from the iteration's own stream) and masked to 0 otherwise. The
//!   mask multiplies the normalised image, so masked pixels are the normalisation mean.
//! - DAFormer's pseudo-label region ignoring (Sec. 4.1): the target pixels of the top and
//!   bottom rows of a crop (the sky border and the ego car's hood in Cityscapes) get
//!   weight 0 in L_cons and L_MIC.

use rand::Rng;
use tch::{Device, Kind, Tensor};

/// MIC's patch mask `B x 1 x crop x crop` (1 = kept, 0 = masked); `crop` a multiple of
/// `patch`.
pub fn patch_mask<R: Rng + ?Sized>(
    batch: i64,
    crop: i64,
    patch: i64,
    ratio: f64,
    rng: &mut R,
    device: Device,
) -> Tensor {
    let g = crop / patch;
    let kept: Vec<f32> = (0..batch * g * g)
        .map(|_| f32::from(u8::from(rng.gen::<f64>() >= ratio)))
        .collect();
    Tensor::from_slice(&kept)
        .view([batch, 1, g, 1, g, 1])
        .expand([batch, 1, g, patch, g, patch], false)
        .reshape([batch, 1, crop, crop])
        .to_device(device)
}

/// The per-pixel factor of target weights `crop x crop`: 0 on the `top` first and the
/// `bottom` last rows, 1 elsewhere.
pub fn region_weights(crop: i64, top: i64, bottom: i64, device: Device) -> Tensor {
    let rows = Tensor::arange(crop, (Kind::Int64, device));
    let keep = rows.ge(top).logical_and(&rows.lt(crop - bottom));
    keep.to_kind(Kind::Float)
        .view([crop, 1])
        .expand([crop, crop], false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn patches_are_constant_squares_masked_at_the_ratio() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let m = patch_mask(4, 64, 8, 0.7, &mut rng, Device::Cpu);
        assert_eq!(m.size(), [4, 1, 64, 64]);
        // Each 8 x 8 square is constant: its min equals its max.
        let sq = m.view([4, 8, 8, 8, 8]);
        let lo = sq.amin([2, 4], false);
        let hi = sq.amax([2, 4], false);
        assert!(lo.equal(&hi));
        // 256 squares at ratio 0.7: the masked share within 0.7 +- 4 sigma (sigma 0.029).
        let masked = 1.0 - lo.mean(Kind::Float).double_value(&[]);
        assert!((masked - 0.7).abs() < 0.12, "{masked}");
    }

    #[test]
    fn region_weights_zero_the_top_and_bottom_rows() {
        let r = region_weights(8, 2, 3, Device::Cpu);
        let col: Vec<f32> = Vec::try_from(r.select(1, 5)).unwrap();
        assert_eq!(col, [0., 0., 1., 1., 1., 0., 0., 0.]);
    }
}
