//! How to export: the graph outputs, float16 weight storage, a fixed or dynamic input
//! shape and the opset ([`ExportOptions`]), and where the network came from ([`Source`],
//! recorded in the metadata).

use crate::ExportError;
use rccr_infer::contract::{LABELS_OUTPUT, LOGITS_OUTPUT};
use std::str::FromStr;

/// Default opset: accepted by ONNX Runtime 1.31 and TensorRT 10.
pub const DEFAULT_OPSET: i64 = 17;
/// Opsets the exporter writes (every op used has the same semantics over this range).
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// The IR version that goes with `opset` (the lowest that supports it).
pub(crate) fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// Which outputs the graph has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outputs {
    /// `labels` only (default).
    #[default]
    Labels,
    /// `logits` only.
    Logits,
    /// `labels` and `logits`.
    Both,
}

impl Outputs {
    /// The output names in graph order.
    pub fn names(self) -> Vec<&'static str> {
        match self {
            Outputs::Labels => vec![LABELS_OUTPUT],
            Outputs::Logits => vec![LOGITS_OUTPUT],
            Outputs::Both => vec![LABELS_OUTPUT, LOGITS_OUTPUT],
        }
    }
}

impl FromStr for Outputs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "labels" => Ok(Outputs::Labels),
            "logits" => Ok(Outputs::Logits),
            "both" => Ok(Outputs::Both),
            _ => Err(format!(
                "unknown outputs `{s}` (expected labels, logits or both)"
            )),
        }
    }
}

/// A batch and image size: `N x H x W` (3 channels implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// Batch size N.
    pub n: i64,
    /// Height H.
    pub h: i64,
    /// Width W.
    pub w: i64,
}

impl Shape {
    /// `[N, 3, H, W]`.
    pub fn nchw(self) -> [i64; 4] {
        [self.n, 3, self.h, self.w]
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x3x{}x{}", self.n, self.h, self.w)
    }
}

impl FromStr for Shape {
    type Err = String;
    /// `NxHxW` or `Nx3xHxW`, every number positive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad shape `{s}`: expected NxHxW or Nx3xHxW, e.g. 1x512x1024");
        let v: Vec<i64> = s
            .split(['x', 'X'])
            .map(|p| p.trim().parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let (n, h, w) = match v.as_slice() {
            [n, h, w] => (*n, *h, *w),
            [n, 3, h, w] => (*n, *h, *w),
            _ => return Err(bad()),
        };
        if n < 1 || h < 1 || w < 1 {
            return Err(bad());
        }
        Ok(Shape { n, h, w })
    }
}

/// How to export.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportOptions {
    /// Graph outputs. Default: labels.
    pub outputs: Outputs,
    /// Store the weights as float16 (each followed by a Cast to float32, so inputs,
    /// outputs and arithmetic stay float32; halves the file). Default: false.
    pub fp16: bool,
    /// A fixed input shape instead of dynamic N, H, W (for TensorRT engines built ahead
    /// of time). Default: dynamic.
    pub fixed_shape: Option<Shape>,
    /// The ONNX opset, in [`OPSETS`]. Default: [`DEFAULT_OPSET`].
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            outputs: Outputs::Labels,
            fp16: false,
            fixed_shape: None,
            opset: DEFAULT_OPSET,
        }
    }
}

impl ExportOptions {
    /// Refuses an opset outside [`OPSETS`].
    pub(crate) fn check(&self) -> Result<(), ExportError> {
        if OPSETS.contains(&self.opset) {
            return Ok(());
        }
        Err(ExportError::Options(format!(
            "opset {} is not supported: use {} to {} (default {DEFAULT_OPSET})",
            self.opset,
            OPSETS.start(),
            OPSETS.end()
        )))
    }
}

/// Where the exported network came from (recorded in the metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The checkpoint path as given.
    pub checkpoint: String,
    /// The training iteration it was written at.
    pub iteration: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes() {
        assert_eq!(
            "2x64x96".parse::<Shape>().unwrap(),
            Shape { n: 2, h: 64, w: 96 }
        );
        assert_eq!(
            "1x3x65x65".parse::<Shape>().unwrap(),
            Shape { n: 1, h: 65, w: 65 }
        );
        for bad in [
            "",
            "1x2",
            "1x4x5x6",
            "0x8x8",
            "1x-8x8",
            "axbxc",
            "1x2x3x4x5",
        ] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ir_versions_follow_the_onnx_table() {
        assert_eq!(ir_version(17), 8);
        assert_eq!(ir_version(18), 8);
        assert_eq!(ir_version(19), 9);
        assert_eq!(ir_version(20), 9);
        assert_eq!(ir_version(21), 10);
    }
}
