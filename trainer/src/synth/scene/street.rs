//! Version 2 of the scene sampler (docs/benchmark.md, "Content gap"): a street drawn from
//! one domain's [`DomainKnobs`] (camera, cross-section, facades, furniture, class priors
//! and class-conditional shapes), rasterised by the same drawing code as version 1.
//! Knob lengths are metres; the scene's world unit is [`UNIT_M`] metres.

use rand::Rng;

use super::super::gap::{ClassKnobs, DomainKnobs, LayoutKnobs};
use super::*;

/// A knob length in metres as world units.
fn units(m: f32) -> f32 {
    m / UNIT_M
}

impl Camera {
    /// A pinhole camera for a `w x h` image: focal length from the field of view, the
    /// horizon moved up by the pitch (`f tan(pitch)` from the centre row) and the
    /// vanishing point sideways by the heading.
    fn from_knobs(rng: &mut impl Rng, k: &DomainKnobs, w: f32, h: f32) -> Camera {
        let c = &k.camera;
        let f = (w / 2.0) / (c.hfov_deg.draw(rng).to_radians() / 2.0).tan();
        let hy = h / 2.0 - f * c.pitch_deg.draw(rng).to_radians().tan();
        let vx = w / 2.0 - f * c.yaw_deg.draw(rng).to_radians().tan();
        Camera {
            w,
            hy,
            vx,
            f,
            height: units(c.height_m.draw(rng)),
        }
    }
}

/// Facade segments along one side: kinds in the shares of `facade_mix`.
fn segments(rng: &mut impl Rng, k: &DomainKnobs, ids: &mut Instances) -> Vec<Segment> {
    let (l, look) = (&k.layout, &k.look);
    let total: f32 = l.facade_mix.iter().sum();
    let (building, hedge) = (
        l.facade_mix[0] / total,
        (l.facade_mix[0] + l.facade_mix[1]) / total,
    );
    let mut out = Vec::new();
    let mut d = 0.5;
    while d < FAR {
        let len = rng.gen_range(4.0..14.0);
        let r: f32 = rng.gen();
        let (kind, height) = if r < building {
            (SegKind::Building, units(l.building_m.draw(rng)))
        } else if r < hedge {
            (SegKind::Vegetation, rng.gen_range(1.6..4.5))
        } else {
            (
                SegKind::Wall(rng.gen_range(1.6..3.5)),
                rng.gen_range(0.6..1.4),
            )
        };
        let share = look.window_share.draw(rng);
        out.push(Segment {
            d0: d,
            d1: d + len,
            kind,
            height,
            phase: rng.gen_range(0.0..std::f32::consts::TAU),
            window_spacing: rng.gen_range(1.2..2.2),
            floor: units(look.storey_m.draw(rng)),
            window: (0.475 - share / 2.0, 0.475 + share / 2.0),
            inst: ids.next(),
        });
        d += len;
    }
    out
}

/// One side of the street: `road` units of carriageway, then a sidewalk and a terrain
/// strip if drawn, then the facades.
fn side(rng: &mut impl Rng, k: &DomainKnobs, sign: f32, road: f32, ids: &mut Instances) -> Side {
    let l = &k.layout;
    let walk = road
        + if rng.gen_bool(l.sidewalk_prob as f64) {
            units(l.sidewalk_m.draw(rng))
        } else {
            0.0
        };
    let facade = walk
        + if rng.gen_bool(l.terrain_prob as f64) {
            units(l.terrain_m.draw(rng))
        } else {
            0.0
        };
    Side {
        sign,
        road,
        walk,
        facade,
        segments: segments(rng, k, ids),
    }
}

/// Objects of a version-2 street.
struct Street<'a, R: Rng> {
    rng: &'a mut R,
    ids: &'a mut Instances,
    sides: &'a [Side; 2],
    k: &'a DomainKnobs,
    out: Vec<Object>,
}

impl<R: Rng> Street<'_, R> {
    /// Depth of an object, from 4.5 m to the knobs' farthest (or `cap`, if nearer), units.
    fn depth(&mut self, cap: f32) -> f32 {
        let far = units(self.k.classes.max_depth_m).min(cap).max(4.0);
        self.rng.gen_range(3.0..far)
    }
}

impl<'a, R: Rng> Furnish<'a> for Street<'a, R> {
    fn sides(&self) -> &'a [Side; 2] {
        self.sides
    }

    fn into_objects(self) -> Vec<Object> {
        self.out
    }

    /// Cars, trucks and buses on the carriageway in the class priors' shares.
    fn vehicles(&mut self) {
        let ClassKnobs {
            vehicles,
            truck_share,
            bus_share,
            ..
        } = self.k.classes;
        let [left, right] = self.sides;
        for _ in 0..vehicles.draw(self.rng) {
            let r: f32 = self.rng.gen();
            let (class, width) = if r < truck_share {
                (TRUCK, self.rng.gen_range(1.6..1.8))
            } else if r < truck_share + bus_share {
                (BUS, self.rng.gen_range(1.7..1.85))
            } else {
                (CAR, self.rng.gen_range(1.1..1.3))
            };
            let roof = 0.72 * self.k.look.car_roof.draw(self.rng);
            let x = self
                .rng
                .gen_range(-left.road + 0.5 * width + 0.1..right.road - 0.5 * width - 0.1);
            let d = self.depth(FAR);
            self.out.push(Object::Vehicle {
                x,
                d: d.max(3.0),
                class,
                width,
                roof: (roof, roof - 0.06),
                inst: self.ids.next(),
            });
        }
    }

    /// Pedestrians, on the sidewalks where there are some, else at the road's edge.
    fn pedestrians(&mut self) {
        let [left, right] = self.sides;
        for _ in 0..self.k.classes.persons.draw(self.rng) {
            let side = if self.rng.gen_bool(0.5) { left } else { right };
            let x = if self.rng.gen_bool(0.15) || side.walk - side.road < 0.5 {
                self.rng.gen_range(-left.road..right.road)
            } else {
                side.sign * self.rng.gen_range(side.road + 0.3..side.walk - 0.1)
            };
            let d = self.depth(25.0);
            let (height, stride) = (self.rng.gen_range(1.0..1.25), self.rng.gen_range(0.0..0.25));
            self.out.push(Object::Person {
                x,
                d,
                height,
                stride,
                inst: self.ids.next(),
            });
        }
    }

    /// Riders near the road edges, on bicycles in the priors' share, else motorcycles.
    fn cyclists(&mut self) {
        let [left, right] = self.sides;
        for _ in 0..self.k.classes.cyclists.draw(self.rng) {
            let side = if self.rng.gen_bool(0.5) { left } else { right };
            let x = side.sign * (side.road - self.rng.gen_range(0.5..1.2)).max(0.3);
            let d = self.depth(22.0);
            let motor = !self.rng.gen_bool(self.k.classes.bicycle_share as f64);
            let facing = if self.rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            let (rider, bike) = (self.ids.next(), self.ids.next());
            self.out.push(Object::Cyclist(Cyclist {
                x,
                d,
                motor,
                facing,
                rider,
                bike,
            }));
        }
    }

    /// Poles in the outer part of a sidewalk (or just off the road), a share of them near.
    fn poles(&mut self, side: &Side) {
        let l: &LayoutKnobs = &self.k.layout;
        for _ in 0..l.poles.draw(self.rng) {
            let top = attachment(self.rng, l.attachments);
            let near = self.rng.gen_bool(l.near_poles as f64);
            let d = if near {
                self.rng.gen_range(units(3.0)..units(8.0))
            } else {
                self.depth(40.0)
            };
            let inset = (side.walk - side.road).max(0.4) * self.rng.gen_range(0.6..0.9);
            self.out.push(Object::Pole(Pole {
                x: side.sign * (side.road + inset),
                d,
                height: self.rng.gen_range(3.0..4.5),
                toward: -side.sign,
                top,
                half_width: units(l.pole_m) / 2.0,
                inst: self.ids.next(),
            }));
        }
    }

    /// Trees on the terrain strip or at the back of the sidewalk; palms in their share.
    fn trees(&mut self, side: &Side) {
        for _ in 0..self.k.layout.trees.draw(self.rng) {
            let x = if side.facade > side.walk + 0.5 {
                self.rng.gen_range(side.walk + 0.3..side.facade - 0.2)
            } else {
                side.walk - self.rng.gen_range(0.2..0.5)
            };
            let palm = self.rng.gen_bool(self.k.look.palm_share as f64);
            let d = self.depth(45.0);
            let (trunk, crown) = if palm {
                (self.rng.gen_range(3.0..5.0), self.rng.gen_range(0.8..1.1))
            } else {
                (
                    self.rng.gen_range(1.2..2.2),
                    units(self.k.look.crown_m.draw(self.rng)),
                )
            };
            let seed = self.rng.gen();
            self.out.push(Object::Tree {
                x: side.sign * x,
                d,
                trunk,
                crown,
                seed,
                palm,
            });
        }
    }
}

/// A pole's load: a sign, a light or both in the shares `[sign, light, both]`, else none.
fn attachment(rng: &mut impl Rng, [sign, light, both]: [f32; 3]) -> Attachment {
    let r: f32 = rng.gen();
    if r < sign {
        Attachment::Sign(rng.gen_range(0..3))
    } else if r < sign + light {
        Attachment::Light
    } else if r < sign + light + both {
        Attachment::SignAndLight(rng.gen_range(0..3))
    } else {
        Attachment::None
    }
}

impl Scene {
    /// Samples a version-2 street for a `width x height` image from one domain's knobs:
    /// the camera drives in the centre of the rightmost lane of a two-way road of
    /// `lanes` lanes per direction.
    pub(crate) fn sample_street(
        rng: &mut impl Rng,
        width: usize,
        height: usize,
        k: &DomainKnobs,
    ) -> Scene {
        let cam = Camera::from_knobs(rng, k, width as f32, height as f32);
        let lanes = k.layout.lanes.draw(rng) as f32;
        let lane = units(k.layout.lane_width_m.draw(rng));
        let mut ids = Instances(0);
        let sides = [
            side(rng, k, -1.0, (2.0 * lanes - 0.5) * lane, &mut ids),
            side(rng, k, 1.0, 0.5 * lane, &mut ids),
        ];
        let centre_line = Some(-(lanes - 0.5) * lane);
        let skyline = sample_skyline(rng, cam.w);
        let fences = sample_fences(rng, &sides, &mut ids);
        let objects = Street {
            rng,
            ids: &mut ids,
            sides: &sides,
            k,
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
            marking: k.look.centre_line,
            hood: k.camera.hood,
        }
    }
}
