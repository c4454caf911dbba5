//! Inputs found by fuzzing the readers of user files (docs/hardening.md, "Findings"), kept
//! as fixtures under tests/fixtures/fuzz/: each must stay a clear error naming the file.

use rccr_infer::imageio::{decode_label_bytes, read_label_png};
use rccr_infer::InferError;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// An 87-byte label PNG whose header declares 2^25 x 2^11 8-bit ids (64 GiB decoded): the
/// reader used to allocate that buffer before reading a pixel (found by the `label`
/// target, as an out-of-memory abort). It must be refused from the header alone.
#[test]
fn a_label_png_declaring_64_gib_is_refused_before_allocating() {
    let path = fixture("label_64gib_header.png");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 87);
    // The IHDR's width and height, read by hand from the fixture (big-endian u32s).
    assert_eq!(&bytes[16..24], &[0x02, 0, 0, 0x10, 0, 0, 0x08, 0]);
    for e in [
        decode_label_bytes(&path, &bytes).unwrap_err(),
        read_label_png(&path).unwrap_err(),
    ] {
        assert!(matches!(e, InferError::LabelFormat { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("33554448x2048"), "{msg}");
        assert!(msg.contains("limit of 512 MiB"), "{msg}");
    }
}
