//! Rendering a label canvas into the two domains of the synthetic benchmark
//! (docs/benchmark.md): the source "game" domain (flat, saturated
//! colours per class, sharp edges, no noise) and the target "real" domain (other
//! per-class and per-instance colours, lighting, shadows, textures, vignetting, lens blur
//! and sensor noise). `shift` >= 0 interpolates the
//! target's colours and scales its effects: 0 renders the target like the source, 1 is
//! the full target style (the generator's default is 0.7). Geometry is untouched, so
//! classes stay recognisable by shape and context. Version 2 of the benchmark
//! ([`render_v2`]) renders each domain from its own look and sensor knobs
//! (docs/benchmark.md): palette, exposure, white balance, vignetting, lens and motion
//! blur, noise and a JPEG round trip.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::gap::{DomainKnobs, SensorKnobs};
use super::raster::{Canvas, TONE_ACCENT, TONE_ACCENT2, TONE_DARK};
use super::scene::ids::{ROAD, SKY};
use super::scene::HOOD;
use rccr_infer::seed::splitmix64;

/// The two domains of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Domain {
    /// The "game" domain (written in the GTA5 layout).
    Source,
    /// The "real" domain (written in the Cityscapes layout).
    Target,
}

type Rgb = [u8; 3];

/// Source base colour per trainId (16 = train is never drawn).
const SRC: [Rgb; 19] = [
    [100, 90, 130],  // road
    [200, 170, 140], // sidewalk
    [190, 95, 55],   // building
    [215, 215, 170], // wall
    [150, 100, 50],  // fence
    [140, 140, 150], // pole
    [45, 45, 45],    // traffic light
    [240, 210, 0],   // traffic sign
    [40, 170, 40],   // vegetation
    [160, 215, 90],  // terrain
    [80, 170, 255],  // sky
    [225, 35, 60],   // person
    [250, 130, 20],  // rider
    [30, 60, 210],   // car
    [30, 130, 130],  // truck
    [210, 50, 210],  // bus
    [0, 0, 0],       // train
    [100, 30, 160],  // motorcycle
    [160, 20, 45],   // bicycle
];

/// Source colour of the dark parts (windows, wheels, legs, curbs, trunks).
const SRC_DARK: [Rgb; 19] = [
    [60, 55, 80],
    [130, 110, 90],
    [35, 45, 90],
    [150, 150, 120],
    [90, 60, 30],
    [90, 90, 100],
    [20, 20, 20],
    [150, 130, 0],
    [110, 70, 30],
    [100, 140, 60],
    [60, 130, 200],
    [40, 40, 120],
    [40, 40, 120],
    [25, 25, 35],
    [25, 25, 35],
    [25, 25, 35],
    [0, 0, 0],
    [25, 25, 35],
    [25, 25, 35],
];

/// Source accents (road markings, skin, tail lights, sign rims, lit lamps).
const SRC_ACCENT: [Rgb; 19] = [
    [245, 245, 245],
    [200, 170, 140],
    [190, 95, 55],
    [215, 215, 170],
    [150, 100, 50],
    [140, 140, 150],
    [40, 255, 80],
    [230, 20, 20],
    [40, 170, 40],
    [160, 215, 90],
    [80, 170, 255],
    [255, 205, 160],
    [255, 205, 160],
    [255, 40, 40],
    [255, 40, 40],
    [255, 40, 40],
    [0, 0, 0],
    [25, 25, 35],
    [25, 25, 35],
];

/// Source second accent (the unlit lamps of a traffic light).
const SRC_ACCENT2: [u8; 3] = [120, 30, 20];

/// Yellow centre-line paint (version 2's solid yellow marking), both domains.
const YELLOW_LINE: Rgb = [230, 190, 40];

/// The ego-car hood: dark paint, both domains (void in the labels).
const HOOD_PAINT: Rgb = [38, 40, 46];

/// Source ("game") per-instance colours of cars, clothes and buildings: flat and
/// saturated, varied enough that things must be recognised by shape, not colour alone.
const SRC_CARS: [Rgb; 6] = [
    [30, 60, 210],
    [210, 30, 30],
    [240, 240, 240],
    [250, 200, 0],
    [25, 25, 25],
    [40, 160, 60],
];
const SRC_CLOTHES: [Rgb; 5] = [
    [225, 35, 60],
    [40, 90, 200],
    [250, 250, 250],
    [30, 30, 30],
    [240, 160, 0],
];
const SRC_BUILDINGS: [Rgb; 4] = [
    [190, 95, 55],
    [220, 200, 150],
    [150, 150, 165],
    [200, 120, 140],
];

/// Target base colour per trainId (things also draw from the instance lists below).
const TGT: [Rgb; 19] = [
    [112, 108, 104], // road: grey asphalt
    [150, 152, 160], // sidewalk: blue-grey slabs
    [128, 122, 112], // building: concrete
    [150, 120, 100], // wall
    [95, 100, 95],   // fence: metal
    [80, 85, 70],    // pole: dark olive
    [30, 45, 35],    // traffic light
    [55, 85, 190],   // traffic sign: blue
    [70, 105, 45],   // vegetation: dark olive green
    [150, 135, 90],  // terrain: dry grass
    [205, 212, 225], // sky: overcast
    [70, 70, 80],    // person
    [70, 70, 80],    // rider
    [150, 155, 160], // car
    [200, 200, 190], // truck
    [190, 45, 40],   // bus
    [0, 0, 0],       // train
    [40, 40, 45],    // motorcycle
    [60, 60, 65],    // bicycle
];

const TGT_DARK: [Rgb; 19] = [
    [80, 78, 76],
    [110, 110, 115],
    [70, 90, 110],
    [110, 90, 75],
    [60, 62, 60],
    [50, 55, 45],
    [15, 20, 15],
    [30, 50, 120],
    [75, 60, 45],
    [110, 100, 70],
    [180, 190, 210],
    [35, 35, 45],
    [35, 35, 45],
    [20, 22, 25],
    [20, 22, 25],
    [20, 22, 25],
    [0, 0, 0],
    [20, 22, 25],
    [20, 22, 25],
];

const TGT_ACCENT: [Rgb; 19] = [
    [205, 205, 195],
    [150, 152, 160],
    [128, 122, 112],
    [150, 120, 100],
    [95, 100, 95],
    [80, 85, 70],
    [170, 255, 200],
    [235, 235, 235],
    [70, 105, 45],
    [150, 135, 90],
    [205, 212, 225],
    [190, 150, 125],
    [190, 150, 125],
    [170, 30, 30],
    [170, 30, 30],
    [170, 30, 30],
    [0, 0, 0],
    [20, 22, 25],
    [20, 22, 25],
];

const TGT_ACCENT2: [u8; 3] = [70, 40, 30];

const TGT_CARS: [Rgb; 7] = [
    [205, 205, 210],
    [35, 35, 40],
    [150, 155, 160],
    [130, 25, 25],
    [35, 45, 90],
    [90, 95, 100],
    [180, 170, 140],
];
const TGT_CLOTHES: [Rgb; 7] = [
    [60, 60, 70],
    [120, 40, 40],
    [40, 60, 100],
    [150, 140, 120],
    [30, 30, 30],
    [90, 110, 80],
    [170, 160, 150],
];
const TGT_BUILDINGS: [Rgb; 6] = [
    [130, 125, 115],
    [150, 140, 130],
    [110, 105, 100],
    [165, 150, 130],
    [120, 110, 120],
    [140, 110, 95],
];

/// Fine (per-pixel) and coarse (8-pixel value noise) texture amplitude per class, target.
const TEXTURE: [(f32, f32); 19] = [
    (10.0, 10.0),
    (6.0, 8.0),
    (5.0, 12.0),
    (8.0, 10.0),
    (4.0, 4.0),
    (3.0, 3.0),
    (3.0, 3.0),
    (2.0, 2.0),
    (26.0, 26.0),
    (18.0, 18.0),
    (2.0, 16.0),
    (5.0, 5.0),
    (5.0, 5.0),
    (4.0, 4.0),
    (4.0, 4.0),
    (4.0, 4.0),
    (0.0, 0.0),
    (4.0, 4.0),
    (4.0, 4.0),
];

fn is_ground(class: u8) -> bool {
    class <= 1 || class == 9
}

/// A hash of (a, b) uniform in [0, 1).
#[inline]
fn unit(a: u64, b: u64) -> f32 {
    (splitmix64(a ^ splitmix64(b)) >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise at cell size 8 pixels, in [0, 1).
fn value_noise(seed: u64, x: usize, y: usize) -> f32 {
    let (cx, cy) = ((x >> 3) as u64, (y >> 3) as u64);
    let (fx, fy) = ((x & 7) as f32 / 8.0, (y & 7) as f32 / 8.0);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let corner = |i: u64, j: u64| unit(seed, (cx + i) | ((cy + j) << 32));
    let top = corner(0, 0) * (1.0 - sx) + corner(1, 0) * sx;
    let bottom = corner(0, 1) * (1.0 - sx) + corner(1, 1) * sx;
    top * (1.0 - sy) + bottom * sy
}

fn jitter(base: Rgb, h: u64, amount: f32) -> [f32; 3] {
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let j = ((h >> (8 * k)) & 255) as f32 / 255.0 - 0.5;
        *o = base[k] as f32 + 2.0 * amount * j;
    }
    out
}

fn f3(c: Rgb) -> [f32; 3] {
    [c[0] as f32, c[1] as f32, c[2] as f32]
}

fn source_colour(class: u8, tone: u8, inst: u16, seed: u64) -> [f32; 3] {
    let c = class as usize;
    match tone {
        _ if class == HOOD => f3(HOOD_PAINT),
        TONE_ACCENT2 if class == ROAD => f3(YELLOW_LINE),
        TONE_DARK => f3(SRC_DARK[c]),
        TONE_ACCENT => f3(SRC_ACCENT[c]),
        TONE_ACCENT2 => f3(SRC_ACCENT2),
        _ if inst > 0 => {
            let h = splitmix64(seed ^ inst as u64);
            let pick = (h >> 32) as usize;
            let base = match class {
                13 => SRC_CARS[pick % SRC_CARS.len()],
                11 | 12 => SRC_CLOTHES[pick % SRC_CLOTHES.len()],
                2 => SRC_BUILDINGS[pick % SRC_BUILDINGS.len()],
                _ => SRC[c],
            };
            jitter(base, h, 12.0)
        }
        _ => f3(SRC[c]),
    }
}

fn target_colour(class: u8, tone: u8, inst: u16, seed: u64) -> [f32; 3] {
    let c = class as usize;
    let h = splitmix64(seed ^ 0xA5A5 ^ inst as u64);
    match tone {
        _ if class == HOOD => f3(HOOD_PAINT),
        TONE_ACCENT2 if class == ROAD => f3(YELLOW_LINE),
        TONE_DARK => jitter(TGT_DARK[c], h, 6.0),
        TONE_ACCENT => f3(TGT_ACCENT[c]),
        TONE_ACCENT2 => f3(TGT_ACCENT2),
        _ => {
            let pick = (h >> 32) as usize;
            let base = match class {
                13 => TGT_CARS[pick % TGT_CARS.len()],
                11 | 12 => TGT_CLOTHES[pick % TGT_CLOTHES.len()],
                2 if inst > 0 => TGT_BUILDINGS[pick % TGT_BUILDINGS.len()],
                _ => TGT[c],
            };
            if inst > 0 {
                jitter(base, h, 10.0)
            } else {
                f3(base)
            }
        }
    }
}

/// Per-image photometric conditions of the target domain.
struct Lighting {
    gain: [f32; 3],
    shadow: Option<(f32, f32)>,
    vignette: f32,
    noise: f32,
    blur_passes: usize,
}

impl Lighting {
    /// Version 2: the conditions of a domain's sensor knobs; a cast shadow only in the
    /// "real" look (`real`).
    fn from_knobs(rng: &mut ChaCha8Rng, k: &SensorKnobs, real: bool, width: f32) -> Lighting {
        let g = k.exposure.draw(rng);
        let mut gain = [g; 3];
        if k.white_balance > 0.0 {
            for v in &mut gain {
                *v *= 1.0 + rng.gen_range(-k.white_balance..k.white_balance);
            }
        }
        let shadow = (real && rng.gen_bool(0.6))
            .then(|| (rng.gen_range(0.0..width), rng.gen_range(-2.5f32..2.5)));
        Lighting {
            gain,
            shadow,
            vignette: k.vignetting,
            noise: k.noise,
            blur_passes: k.lens_blur as usize,
        }
    }

    fn sample(rng: &mut ChaCha8Rng, shift: f32, width: f32) -> Lighting {
        let g = 1.0 + shift * rng.gen_range(-0.35f32..0.12);
        let mut gain = [g; 3];
        for v in &mut gain {
            *v *= 1.0 + shift * rng.gen_range(-0.07f32..0.07);
        }
        // A cast shadow on the ground: pixels left (or right) of a line through
        // (x0, horizon) with the given slope.
        let shadow = rng
            .gen_bool(0.6)
            .then(|| (rng.gen_range(0.0..width), rng.gen_range(-2.5f32..2.5)));
        Lighting {
            gain,
            shadow,
            vignette: 0.3 * shift,
            noise: 6.0 * shift,
            blur_passes: (2.0 * shift).round() as usize,
        }
    }
}

/// One [1 2 1] / 4 pass horizontally and vertically over an RGB float image.
fn blur_121(img: &mut [f32], tmp: &mut Vec<f32>, w: usize, h: usize) {
    tmp.clear();
    tmp.extend_from_slice(img);
    for y in 0..h {
        for x in 0..w {
            let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
            for k in 0..3 {
                let i = (y * w + x) * 3 + k;
                img[i] =
                    0.25 * (tmp[(y * w + l) * 3 + k] + 2.0 * tmp[i] + tmp[(y * w + r) * 3 + k]);
            }
        }
    }
    tmp.clear();
    tmp.extend_from_slice(img);
    for y in 0..h {
        let (u, d) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for i in 0..w * 3 {
            img[y * w * 3 + i] =
                0.25 * (tmp[u * w * 3 + i] + 2.0 * tmp[y * w * 3 + i] + tmp[d * w * 3 + i]);
        }
    }
}

/// A horizontal box blur of `len` pixels (a camera panning during the exposure).
fn motion_blur(img: &mut [f32], w: usize, len: usize) {
    if len < 2 {
        return;
    }
    let row_len = w * 3;
    let mut row = vec![0f32; row_len];
    for line in img.chunks_mut(row_len) {
        row.copy_from_slice(line);
        for x in 0..w {
            let (a, b) = (x.saturating_sub(len / 2), (x + len - len / 2).min(w));
            for k in 0..3 {
                let sum: f32 = (a..b).map(|i| row[i * 3 + k]).sum();
                line[x * 3 + k] = sum / (b - a) as f32;
            }
        }
    }
}

/// Sensor noise of standard deviation ~`sd` (triangular: the sum of two uniforms), then
/// 8-bit rounding.
fn add_noise(img: &[f32], sd: f32, seed: u64) -> Vec<u8> {
    let noise_seed = splitmix64(seed ^ 0x0015E);
    img.iter()
        .enumerate()
        .map(|(i, v)| {
            let n = unit(noise_seed, i as u64) + unit(noise_seed ^ 1, i as u64) - 1.0;
            (v + n * sd * 2.45).round().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// A JPEG encode and decode at `quality` through the `image` crate (block artefacts and
/// chroma subsampling, as a compressed camera stream has).
fn jpeg_round_trip(rgb: Vec<u8>, w: usize, h: usize, quality: u8) -> Vec<u8> {
    use image::codecs::jpeg::JpegEncoder;
    let mut bytes = Vec::new();
    let encoded = JpegEncoder::new_with_quality(&mut bytes, quality).encode(
        &rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    );
    match encoded
        .ok()
        .and_then(|()| image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).ok())
    {
        Some(img) => img.into_rgb8().into_raw(),
        None => rgb,
    }
}

/// Version 2: renders `canvas` (horizon at row `hy`) with one domain's look and sensor
/// knobs; the "real" palette is reached by `shift` as in version 1. Returns 8-bit RGB.
pub(crate) fn render_v2(
    canvas: &Canvas,
    hy: f32,
    k: &DomainKnobs,
    shift: f32,
    seed: u64,
) -> Vec<u8> {
    let (w, h) = (canvas.width, canvas.height);
    let real = k.look.real_palette;
    let mut rng = crate::data::augment::rng_for(seed, 0x5718, 0);
    let light = Lighting::from_knobs(&mut rng, &k.sensor, real, w as f32);
    let blur = (k.sensor.motion_blur.draw(&mut rng) * w as f32).round() as usize;
    let mut img = lit_target(
        canvas,
        hy,
        if real { shift.max(0.0) } else { 0.0 },
        seed,
        &light,
    );
    let mut tmp = Vec::new();
    for _ in 0..light.blur_passes {
        blur_121(&mut img, &mut tmp, w, h);
    }
    motion_blur(&mut img, w, blur);
    let rgb = add_noise(&img, light.noise, seed);
    match k.sensor.jpeg_quality {
        0 => rgb,
        q => jpeg_round_trip(rgb, w, h, q.min(100)),
    }
}

/// Renders `canvas` (horizon at row `hy`) in `domain`; returns 8-bit RGB, row-major.
pub(crate) fn render(canvas: &Canvas, hy: f32, domain: Domain, shift: f32, seed: u64) -> Vec<u8> {
    match domain {
        Domain::Source => render_source(canvas, seed),
        Domain::Target => render_target(canvas, hy, shift, seed),
    }
}

/// The "game" domain: each pixel its flat source colour.
fn render_source(canvas: &Canvas, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; canvas.width * canvas.height * 3];
    for i in 0..canvas.width * canvas.height {
        let c = source_colour(canvas.class[i], canvas.tone[i], canvas.inst[i], seed);
        for k in 0..3 {
            out[i * 3 + k] = c[k].round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The "real" domain: target colours, texture, lighting and vignetting, then lens blur
/// and sensor noise, all scaled by `shift`.
fn render_target(canvas: &Canvas, hy: f32, shift: f32, seed: u64) -> Vec<u8> {
    let (w, h) = (canvas.width, canvas.height);
    let shift = shift.max(0.0);
    let mut rng = crate::data::augment::rng_for(seed, 0x5717, 0);
    let light = Lighting::sample(&mut rng, shift, w as f32);
    let mut img = lit_target(canvas, hy, shift, seed, &light);
    let mut tmp = Vec::new();
    for _ in 0..light.blur_passes {
        blur_121(&mut img, &mut tmp, w, h);
    }
    add_noise(&img, light.noise, seed)
}

/// Float RGB of the target domain before blur and noise: the source colour moved by
/// `shift` towards the target colour, plus texture, under `light` (gain, cast shadow on
/// the ground, vignetting).
fn lit_target(canvas: &Canvas, hy: f32, shift: f32, seed: u64, light: &Lighting) -> Vec<f32> {
    let (w, h) = (canvas.width, canvas.height);
    let mut img = vec![0f32; w * h * 3];
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let diag2 = cx * cx + cy * cy;
    let tex_seed = splitmix64(seed ^ 0x7E57);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (class, tone, inst) = (canvas.class[i], canvas.tone[i], canvas.inst[i]);
            let s = source_colour(class, tone, inst, seed);
            let t = target_colour(class, tone, inst, seed);
            let (fine, coarse) = TEXTURE.get(class as usize).copied().unwrap_or((4.0, 4.0));
            let mut tex = fine * 2.0 * (unit(tex_seed, i as u64) - 0.5)
                + coarse * 2.0 * (value_noise(tex_seed ^ class as u64, x, y) - 0.5);
            if class == SKY {
                // Sky brightens towards the horizon.
                tex += 30.0 * ((y as f32 + 0.5) / hy.max(1.0)).min(1.0) - 15.0;
            }
            let in_shadow = light.shadow.is_some_and(|(x0, slope)| {
                is_ground(class) && (x as f32 - x0) < (y as f32 - hy) * slope
            });
            let factor = if in_shadow { 0.62 } else { 1.0 };
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let vig = 1.0 - light.vignette * (dx * dx + dy * dy) / diag2;
            for k in 0..3 {
                let base = s[k] + shift * (t[k] - s[k]) + shift * tex;
                img[i * 3 + k] = base * (1.0 + shift * (factor - 1.0)) * light.gain[k] * vig;
            }
        }
    }
    img
}
