//! Batch-norm folding: an inference-mode BN after a bias-free convolution is an affine map
//! per output channel, so it merges into the convolution's weights and a new bias:
//!
//! `BN(W * x) = gamma * (W * x - mean) / sqrt(var + eps) + beta = W' * x + b'` with
//! `s = gamma / sqrt(var + eps)`, `W'[o] = s[o] * W[o]`, `b'[o] = beta[o] - s[o] * mean[o]`.
//!
//! The teacher is exported with its running statistics (the EMA network of paper Eq. 2
//! evaluated in inference mode). The arithmetic is done in f64 and rounded once to f32.

use crate::ExportError;
use rccr_models::layers::{ConvBn, BN_EPS};
use tch::{nn, Kind, Tensor};

/// A convolution with its batch norm folded in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoldedConv {
    /// `O x I x kH x kW`.
    pub(crate) dims: [i64; 4],
    /// Weights, row-major in `dims`.
    pub(crate) weight: Vec<f32>,
    /// One bias per output channel.
    pub(crate) bias: Vec<f32>,
}

/// The per-channel parameters of an inference-mode batch norm.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BnParams {
    /// Scale (`weight`), 1 when the BN has no affine part.
    pub(crate) gamma: Vec<f32>,
    /// Shift (`bias`), 0 when the BN has no affine part.
    pub(crate) beta: Vec<f32>,
    /// Running mean.
    pub(crate) mean: Vec<f32>,
    /// Running variance.
    pub(crate) var: Vec<f32>,
    /// Epsilon added to the variance.
    pub(crate) eps: f64,
}

/// Folds `bn` into the bias-free convolution `weight` (`dims` = `O x I x kH x kW`).
pub(crate) fn fold(
    dims: [i64; 4],
    weight: &[f32],
    bn: &BnParams,
) -> Result<FoldedConv, ExportError> {
    check_shapes(dims, weight, bn)?;
    let out = dims[0] as usize;
    let per_out = weight.len() / out.max(1);
    let mut folded = Vec::with_capacity(weight.len());
    let mut bias = Vec::with_capacity(out);
    for o in 0..out {
        let s = bn.gamma[o] as f64 / (bn.var[o] as f64 + bn.eps).sqrt();
        folded.extend(
            weight[o * per_out..(o + 1) * per_out]
                .iter()
                .map(|&w| (w as f64 * s) as f32),
        );
        bias.push((bn.beta[o] as f64 - s * bn.mean[o] as f64) as f32);
    }
    Ok(FoldedConv {
        dims,
        weight: folded,
        bias,
    })
}

/// Refuses a weight that does not fill `dims`, batch-norm vectors of another channel
/// count, and a variance that is negative or not finite.
fn check_shapes(dims: [i64; 4], weight: &[f32], bn: &BnParams) -> Result<(), ExportError> {
    let out = dims[0] as usize;
    if weight.len() != dims.iter().product::<i64>() as usize {
        return Err(ExportError::Network(format!(
            "convolution weight has {} values but shape {dims:?}",
            weight.len()
        )));
    }
    for (what, v) in [
        ("weight", &bn.gamma),
        ("bias", &bn.beta),
        ("running_mean", &bn.mean),
        ("running_var", &bn.var),
    ] {
        if v.len() != out {
            return Err(ExportError::Network(format!(
                "batch norm {what} has {} channels, the convolution {out}",
                v.len()
            )));
        }
    }
    match bn.var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        Some(v) => Err(ExportError::Network(format!(
            "batch norm running_var holds {v}: the checkpoint is corrupt or the training diverged"
        ))),
        None => Ok(()),
    }
}

/// A tensor's values as f32, row-major.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>, ExportError> {
    let t = t
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view(-1);
    Ok(Vec::<f32>::try_from(&t)?)
}

/// The dims of a 4-D convolution weight.
pub(crate) fn conv_dims(weight: &Tensor) -> Result<[i64; 4], ExportError> {
    let size = weight.size();
    <[i64; 4]>::try_from(size.as_slice()).map_err(|_| {
        ExportError::Network(format!(
            "convolution weight has shape {size:?}, expected 4 dims"
        ))
    })
}

/// Folds a model [`ConvBn`] (eval-mode statistics, [`BN_EPS`]).
pub(crate) fn fold_conv_bn(c: &ConvBn) -> Result<FoldedConv, ExportError> {
    fold_conv_and_bn(&c.conv, &c.bn)
}

/// Folds the inference-mode batch norm `bn` ([`BN_EPS`]) into the bias-free `conv` (also
/// a grouped one: the fold is per output channel).
pub(crate) fn fold_conv_and_bn(
    conv: &nn::Conv2D,
    bn: &nn::BatchNorm,
) -> Result<FoldedConv, ExportError> {
    let dims = conv_dims(&conv.ws)?;
    if conv.bs.is_some() {
        return Err(ExportError::Network(
            "a convolution followed by batch norm has a bias; the model expects none".into(),
        ));
    }
    let out = dims[0] as usize;
    let gamma = match &bn.ws {
        Some(w) => to_vec(w)?,
        None => vec![1.0; out],
    };
    let beta = match &bn.bs {
        Some(b) => to_vec(b)?,
        None => vec![0.0; out],
    };
    let bn = BnParams {
        gamma,
        beta,
        mean: to_vec(&bn.running_mean)?,
        var: to_vec(&bn.running_var)?,
        eps: BN_EPS,
    };
    fold(dims, &to_vec(&conv.ws)?, &bn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_by_hand() {
        // Two output channels, one input channel, 1x2 kernels.
        let w = [1.0, -2.0, 0.5, 4.0];
        let bn = BnParams {
            gamma: vec![3.0, 0.5],
            beta: vec![1.0, -1.0],
            mean: vec![0.5, 2.0],
            var: vec![4.0, 0.25],
            eps: 0.0,
        };
        let f = fold([2, 1, 1, 2], &w, &bn).unwrap();
        // Channel 0: s = 3 / 2 = 1.5, b = 1 - 1.5 * 0.5 = 0.25.
        // Channel 1: s = 0.5 / 0.5 = 1, b = -1 - 1 * 2 = -3.
        assert_eq!(f.weight, vec![1.5, -3.0, 0.5, 4.0]);
        assert_eq!(f.bias, vec![0.25, -3.0]);
    }

    #[test]
    fn eps_enters_the_variance() {
        let bn = BnParams {
            gamma: vec![1.0],
            beta: vec![0.0],
            mean: vec![0.0],
            var: vec![0.0],
            eps: 0.25,
        };
        let f = fold([1, 1, 1, 1], &[1.0], &bn).unwrap();
        assert_eq!(f.weight, vec![2.0]); // 1 / sqrt(0 + 0.25)
    }

    #[test]
    fn rejects_negative_variance_and_bad_shapes() {
        let mut bn = BnParams {
            gamma: vec![1.0],
            beta: vec![0.0],
            mean: vec![0.0],
            var: vec![-1.0],
            eps: 1e-5,
        };
        assert!(fold([1, 1, 1, 1], &[1.0], &bn).is_err());
        bn.var = vec![f32::NAN];
        assert!(fold([1, 1, 1, 1], &[1.0], &bn).is_err());
        bn.var = vec![1.0];
        assert!(fold([1, 1, 1, 2], &[1.0], &bn).is_err());
        assert!(fold([2, 1, 1, 1], &[1.0, 2.0], &bn).is_err());
    }
}
