//! The C library of rccr-infer: `librccr_infer.so` and `librccr_infer.a` exporting the
//! C ABI of [`rccr_infer::capi`] (declared in `include/rccr_infer.h`). Built as a cargo
//! example so that crates depending on rccr-infer do not build it.

pub use rccr_infer::capi::*;
