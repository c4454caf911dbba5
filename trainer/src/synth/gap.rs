//! The domain gap of the synthetic benchmark (docs/benchmark.md): which version of the
//! generator runs (`--gap`), and, for the content gap of version 2, every knob of each
//! domain with its default. Version 1 (`--gap appearance`) is the earlier generator: one
//! scene sampler for both domains and a target that differs in rendering only; its bytes
//! are unchanged. Version 2 (`--gap content`, the default) samples each domain's scenes
//! from its own camera, street layout, class priors, class-conditional looks and sensor,
//! set so that the "game" source resembles GTA5 and the "real" target Cityscapes.
//!
//! Lengths are in metres and angles in degrees; a [`Span`] is drawn uniformly. Each
//! default's source (camera files, design standards, class statistics, or a stated
//! assumption) is given in docs/benchmark.md, table by table.

use serde::{Deserialize, Serialize};

/// The generator version `rccr-train synth` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gap {
    /// Version 1: the domains differ in appearance only (the earlier benchmark).
    Appearance,
    /// Version 2: camera, layout, class priors, class-conditional looks and sensor differ too.
    Content,
}

impl Gap {
    /// The benchmark version recorded in `synth.json`.
    pub fn version(self) -> &'static str {
        match self {
            Gap::Appearance => "synth-v1",
            Gap::Content => "synth-v2",
        }
    }
}

/// Version 1's default `--shift` (the earlier benchmark's value).
pub const APPEARANCE_SHIFT: f32 = 0.7;

/// Version 2's default `--shift`: chosen with the content gap on a development draw so
/// that the ratios of the ladder resemble GTA5 -> Cityscapes (docs/benchmark.md,
/// "Calibration").
pub const CONTENT_SHIFT: f32 = 0.2;

/// A closed interval `[lo, hi]`, written `[lo, hi]` in files, drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span(pub f32, pub f32);

impl Span {
    /// The same value every draw.
    pub const fn at(v: f32) -> Span {
        Span(v, v)
    }
    /// A draw from the interval (no RNG draw when it is a single value).
    pub(crate) fn draw(self, rng: &mut impl rand::Rng) -> f32 {
        if self.1 > self.0 {
            rng.gen_range(self.0..self.1)
        } else {
            self.0
        }
    }
}

/// A count drawn uniformly from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count(pub u32, pub u32);

impl Count {
    /// A draw from `min..=max`.
    pub(crate) fn draw(self, rng: &mut impl rand::Rng) -> u32 {
        if self.1 > self.0 {
            rng.gen_range(self.0..=self.1)
        } else {
            self.0
        }
    }
}

/// The camera: where it sits and how it sees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraKnobs {
    /// Height of the camera above the road, m.
    pub height_m: Span,
    /// Downward pitch, degrees: the horizon row is `h/2 - f tan(pitch)`.
    pub pitch_deg: Span,
    /// Horizontal field of view, degrees: the focal length is `(w/2) / tan(fov/2)`.
    pub hfov_deg: Span,
    /// Heading relative to the street, degrees: moves the vanishing point sideways.
    pub yaw_deg: Span,
    /// Rows the ego-car hood covers at the image centre, as a fraction of the height
    /// (0: no hood). Hood pixels are void (labelId 1, "ego vehicle").
    pub hood: f32,
}

/// The street: its cross-section, its facades and its street furniture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutKnobs {
    /// Lanes per direction.
    pub lanes: Count,
    /// Width of one lane, m.
    pub lane_width_m: Span,
    /// Probability that a side has a sidewalk.
    pub sidewalk_prob: f32,
    /// Sidewalk width, m.
    pub sidewalk_m: Span,
    /// Probability that a side has a terrain strip (verge, lawn) before its facades.
    pub terrain_prob: f32,
    /// Width of the terrain strip, m.
    pub terrain_m: Span,
    /// Building height, m.
    pub building_m: Span,
    /// Shares of facade segments that are buildings, hedges and walls (normalised).
    pub facade_mix: [f32; 3],
    /// Poles per side.
    pub poles: Count,
    /// Fraction of poles placed 3-8 m from the camera, so thin classes are resolvable.
    pub near_poles: f32,
    /// Pole diameter, m.
    pub pole_m: f32,
    /// What a pole carries: shares of a sign, a light, both (the rest carry nothing).
    pub attachments: [f32; 3],
    /// Trees per side.
    pub trees: Count,
}

/// How many objects of each class a scene holds (the class priors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassKnobs {
    /// Vehicles on the road.
    pub vehicles: Count,
    /// Share of vehicles that are trucks.
    pub truck_share: f32,
    /// Share of vehicles that are buses.
    pub bus_share: f32,
    /// Pedestrians.
    pub persons: Count,
    /// Riders (each on a bicycle or a motorcycle).
    pub cyclists: Count,
    /// Share of riders on bicycles (the rest ride motorcycles).
    pub bicycle_share: f32,
    /// Farthest depth at which objects are placed, m.
    pub max_depth_m: f32,
}

/// Road markings of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Marking {
    /// A solid yellow centre line (North American practice).
    SolidYellow,
    /// A dashed white centre line (European practice).
    DashedWhite,
}

/// Class-conditional looks: shapes and colours that differ per class between domains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookKnobs {
    /// Colour tables: `false` the flat "game" palette, `true` the "real" one (scaled by
    /// `--shift`, with texture).
    pub real_palette: bool,
    /// Car roof height over body height (low sports cars ~1.3, compacts ~1.6).
    pub car_roof: Span,
    /// Fraction of a facade bay that is window (wide glass ~0.75, punched windows ~0.45).
    pub window_share: Span,
    /// Storey height, m.
    pub storey_m: Span,
    /// Share of trees that are palms (tall bare trunk, small crown).
    pub palm_share: f32,
    /// Crown radius of broad-leaved trees, m.
    pub crown_m: Span,
    /// Centre-line marking.
    pub centre_line: Marking,
}

/// The sensor and its processing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorKnobs {
    /// Exposure gain applied to all channels.
    pub exposure: Span,
    /// Independent gain jitter per channel (white balance), +/-.
    pub white_balance: f32,
    /// Corner darkening (0: none).
    pub vignetting: f32,
    /// Passes of a [1 2 1] lens blur.
    pub lens_blur: u32,
    /// Horizontal motion blur length, as a fraction of the width.
    pub motion_blur: Span,
    /// Sensor noise standard deviation, 8-bit levels.
    pub noise: f32,
    /// JPEG quality of a compression round trip (0: none).
    pub jpeg_quality: u8,
}

/// Every knob of one domain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainKnobs {
    /// Camera.
    pub camera: CameraKnobs,
    /// Street layout.
    pub layout: LayoutKnobs,
    /// Class priors.
    pub classes: ClassKnobs,
    /// Class-conditional looks.
    pub look: LookKnobs,
    /// Sensor.
    pub sensor: SensorKnobs,
}

/// The knobs of both domains (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// The "game" source (GTA5 layout).
    pub source: DomainKnobs,
    /// The "real" target (Cityscapes layout).
    pub target: DomainKnobs,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            source: DomainKnobs::game(),
            target: DomainKnobs::real(),
        }
    }
}

impl DomainKnobs {
    /// The source defaults: a game camera over wide North American streets
    /// (docs/benchmark.md, column "source").
    pub fn game() -> DomainKnobs {
        DomainKnobs {
            camera: CameraKnobs {
                height_m: Span(1.5, 2.2),
                pitch_deg: Span(-1.0, 3.0),
                hfov_deg: Span(55.0, 65.0),
                yaw_deg: Span(-6.0, 6.0),
                hood: 0.0,
            },
            layout: LayoutKnobs {
                lanes: Count(1, 3),
                lane_width_m: Span(3.5, 3.7),
                sidewalk_prob: 0.8,
                sidewalk_m: Span(1.5, 3.0),
                terrain_prob: 0.5,
                terrain_m: Span(2.0, 6.0),
                building_m: Span(4.5, 30.0),
                facade_mix: [0.5, 0.35, 0.15],
                poles: Count(0, 2),
                near_poles: 0.15,
                pole_m: 0.25,
                attachments: [0.2, 0.35, 0.1],
                trees: Count(0, 3),
            },
            classes: ClassKnobs {
                vehicles: Count(1, 7),
                truck_share: 0.2,
                bus_share: 0.1,
                persons: Count(0, 2),
                cyclists: Count(0, 1),
                bicycle_share: 0.2,
                max_depth_m: 75.0,
            },
            look: LookKnobs {
                real_palette: false,
                car_roof: Span(1.2, 1.4),
                window_share: Span(0.6, 0.85),
                storey_m: Span(3.5, 4.5),
                palm_share: 0.5,
                crown_m: Span(1.0, 2.0),
                centre_line: Marking::SolidYellow,
            },
            sensor: SensorKnobs {
                exposure: Span::at(1.0),
                white_balance: 0.0,
                vignetting: 0.0,
                lens_blur: 0,
                motion_blur: Span::at(0.0),
                noise: 0.0,
                jpeg_quality: 0,
            },
        }
    }

    /// The target defaults: the Cityscapes camera over narrow European streets
    /// (docs/benchmark.md, column "target").
    pub fn real() -> DomainKnobs {
        DomainKnobs {
            camera: CameraKnobs {
                height_m: Span(1.18, 1.26),
                pitch_deg: Span(1.5, 3.0),
                hfov_deg: Span(47.5, 50.0),
                yaw_deg: Span(-2.0, 2.0),
                hood: 0.16,
            },
            layout: LayoutKnobs {
                lanes: Count(1, 2),
                lane_width_m: Span(2.75, 3.25),
                sidewalk_prob: 0.95,
                sidewalk_m: Span(1.5, 3.5),
                terrain_prob: 0.25,
                terrain_m: Span(1.0, 3.0),
                building_m: Span(10.0, 20.0),
                facade_mix: [0.7, 0.2, 0.1],
                poles: Count(3, 7),
                near_poles: 0.3,
                pole_m: 0.2,
                attachments: [0.4, 0.25, 0.15],
                trees: Count(1, 4),
            },
            classes: ClassKnobs {
                vehicles: Count(2, 9),
                truck_share: 0.02,
                bus_share: 0.015,
                persons: Count(1, 6),
                cyclists: Count(0, 2),
                bicycle_share: 0.9,
                max_depth_m: 60.0,
            },
            look: LookKnobs {
                real_palette: true,
                car_roof: Span(1.5, 1.75),
                window_share: Span(0.35, 0.55),
                storey_m: Span(2.8, 3.4),
                palm_share: 0.0,
                crown_m: Span(1.8, 3.2),
                centre_line: Marking::DashedWhite,
            },
            sensor: SensorKnobs {
                exposure: Span(0.65, 1.12),
                white_balance: 0.07,
                vignetting: 0.3,
                lens_blur: 1,
                motion_blur: Span(0.0, 0.012),
                noise: 4.0,
                jpeg_quality: 85,
            },
        }
    }
}

/// Reasons a set of knobs cannot be used.
pub(crate) fn check(k: &DomainKnobs, domain: &str) -> Result<(), String> {
    let spans = [
        ("camera.height_m", k.camera.height_m),
        ("camera.hfov_deg", k.camera.hfov_deg),
        ("layout.lane_width_m", k.layout.lane_width_m),
        ("layout.sidewalk_m", k.layout.sidewalk_m),
        ("layout.terrain_m", k.layout.terrain_m),
        ("layout.building_m", k.layout.building_m),
        ("look.car_roof", k.look.car_roof),
        ("look.window_share", k.look.window_share),
        ("look.storey_m", k.look.storey_m),
        ("look.crown_m", k.look.crown_m),
        ("sensor.exposure", k.sensor.exposure),
    ];
    for (name, s) in spans {
        if !(s.0.is_finite() && s.1.is_finite() && s.0 > 0.0 && s.1 >= s.0) {
            return Err(format!(
                "{domain}.{name} = [{}, {}] must be 0 < lo <= hi",
                s.0, s.1
            ));
        }
    }
    let c = &k.camera;
    if c.hfov_deg.1 >= 150.0 || c.pitch_deg.0 < -30.0 || c.pitch_deg.1 > 30.0 {
        return Err(format!(
            "{domain}.camera: hfov < 150 and |pitch| <= 30 degrees"
        ));
    }
    if !(0.0..=0.5).contains(&c.hood) {
        return Err(format!(
            "{domain}.camera.hood = {} must be in [0, 0.5]",
            c.hood
        ));
    }
    let probs = [
        k.layout.sidewalk_prob,
        k.layout.terrain_prob,
        k.layout.near_poles,
        k.classes.truck_share + k.classes.bus_share,
        k.classes.bicycle_share,
        k.look.palm_share,
        k.layout.attachments.iter().sum(),
    ];
    if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(format!("{domain}: probabilities and shares (summed where they share a draw) must lie in [0, 1]"));
    }
    if k.layout.facade_mix.iter().any(|&v| v < 0.0)
        || k.layout.facade_mix.iter().sum::<f32>() <= 0.0
    {
        return Err(format!(
            "{domain}.layout.facade_mix must be >= 0 with a positive sum"
        ));
    }
    if k.layout.lanes.0 == 0 || k.layout.lanes.1 < k.layout.lanes.0 {
        return Err(format!("{domain}.layout.lanes must be 1 <= min <= max"));
    }
    Ok(())
}

/// `value` with every key of `over` put in, recursing into tables.
fn merge(value: &mut toml::Value, over: toml::Value) {
    match (value, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, v) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, v),
                    None => {
                        base.insert(key, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The knobs of version 2: the defaults, with the keys of the TOML file `path` (if any)
/// put over them; every knob is then checked.
pub(crate) fn resolve(path: Option<&std::path::Path>) -> Result<Knobs, crate::error::Error> {
    use crate::error::Error;
    let mut knobs = Knobs::default();
    if let Some(path) = path {
        let parse = |msg: String| Error::ConfigParse {
            path: path.to_path_buf(),
            msg: format!("{msg} (the knobs and their defaults: docs/benchmark.md)"),
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let over: toml::Value = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let mut value = toml::Value::try_from(knobs).map_err(|e| parse(e.to_string()))?;
        merge(&mut value, over);
        knobs = value
            .try_into()
            .map_err(|e: toml::de::Error| parse(e.to_string()))?;
    }
    for (k, name) in [(&knobs.source, "source"), (&knobs.target, "target")] {
        check(k, name).map_err(Error::InvalidConfig)?;
    }
    Ok(knobs)
}
