//! Multi-tensor updates and channels-last layouts through the C++ shim
//! (`csrc/foreach.cpp`), which reaches libtorch's `_foreach_*` kernels and memory
//! formats that tch does not bind. On CUDA one `_foreach_*` call updates a whole list of
//! tensors in a few kernel launches, where a loop over ~300 parameters launches a few
//! kernels per parameter (docs/gpu-acceptance.md, "What the speed work changed"); on
//! the CPU libtorch runs the same per-tensor loop as before.
//!
//! The arithmetic is that of the per-tensor code it replaces and of `torch.optim.SGD`:
//! SGD `d = g + wd p; buf = momentum buf + d; p -= lr buf` (optim.rs), the EMA
//! `t = alpha t + (1 - alpha) s` (ema.rs); `p + a x` may be computed as one fused
//! multiply-add, a last-bit difference.

use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn rccr_foreach_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: usize,
        momentum: f64,
        weight_decay: f64,
        lr: f64,
    ) -> i32;
    fn rccr_foreach_ema(
        teacher: *const *mut C_tensor,
        student: *const *mut C_tensor,
        n: usize,
        alpha: f64,
    ) -> i32;
    fn rccr_all_finite(tensors: *const *mut C_tensor, n: usize, finite: *mut i32) -> i32;
    fn rccr_channels_last_(t: *mut C_tensor) -> i32;
    fn rccr_channels_last(t: *const C_tensor, out: *mut *mut C_tensor) -> i32;
}

/// The tch handles of `ts` (valid while `ts` lives).
fn handles(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Panics naming `what` when the shim reports a libtorch exception: the lists are built
/// here from tensors of one device and dtype, so a failure is a bug, not bad input.
fn check(rc: i32, what: &str) {
    assert_eq!(rc, 0, "libtorch failed in the foreach shim ({what})");
}

/// One SGD step over parallel lists (same length, each triple of one shape and device).
pub(crate) fn sgd(
    params: &[&Tensor],
    grads: &[&Tensor],
    bufs: &[&Tensor],
    momentum: f64,
    weight_decay: f64,
    lr: f64,
) {
    assert!(params.len() == grads.len() && params.len() == bufs.len());
    if params.is_empty() {
        return;
    }
    let (p, g, b) = (handles(params), handles(grads), handles(bufs));
    // SAFETY: three arrays of `n` live tch tensor handles (borrowed for the call); the
    // shim only reads them and catches every C++ exception.
    let rc = unsafe {
        rccr_foreach_sgd(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            p.len(),
            momentum,
            weight_decay,
            lr,
        )
    };
    check(rc, "SGD");
}

/// `teacher[i] = alpha teacher[i] + (1 - alpha) student[i]` for every i.
pub(crate) fn ema(teacher: &[&Tensor], student: &[&Tensor], alpha: f64) {
    assert_eq!(teacher.len(), student.len());
    if teacher.is_empty() {
        return;
    }
    let (t, s) = (handles(teacher), handles(student));
    // SAFETY: two arrays of `n` live tch tensor handles; exceptions are caught.
    let rc = unsafe { rccr_foreach_ema(t.as_ptr(), s.as_ptr(), t.len(), alpha) };
    check(rc, "EMA");
}

/// Whether every element of every floating-point tensor of `ts` is finite, with one
/// device-to-host copy in all (not one per tensor) unless something is not finite.
pub(crate) fn all_finite(ts: &[&Tensor]) -> bool {
    let floats: Vec<&Tensor> = ts
        .iter()
        .copied()
        .filter(|t| t.is_floating_point())
        .collect();
    let h = handles(&floats);
    let mut finite = 0i32;
    // SAFETY: an array of live tch tensor handles and a valid out pointer.
    let rc = unsafe { rccr_all_finite(h.as_ptr(), h.len(), &mut finite) };
    check(rc, "finiteness check");
    finite == 1
}

/// Re-lays 4-d variables out as channels-last (NHWC) in place, keeping them the same
/// variables; other tensors are left alone.
pub(crate) fn to_channels_last_(vars: &[&Tensor]) {
    for t in vars {
        // SAFETY: a live tch tensor handle; the shim swaps its data under no_grad.
        let rc = unsafe { rccr_channels_last_(t.as_ptr() as *mut C_tensor) };
        check(rc, "channels-last variable");
    }
}

/// A channels-last copy of a 4-d tensor (the tensor itself when it is one already).
pub(crate) fn channels_last(t: &Tensor) -> Tensor {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: a live handle in, a new heap-allocated at::Tensor out, owned by the
    // returned Tensor (tch frees it on drop).
    let rc = unsafe { rccr_channels_last(t.as_ptr(), &mut out) };
    check(rc, "channels-last copy");
    // SAFETY: `out` is a valid, uniquely owned handle made by the shim.
    unsafe { Tensor::from_ptr(out) }
}

/// Whether `t` is laid out channels-last (NHWC strides) and not plainly contiguous.
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && size[1] > 1 && stride[1] == 1 && !t.is_contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn vals(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn sgd_matches_hand_computed_steps() {
        // p = (1, -2), g = (2, 0.5), wd 0.1, momentum 0.9, buf (1, 1), lr 0.5:
        // d = (2.1, 0.3); buf = (0.9 + 2.1, 0.9 + 0.3) = (3, 1.2); p = (1 - 1.5, -2 - 0.6).
        let p = Tensor::from_slice(&[1f32, -2.0]);
        let g = Tensor::from_slice(&[2f32, 0.5]);
        let b = Tensor::from_slice(&[1f32, 1.0]);
        let q = Tensor::from_slice(&[4f32]);
        let (gq, bq) = (
            Tensor::from_slice(&[1f32]),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        );
        sgd(&[&p, &q], &[&g, &gq], &[&b, &bq], 0.9, 0.1, 0.5);
        for (got, want) in vals(&p).iter().zip([-0.5, -2.6]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!((vals(&b)[0] - 3.0).abs() < 1e-6 && (vals(&b)[1] - 1.2).abs() < 1e-6);
        // Second tensor: d = 1 + 0.4 = 1.4, buf = 1.4, q = 4 - 0.7 = 3.3.
        assert!((vals(&q)[0] - 3.3).abs() < 1e-6);
    }

    #[test]
    fn ema_and_finiteness() {
        let t = Tensor::from_slice(&[1f32, 2.0]);
        let s = Tensor::from_slice(&[3f32, -2.0]);
        ema(&[&t], &[&s], 0.75);
        assert_eq!(vals(&t), vec![1.5, 1.0]); // 0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.5
        let big = Tensor::from_slice(&[3e38f32, 3e38]); // finite, but its L1 norm overflows f32
        let ints = Tensor::from_slice(&[1i64]);
        assert!(all_finite(&[&t, &big, &ints]));
        let nan = Tensor::from_slice(&[0f32, f32::NAN]);
        let inf = Tensor::from_slice(&[f32::NEG_INFINITY]);
        assert!(!all_finite(&[&t, &nan]));
        assert!(!all_finite(&[&inf, &t]));
        assert!(all_finite(&[]));
    }

    #[test]
    fn channels_last_keeps_values_and_identity() {
        let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        let y = channels_last(&x);
        assert!(is_channels_last(&y) && !is_channels_last(&x));
        assert_eq!(y.stride(), vec![60, 1, 15, 3]); // NHWC: C fastest, then W, then H
        assert_eq!(vals(&y), vals(&x));
        let v = x.copy().set_requires_grad(true);
        to_channels_last_(&[&v]);
        assert!(is_channels_last(&v) && v.requires_grad());
        assert_eq!(vals(&v), vals(&x));
    }
}
