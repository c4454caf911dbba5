//! bf16 mixed precision for `--precision bf16` (the forwards of Algorithm 1 under CUDA
//! autocast; weights, gradients, optimiser state and the losses stay f32).
//!
//! `tch::autocast` switches CUDA autocast on but leaves its compute type at libtorch's
//! default, float16, and tch has no binding for the type. libtorch exports
//! `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)` and
//! `get_autocast_dtype(c10::DeviceType)`; both enums are `int8_t`-backed, which the
//! Itanium C++ ABI passes like C integers, so they are declared here by their mangled
//! names. The setting is thread-local in libtorch, so it is applied on entry to every
//! autocast region. [`autocast_dtype_roundtrip`] reads it back (tested without a GPU).

use tch::autocast;

/// `c10::DeviceType::CUDA`.
const DEVICE_CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
pub(crate) const SCALAR_BFLOAT16: i8 = 15;
/// `c10::ScalarType::Half`.
pub(crate) const SCALAR_HALF: i8 = 5;

extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
}

/// Sets the CUDA autocast compute type of this thread (a `c10::ScalarType` code).
pub(crate) fn set_cuda_autocast_dtype(dtype: i8) {
    // SAFETY: a plain libtorch function taking two int8_t-backed enums by value; it only
    // stores the value in libtorch's thread-local autocast state. Valid codes only.
    debug_assert!(dtype == SCALAR_BFLOAT16 || dtype == SCALAR_HALF);
    unsafe { at_set_autocast_dtype(DEVICE_CUDA, dtype) }
}

/// The CUDA autocast compute type of this thread.
pub fn cuda_autocast_dtype() -> i8 {
    // SAFETY: reads libtorch's thread-local autocast state.
    unsafe { at_get_autocast_dtype(DEVICE_CUDA) }
}

/// Runs `f` under bf16 CUDA autocast when `bf16` is true (no-op without CUDA, as
/// `tch::autocast`), else plainly.
pub(crate) fn bf16_autocast<T>(bf16: bool, f: impl FnOnce() -> T) -> T {
    if bf16 {
        set_cuda_autocast_dtype(SCALAR_BFLOAT16);
        autocast(true, f)
    } else {
        f()
    }
}

/// Sets bf16, reads it back, restores the previous type; returns (before, after).
pub fn autocast_dtype_roundtrip() -> (i8, i8) {
    let before = cuda_autocast_dtype();
    set_cuda_autocast_dtype(SCALAR_BFLOAT16);
    let after = cuda_autocast_dtype();
    set_cuda_autocast_dtype(before);
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autocast_type_binding_reads_back_what_it_sets() {
        let (before, after) = autocast_dtype_roundtrip();
        assert_eq!(
            before, SCALAR_HALF,
            "libtorch's default CUDA autocast type is float16"
        );
        assert_eq!(after, SCALAR_BFLOAT16);
        assert_eq!(cuda_autocast_dtype(), SCALAR_HALF);
    }
}
