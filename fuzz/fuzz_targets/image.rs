//! Image decoder of rccr-infer (`rccr_infer::imageio::decode_rgb`: PNG or JPEG by
//! content, the decoded-size limit checked before decoding). Contract: an RGB image of
//! the size its header gives, or a typed error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_fuzz::assert_names;
use rccr_infer::imageio::decode_rgb;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-input.png");
    match decode_rgb(path, data) {
        Ok(img) => {
            assert!(img.width() > 0 && img.height() > 0);
            assert_eq!(
                img.as_raw().len(),
                img.width() as usize * img.height() as usize * 3
            );
        }
        Err(e) => assert_names(path, &e.to_string()),
    }
});
