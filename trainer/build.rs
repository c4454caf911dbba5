//! Build script of rccr-trainer: the libtorch rpath / link set-up shared by every crate
//! that runs tch code (`build-support/libtorch_rpath.rs`), plus the small C++ shim
//! (`csrc/`) that reaches libtorch settings tch does not expose, compiled with `cc`
//! against the headers of the same libtorch (the way torch-sys builds its own wrapper).

#[path = "../build-support/libtorch_rpath.rs"]
mod libtorch_rpath;

fn main() {
    libtorch_rpath::main();
    println!("cargo:rerun-if-changed=csrc/determinism.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB is unset: torch-sys found no libtorch (run `make setup`)");
    };
    let root = std::path::Path::new(&lib).join("..");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/determinism.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag_if_supported("-w")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .compile("rccr_trainer_shim");
}
