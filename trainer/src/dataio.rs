//! The one place where the trainer meets the data pipeline (`crate::data`): re-exports of
//! the loader types used by the training loop, validation and evaluation.

pub use crate::data::{
    Batch, DatasetKind, DatasetSpec, LoaderConfig, Split, TrainLoader, ValSample, ValSet,
};

/// Whether a run from this source is also scored on SYNTHIA's 16 and 13 classes.
pub fn is_synthia(spec: &DatasetSpec) -> bool {
    matches!(spec.kind, DatasetKind::Synthia)
}
