//! The image decoder's size limit (docs/deployment.md, "Failure behaviour of `rccr-infer`") on crafted PNG
//! bytes: a header that claims more pixels than the limit is refused as too large before
//! any decoding, and the same truncated file under the limit is a decode error.

use rccr_infer::imageio::decode_rgb;
use rccr_infer::InferError;
use rccr_test_support::png::header_only;
use std::path::Path;

#[test]
fn image_over_the_decoder_limit_is_too_large_with_size_and_limit() {
    // 20000 x 10000 RGB8 = 600,000,000 bytes > 512 MiB.
    let e = decode_rgb(Path::new("x/huge.png"), &header_only(20000, 10000)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, InferError::ImageTooLarge { .. }), "{text}");
    assert!(
        text.contains("huge.png")
            && text.contains("too large")
            && text.contains("20000x10000")
            && text.contains("600000000")
            && text.contains(&(512u64 * 1024 * 1024).to_string()),
        "{text}"
    );
    assert!(!text.contains("corrupt"), "{text}");
    // Under the limit, the same (truncated) file is a decode error, not "too large".
    let e = decode_rgb(Path::new("x/small.png"), &header_only(100, 100)).unwrap_err();
    assert!(matches!(e, InferError::ImageDecode { .. }), "{e}");
}
