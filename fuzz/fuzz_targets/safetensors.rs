//! Checkpoint and model-file reader: the safetensors header and data
//! (`rccr_models::weights::read_tensors`), the contract's metadata
//! (`rccr_models::checkpoint::file_info`: format tag, model config JSON, iteration) and a
//! trainer checkpoint's train config and best-so-far (`rccr_trainer::checkpoint::load`).
//! Contract: a value or an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_fuzz::{assert_names, scratch};
use rccr_models::{checkpoint, weights};

fuzz_target!(|data: &[u8]| {
    let path = scratch("safetensors", "safetensors", data);
    match weights::read_tensors(&path) {
        Ok(file) => {
            if let Err(e) = checkpoint::file_info(&path, &file) {
                assert_names(&path, &e.to_string());
            }
        }
        Err(e) => assert_names(&path, &e.to_string()),
    }
    if let Err(e) = rccr_trainer::checkpoint::load(&path) {
        assert_names(&path, &e.to_string());
    }
});
