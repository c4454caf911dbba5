//! Thing-class feature distance (DAFormer, Hoyer et al. 2022, Sec. 3.4 and Eq. 6-7):
//! L_FD = mean over the thing-class cells of || F_student(x_s) - F_frozen(x_s) ||_2, on
//! the final encoder features, F_frozen the encoder the run started from (ImageNet in
//! DAFormer's setting; here the `--init` / `--init-from` weights), frozen, in eval mode.
//! The total loss adds lambda_FD L_FD (docs/method.md, "Successors' strategies").
//!
//! The cell mask follows DAFormer's label downscaling: with s = ceil(crop / h), cell (i, j)
//! takes the label block y_s[s i .. s i + s, s j .. s j + s] (pixels past the crop count as
//! ignore); its label is the block's majority class (ignore counted as a class of its own)
//! when that class covers at least `min_ratio` of the block, else none; the mask keeps the
//! cells whose label is a thing class.

use crate::mixing::IGNORE;
use rccr_models::{ModelConfig, RccrNet};
use tch::{nn, Device, Kind, Tensor};

/// The frozen reference encoder F_frozen (a whole network in its own store; only its
/// encoder is read).
#[derive(Debug)]
pub struct FrozenEncoder {
    /// Its variables (never optimised).
    pub vs: nn::VarStore,
    /// The network.
    pub net: RccrNet,
}

impl FrozenEncoder {
    /// A frozen copy of the variables of `student` (the run's starting weights).
    pub fn copy_of(student: &nn::VarStore, model: &ModelConfig, device: Device) -> FrozenEncoder {
        let vs = nn::VarStore::new(device);
        let net = RccrNet::new(&vs.root(), model);
        crate::ema::copy_all(&vs, student);
        crate::ema::freeze(&vs);
        FrozenEncoder { vs, net }
    }

    /// Whether variable `name` is the encoder's (what the frozen copy keeps and compares).
    pub fn is_encoder_var(name: &str) -> bool {
        crate::optim::group_of(name) == crate::optim::Group::Backbone
    }

    /// The encoder's variables (what checkpoints and traces keep), by name.
    pub fn encoder_vars(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| Self::is_encoder_var(n))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// F_frozen(x) on normalised input: eval mode, no gradient.
    pub fn features(&self, xn: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.seg.encoder_t(xn, false))
    }
}

/// The thing-class cell mask `B x h x w` (bool) of labels `B x H x W` (module doc).
pub fn thing_mask(
    labels: &Tensor,
    (h, w): (i64, i64),
    classes: &[i64],
    min_ratio: f64,
    num_classes: i64,
) -> Tensor {
    tch::no_grad(|| {
        let (hh, ww) = (labels.size()[1], labels.size()[2]);
        let s = (hh + h - 1) / h;
        let other = num_classes; // the ignore label's own class
        let y = labels.masked_fill(&labels.eq(IGNORE), other);
        let y = y.pad(
            [0, w * s - ww, 0, h * s - hh],
            "constant",
            Some(other as f64),
        );
        let onehot = y
            .one_hot(other + 1)
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
        let share = onehot.avg_pool2d([s, s], [s, s], [0, 0], false, true, None::<i64>);
        let (ratio, label) = share.max_dim(1, false);
        let keep = ratio.ge(min_ratio).logical_and(&label.ne(other));
        let thing = classes
            .iter()
            .fold(label.zeros_like().to_kind(Kind::Bool), |m, &c| {
                m.logical_or(&label.eq(c))
            });
        keep.logical_and(&thing)
    })
}

/// L_FD: the mean over masked cells of the channel-wise L2 distance (0 without cells).
pub fn feature_distance(student: &Tensor, frozen: &Tensor, mask: &Tensor) -> Tensor {
    let dist = (student - frozen)
        .square()
        .sum_dim_intlist(1, false, Kind::Float)
        .sqrt();
    let m = mask.to_kind(Kind::Float);
    (dist * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_take_the_majority_label_above_the_ratio() {
        // One 4 x 4 label map, 2 x 2 cells (s = 2), classes 0..3, thing classes {1, 2}:
        // cell (0,0) all 1 -> thing; cell (0,1) three 2s and a 0 (0.75) -> thing;
        // cell (1,0) two 1s, two 0s (0.5 < 0.75) -> none; cell (1,1) all ignore -> none.
        let y = Tensor::from_slice(&[
            1i64, 1, 2, 2, //
            1, 1, 2, 0, //
            1, 0, 255, 255, //
            1, 0, 255, 255,
        ])
        .view([1, 4, 4]);
        let m = thing_mask(&y, (2, 2), &[1, 2], 0.75, 3);
        let got: Vec<bool> = Vec::try_from(m.view([-1])).unwrap();
        assert_eq!(got, [true, true, false, false]);
        // A 3 x 3 crop on a 2 x 2 grid: s = 2, the last row / column is past the crop
        // (ignore), so cell (1,1) holds one pixel of 1 in four: none.
        let y = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 1]).view([1, 3, 3]);
        let got: Vec<bool> =
            Vec::try_from(thing_mask(&y, (2, 2), &[1], 0.75, 3).view([-1])).unwrap();
        assert_eq!(got, [true, false, false, false]);
    }

    #[test]
    fn distance_is_the_masked_mean_of_l2_norms() {
        // Two cells; distances 5 (3-4-5) and 1; only the first masked -> 5; none -> 0.
        let s = Tensor::from_slice(&[3f32, 1.0, 4.0, 0.0]).view([1, 2, 1, 2]);
        let f = Tensor::zeros([1, 2, 1, 2], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[true, false]).view([1, 1, 2]);
        assert!((feature_distance(&s, &f, &mask).double_value(&[]) - 5.0).abs() < 1e-6);
        let none = Tensor::from_slice(&[false, false]).view([1, 1, 2]);
        assert_eq!(feature_distance(&s, &f, &none).double_value(&[]), 0.0);
    }
}
