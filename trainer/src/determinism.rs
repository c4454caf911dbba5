//! `--deterministic`: repeatable GPU runs. CPU runs of rccr are deterministic already
//! (every random choice comes from [`crate::streams`], and the CPU kernels used do not
//! reorder their sums between runs); on CUDA, cuDNN's benchmark mode picks kernels by
//! timing and several kernels accumulate with atomics. This switches cuDNN's benchmark
//! off and libtorch's deterministic algorithms on (`at::Context::
//! setDeterministicAlgorithms`, warn-only, through the C++ shim in `csrc/`), and says in
//! the log what stays non-deterministic.

extern "C" {
    fn rccr_set_deterministic(on: i32) -> i32;
    fn rccr_deterministic_enabled() -> i32;
}

/// What libtorch 2.11 still runs without a deterministic CUDA kernel in an rccr
/// iteration (warn-only mode lets them run; libtorch prints a warning naming each).
pub(crate) const STILL_NONDETERMINISTIC: &str =
    "on CUDA the backward of bilinear upsampling (upsample_bilinear2d_backward, used by \
     L_CE and L_cons) and bincount (ClassMix class counting) accumulate with atomics and \
     may differ in the last bits between runs; cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 \
     in the environment for repeatable matrix products";

/// Turns deterministic mode on (or off). Returns whether libtorch reports it on.
pub fn set(on: bool) -> Result<bool, String> {
    // SAFETY: the shim takes and returns plain ints and catches every C++ exception.
    let rc = unsafe { rccr_set_deterministic(i32::from(on)) };
    if rc != 0 {
        return Err("libtorch refused to change its deterministic-algorithms setting".into());
    }
    // SAFETY: as above.
    Ok(unsafe { rccr_deterministic_enabled() } != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_switch_reaches_libtorch() {
        assert!(super::set(true).unwrap());
        assert!(!super::set(false).unwrap());
    }
}
