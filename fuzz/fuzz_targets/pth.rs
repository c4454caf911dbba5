//! `.pth` reader (`rccr_models::pth::read`): zip and legacy containers, the allow-list
//! scan of every pickle and the tensor rebuild. Contract: a value or an error naming the
//! file; a value's network config inference is an error or a value too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_fuzz::{assert_names, scratch};
use rccr_models::pth::{self, Which};

fuzz_target!(|data: &[u8]| {
    let path = scratch("pth", "pth", data);
    match pth::read(&path, Which::Auto) {
        Ok(file) => {
            let _ = pth::infer_config(&file);
        }
        Err(e) => assert_names(&path, &e.to_string()),
    }
});
