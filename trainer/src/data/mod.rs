//! Dataset loaders (GTA5, SYNTHIA RAND-CITYSCAPES, Cityscapes) and the prefetching batch
//! pipeline that feeds paper Algorithm 1: source batches (x_s, y_s) and target batches x_t.
//!
//! The on-disk layouts are the datasets' own releases; resize sizes and crops follow the
//! paper (Section 4, the DACS protocol): GTA5 `images/` + `labels/` (Cityscapes labelIds) resized to 1280x720, SYNTHIA
//! `RGB/` + 16-bit `GT/LABELS/` resized to 1280x760, Cityscapes `leftImg8bit/` + `gtFine/`
//! resized to 1024x512; random square crops (paper: 512). Unknown ids map to 255.
//!
//! - `layout`: finding image/label pairs in a dataset folder.
//! - `decode`: PNG decoding and label-id -> trainId mapping.
//! - `augment`: resizing and deterministic random cropping.
//! - `loader`: the infinite, deterministic, multi-threaded [`TrainLoader`].
//! - `val`: the fixed-order validation set [`ValSet`].
//! - `ahead`: the worker threads both decode on, delivering in order.
//! - `rcs`: rare-class sampling of the source (DAFormer Sec. 3.3), its cached statistics.

mod ahead;
pub(crate) mod augment;
pub(crate) mod decode;
pub(crate) mod layout;
pub(crate) mod loader;
pub(crate) mod rcs;
pub(crate) mod val;

pub(crate) use crate::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use loader::{Batch, TrainLoader};
pub use rcs::{
    cache_path, class_probabilities, min_pixels, RcsClass, RcsDraw, RcsReport, RcsTable,
    CLASS_SLOTS,
};
pub use val::{ValSample, ValSet};

/// Which dataset format a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// GTA5: `images/*.png` + `labels/*.png` (Cityscapes labelIds).
    Gta5,
    /// SYNTHIA RAND-CITYSCAPES: `RGB/*.png` + `GT/LABELS/*.png` (16-bit, id in channel 0).
    Synthia,
    /// Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` +
    /// `gtFine/<split>/<city>/*_gtFine_labelIds.png`.
    Cityscapes,
}

impl DatasetKind {
    /// The name used in dataset specs (`gta5`, `synthia`, `cityscapes`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Gta5 => "gta5",
            DatasetKind::Synthia => "synthia",
            DatasetKind::Cityscapes => "cityscapes",
        }
    }

    /// The paper's training resize (W, H) for this dataset (Section 4, the DACS protocol):
    /// GTA5 1280x720, SYNTHIA 1280x760, Cityscapes 1024x512.
    pub fn paper_size(self) -> (u32, u32) {
        match self {
            DatasetKind::Gta5 => (1280, 720),
            DatasetKind::Synthia => (1280, 760),
            DatasetKind::Cityscapes => (1024, 512),
        }
    }

    /// The expected folder layout, for error messages.
    pub fn expected_layout(self) -> &'static str {
        match self {
            DatasetKind::Gta5 => "DIR/images/*.png with matching DIR/labels/*.png (Cityscapes labelIds)",
            DatasetKind::Synthia => {
                "DIR/RGB/*.png with matching DIR/GT/LABELS/*.png (16-bit, class id in the first channel)"
            }
            DatasetKind::Cityscapes => {
                "DIR/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png with \
                 DIR/gtFine/<split>/<city>/<name>_gtFine_labelIds.png"
            }
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset: its format and root folder. Written `gta5:DIR`, `synthia:DIR` or
/// `cityscapes:DIR` on the command line and in config files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    /// The dataset format.
    pub kind: DatasetKind,
    /// The dataset's root folder.
    pub root: PathBuf,
}

impl DatasetSpec {
    /// Whether this is SYNTHIA, whose runs are also scored on its 16 and 13 classes.
    pub fn is_synthia(&self) -> bool {
        matches!(self.kind, DatasetKind::Synthia)
    }
}

impl FromStr for DatasetSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::BadSpec {
            spec: s.to_string(),
        };
        let (kind, root) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "gta5" | "gta" => DatasetKind::Gta5,
            "synthia" => DatasetKind::Synthia,
            "cityscapes" => DatasetKind::Cityscapes,
            _ => return Err(bad()),
        };
        if root.is_empty() {
            return Err(bad());
        }
        Ok(DatasetSpec {
            kind,
            root: PathBuf::from(root),
        })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.root.display())
    }
}

impl serde::Serialize for DatasetSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DatasetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which Cityscapes split a loader reads (GTA5 and SYNTHIA have no splits and ignore it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `leftImg8bit/train`, `gtFine/train`.
    #[default]
    Train,
    /// `leftImg8bit/val`, `gtFine/val`.
    Val,
}

impl Split {
    /// The folder name of the split.
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// How a [`TrainLoader`] reads, augments and batches a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// (W, H) every image (bicubic for source datasets, bilinear for Cityscapes) and label
    /// (nearest) is resized to before cropping. Default `None` = the dataset's paper size:
    /// GTA5 1280x720, SYNTHIA 1280x760, Cityscapes 1024x512 (paper Section 4).
    pub resize: Option<(u32, u32)>,
    /// Side of the square random crop. Default 512 (paper: 512). When the resized image is
    /// smaller than the crop, it is padded at the bottom/right (image 0, label 255).
    pub crop: u32,
    /// Images per batch. Default 2 (paper: 2 source + 2 target).
    pub batch_size: usize,
    /// Seed of the epoch permutations and crop offsets. Default 0 (paper: not given).
    pub seed: u64,
    /// Decoding/augmentation threads. Default: the available cores (at least 1).
    pub workers: usize,
    /// Batches decoded ahead of training (bounded queue). Default 4.
    pub prefetch: usize,
    /// Cityscapes split (`leftImg8bit/<split>/`); GTA5 and SYNTHIA ignore it. Default train.
    pub split: Split,
    /// Rare-class sampling of the pairs (DAFormer Sec. 3.3; docs/method.md). Default off;
    /// a run turns it on for the source loader only.
    pub rcs: crate::config::RcsConfig,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            resize: None,
            crop: 512,
            batch_size: 2,
            seed: 0,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            prefetch: 4,
            split: Split::Train,
            rcs: crate::config::RcsConfig::default(),
        }
    }
}

/// A tensor of `shape` holding `data`; `what` names it in the error.
pub(crate) fn tensor<T: tch::kind::Element>(
    data: &[T],
    shape: &[i64],
    what: impl Into<String>,
) -> Result<tch::Tensor, Error> {
    tch::Tensor::f_from_slice(data)
        .and_then(|t| t.f_view(shape))
        .map_err(|e| Error::Tensor {
            what: what.into(),
            reason: e.to_string(),
        })
}
