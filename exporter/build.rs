//! Build script: libtorch rpath (shared with the other tch crates).
#[path = "../build-support/libtorch_rpath.rs"]
mod libtorch_rpath;

fn main() {
    libtorch_rpath::main();
}
