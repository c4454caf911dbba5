//! Inputs found by fuzzing the readers of user files (docs/hardening.md, "Findings"), kept
//! as fixtures under tests/fixtures/fuzz/: each must stay a clear error naming the file.

use rccr_models::checkpoint::{self, TEACHER};
use rccr_models::weights;
use std::path::{Path, PathBuf};
use tch::Device;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// A checkpoint whose `rccr.model_config` is valid JSON with `num_classes: 0`: the
/// range check's error used to lack the file name (found by the `safetensors` target).
#[test]
fn a_model_config_out_of_range_names_the_file() {
    let path = fixture("num_classes_0.safetensors");
    let file = weights::read_tensors(&path).unwrap();
    let e = checkpoint::file_info(&path, &file).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("num_classes must be in 1..=255, got 0"), "{e}");
    let e = checkpoint::load_network(&path, TEACHER, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
}
