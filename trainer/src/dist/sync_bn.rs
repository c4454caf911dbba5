//! Synchronised batch norm (`--sync-bn`): in the student's training-mode forwards each
//! BN layer normalises with the mean and variance of the images of ALL ranks, as one
//! process holding every rank's batch would (DACS's `use_sync_batchnorm`). Per channel,
//! the ranks' sums of x and x^2 and their pixel counts are summed with a differentiable
//! all-reduce (its backward sums the ranks' gradients, so the gradient is that of the
//! whole batch's loss); the running statistics update with the unbiased variance of the
//! whole batch, momentum 0.1 (PyTorch's rule). Sums are taken in float64.

use super::group::{DistError, ProcessGroup};
use rccr_models::layers::{BN_EPS, BN_MOMENTUM};
use std::cell::RefCell;
use std::rc::Rc;
use tch::{nn, Kind, Tensor};

/// Synchronised batch norm of `x` (`N x C x H x W`) with `bn`'s affine parameters,
/// updating `bn`'s running statistics.
pub fn forward(pg: &ProcessGroup, x: &Tensor, bn: &nn::BatchNorm) -> Result<Tensor, DistError> {
    let c = x.size()[1];
    let dims = [0i64, 2, 3];
    let xd = x.to_kind(Kind::Double);
    let s1 = xd.sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let s2 = (&xd * &xd).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let n = Tensor::from((x.numel() as i64 / c) as f64)
        .to_kind(Kind::Double)
        .to_device(x.device())
        .view([1]);
    let total = pg.all_reduce_sum_autograd(&Tensor::cat(&[s1, s2, n], 0))?;
    let count = total.double_value(&[2 * c]);
    let mean = total.narrow(0, 0, c) / count;
    let var = total.narrow(0, c, c) / count - &mean * &mean;
    tch::no_grad(|| update_running(bn, &mean, &var, count));
    let shape = [1, c, 1, 1];
    let inv_std = (&var + BN_EPS).rsqrt();
    let y = (xd - mean.view(shape)) * inv_std.view(shape);
    let y = match &bn.ws {
        Some(w) => y * w.to_kind(Kind::Double).view(shape),
        None => y,
    };
    let y = match &bn.bs {
        Some(b) => y + b.to_kind(Kind::Double).view(shape),
        None => y,
    };
    Ok(y.to_kind(x.kind()))
}

/// running = (1 - m) running + m batch (variance unbiased: x count / (count - 1)).
fn update_running(bn: &nn::BatchNorm, mean: &Tensor, var: &Tensor, count: f64) {
    let unbiased = var * (count / (count - 1.0).max(1.0));
    let mut rm = bn.running_mean.shallow_clone();
    let mut rv = bn.running_var.shallow_clone();
    let k = rm.kind();
    rm.copy_(&(&rm * (1.0 - BN_MOMENTUM) + mean.to_kind(k) * BN_MOMENTUM));
    rv.copy_(&(&rv * (1.0 - BN_MOMENTUM) + unbiased.to_kind(k) * BN_MOMENTUM));
}

/// A batch-norm hook (rccr_models::batch_norm) running [`forward`]. A c10d failure is
/// kept in `failure` (the forward then uses local statistics) and must be checked by the
/// caller after the forward: network code returns tensors, not results.
pub fn hook(
    pg: Rc<ProcessGroup>,
    failure: Rc<RefCell<Option<DistError>>>,
) -> rccr_models::batch_norm::Hook {
    Rc::new(
        move |x: &Tensor, bn: &nn::BatchNorm| match forward(&pg, x, bn) {
            Ok(y) => y,
            Err(e) => {
                failure.borrow_mut().get_or_insert(e);
                use tch::nn::ModuleT;
                bn.forward_t(x, true)
            }
        },
    )
}
