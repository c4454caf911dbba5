//! Shared build script for every crate whose binaries or tests run tch code.
//!
//! torch-sys (a direct dependency of such crates, `links = "tch"`) tells us where the
//! libtorch shared libraries live through `DEP_TCH_LIBTORCH_LIB`. We bake that folder
//! into the binaries' rpath and force `libtorch.so` onto the link line
//! (`--no-as-needed -ltorch`) so that the CUDA kernels (libtorch_cuda.so, pulled in by
//! libtorch.so) are linked even though Rust code never names a CUDA symbol. Built
//! binaries then run with no exported variables.

/// Emits the rpath and `-ltorch` link arguments described above.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is unset: add torch-sys as a direct dependency; \
             binaries may not find libtorch at run time (run `make setup`)"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-L{lib}");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
