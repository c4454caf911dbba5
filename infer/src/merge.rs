//! Merging the JSON reports of disjoint image sets (`rccr-infer score --merge a.json
//! b.json ...`): the shards of one `--shard K/N` run over a fleet of machines become the
//! report one run over all images gives.
//!
//! Scores come from the summed confusion matrices (integer counts, so the merged mIoU,
//! per-class IoUs and pixel accuracy are bit-for-bit those of one run); image counts add
//! up and the skipped inputs are concatenated in file order. Timings cannot be equal to
//! another run's: `seconds` is the shards' total compute time, `images_per_second` the
//! images over it, `stage_ms` the image-weighted mean. Sharded reports must form one
//! complete set (every K of one N exactly once); all reports must agree on the classes
//! averaged, the model file name and the input size.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};
use crate::files::Shard;
use crate::report::{ConfusionCounts, Report, Skipped, StageTimes};
use crate::score::Scores;
use crate::taxonomy::Protocol;

/// The fields of a report that merging reads.
#[derive(Debug, Clone, serde::Deserialize)]
struct Part {
    classes: usize,
    images: usize,
    #[serde(default)]
    skipped: Vec<Skipped>,
    provider: Option<String>,
    seconds: f64,
    model: Option<String>,
    input_size: Option<[u32; 2]>,
    batch_size: Option<usize>,
    stage_ms: Option<StageTimes>,
    megapixels_per_second: Option<f64>,
    shard: Option<Shard>,
    confusion: Option<ConfusionCounts>,
}

fn merge_error(path: &Path, reason: impl Into<String>) -> InferError {
    InferError::Merge {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_part(path: &Path) -> Result<Part> {
    let text =
        std::fs::read_to_string(path).map_err(|e| InferError::io("cannot read report", path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        merge_error(
            path,
            format!("not an rccr-infer JSON report ({e}); write one with --json"),
        )
    })
}

/// Merges the reports in `paths` (see the module docs).
pub fn merge_files(paths: &[PathBuf]) -> Result<Report> {
    let parts = paths
        .iter()
        .map(|p| Ok((p.clone(), read_part(p)?)))
        .collect::<Result<Vec<_>>>()?;
    merge_parts(&parts)
}

/// Every shard of one N exactly once, or no shard information at all.
fn check_shards(parts: &[(PathBuf, Part)]) -> Result<()> {
    let Some((first_path, first)) = parts.iter().find(|(_, p)| p.shard.is_some()) else {
        return Ok(());
    };
    let n = first.shard.map_or(0, |s| s.count);
    let mut seen: Vec<Option<&Path>> = vec![None; n + 1];
    for (path, part) in parts {
        let Some(shard) = part.shard else {
            return Err(merge_error(path, format!(
                "it covers a whole image folder but {} is shard {}: merge the N shard reports of one run",
                first_path.display(),
                first.shard.map_or_else(String::new, |s| s.to_string())
            )));
        };
        if shard.count != n {
            return Err(merge_error(
                path,
                format!(
                    "it is shard {shard} but {} is one of {n} shards: merge the shards of one run",
                    first_path.display()
                ),
            ));
        }
        if let Some(other) = seen[shard.index] {
            return Err(merge_error(
                path,
                format!(
                    "shard {shard} is also {}: give each shard once",
                    other.display()
                ),
            ));
        }
        seen[shard.index] = Some(path);
    }
    let missing: Vec<String> = (1..=n)
        .filter(|&k| seen[k].is_none())
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(merge_error(
            first_path,
            format!(
                "shard(s) {} missing: give the reports of all {n} shards",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The value every part agrees on (`None` when all lack it); an error naming the first
/// part that differs.
fn agreed<T: PartialEq + Clone + std::fmt::Debug>(
    parts: &[(PathBuf, Part)],
    what: &str,
    get: impl Fn(&Part) -> Option<T>,
) -> Result<Option<T>> {
    let (first_path, first) = &parts[0];
    let want = get(first);
    for (path, part) in &parts[1..] {
        let got = get(part);
        if got != want {
            return Err(merge_error(
                path,
                format!(
                "its {what} is {got:?} but {} has {want:?}: merge reports of one model and setting",
                first_path.display()
            ),
            ));
        }
    }
    Ok(want)
}

/// The summed confusion counts, `None` when no part has any; an error when only some do.
fn merged_confusion(parts: &[(PathBuf, Part)]) -> Result<Option<Scores>> {
    let classes = agreed(parts, "number of classes averaged", |p| Some(p.classes))?;
    let protocol = classes.and_then(Protocol::from_count).ok_or_else(|| {
        merge_error(
            &parts[0].0,
            format!("`classes` is {classes:?}, not 19, 16 or 13"),
        )
    })?;
    let mut total = None;
    for (path, part) in parts {
        let Some(c) = &part.confusion else {
            if parts.iter().any(|(_, p)| p.confusion.is_some()) {
                return Err(merge_error(path, "it has no confusion matrix (run without --labels, or by an older rccr-infer): score it again with --labels"));
            }
            return Ok(None);
        };
        let cm = c
            .matrix()
            .ok_or_else(|| merge_error(path, "its confusion matrix is not square"))?;
        let acc =
            total.get_or_insert_with(|| crate::metrics::ConfusionMatrix::new(cm.num_classes()));
        if !acc.merge(&cm) {
            return Err(merge_error(
                path,
                "its confusion matrix has another number of classes",
            ));
        }
    }
    Ok(total.map(|confusion| Scores {
        confusion,
        protocol,
    }))
}

/// The image-weighted mean of the parts' per-image stage times.
fn merged_stages(parts: &[(PathBuf, Part)]) -> Option<StageTimes> {
    let images: usize = parts.iter().map(|(_, p)| p.images).sum();
    if images == 0 || parts.iter().any(|(_, p)| p.stage_ms.is_none()) {
        return None;
    }
    let mean = |f: fn(&StageTimes) -> f64| {
        parts
            .iter()
            .filter_map(|(_, p)| p.stage_ms.as_ref().map(|s| f(s) * p.images as f64))
            .sum::<f64>()
            / images as f64
    };
    Some(StageTimes {
        decode_ms: mean(|s| s.decode_ms),
        preprocess_ms: mean(|s| s.preprocess_ms),
        model_ms: mean(|s| s.model_ms),
        postprocess_ms: mean(|s| s.postprocess_ms),
        write_ms: mean(|s| s.write_ms),
    })
}

/// The providers that ran the parts, distinct, joined with commas.
fn merged_provider(parts: &[(PathBuf, Part)]) -> Option<String> {
    let names: BTreeSet<&str> = parts
        .iter()
        .filter_map(|(_, p)| p.provider.as_deref())
        .collect();
    (!names.is_empty()).then(|| names.into_iter().collect::<Vec<_>>().join(","))
}

fn file_name(model: &str) -> String {
    Path::new(model)
        .file_name()
        .map_or_else(|| model.to_string(), |n| n.to_string_lossy().into_owned())
}

/// Merges parsed reports (see the module docs).
fn merge_parts(parts: &[(PathBuf, Part)]) -> Result<Report> {
    if parts.is_empty() {
        return Err(InferError::Invalid(
            "score --merge needs at least one report".into(),
        ));
    }
    check_shards(parts)?;
    agreed(parts, "model file", |p| p.model.as_deref().map(file_name))?;
    let input_size = agreed(parts, "input size", |p| p.input_size)?;
    let scores = merged_confusion(parts)?;
    let images: usize = parts.iter().map(|(_, p)| p.images).sum();
    let seconds: f64 = parts.iter().map(|(_, p)| p.seconds).sum();
    let mut skipped: Vec<Skipped> = parts.iter().flat_map(|(_, p)| p.skipped.clone()).collect();
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    let mpps = parts
        .iter()
        .map(|(_, p)| p.megapixels_per_second.map(|v| v * p.seconds))
        .sum::<Option<f64>>()
        .map(|mp| mp / seconds.max(1e-9));
    let batch = parts[0].1.batch_size;
    let mut report = Report {
        classes: parts[0].1.classes,
        images,
        skipped,
        provider: merged_provider(parts),
        images_per_second: if seconds > 0.0 {
            images as f64 / seconds
        } else {
            0.0
        },
        megapixels_per_second: mpps,
        seconds,
        model: parts[0].1.model.clone(),
        input_size,
        batch_size: batch.filter(|_| parts.iter().all(|(_, p)| p.batch_size == batch)),
        stage_ms: merged_stages(parts),
        ..Report::default()
    };
    if let Some(scores) = scores {
        report.set_scores(&scores);
    }
    Ok(report)
}
