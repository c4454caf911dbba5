//! The label canvas of a synthetic scene and its rasterising primitives (rectangles,
//! ellipses, rings, convex polygons, thick segments). Each pixel holds a trainId, a
//! "tone" (which part of an object it is: base, dark part, accent, ...) and an instance
//! number; both domains render colours from this same canvas, so their geometry is
//! identical in distribution. Shapes are drawn back to front (painter's order)
//! with hard edges, so labels and pixels always agree.

/// Tone of a pixel: the base colour of its class.
pub(crate) const TONE_BASE: u8 = 0;
/// Tone: a dark part (windows, wheels, legs, curbs).
pub(crate) const TONE_DARK: u8 = 1;
/// Tone: an accent (road markings, skin, sign rims, lit lamps).
pub(crate) const TONE_ACCENT: u8 = 2;
/// Tone: a second accent (the other lamps of a traffic light).
pub(crate) const TONE_ACCENT2: u8 = 3;

/// The label canvas: trainIds, tones and instance numbers, row-major.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    /// Width in pixels.
    pub(crate) width: usize,
    /// Height in pixels.
    pub(crate) height: usize,
    /// trainId per pixel.
    pub(crate) class: Vec<u8>,
    /// Tone per pixel (`TONE_*`).
    pub(crate) tone: Vec<u8>,
    /// Instance number per pixel (0 = stuff).
    pub(crate) inst: Vec<u16>,
}

/// What to paint: class, tone, instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paint {
    /// trainId.
    pub(crate) class: u8,
    /// Tone.
    pub(crate) tone: u8,
    /// Instance number.
    pub(crate) inst: u16,
}

impl Paint {
    /// A paint of `class` with the base tone.
    pub(crate) fn new(class: u8, inst: u16) -> Paint {
        Paint {
            class,
            tone: TONE_BASE,
            inst,
        }
    }

    /// The same paint with another tone.
    pub(crate) fn tone(self, tone: u8) -> Paint {
        Paint { tone, ..self }
    }
}

impl Canvas {
    /// A canvas filled with `fill`.
    pub(crate) fn new(width: usize, height: usize, fill: Paint) -> Canvas {
        let n = width * height;
        Canvas {
            width,
            height,
            class: vec![fill.class; n],
            tone: vec![fill.tone; n],
            inst: vec![fill.inst; n],
        }
    }

    /// Paints pixel (x, y) (no bounds check beyond the debug assertion).
    #[inline]
    pub(crate) fn put(&mut self, x: usize, y: usize, p: Paint) {
        debug_assert!(x < self.width && y < self.height);
        let i = y * self.width + x;
        self.class[i] = p.class;
        self.tone[i] = p.tone;
        self.inst[i] = p.inst;
    }

    /// Paints the pixels of row `y` whose centres lie in [x0, x1).
    pub(crate) fn span(&mut self, y: i64, x0: f32, x1: f32, p: Paint) {
        if y < 0 || y >= self.height as i64 {
            return;
        }
        let a = (x0 - 0.5).ceil().max(0.0);
        let b = ((x1 - 0.5).ceil()).min(self.width as f32);
        if b <= a {
            return;
        }
        let (a, b) = (a as usize, b as usize);
        let i = y as usize * self.width;
        self.class[i + a..i + b].fill(p.class);
        self.tone[i + a..i + b].fill(p.tone);
        self.inst[i + a..i + b].fill(p.inst);
    }

    /// Rows whose centres lie in [y0, y1), clipped.
    fn rows(&self, y0: f32, y1: f32) -> std::ops::Range<i64> {
        let a = (y0 - 0.5).ceil().max(0.0) as i64;
        let b = ((y1 - 0.5).ceil()).min(self.height as f32) as i64;
        a..b.max(a)
    }

    /// Axis-aligned rectangle [x0, x1) x [y0, y1), at least one pixel wide and tall.
    pub(crate) fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, p: Paint) {
        let (x0, x1) = widen(x0, x1);
        let (y0, y1) = widen(y0, y1);
        for y in self.rows(y0, y1) {
            self.span(y, x0, x1, p);
        }
    }

    /// Filled ellipse with centre (cx, cy) and radii (rx, ry) (at least half a pixel).
    pub(crate) fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, p: Paint) {
        self.ellipse_rows(cy, rx, ry, |c, y, _, dx| c.span(y, cx - dx, cx + dx, p));
    }

    /// Elliptic ring: between the ellipse (rx, ry) and the one scaled by `inner` (0..1).
    pub(crate) fn ring(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, inner: f32, p: Paint) {
        let rx = rx.max(0.5);
        self.ellipse_rows(cy, rx, ry, |c, y, dy, outer| {
            let hi = inner * inner - dy * dy;
            if hi <= 0.0 || outer - rx * hi.sqrt() < 1.0 {
                c.span(y, cx - outer, cx + outer, p);
            } else {
                let inn = rx * hi.sqrt();
                c.span(y, cx - outer, cx - inn, p);
                c.span(y, cx + inn, cx + outer, p);
            }
        });
    }

    /// Calls `row(canvas, y, dy, half_width)` for each row `y` an ellipse centred on row
    /// `cy` with radii (rx, ry) (each at least half a pixel) covers; `dy` is the row's
    /// offset from the centre in radii.
    fn ellipse_rows(
        &mut self,
        cy: f32,
        rx: f32,
        ry: f32,
        mut row: impl FnMut(&mut Self, i64, f32, f32),
    ) {
        let (rx, ry) = (rx.max(0.5), ry.max(0.5));
        for y in self.rows(cy - ry, cy + ry) {
            let dy = (y as f32 + 0.5 - cy) / ry;
            let h = 1.0 - dy * dy;
            if h > 0.0 {
                row(self, y, dy, rx * h.sqrt());
            }
        }
    }

    /// Filled convex polygon (vertices in order, either orientation).
    pub(crate) fn polygon(&mut self, pts: &[(f32, f32)], p: Paint) {
        if pts.len() < 3 {
            return;
        }
        let (mut y0, mut y1) = (f32::MAX, f32::MIN);
        for &(_, y) in pts {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for y in self.rows(y0, y1) {
            let yc = y as f32 + 0.5;
            let (mut lo, mut hi) = (f32::MAX, f32::MIN);
            for k in 0..pts.len() {
                let (a, b) = (pts[k], pts[(k + 1) % pts.len()]);
                if (a.1 <= yc && b.1 > yc) || (b.1 <= yc && a.1 > yc) {
                    let x = a.0 + (yc - a.1) * (b.0 - a.0) / (b.1 - a.1);
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            if hi > lo {
                self.span(y, lo, hi, p);
            }
        }
    }

    /// A segment from a to b drawn `width` pixels thick (at least 1).
    pub(crate) fn segment(&mut self, a: (f32, f32), b: (f32, f32), width: f32, p: Paint) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-3);
        let w = width.max(1.2) * 0.5;
        let (nx, ny) = (-dy / len * w, dx / len * w);
        self.polygon(
            &[
                (a.0 + nx, a.1 + ny),
                (b.0 + nx, b.1 + ny),
                (b.0 - nx, b.1 - ny),
                (a.0 - nx, a.1 - ny),
            ],
            p,
        );
    }
}

/// Grows [a, b) to at least one pixel around its centre.
fn widen(a: f32, b: f32) -> (f32, f32) {
    if b - a >= 1.0 {
        (a, b)
    } else {
        let c = 0.5 * (a + b);
        (c - 0.5, c + 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_covers_pixel_centres() {
        let mut c = Canvas::new(4, 3, Paint::new(10, 0));
        c.rect(1.0, 0.6, 3.0, 2.0, Paint::new(0, 1));
        // Columns 1, 2; rows 1 (centre 1.5 in [0.6, 2)).
        let expect = [10, 10, 10, 10, 10, 0, 0, 10, 10, 10, 10, 10];
        assert_eq!(c.class, expect);
    }

    #[test]
    fn polygon_triangle_area() {
        let mut c = Canvas::new(10, 10, Paint::new(10, 0));
        c.polygon(&[(0.0, 0.0), (10.0, 10.0), (0.0, 10.0)], Paint::new(1, 0));
        let n = c.class.iter().filter(|&&v| v == 1).count();
        // Row y (centre y + 0.5) spans [0, y + 0.5): pixel centres x + 0.5 < y + 0.5, so
        // x < y: y pixels per row, 0 + 1 + ... + 9 = 45.
        assert_eq!(n, 45);
    }
}
