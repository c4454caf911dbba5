//! The training configuration: every knob of Algorithm 1 and Eq. 1-10 of the paper,
//! nested as burn's `TrainingConfig` is: the network ([`ModelConfig`] of rccr-models), the
//! data, the method, the optimiser and the run. Each default is stated once, beside its
//! field ([`sections`]); the command line's help prints the values of
//! [`TrainConfig::default`]. Serde-serialisable, so a configuration comes from a TOML or
//! JSON file (`--config`), is overridden on the command line, travels inside every
//! checkpoint and is written, resolved, to `RUN_DIR/config.json`. Files and checkpoints
//! of the earlier flat form (every key at the top level) still load (module `legacy`).

pub(crate) mod legacy;
pub mod sections;

pub use rccr_infer::Size;
pub use rccr_models::ModelConfig;
pub use sections::{
    Components, DataConfig, DistBackend, DistConfig, FdConfig, MethodConfig, MicConfig, Mode,
    MuSchedule, OptimConfig, Optimizer, Precision, RcsConfig, RunConfig, THING_CLASSES,
};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Every setting of a training run; the defaults are the paper's (Sec. 4.1.2) and, where
/// the paper is silent, the reference code's (docs/design.md#reference-code-choices), as
/// each field's doc says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct TrainConfig {
    /// The network trained (paper: DeepLab-v2 on ResNet-101, 19 classes, 4 ASPP branches).
    pub model: ModelConfig,
    /// The datasets, their sizes and the batches.
    pub data: DataConfig,
    /// The losses, the sampling of L_cont, the memory bank and the augmentation.
    pub method: MethodConfig,
    /// SGD, the learning-rate schedule and the EMA teacher.
    pub optim: OptimConfig,
    /// Iterations, device, seeds, starting weights, checkpoints, validation, logging.
    pub run: RunConfig,
}

/// The nested form as serde reads it (the fields of [`TrainConfig`]).
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Nested {
    model: ModelConfig,
    data: DataConfig,
    method: MethodConfig,
    optim: OptimConfig,
    run: RunConfig,
}

impl Default for Nested {
    fn default() -> Self {
        let TrainConfig {
            model,
            data,
            method,
            optim,
            run,
        } = TrainConfig::default();
        Nested {
            model,
            data,
            method,
            optim,
            run,
        }
    }
}

impl TryFrom<serde_json::Value> for TrainConfig {
    type Error = String;
    /// Reads the nested form, or the flat form moved into it (`legacy::nest`).
    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        let serde_json::Value::Object(doc) = value else {
            return Err("a configuration must be a table of settings".into());
        };
        let nested = serde_json::Value::Object(legacy::nest(doc)?);
        let n: Nested = serde_json::from_value(nested).map_err(|e| e.to_string())?;
        Ok(TrainConfig {
            model: n.model,
            data: n.data,
            method: n.method,
            optim: n.optim,
            run: n.run,
        })
    }
}

impl TrainConfig {
    /// Reads a config file: TOML (`.toml`) or JSON (anything else), nested or of the
    /// earlier flat form. Missing fields take their defaults; unknown fields are an error
    /// (they are usually typos).
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::io_at(path))?;
        let parse = |msg: String| Error::ConfigParse {
            path: path.to_path_buf(),
            msg,
        };
        let doc: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| parse(e.to_string()))?
        } else {
            serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?
        };
        warn_flat_keys(path, &doc);
        TrainConfig::try_from(doc).map_err(parse)
    }

    /// Whether L_cont runs (mode `rccr` with RWC on).
    pub fn contrastive(&self) -> bool {
        self.method.mode == Mode::Rccr && self.method.components.rwc
    }

    /// Whether the mean teacher and ClassMix run (modes `baseline` and `rccr`).
    pub fn mean_teacher(&self) -> bool {
        self.method.mode != Mode::SourceOnly
    }

    /// Checks ranges (not the data paths; the loaders do that).
    pub fn validate(&self) -> Result<()> {
        self.model
            .validate()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        self.validate_data()?;
        self.validate_ranges()?;
        self.validate_strategies()?;
        self.validate_run()
    }

    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        if d.crop < 16 || !d.crop.is_multiple_of(8) {
            return invalid(format!(
                "data.crop must be a multiple of 8 and at least 16, got {}",
                d.crop
            ));
        }
        if d.batch_size == 0 {
            return invalid("data.batch_size must be at least 1".into());
        }
        Ok(())
    }

    /// The numeric ranges of the method and the optimiser.
    fn validate_ranges(&self) -> Result<()> {
        let (m, o) = (&self.method, &self.optim);
        let positive = [
            ("optim.lr", o.lr),
            ("optim.head_lr_mult", o.head_lr_mult),
            ("method.tau", m.tau),
        ];
        check_each(&positive, "positive", |v| v.is_finite() && v > 0.0)?;
        let unit = [
            ("optim.momentum", o.momentum),
            ("optim.ema_alpha", o.ema_alpha),
            ("method.pseudo_threshold", m.pseudo_threshold),
            ("method.ps_threshold", m.ps_threshold),
            ("method.jitter_prob", m.jitter_prob),
            ("method.blur_prob", m.blur_prob),
        ];
        check_each(&unit, "in [0, 1]", |v| (0.0..=1.0).contains(&v))?;
        let fraction = [("method.ns_random_fraction", m.ns_random_fraction)];
        check_each(&fraction, "in (0, 1]", |v| v > 0.0 && v <= 1.0)?;
        let non_negative = [
            ("optim.weight_decay", o.weight_decay),
            ("optim.poly_power", o.poly_power),
            ("method.lambda_cons", m.lambda_cons),
            ("method.mu_max", m.mu_max),
            ("method.jitter_strength", m.jitter_strength),
        ];
        check_each(&non_negative, ">= 0", |v| v.is_finite() && v >= 0.0)?;
        if m.anchor_chunk == 0 {
            return invalid("method.anchor_chunk must be at least 1".into());
        }
        Ok(())
    }

    /// The successors' switches: ranges, and combinations that cannot work.
    fn validate_strategies(&self) -> Result<()> {
        let (d, m, o) = (&self.data, &self.method, &self.optim);
        check_each(
            &[
                ("data.rcs.temperature", d.rcs.temperature),
                ("optim.adam_eps", o.adam_eps),
            ],
            "positive",
            |v| v.is_finite() && v > 0.0,
        )?;
        check_each(
            &[
                ("data.rcs.min_pixel_share", d.rcs.min_pixel_share),
                ("data.rcs.min_crop_ratio", d.rcs.min_crop_ratio),
                ("method.fd.min_ratio", m.fd.min_ratio),
                ("method.mic.jitter_prob", m.mic.jitter_prob),
                ("method.mic.blur_prob", m.mic.blur_prob),
                ("optim.warmup_ratio", o.warmup_ratio),
            ],
            "in [0, 1]",
            |v| (0.0..=1.0).contains(&v),
        )?;
        check_each(
            &[
                ("method.mic.ratio", m.mic.ratio),
                ("optim.beta1", o.beta1),
                ("optim.beta2", o.beta2),
            ],
            "in [0, 1)",
            |v| (0.0..1.0).contains(&v),
        )?;
        check_each(
            &[
                ("method.fd.lambda", m.fd.lambda),
                ("method.mic.lambda", m.mic.lambda),
            ],
            ">= 0",
            |v| v.is_finite() && v >= 0.0,
        )?;
        self.validate_masks()
    }

    /// MIC's patches must tile the crop; the ignored rows must leave some; MIC needs a
    /// teacher; FD's classes must exist when it is on.
    fn validate_masks(&self) -> Result<()> {
        let (crop, m) = (self.data.crop, &self.method);
        let patch = m.mic.patch.unwrap_or(crop / 8);
        if m.mic.enabled && (patch == 0 || !crop.is_multiple_of(patch)) {
            return invalid(format!(
                "method.mic.patch ({patch}) must divide data.crop ({crop})"
            ));
        }
        if m.mic.enabled && self.method.mode == Mode::SourceOnly {
            return invalid(
                "method.mic needs the teacher's pseudo-labels: mode baseline or rccr".into(),
            );
        }
        if m.pseudo_ignore_top + m.pseudo_ignore_bottom >= crop {
            return invalid(format!(
                "method.pseudo_ignore_top + pseudo_ignore_bottom ({} + {}) must be below \
                 data.crop ({crop})",
                m.pseudo_ignore_top, m.pseudo_ignore_bottom
            ));
        }
        let n = self.model.num_classes;
        let bad_class = m.fd.classes.iter().find(|&&c| c < 0 || c >= n);
        if let Some(c) = bad_class.filter(|_| m.fd.enabled) {
            return invalid(format!(
                "method.fd.classes holds {c}, not a class of a {n}-class network"
            ));
        }
        Ok(())
    }

    fn validate_run(&self) -> Result<()> {
        let r = &self.run;
        if r.iterations == 0 {
            return invalid("run.iterations must be at least 1".into());
        }
        if r.init.is_some() && r.init_from.is_some() {
            return invalid(
                "run.init (an ImageNet backbone) and run.init_from (an rccr model) exclude \
                 each other"
                    .into(),
            );
        }
        if r.dist.timeout_s == 0 {
            return invalid("run.dist.timeout_s must be at least 1".into());
        }
        if r.log_every == 0 {
            return invalid("run.log_every must be at least 1".into());
        }
        Ok(())
    }
}

fn invalid(msg: String) -> Result<()> {
    Err(Error::InvalidConfig(msg))
}

/// The first of the named `values` that is not `ok`, as "NAME must be RULE, got V".
fn check_each(values: &[(&str, f64)], rule: &str, ok: impl Fn(f64) -> bool) -> Result<()> {
    match values.iter().find(|&&(_, v)| !ok(v)) {
        Some((name, v)) => invalid(format!("{name} must be {rule}, got {v}")),
        None => Ok(()),
    }
}

/// A warning naming the new key of every flat-form key in a config file.
fn warn_flat_keys(path: &Path, doc: &serde_json::Value) {
    let Some(table) = doc.as_object() else {
        return;
    };
    let moved: Vec<String> = table
        .keys()
        .filter_map(|k| legacy::section_of(k).map(|s| format!("{k} -> {s}.{k}")))
        .collect();
    if !moved.is_empty() {
        tracing::warn!(
            file = %path.display(),
            "flat configuration keys read into their sections ({}); write them nested",
            moved.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rccr_models::Backbone;

    #[test]
    fn defaults_are_the_papers() {
        let c = TrainConfig::default();
        let (o, m) = (&c.optim, &c.method);
        assert_eq!(o.lr, 2.5e-4);
        assert_eq!(o.lr * o.head_lr_mult, 2.5e-3);
        assert_eq!((o.momentum, o.weight_decay, o.poly_power), (0.9, 5e-4, 0.9));
        assert_eq!((m.tau, m.ps_threshold, m.bank_iterations), (0.1, 0.75, 3));
        assert_eq!(
            (c.data.crop, c.data.batch_size, c.run.iterations),
            (512, 2, 250_000)
        );
        assert_eq!(m.lambda_cons, 1.0);
        assert_eq!(c.model, ModelConfig::new(Backbone::Resnet101, 19));
        c.validate().unwrap();
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn nested_toml_overrides_and_rejects_typos() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "[model]\nbackbone = \"small\"\n[data]\nsource_size = \"64x32\"\n\
             [method.components]\nmb = false\n[run]\niterations = 10\n",
        );
        let c = TrainConfig::from_file(&p).unwrap();
        assert_eq!(c.run.iterations, 10);
        assert_eq!(c.model.backbone, Backbone::Small);
        assert_eq!(c.data.source_size, Some(Size::new(64, 32)));
        assert!(!c.method.components.mb && c.method.components.ps);
        write(dir.path(), "c.toml", "[run]\niteratons = 10\n");
        let err = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("iteratons"), "{err}");
    }

    /// A config file of the flat form (as written before the sections) loads into the
    /// same configuration as its nested equivalent.
    #[test]
    fn flat_toml_of_the_earlier_form_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let flat = write(
            dir.path(),
            "flat.toml",
            "iterations = 10\nbackbone = \"small\"\nsource_size = \"64x32\"\nlr = 0.001\n\
             mode = \"baseline\"\naspp_branches = 2\n[components]\nmb = false\n\
             [dist]\ntimeout_s = 30\n",
        );
        let nested = write(
            dir.path(),
            "nested.toml",
            "[model]\nbackbone = \"small\"\naspp_branches = 2\n[data]\nsource_size = \"64x32\"\n\
             [method]\nmode = \"baseline\"\n[method.components]\nmb = false\n\
             [optim]\nlr = 0.001\n[run]\niterations = 10\n[run.dist]\ntimeout_s = 30\n",
        );
        let a = TrainConfig::from_file(&flat).unwrap();
        assert_eq!(a, TrainConfig::from_file(&nested).unwrap());
        assert_eq!((a.run.iterations, a.optim.lr), (10, 0.001));
        assert_eq!(a.method.mode, Mode::Baseline);
        assert_eq!(a.run.dist.timeout_s, 30);
        write(dir.path(), "flat.toml", "iteratons = 10\n");
        assert!(TrainConfig::from_file(&flat).is_err());
    }

    /// A flat key given beside its new place, or in a section not its own, fails with a
    /// message naming the new key.
    #[test]
    fn a_misplaced_key_names_its_new_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.toml", "lr = 0.1\n[optim]\nlr = 0.2\n");
        let err = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("keep only `optim.lr`"), "{err}");
        write(dir.path(), "c.toml", "[run]\nlr = 0.1\n");
        let err = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("belongs in `optim.lr`"), "{err}");
    }

    /// The flat JSON a checkpoint of the earlier form carries loads; the nested form
    /// round-trips through JSON.
    #[test]
    fn flat_json_loads_and_nested_json_round_trips() {
        let flat = r#"{"mode":"rccr","backbone":"small","num_classes":19,"iterations":7,
            "crop":64,"dist":{"backend":"auto","timeout_s":600,"sync_bn":false,
            "world_size":1,"backend_used":"none"},"crop_padding":[0.5,0.0]}"#;
        let c: TrainConfig = serde_json::from_str(flat).unwrap();
        assert_eq!((c.run.iterations, c.data.crop), (7, 64));
        assert_eq!(c.data.crop_padding, [0.5, 0.0]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["run"]["iterations"], 7);
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), c);
    }
}
