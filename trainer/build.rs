//! Build script of rccr-trainer: the libtorch rpath / link set-up shared by every crate
//! that runs tch code (`build-support/libtorch_rpath.rs`), plus the C++ shim (`csrc/`)
//! that reaches what tch does not expose: libtorch's determinism switches and c10d
//! (TCPStore, Gloo, NCCL), compiled with `cc` against the headers of the libtorch that
//! `make setup` installs (the way torch-sys builds its own wrapper).
//!
//! NCCL: compiled in only when `RCCR_CUDA_INCLUDE` names complete CUDA headers (see
//! `nccl_includes`); otherwise `--dist-backend nccl` is an error naming the cause.

#[path = "../build-support/libtorch_rpath.rs"]
mod libtorch_rpath;

use std::path::Path;

fn main() {
    libtorch_rpath::main();
    for f in ["csrc/determinism.cpp", "csrc/dist.cpp", "csrc/gloo_decl"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB is unset: torch-sys found no libtorch (run `make setup`)");
    };
    let root = Path::new(&lib).join("..");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/determinism.cpp")
        .file("csrc/dist.cpp")
        .include("csrc/gloo_decl")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .flag_if_supported("-w");
    let nccl = nccl_includes(&root);
    if let Some(dirs) = &nccl {
        build.define("USE_C10D_NCCL", None).define("RCCR_WITH_NCCL", None);
        for d in dirs {
            build.include(d);
        }
    }
    build.compile("rccr_trainer_shim");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl.is_some() && Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
}

/// Include folders for the NCCL backend: `RCCR_CUDA_INCLUDE` (':'-separated folders
/// holding a complete set of CUDA 13 headers: `cuda_runtime_api.h`, `crt/`, `nv/target`;
/// the torch wheel's `nvidia/cu13/include` alone lacks `crt/` and `nv/`) plus the wheel's
/// `nvidia/nccl/include`. Unset: no NCCL (Gloo only).
fn nccl_includes(torch_root: &Path) -> Option<Vec<std::path::PathBuf>> {
    println!("cargo:rerun-if-env-changed=RCCR_CUDA_INCLUDE");
    let cuda = std::env::var("RCCR_CUDA_INCLUDE").ok()?;
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&cuda).collect();
    let nccl = torch_root.join("../nvidia/nccl/include");
    if !nccl.join("nccl.h").exists() {
        println!("cargo:warning=RCCR_CUDA_INCLUDE is set but {} has no nccl.h: building without NCCL", nccl.display());
        return None;
    }
    dirs.push(nccl);
    Some(dirs)
}
