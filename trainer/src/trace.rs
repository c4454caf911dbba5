//! `rccr-train trace`: the tensors of whole iterations of Algorithm 1, written out so an
//! independent implementation can replay them (format `rccr-trace-v1`, docs/method.md "The trace").
//!
//! One safetensors file per iteration, `OUT/step_<t:07>.safetensors` (t 1-based):
//! inputs (`input.x_s`, `input.y_s`, `input.x_t`, RGB 0..255 before normalisation), the
//! mixed images and their targets (`classmix.*`, `cutmix.*`), what L_cont sees
//! (`contrast.*`, `bank.*`), every variable of both networks before and after the step
//! (`student.before.<var>`, ...), the optimiser state before it (`momentum.before.<var>`
//! or `adam.{exp_avg,exp_avg_sq,step}.before.<var>`), and the losses and schedule values
//! as float64 scalars. With the successors' switches: `frozen.<var>` and `fd.*` (feature
//! distance), `mic.*` (masked image consistency), `rcs.*` (rare-class sampling). Metadata: `rccr.format`, `rccr.model_config`,
//! `rccr.train_config`, `rccr.iteration`.

use crate::config::TrainConfig;
use crate::trainer::StepStats;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// The `rccr.format` of trace files.
pub(crate) const TRACE_FORMAT: &str = "rccr-trace-v1";

/// The tensors of the iteration being traced.
#[derive(Debug, Default)]
pub struct Trace {
    iteration: u64,
    tensors: BTreeMap<String, Tensor>,
}

impl Trace {
    /// Starts recording iteration `t` (1-based); drops what an earlier one left.
    pub(crate) fn begin(&mut self, t: u64) {
        self.iteration = t;
        self.tensors.clear();
    }

    /// Records a detached CPU copy of `t`.
    pub fn put(&mut self, name: &str, t: &Tensor) {
        let copy = tch::no_grad(|| t.detach().to_device(Device::Cpu).copy());
        self.tensors.insert(name.to_string(), copy);
    }

    /// Records every variable of `vs` under `prefix`.
    pub(crate) fn put_vars(&mut self, prefix: &str, vs: &nn::VarStore) {
        for (n, t) in vs.variables() {
            self.put(&format!("{prefix}{n}"), &t);
        }
    }

    /// Records the losses and schedule values of a finished step as float64 scalars.
    pub(crate) fn put_scalars(&mut self, s: &StepStats, lr_head: f64) {
        for (name, v) in [
            ("loss.ce", s.loss_ce),
            ("loss.cons", s.loss_cons),
            ("loss.cont", s.loss_cont),
            ("loss.fd", s.loss_fd),
            ("loss.mic", s.loss_mic),
            ("loss.total", s.loss_total),
            ("lr.backbone", s.lr),
            ("lr.head", lr_head),
            ("mu", s.mu),
            ("alpha", s.alpha),
            ("q", s.q),
        ] {
            self.tensors
                .insert(name.into(), Tensor::from(v).to_kind(Kind::Double));
        }
    }

    /// Writes `dir/step_<t:07>.safetensors` (atomically) and returns its path.
    pub fn write(&self, dir: &Path, cfg: &TrainConfig) -> Result<PathBuf, rccr_models::ModelError> {
        let path = dir.join(format!("step_{:07}.safetensors", self.iteration));
        let mut meta = HashMap::new();
        meta.insert("rccr.format".into(), TRACE_FORMAT.into());
        meta.insert(
            "rccr.model_config".into(),
            serde_json::to_string(&cfg.model).expect("model config serialises"),
        );
        meta.insert(
            "rccr.train_config".into(),
            serde_json::to_string(cfg).expect("train config serialises"),
        );
        meta.insert("rccr.iteration".into(), self.iteration.to_string());
        rccr_models::weights::write_tensors(
            &path,
            self.tensors.iter().map(|(n, t)| (n.clone(), t)),
            &meta,
        )?;
        Ok(path)
    }

    /// The recorded tensor `name` (tests).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}
