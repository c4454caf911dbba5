//! Build script of rccr-trainer: the libtorch rpath / link set-up shared by every crate
//! that runs tch code (`build-support/libtorch_rpath.rs`), plus the C++ shim (`csrc/`)
//! that reaches what tch does not expose: libtorch's determinism switches and c10d
//! (TCPStore, Gloo, NCCL), compiled with `cc` against the headers of the libtorch that
//! `make setup` installs (the way torch-sys builds its own wrapper).
//!
//! NCCL: compiled in when complete CUDA 13 headers are found (see `nccl_includes`);
//! otherwise `--dist-backend nccl` is an error naming the cause.

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
        build
            .define("USE_C10D_NCCL", None)
            .define("RCCR_WITH_NCCL", None);
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

/// Include folders for the NCCL backend: the CUDA 13 headers of the torch wheel's
/// `nvidia/cu13/include` completed by `.deps/cuda-headers` (crt/, nv/, cccl/; installed
/// by `make setup`), or the ':'-separated folders of `RCCR_CUDA_INCLUDE`, plus the
/// wheel's `nvidia/nccl/include`. None (Gloo only) when they are incomplete or
/// `RCCR_NO_NCCL=1`.
fn nccl_includes(torch_root: &Path) -> Option<Vec<std::path::PathBuf>> {
    println!("cargo:rerun-if-env-changed=RCCR_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=RCCR_NO_NCCL");
    if std::env::var("RCCR_NO_NCCL").is_ok_and(|v| v == "1") {
        return None;
    }
    let nvidia = torch_root.join("../nvidia");
    let mut dirs: Vec<std::path::PathBuf> = match std::env::var("RCCR_CUDA_INCLUDE") {
        Ok(v) => std::env::split_paths(&v).collect(),
        Err(_) => {
            let extra = torch_root.join("../../cuda-headers/nvidia/cu13/include");
            vec![
                nvidia.join("cu13/include"),
                extra.clone(),
                extra.join("cccl"),
            ]
        }
    };
    dirs.push(nvidia.join("nccl/include"));
    let has = |f: &str| dirs.iter().any(|d| d.join(f).exists());
    if [
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
        "nccl.h",
    ]
    .iter()
    .all(|f| has(f))
    {
        Some(dirs)
    } else {
        println!("cargo:warning=CUDA/NCCL headers incomplete (run `make setup`): building without the NCCL backend");
        None
    }
}
