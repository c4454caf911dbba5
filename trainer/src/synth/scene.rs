//! Procedural street scenes: a pinhole camera one unit above a flat ground plane looking
//! down a straight street (road to a vanishing point, sidewalks, optional terrain strips,
//! facades of buildings with windows, walls and hedges, a far skyline, sky), populated
//! with poles carrying traffic signs and lights, trees, fences, cars, trucks, buses,
//! persons and riders on bicycles or motorcycles. Version 1 of the benchmark
//! ([`Scene::sample`]) uses one sampler (the same layout statistics) for both domains;
//! version 2 ([`Scene::sample_street`], `street.rs`) samples each domain from its own
//! knobs (docs/benchmark.md). Everything is a function of the RNG, so a seed fixes the
//! scene.
//!
//! World units: [`UNIT_M`] metres (version 1's camera height is 1); X is lateral
//! (negative = left), Y is the height above the ground, d the depth. A camera at height
//! H projects a point to x = vx + X f / d, y = hy + (H - Y) f / d.

use rand::Rng;

use super::gap::Marking;
use super::raster::{Canvas, Paint, TONE_ACCENT, TONE_ACCENT2, TONE_BASE, TONE_DARK};

mod street;

/// Metres per world unit.
pub(crate) const UNIT_M: f32 = 1.5;

/// The class painted on the ego-car hood: void (written as labelId 1, "ego vehicle").
pub(crate) const HOOD: u8 = rccr_infer::taxonomy::IGNORE;

/// trainIds of the classes drawn.
pub(crate) mod ids {
    /// road
    pub(crate) const ROAD: u8 = 0;
    /// sidewalk
    pub(crate) const SIDEWALK: u8 = 1;
    /// building
    pub(crate) const BUILDING: u8 = 2;
    /// wall
    pub(crate) const WALL: u8 = 3;
    /// fence
    pub(crate) const FENCE: u8 = 4;
    /// pole
    pub(crate) const POLE: u8 = 5;
    /// traffic light
    pub(crate) const LIGHT: u8 = 6;
    /// traffic sign
    pub(crate) const SIGN: u8 = 7;
    /// vegetation
    pub(crate) const VEGETATION: u8 = 8;
    /// terrain
    pub(crate) const TERRAIN: u8 = 9;
    /// sky
    pub(crate) const SKY: u8 = 10;
    /// person
    pub(crate) const PERSON: u8 = 11;
    /// rider
    pub(crate) const RIDER: u8 = 12;
    /// car
    pub(crate) const CAR: u8 = 13;
    /// truck
    pub(crate) const TRUCK: u8 = 14;
    /// bus
    pub(crate) const BUS: u8 = 15;
    /// motorcycle
    pub(crate) const MOTORCYCLE: u8 = 17;
    /// bicycle
    pub(crate) const BICYCLE: u8 = 18;
}
use ids::*;

/// Depth beyond which facades give way to the far skyline.
const FAR: f32 = 120.0;

/// The pinhole camera of a scene.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Camera {
    /// Image width.
    pub(crate) w: f32,
    /// Horizon row.
    pub(crate) hy: f32,
    /// Vanishing-point column.
    pub(crate) vx: f32,
    /// Focal length in pixels.
    pub(crate) f: f32,
    /// Height above the ground in world units.
    pub(crate) height: f32,
}

impl Camera {
    /// Column of lateral position `x` at depth `d`.
    pub(crate) fn px(&self, x: f32, d: f32) -> f32 {
        self.vx + x * self.f / d
    }
    /// Row of height `y` at depth `d`.
    pub(crate) fn py(&self, y: f32, d: f32) -> f32 {
        self.hy + (self.height - y) * self.f / d
    }
    /// Pixels per world unit at depth `d`.
    pub(crate) fn s(&self, d: f32) -> f32 {
        self.f / d
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SegKind {
    Building,
    Vegetation,
    /// A wall in front of a hedge of the given height.
    Wall(f32),
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    d0: f32,
    d1: f32,
    kind: SegKind,
    height: f32,
    phase: f32,
    window_spacing: f32,
    floor: f32,
    /// Horizontal extent of a window within its bay, as fractions of the bay.
    window: (f32, f32),
    inst: u16,
}

/// One side of the street (|X| distances).
#[derive(Debug, Clone)]
struct Side {
    sign: f32,
    road: f32,
    walk: f32,
    facade: f32,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
enum Attachment {
    None,
    Sign(u8),
    Light,
    SignAndLight(u8),
}

#[derive(Debug, Clone, Copy)]
enum Object {
    Vehicle {
        x: f32,
        d: f32,
        class: u8,
        width: f32,
        /// Heights of the car's roof and of its rear window's top.
        roof: (f32, f32),
        inst: u16,
    },
    Person {
        x: f32,
        d: f32,
        height: f32,
        stride: f32,
        inst: u16,
    },
    Cyclist(Cyclist),
    Pole(Pole),
    Tree {
        x: f32,
        d: f32,
        trunk: f32,
        crown: f32,
        seed: u32,
        palm: bool,
    },
}

/// A rider on a bicycle or motorcycle at (`x`, depth `d`), facing +1 (right) or -1.
#[derive(Debug, Clone, Copy)]
struct Cyclist {
    x: f32,
    d: f32,
    motor: bool,
    facing: f32,
    rider: u16,
    bike: u16,
}

/// A pole at (`x`, depth `d`) of `height` m, its arm reaching `toward` the road.
#[derive(Debug, Clone, Copy)]
struct Pole {
    x: f32,
    d: f32,
    height: f32,
    toward: f32,
    top: Attachment,
    half_width: f32,
    inst: u16,
}

impl Object {
    fn depth(&self) -> f32 {
        match *self {
            Object::Vehicle { d, .. }
            | Object::Person { d, .. }
            | Object::Cyclist(Cyclist { d, .. })
            | Object::Pole(Pole { d, .. })
            | Object::Tree { d, .. } => d,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Fence {
    sign: f32,
    x: f32,
    d0: f32,
    d1: f32,
    inst: u16,
}

/// A sampled scene, ready to rasterise.
#[derive(Debug, Clone)]
pub(crate) struct Scene {
    /// The camera.
    pub(crate) cam: Camera,
    sides: [Side; 2],
    centre_line: Option<f32>,
    skyline: Vec<(f32, f32)>,
    fences: Vec<Fence>,
    objects: Vec<Object>,
    marking: Marking,
    /// Rows of the ego-car hood at the image centre, as a fraction of the height.
    hood: f32,
}

struct Instances(u16);

impl Instances {
    fn next(&mut self) -> u16 {
        self.0 = self.0.saturating_add(1);
        self.0
    }
}

fn sample_segments(rng: &mut impl Rng, ids: &mut Instances) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut d = 0.5;
    while d < FAR {
        let len = rng.gen_range(4.0..14.0);
        let r: f32 = rng.gen();
        let (kind, height) = if r < 0.6 {
            (SegKind::Building, rng.gen_range(3.0..14.0))
        } else if r < 0.82 {
            (SegKind::Vegetation, rng.gen_range(1.6..4.5))
        } else {
            (
                SegKind::Wall(rng.gen_range(1.6..3.5)),
                rng.gen_range(0.6..1.4),
            )
        };
        out.push(Segment {
            d0: d,
            d1: d + len,
            kind,
            height,
            phase: rng.gen_range(0.0..std::f32::consts::TAU),
            window_spacing: rng.gen_range(1.2..2.2),
            floor: rng.gen_range(1.8..2.4),
            window: (0.25, 0.7),
            inst: ids.next(),
        });
        d += len;
    }
    out
}

fn sample_side(rng: &mut impl Rng, sign: f32, ids: &mut Instances) -> Side {
    let road = rng.gen_range(2.5..5.0);
    let walk = road + rng.gen_range(1.2..3.0);
    let facade = if rng.gen_bool(0.4) {
        walk + rng.gen_range(1.0..3.0)
    } else {
        walk
    };
    Side {
        sign,
        road,
        walk,
        facade,
        segments: sample_segments(rng, ids),
    }
}

impl Camera {
    /// A camera for a `w x h` image: horizon, vanishing point and focal length drawn at
    /// random.
    fn sample(rng: &mut impl Rng, w: f32, h: f32) -> Camera {
        let hy = h * rng.gen_range(0.36..0.48);
        Camera {
            w,
            hy,
            vx: w * rng.gen_range(0.38..0.62),
            f: (h - hy) * rng.gen_range(2.0..3.0),
            height: 1.0,
        }
    }
}

/// The far skyline: (right edge column, height) of blocks spanning the image width.
fn sample_skyline(rng: &mut impl Rng, w: f32) -> Vec<(f32, f32)> {
    let mut skyline = Vec::new();
    let mut x = 0.0;
    while x < w {
        let bw = rng.gen_range(0.01..0.05) * w;
        skyline.push((x + bw, rng.gen_range(1.5..14.0)));
        x += bw;
    }
    skyline
}

/// At most one fence per side, in front of the facade or of the terrain strip.
fn sample_fences(rng: &mut impl Rng, sides: &[Side; 2], ids: &mut Instances) -> Vec<Fence> {
    let mut fences = Vec::new();
    for side in sides {
        if rng.gen_bool(0.45) {
            let d0 = rng.gen_range(2.0..20.0);
            let x = if side.facade > side.walk + 0.5 {
                side.walk + 0.1
            } else {
                side.facade - 0.1
            };
            fences.push(Fence {
                sign: side.sign,
                x,
                d0,
                d1: d0 + rng.gen_range(5.0..30.0),
                inst: ids.next(),
            });
        }
    }
    fences
}

/// Draws the objects of a street with the sides already sampled.
struct Populate<'a, R: Rng> {
    rng: &'a mut R,
    ids: &'a mut Instances,
    sides: &'a [Side; 2],
    out: Vec<Object>,
}

/// A sampler of a street's objects, class by class. [`Furnish::all`] draws them in one
/// order for both versions of the benchmark (version 1's RNG order).
trait Furnish<'a>: Sized {
    /// The street's two sides.
    fn sides(&self) -> &'a [Side; 2];
    /// Cars, trucks and buses.
    fn vehicles(&mut self);
    /// Pedestrians.
    fn pedestrians(&mut self);
    /// Riders on bicycles or motorcycles.
    fn cyclists(&mut self);
    /// The poles of one side.
    fn poles(&mut self, side: &Side);
    /// The trees of one side.
    fn trees(&mut self, side: &Side);
    /// The objects sampled so far.
    fn into_objects(self) -> Vec<Object>;

    /// Every object of the street, farthest first (the drawing order).
    fn all(mut self) -> Vec<Object> {
        self.vehicles();
        self.pedestrians();
        self.cyclists();
        for side in self.sides() {
            self.poles(side);
            self.trees(side);
        }
        let mut out = self.into_objects();
        out.sort_by(|a, b| b.depth().total_cmp(&a.depth()));
        out
    }
}

impl<'a, R: Rng> Furnish<'a> for Populate<'a, R> {
    fn sides(&self) -> &'a [Side; 2] {
        self.sides
    }

    fn into_objects(self) -> Vec<Object> {
        self.out
    }

    /// Cars, trucks and buses on the road.
    fn vehicles(&mut self) {
        let [left, right] = self.sides;
        let rng = &mut *self.rng;
        for _ in 0..rng.gen_range(1..8) {
            let r: f32 = rng.gen();
            let (class, width) = if r < 0.8 {
                (CAR, rng.gen_range(1.1..1.3))
            } else if r < 0.9 {
                (TRUCK, rng.gen_range(1.6..1.8))
            } else {
                (BUS, rng.gen_range(1.7..1.85))
            };
            let x = rng.gen_range(-left.road + 0.5 * width + 0.1..right.road - 0.5 * width - 0.1);
            self.out.push(Object::Vehicle {
                x,
                d: rng.gen_range(3.0..50.0),
                class,
                width,
                roof: (1.08, 1.02),
                inst: self.ids.next(),
            });
        }
    }

    /// Pedestrians, mostly on the sidewalks.
    fn pedestrians(&mut self) {
        let [left, right] = self.sides;
        let rng = &mut *self.rng;
        for _ in 0..rng.gen_range(0..7) {
            let side = if rng.gen_bool(0.5) { left } else { right };
            let x = if rng.gen_bool(0.15) {
                rng.gen_range(-left.road..right.road)
            } else {
                side.sign * rng.gen_range(side.road + 0.3..side.walk - 0.1)
            };
            self.out.push(Object::Person {
                x,
                d: rng.gen_range(3.0..35.0),
                height: rng.gen_range(1.0..1.25),
                stride: rng.gen_range(0.0..0.25),
                inst: self.ids.next(),
            });
        }
    }

    /// Riders on bicycles or motorcycles near the road edges.
    fn cyclists(&mut self) {
        let [left, right] = self.sides;
        let rng = &mut *self.rng;
        let riders = if rng.gen_bool(0.65) {
            rng.gen_range(1..3)
        } else {
            0
        };
        for _ in 0..riders {
            let side = if rng.gen_bool(0.5) { left } else { right };
            self.out.push(Object::Cyclist(Cyclist {
                x: side.sign * (side.road - rng.gen_range(0.5..1.2)),
                d: rng.gen_range(3.0..30.0),
                motor: rng.gen_bool(0.4),
                facing: if rng.gen_bool(0.5) { 1.0 } else { -1.0 },
                rider: self.ids.next(),
                bike: self.ids.next(),
            }));
        }
    }

    /// Poles along the outer part of one sidewalk.
    fn poles(&mut self, side: &Side) {
        let rng = &mut *self.rng;
        for _ in 0..rng.gen_range(1..5) {
            let top = sample_attachment(rng);
            self.out.push(Object::Pole(Pole {
                x: side.sign * (side.road + (side.walk - side.road) * rng.gen_range(0.6..0.9)),
                d: rng.gen_range(3.0..40.0),
                height: rng.gen_range(3.0..4.5),
                toward: -side.sign,
                top,
                half_width: 0.045,
                inst: self.ids.next(),
            }));
        }
    }

    /// Trees on the terrain strip of one side, or at the back of its sidewalk.
    fn trees(&mut self, side: &Side) {
        let rng = &mut *self.rng;
        for _ in 0..rng.gen_range(0..4) {
            let x = if side.facade > side.walk + 0.5 {
                rng.gen_range(side.walk + 0.3..side.facade - 0.2)
            } else {
                side.walk - rng.gen_range(0.2..0.5)
            };
            self.out.push(Object::Tree {
                x: side.sign * x,
                d: rng.gen_range(3.0..45.0),
                trunk: rng.gen_range(1.2..2.2),
                crown: rng.gen_range(0.6..1.2),
                seed: rng.gen(),
                palm: false,
            });
        }
    }
}

/// What a pole carries: a sign (35%), a light (30%), both (15%) or a bare arm (20%).
fn sample_attachment(rng: &mut impl Rng) -> Attachment {
    let r: f32 = rng.gen();
    if r < 0.35 {
        Attachment::Sign(rng.gen_range(0..3))
    } else if r < 0.65 {
        Attachment::Light
    } else if r < 0.8 {
        Attachment::SignAndLight(rng.gen_range(0..3))
    } else {
        Attachment::None
    }
}

impl Scene {
    /// Samples a scene for a `width x height` image.
    pub(crate) fn sample(rng: &mut impl Rng, width: usize, height: usize) -> Scene {
        let cam = Camera::sample(rng, width as f32, height as f32);
        let mut ids = Instances(0);
        let sides = [
            sample_side(rng, -1.0, &mut ids),
            sample_side(rng, 1.0, &mut ids),
        ];
        let centre_line = rng
            .gen_bool(0.7)
            .then(|| (sides[1].road - sides[0].road) * 0.5 + rng.gen_range(-0.3..0.3));
        let skyline = sample_skyline(rng, cam.w);
        let fences = sample_fences(rng, &sides, &mut ids);
        let objects = Populate {
            rng,
            ids: &mut ids,
            sides: &sides,
            out: Vec::new(),
        }
        .all();
        Scene {
            cam,
            sides,
            centre_line,
            skyline,
            fences,
            objects,
            marking: Marking::DashedWhite,
            hood: 0.0,
        }
    }

    /// Rasterises the scene into a label canvas.
    pub(crate) fn draw(&self, width: usize, height: usize) -> Canvas {
        let mut c = Canvas::new(width, height, Paint::new(SKY, 0));
        self.draw_skyline(&mut c);
        self.draw_ground(&mut c);
        self.draw_facades(&mut c);
        for f in &self.fences {
            self.draw_fence(&mut c, f);
        }
        for o in &self.objects {
            self.draw_object(&mut c, o);
        }
        self.draw_hood(&mut c);
        c
    }

    /// The ego-car hood: void rows at the bottom, `hood` of the height at the centre
    /// column, curving down to 40 % of that at the image's sides.
    fn draw_hood(&self, c: &mut Canvas) {
        if self.hood <= 0.0 {
            return;
        }
        let (w, h) = (c.width as f32, c.height as f32);
        let p = Paint::new(HOOD, 0);
        for x in 0..c.width {
            let u = (x as f32 + 0.5 - w / 2.0) / (w / 2.0);
            let top = h - self.hood * h * (1.0 - 0.6 * u * u);
            c.rect(x as f32, top, x as f32 + 1.0, h, p);
        }
    }

    fn draw_skyline(&self, c: &mut Canvas) {
        let cam = &self.cam;
        let mut x0 = 0.0;
        for (k, &(x1, hgt)) in self.skyline.iter().enumerate() {
            let top = cam.py(hgt, FAR);
            let p = Paint::new(BUILDING, 1000 + k as u16);
            c.rect(x0, top, x1, cam.hy + 1.0, p);
            x0 = x1;
        }
    }

    fn draw_ground(&self, c: &mut Canvas) {
        let cam = self.cam;
        let y_start = (cam.hy - 0.5).ceil().max(0.0) as usize;
        let [left, right] = &self.sides;
        for y in y_start..c.height {
            let yc = y as f32 + 0.5;
            if yc <= cam.hy {
                continue;
            }
            let d = cam.f * cam.height / (yc - cam.hy);
            let row = y * c.width;
            for x in 0..c.width {
                let xw = (x as f32 + 0.5 - cam.vx) * d / cam.f;
                let side = if xw < 0.0 { left } else { right };
                let a = xw.abs();
                let (class, tone) = if a < side.road {
                    (ROAD, self.road_tone(side.road - a, xw, d))
                } else if a < side.walk {
                    (
                        SIDEWALK,
                        if a - side.road < 0.15 {
                            TONE_DARK
                        } else {
                            TONE_BASE
                        },
                    )
                } else {
                    (TERRAIN, TONE_BASE)
                };
                c.class[row + x] = class;
                c.tone[row + x] = tone;
                c.inst[row + x] = 0;
            }
        }
    }

    /// The tone of a road point `edge` units inside the road edge, at lateral `xw` and
    /// depth `d`: edge lines and the centre line are markings.
    fn road_tone(&self, edge: f32, xw: f32, d: f32) -> u8 {
        let centre = self.centre_line.is_some_and(|cl| (xw - cl).abs() < 0.07);
        match self.marking {
            _ if edge < 0.06 => TONE_ACCENT,
            Marking::DashedWhite if centre && (d / 4.0).fract() < 0.45 => TONE_ACCENT,
            Marking::SolidYellow if centre => TONE_ACCENT2,
            _ => TONE_BASE,
        }
    }

    fn draw_facades(&self, c: &mut Canvas) {
        for x in 0..c.width {
            if let Some((d, seg)) = self.facade_at(x) {
                self.facade_strip(c, x, d, seg);
            }
        }
    }

    /// The depth and segment of the facade seen in column `x`, if nearer than [`FAR`].
    fn facade_at(&self, x: usize) -> Option<(f32, &Segment)> {
        let cam = self.cam;
        let dx = x as f32 + 0.5 - cam.vx;
        let side = if dx < 0.0 {
            &self.sides[0]
        } else {
            &self.sides[1]
        };
        if dx.abs() < 1e-3 {
            return None;
        }
        let d = side.facade * cam.f / dx.abs();
        if d > FAR {
            return None;
        }
        let seg = side.segments.iter().find(|s| d >= s.d0 && d < s.d1)?;
        Some((d, seg))
    }

    /// Column `x` of facade segment `seg` at depth `d`: a building with windows, a hedge,
    /// or a wall in front of a hedge.
    fn facade_strip(&self, c: &mut Canvas, x: usize, d: f32, seg: &Segment) {
        let cam = self.cam;
        let bottom = cam.py(0.0, d);
        let column = |c: &mut Canvas, top: f32, p: Paint| {
            c.rect(x as f32, top, x as f32 + 1.0, bottom, p);
        };
        let hedge = Paint::new(VEGETATION, seg.inst);
        match seg.kind {
            SegKind::Building => {
                let top = cam.py(seg.height, d);
                self.facade_column(c, x, top, bottom, d, seg);
            }
            SegKind::Vegetation => {
                let hgt = seg.height
                    * (1.0
                        + 0.12 * (d * 2.3 + seg.phase).sin()
                        + 0.07 * (d * 5.7 + 2.0 * seg.phase).sin());
                column(c, cam.py(hgt, d), hedge);
            }
            SegKind::Wall(hedge_height) => {
                let hgt = hedge_height * (1.0 + 0.1 * (d * 3.1 + seg.phase).sin());
                column(c, cam.py(hgt, d), hedge);
                column(c, cam.py(seg.height, d), Paint::new(WALL, seg.inst));
            }
        }
    }

    /// One column of a building facade with its window grid.
    fn facade_column(&self, c: &mut Canvas, x: usize, top: f32, bottom: f32, d: f32, s: &Segment) {
        let cam = self.cam;
        let y0 = (top - 0.5).ceil().max(0.0) as usize;
        let y1 = ((bottom - 0.5).ceil().min(c.height as f32)).max(0.0) as usize;
        let col = ((d / s.window_spacing) + s.phase).fract();
        let window_col = (s.window.0..s.window.1).contains(&col);
        let base = Paint::new(BUILDING, s.inst);
        for y in y0..y1 {
            let yw = 1.0 - (y as f32 + 0.5 - cam.hy) * d / cam.f;
            let row = (yw / s.floor).fract();
            let window =
                window_col && yw > 1.3 && yw < s.height - 0.5 && (0.35..0.8).contains(&row);
            c.put(x, y, if window { base.tone(TONE_DARK) } else { base });
        }
    }

    fn draw_fence(&self, c: &mut Canvas, f: &Fence) {
        let cam = self.cam;
        let p = Paint::new(FENCE, f.inst);
        for x in 0..c.width {
            let dx = x as f32 + 0.5 - cam.vx;
            if dx * f.sign <= 1e-3 {
                continue;
            }
            let d = f.x * cam.f / dx.abs();
            if d < f.d0 || d > f.d1 {
                continue;
            }
            let (xf, x1) = (x as f32, x as f32 + 1.0);
            if (d / 0.4).fract() < 0.4 {
                c.rect(xf, cam.py(0.8, d), x1, cam.py(0.0, d), p);
            } else {
                c.rect(xf, cam.py(0.72, d), x1, cam.py(0.64, d), p);
                c.rect(xf, cam.py(0.22, d), x1, cam.py(0.15, d), p);
            }
        }
    }

    fn draw_object(&self, c: &mut Canvas, o: &Object) {
        match *o {
            Object::Vehicle {
                x,
                d,
                class,
                width,
                roof,
                inst,
            } => self.draw_vehicle(c, x, d, class, (width, roof), inst),
            Object::Person {
                x,
                d,
                height,
                stride,
                inst,
            } => self.draw_person(c, x, d, height, stride, inst),
            Object::Cyclist(ref cy) => self.draw_cyclist(c, cy),
            Object::Pole(ref pole) => self.draw_pole(c, pole),
            Object::Tree {
                x,
                d,
                trunk,
                crown,
                seed,
                palm,
            } => self.draw_tree(c, (x, d), trunk, crown, seed, palm),
        }
    }

    /// A vehicle seen from behind.
    fn draw_vehicle(
        &self,
        c: &mut Canvas,
        x: f32,
        d: f32,
        class: u8,
        shape: (f32, (f32, f32)),
        inst: u16,
    ) {
        let (w, (roof, rear_window)) = shape;
        let cam = self.cam;
        let p = Paint::new(class, inst);
        let (l, r) = (cam.px(x - w / 2.0, d), cam.px(x + w / 2.0, d));
        let u = |fx: f32| cam.px(x + fx * w / 2.0, d);
        let v = |y: f32| cam.py(y, d);
        // A left/right pair of boxes between the fractions `inner` and `outer` of the half
        // width (wheels, lights).
        let pair = |c: &mut Canvas, inner: f32, outer: f32, top: f32, bottom: f32, p: Paint| {
            c.rect(u(-outer), v(top), u(-inner), v(bottom), p);
            c.rect(u(inner), v(top), u(outer), v(bottom), p);
        };
        let uv = |fx: f32, y: f32| (u(fx), v(y));
        pair(c, 0.6, 0.95, 0.35, 0.0, p.tone(TONE_DARK));
        let lights = p.tone(TONE_ACCENT);
        match class {
            CAR => {
                c.rect(l, v(0.72), r, v(0.18), p);
                c.polygon(&trapezoid(&uv, 0.9, 0.72, 0.7, roof), p);
                c.polygon(
                    &trapezoid(&uv, 0.78, 0.76, 0.62, rear_window),
                    p.tone(TONE_DARK),
                );
                c.rect(l, v(0.26), r, v(0.18), p.tone(TONE_DARK));
                pair(c, 0.7, 0.95, 0.65, 0.52, lights);
            }
            TRUCK => {
                c.rect(l, v(2.4), r, v(0.35), p);
                c.rect(u(-0.03), v(2.3), u(0.03), v(0.45), p.tone(TONE_DARK));
                c.rect(l, v(0.45), r, v(0.35), p.tone(TONE_DARK));
                pair(c, 0.82, 0.98, 0.62, 0.5, lights);
            }
            _ => {
                c.rect(l, v(2.3), r, v(0.25), p);
                c.rect(u(-0.85), v(2.0), u(0.85), v(1.35), p.tone(TONE_DARK));
                pair(c, 0.8, 0.96, 0.7, 0.5, lights);
            }
        }
    }

    /// A standing or walking person.
    fn draw_person(&self, c: &mut Canvas, x: f32, d: f32, hgt: f32, stride: f32, inst: u16) {
        let cam = self.cam;
        let p = Paint::new(PERSON, inst);
        let s = cam.s(d);
        let pt = |fx: f32, y: f32| (cam.px(x + fx, d), cam.py(y * hgt, d));
        let limb = 0.09 * hgt * s;
        // Legs (dark), arms, torso, head (accent: skin); `k` mirrors left and right.
        for k in [-1.0, 1.0] {
            let (hip, foot) = (pt(0.05 * k, 0.48), pt((0.05 + stride) * k, 0.0));
            c.segment(hip, foot, limb * 1.2, p.tone(TONE_DARK));
        }
        for k in [-1.0, 1.0] {
            let (shoulder, hand) = (pt(0.17 * k, 0.8), pt((0.2 + stride * 0.5) * k, 0.48));
            c.segment(shoulder, hand, limb, p);
        }
        c.polygon(&trapezoid(&pt, 0.17, 0.82, 0.13, 0.46), p);
        let (hx, hy) = pt(0.0, 0.905);
        let head = p.tone(TONE_ACCENT);
        c.ellipse(hx, hy, 0.075 * hgt * s, 0.095 * hgt * s, head);
    }

    /// A rider on a bicycle or motorcycle, seen from the side.
    fn draw_cyclist(&self, c: &mut Canvas, cy: &Cyclist) {
        let Cyclist {
            x,
            d,
            motor,
            facing,
            rider,
            bike,
        } = *cy;
        let cam = self.cam;
        let s = cam.s(d);
        let pt = |fx: f32, y: f32| (cam.px(x + fx * facing, d), cam.py(y, d));
        if motor {
            draw_motorcycle(c, &pt, s, Paint::new(MOTORCYCLE, bike));
        } else {
            draw_bicycle(c, &pt, s, Paint::new(BICYCLE, bike));
        }
        draw_rider(c, &pt, s, Paint::new(RIDER, rider));
    }

    /// A pole, possibly carrying a traffic sign and/or a traffic light.
    fn draw_pole(&self, c: &mut Canvas, pole: &Pole) {
        let Pole {
            x,
            d,
            height: hgt,
            toward,
            top,
            half_width,
            inst,
        } = *pole;
        let cam = self.cam;
        let p = Paint::new(POLE, inst);
        c.rect(
            cam.px(x - half_width, d),
            cam.py(hgt, d),
            cam.px(x + half_width, d),
            cam.py(0.0, d),
            p,
        );
        let sign = |c: &mut Canvas, shape: u8, y: f32| {
            let centre = (cam.px(x, d), cam.py(y, d));
            draw_sign(c, centre, 0.28 * cam.s(d), shape, Paint::new(SIGN, inst));
        };
        match top {
            Attachment::None => {
                c.segment(
                    (cam.px(x, d), cam.py(hgt, d)),
                    (cam.px(x + toward * 0.9, d), cam.py(hgt + 0.15, d)),
                    0.07 * cam.s(d),
                    p,
                );
            }
            Attachment::Sign(shape) => sign(c, shape, hgt - 0.3),
            Attachment::Light => self.draw_light(c, x, d, hgt, toward, inst),
            Attachment::SignAndLight(shape) => {
                self.draw_light(c, x, d, hgt, toward, inst);
                sign(c, shape, hgt - 1.4);
            }
        }
    }

    /// A traffic light hung from the top of the pole at `x` by an arm reaching `toward`
    /// the road: a box of three lamps, the lowest in the accent tone.
    fn draw_light(&self, c: &mut Canvas, x: f32, d: f32, hgt: f32, toward: f32, inst: u16) {
        let cam = self.cam;
        let s = cam.s(d);
        let lp = Paint::new(LIGHT, inst);
        let lx = x + toward * 0.25;
        c.rect(
            cam.px(x, d),
            cam.py(hgt - 0.05, d),
            cam.px(lx, d),
            cam.py(hgt - 0.12, d),
            Paint::new(POLE, inst),
        );
        let (l, r) = (cam.px(lx - 0.14, d), cam.px(lx + 0.14, d));
        c.rect(l.min(r), cam.py(hgt, d), l.max(r), cam.py(hgt - 0.8, d), lp);
        let cx = cam.px(lx, d);
        for k in 0..3 {
            let cy = cam.py(hgt - 0.15 - 0.25 * k as f32, d);
            let tone = if k == 2 { TONE_ACCENT } else { TONE_ACCENT2 };
            c.ellipse(cx, cy, 0.075 * s, 0.075 * s, lp.tone(tone));
        }
    }

    /// A tree: trunk and a crown of overlapping ellipses (all vegetation).
    /// A palm (`palm`: a thin bare trunk under a tuft of drooping fronds) has a trunk of
    /// half the width and fronds instead of the round crown.
    fn draw_tree(
        &self,
        c: &mut Canvas,
        (x, d): (f32, f32),
        trunk: f32,
        crown: f32,
        seed: u32,
        palm: bool,
    ) {
        let cam = self.cam;
        let s = cam.s(d);
        let p = Paint::new(VEGETATION, 0);
        let half = if palm { 0.04 } else { 0.08 };
        c.rect(
            cam.px(x - half, d),
            cam.py(trunk + 0.3, d),
            cam.px(x + 0.08, d),
            cam.py(0.0, d),
            p.tone(TONE_DARK),
        );
        if palm {
            let top = (cam.px(x, d), cam.py(trunk + 0.3, d));
            for k in [-1.0f32, -0.45, 0.45, 1.0] {
                let tip = (
                    cam.px(x + k * crown, d),
                    cam.py(trunk + 0.3 - 0.35 * crown * k.abs(), d),
                );
                c.segment(top, tip, 0.18 * crown * s, p);
            }
            return;
        }
        let mut h = seed | 1;
        let mut next = || {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            (h % 1000) as f32 / 1000.0
        };
        for _ in 0..4 {
            let ox = (next() - 0.5) * 1.2 * crown;
            let oy = (next() - 0.5) * 0.8 * crown;
            let r = crown * (0.6 + 0.5 * next());
            c.ellipse(
                cam.px(x + ox, d),
                cam.py(trunk + crown * 0.7 + oy, d),
                r * s,
                r * 0.9 * s,
                p,
            );
        }
    }
}

/// A symmetric trapezoid in the frame `pt` (lateral offset, height -> pixel): half widths
/// `low` at height `y0` and `high` at `y1`.
fn trapezoid(
    pt: &impl Fn(f32, f32) -> (f32, f32),
    low: f32,
    y0: f32,
    high: f32,
    y1: f32,
) -> [(f32, f32); 4] {
    [pt(-low, y0), pt(low, y0), pt(high, y1), pt(-high, y1)]
}

/// A point of a side view: (forward offset, height) in world units -> pixel.
type SideView<'a> = &'a dyn Fn(f32, f32) -> (f32, f32);

/// A motorcycle: two solid wheels, a body and a fork.
fn draw_motorcycle(c: &mut Canvas, pt: SideView, s: f32, bp: Paint) {
    let radius = 0.33;
    let (rear, front) = (pt(-0.7, radius), pt(0.7, radius));
    for (wx, wy) in [rear, front] {
        c.ellipse(wx, wy, radius * s, radius * s, bp.tone(TONE_DARK));
    }
    let body = [
        pt(-0.75, 0.55),
        pt(0.55, 0.5),
        pt(0.45, 0.95),
        pt(-0.5, 0.9),
    ];
    c.polygon(&body, bp);
    c.segment(pt(0.45, 0.9), front, 0.07 * s, bp);
}

/// A bicycle: two ring wheels and a diamond frame of thin tubes.
fn draw_bicycle(c: &mut Canvas, pt: SideView, s: f32, bp: Paint) {
    let radius = 0.34;
    let (rear, front) = (pt(-0.55, radius), pt(0.55, radius));
    for (wx, wy) in [rear, front] {
        c.ring(wx, wy, radius * s, radius * s, 0.8, bp.tone(TONE_DARK));
    }
    let seat = pt(-0.15, 0.95);
    let crank = pt(0.0, radius);
    let bar = pt(0.4, 1.0);
    let t = 0.05 * s;
    for (a, b) in [
        (rear, seat),
        (seat, crank),
        (crank, rear),
        (seat, bar),
        (bar, front),
        (crank, bar),
    ] {
        c.segment(a, b, t, bp);
    }
}

/// The rider on top of either bike: leg, torso, arm and head.
fn draw_rider(c: &mut Canvas, pt: SideView, s: f32, rp: Paint) {
    let limb = 0.1 * s;
    let hip = pt(-0.15, 1.0);
    let shoulder = pt(0.1, 1.55);
    c.segment(hip, pt(0.05, 0.5), limb * 1.2, rp.tone(TONE_DARK));
    c.segment(hip, shoulder, 0.3 * s, rp);
    c.segment(shoulder, pt(0.4, 1.05), limb, rp);
    let head = pt(0.16, 1.74);
    c.ellipse(head.0, head.1, 0.11 * s, 0.12 * s, rp.tone(TONE_ACCENT));
}

/// A traffic sign of radius `r` centred at `centre`: round (0), triangular (1) or
/// rectangular (other), an accent-toned rim around a base-toned face.
fn draw_sign(c: &mut Canvas, (cx, cy): (f32, f32), r: f32, shape: u8, sp: Paint) {
    match shape {
        0 => {
            c.ellipse(cx, cy, r, r, sp.tone(TONE_ACCENT));
            c.ellipse(cx, cy, r * 0.72, r * 0.72, sp);
        }
        1 => {
            let tri = |k: f32| {
                [
                    (cx, cy - r * k),
                    (cx + r * k, cy + 0.8 * r * k),
                    (cx - r * k, cy + 0.8 * r * k),
                ]
            };
            c.polygon(&tri(1.15), sp.tone(TONE_ACCENT));
            c.polygon(&tri(0.75), sp);
        }
        _ => {
            let rim = sp.tone(TONE_ACCENT);
            c.rect(cx - r, cy - 0.75 * r, cx + r, cy + 0.75 * r, rim);
            c.rect(cx - 0.8 * r, cy - 0.55 * r, cx + 0.8 * r, cy + 0.55 * r, sp);
        }
    }
}
