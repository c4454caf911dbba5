//! Image resizing straight into the model's input layout: 8-bit interleaved RGB ->
//! planar f32 `3 x H x W` (0..255), bilinear in the sense of PIL's `Image.BILINEAR` (a
//! triangle filter whose support widens by the scale factor when downsampling, so a
//! 2048x1024 Cityscapes frame is area-averaged down to the 1024x512 protocol size rather
//! than point-sampled). This is the resize the DACS / RCCR data loaders apply with PIL.
//!
//! Separable: a horizontal pass (rows, interleaved) then a vertical pass writing the three
//! planes; filter taps are precomputed once per axis as PIL's `precompute_coeffs` does,
//! but kept in f32 (no 8-bit rounding between passes or at the end).

/// Taps of one output coordinate: first input index and normalised weights.
#[derive(Debug, Clone)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// PIL's coefficients for resizing `input` samples to `output` with the triangle filter.
fn taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // triangle support 1.0, widened when downsampling
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            // PIL truncates with a C cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).max(0) as usize).min(input);
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filterscale).abs();
                    (1.0 - t).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            Taps {
                start: xmin,
                weights: w.into_iter().map(|v| v as f32).collect(),
            }
        })
        .collect()
}

/// Resizes interleaved RGB `src` (`sw x sh`) to `dw x dh` and writes planar f32 RGB into
/// `out` (`3 * dw * dh` values: all R, then all G, then all B).
pub fn resize_rgb_to_planar(
    src: &[u8],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    out: &mut [f32],
) {
    assert_eq!(src.len(), sw * sh * 3, "source buffer size");
    assert_eq!(out.len(), dw * dh * 3, "output buffer size");
    if (sw, sh) == (dw, dh) {
        copy_to_planar(src, out);
        return;
    }
    let rows = horizontal_pass(src, sw, sh, dw);
    vertical_pass(&rows, dw, dh, &taps(sh, dh), out);
}

/// Interleaved RGB bytes to planar f32, without resizing.
fn copy_to_planar(src: &[u8], out: &mut [f32]) {
    let plane = out.len() / 3;
    for (i, px) in src.chunks_exact(3).enumerate() {
        out[i] = px[0] as f32;
        out[plane + i] = px[1] as f32;
        out[2 * plane + i] = px[2] as f32;
    }
}

/// The horizontal pass over every source row: interleaved RGB f32, `sh x dw x 3`.
fn horizontal_pass(src: &[u8], sw: usize, sh: usize, dw: usize) -> Vec<f32> {
    let htaps = taps(sw, dw);
    let mut tmp = vec![0f32; sh * dw * 3];
    for y in 0..sh {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        let trow = &mut tmp[y * dw * 3..(y + 1) * dw * 3];
        for (x, t) in htaps.iter().enumerate() {
            let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
            for (k, &w) in t.weights.iter().enumerate() {
                let p = &row[(t.start + k) * 3..(t.start + k) * 3 + 3];
                r += w * p[0] as f32;
                g += w * p[1] as f32;
                b += w * p[2] as f32;
            }
            trow[x * 3] = r;
            trow[x * 3 + 1] = g;
            trow[x * 3 + 2] = b;
        }
    }
    tmp
}

/// The vertical pass over the horizontally resized `rows` (`dw` wide) into the planes of
/// `out`.
fn vertical_pass(rows: &[f32], dw: usize, dh: usize, vtaps: &[Taps], out: &mut [f32]) {
    let plane = dw * dh;
    let (rp, rest) = out.split_at_mut(plane);
    let (gp, bp) = rest.split_at_mut(plane);
    let mut acc = vec![0f32; dw * 3];
    for (y, t) in vtaps.iter().enumerate() {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for (k, &w) in t.weights.iter().enumerate() {
            let trow = &rows[(t.start + k) * dw * 3..(t.start + k + 1) * dw * 3];
            for (a, &v) in acc.iter_mut().zip(trow) {
                *a += w * v;
            }
        }
        let base = y * dw;
        for x in 0..dw {
            rp[base + x] = acc[x * 3];
            gp[base + x] = acc[x * 3 + 1];
            bp[base + x] = acc[x * 3 + 2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2-D evaluation of the same filter (no separability, no precomputed taps).
    fn brute(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
        let tri = |t: f64| (1.0 - t.abs()).max(0.0);
        let (sx, sy) = (sw as f64 / dw as f64, sh as f64 / dh as f64);
        let (fx, fy) = (sx.max(1.0), sy.max(1.0));
        let mut out = vec![0f32; 3 * dw * dh];
        for c in 0..3 {
            for oy in 0..dh {
                for ox in 0..dw {
                    let (cx, cy) = ((ox as f64 + 0.5) * sx, (oy as f64 + 0.5) * sy);
                    let (mut acc, mut wsum) = (0.0, 0.0);
                    for y in 0..sh {
                        for x in 0..sw {
                            // Only the samples inside PIL's window count.
                            let inx = (x as f64) >= ((cx - fx + 0.5) as i64).max(0) as f64
                                && (x as f64) < (cx + fx + 0.5).floor();
                            let iny = (y as f64) >= ((cy - fy + 0.5) as i64).max(0) as f64
                                && (y as f64) < (cy + fy + 0.5).floor();
                            if !(inx && iny) {
                                continue;
                            }
                            let w =
                                tri((x as f64 - cx + 0.5) / fx) * tri((y as f64 - cy + 0.5) / fy);
                            acc += w * src[(y * sw + x) * 3 + c] as f64;
                            wsum += w;
                        }
                    }
                    out[c * dw * dh + oy * dw + ox] = (acc / wsum) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn separable_equals_direct_evaluation() {
        let (sw, sh) = (13, 7);
        let src: Vec<u8> = (0..sw * sh * 3)
            .map(|i| ((i * 37 + 11) % 256) as u8)
            .collect();
        for (dw, dh) in [(6, 3), (13, 7), (26, 15), (5, 9), (1, 1)] {
            let mut out = vec![0f32; 3 * dw * dh];
            resize_rgb_to_planar(&src, sw, sh, dw, dh, &mut out);
            let b = brute(&src, sw, sh, dw, dh);
            for (i, (a, b)) in out.iter().zip(&b).enumerate() {
                assert!((a - b).abs() < 1e-3, "{dw}x{dh} [{i}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn halving_averages_2x2_neighbourhoods_with_the_triangle_weights() {
        // 4x1 -> 2x1: centres at 1.0 and 3.0 (scale 2), support 2: output 0 sees inputs
        // 0..=2 with triangle weights at distances 0.5, 0.5, 1.5 (/2) -> 3/4, 3/4, 1/4.
        let src = [0u8, 0, 0, 40, 40, 40, 80, 80, 80, 120, 120, 120];
        let mut out = vec![0f32; 6];
        resize_rgb_to_planar(&src, 4, 1, 2, 1, &mut out);
        let e0 = (0.75 * 0.0 + 0.75 * 40.0 + 0.25 * 80.0) / 1.75;
        let e1 = (0.25 * 40.0 + 0.75 * 80.0 + 0.75 * 120.0) / 1.75;
        assert!(
            (out[0] - e0).abs() < 1e-4 && (out[1] - e1).abs() < 1e-4,
            "{out:?}"
        );
        assert_eq!(out[2..4], out[0..2]);
    }
}
