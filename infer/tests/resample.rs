//! The model-input resize against PIL's `Image.resize(..., Image.BILINEAR)` (the resize of
//! the DACS / RCCR data loaders): equal up to PIL's 8-bit rounding.

mod common;

use common::*;

#[test]
fn resize_matches_pil_bilinear() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.png");
    // A smooth-plus-noise image with sharp edges.
    let (w, h) = (203u32, 101u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(7919) ^ y.wrapping_mul(104729)) % 61;
        let edge = if (x / 17 + y / 13) % 2 == 0 { 120 } else { 0 };
        image::Rgb([
            ((x * 255 / w) as u8).wrapping_add(n as u8),
            (edge + n) as u8,
            ((y * 255 / h) as u8) ^ (n as u8),
        ])
    });
    save_rgb(&src, &img);
    for (dw, dh) in [(101u32, 50u32), (64, 32), (300, 150), (203, 40)] {
        let out = d.path().join(format!("pil_{dw}x{dh}.png"));
        let o = python()
            .args([
                "-c",
                "import sys; from PIL import Image; \
                 Image.open(sys.argv[1]).convert('RGB').resize((int(sys.argv[3]), int(sys.argv[4])), Image.BILINEAR).save(sys.argv[2])",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                &dw.to_string(),
                &dh.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "PIL (run scripts/setup.sh): {}",
            text(&o)
        );
        let pil = load_rgb(&out);
        let ours = rccr_infer::segmenter::preprocess(&img, dw, dh);
        let plane = (dw * dh) as usize;
        let mut worst = 0f32;
        for (i, px) in pil.pixels().enumerate() {
            for c in 0..3 {
                let diff = (ours[c * plane + i] - px.0[c] as f32).abs();
                worst = worst.max(diff);
            }
        }
        eprintln!("{dw}x{dh}: max |ours - PIL| = {worst}");
        // PIL rounds to 8 bits after each of its two passes (<= 0.5 each, the first carried
        // through weights that sum to 1): at most 1 apart, plus f32 noise. A different
        // filter or window would be off by tens at the edges.
        assert!(worst <= 1.001, "{dw}x{dh}: max |ours - PIL| = {worst}");
    }
}
