//! rccr-trainer: the RCCR training method (paper Algorithm 1) and its data pipeline.

pub mod data;
pub mod synth;
