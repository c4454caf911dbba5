//! Finding the image/label pairs of a dataset folder in its real on-disk layout
//! (implementation notes, "Data"): GTA5 `images/` + `labels/`, SYNTHIA `RGB/` +
//! `GT/LABELS/`, Cityscapes `leftImg8bit/<split>/<city>/` + `gtFine/<split>/<city>/`.
//! Pairs are sorted by name so that the sample order never depends on the file system.

use std::path::{Path, PathBuf};

use super::{DatasetKind, DatasetSpec, Error, Split};

/// One sample on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The RGB image.
    pub image: PathBuf,
    /// Its label map; `None` for a Cityscapes split without `gtFine` (images only).
    pub label: Option<PathBuf>,
    /// A short name: the file stem (Cityscapes: without `_leftImg8bit`).
    pub name: String,
}

/// The pairs found in a dataset folder, and how many images had no label.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The pairs, sorted by name.
    pub pairs: Vec<Pair>,
    /// Images skipped because their label file is missing.
    pub unpaired: usize,
}

fn is_png(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

fn require_dir(kind: DatasetKind, path: &Path) -> Result<(), Error> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(Error::MissingDir {
            kind,
            path: path.to_path_buf(),
            expected: kind.expected_layout(),
        })
    }
}

/// The `*.png` files directly inside `dir`, sorted.
fn pngs_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Read {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::Read {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let p = entry.path();
        if is_png(&p) && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Flat layouts (GTA5, SYNTHIA): `root/<images>/<name>.png` with `root/<labels>/<name>.png`.
fn flat(spec: &DatasetSpec, images: &Path, labels: &Path) -> Result<Discovered, Error> {
    let kind = spec.kind;
    let img_dir = spec.root.join(images);
    let lbl_dir = spec.root.join(labels);
    require_dir(kind, &spec.root)?;
    require_dir(kind, &img_dir)?;
    require_dir(kind, &lbl_dir)?;
    let mut pairs = Vec::new();
    let mut unpaired = 0;
    for image in pngs_in(&img_dir)? {
        let Some(file) = image.file_name() else {
            continue;
        };
        let label = lbl_dir.join(file);
        let name = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        pair_if_labelled(&mut pairs, &mut unpaired, image, label, name);
    }
    Ok(Discovered { pairs, unpaired })
}

/// Adds `image` with `label` when the label file exists; else warns and counts it unpaired.
fn pair_if_labelled(
    pairs: &mut Vec<Pair>,
    unpaired: &mut usize,
    image: PathBuf,
    label: PathBuf,
    name: String,
) {
    if label.is_file() {
        pairs.push(Pair {
            image,
            label: Some(label),
            name,
        });
    } else {
        tracing::warn!(
            image = %image.display(),
            label = %label.display(),
            "image without label, skipped"
        );
        *unpaired += 1;
    }
}

const CS_IMAGE_SUFFIX: &str = "_leftImg8bit.png";
const CS_LABEL_SUFFIX: &str = "_gtFine_labelIds.png";

/// Cityscapes: `root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` with
/// `root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png`. When `gtFine/<split>` does
/// not exist and `labels_required` is false, the images are returned without labels.
fn cityscapes(
    spec: &DatasetSpec,
    split: Split,
    labels_required: bool,
) -> Result<Discovered, Error> {
    let kind = spec.kind;
    require_dir(kind, &spec.root)?;
    let img_root = spec.root.join("leftImg8bit").join(split.dir_name());
    let lbl_root = spec.root.join("gtFine").join(split.dir_name());
    require_dir(kind, &img_root)?;
    let with_labels = lbl_root.is_dir();
    if !with_labels {
        if labels_required {
            require_dir(kind, &lbl_root)?;
        }
        tracing::warn!(
            folder = %lbl_root.display(),
            "no gtFine labels for this split: images only (labels are all 255)"
        );
    }
    let rd = std::fs::read_dir(&img_root).map_err(|e| Error::Read {
        path: img_root.clone(),
        source: e,
    })?;
    let mut cities = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::Read {
            path: img_root.clone(),
            source: e,
        })?;
        if entry.path().is_dir() {
            cities.push(entry.file_name());
        }
    }
    cities.sort();
    let mut pairs = Vec::new();
    let mut unpaired = 0;
    for city in cities {
        for image in pngs_in(&img_root.join(&city))? {
            let file = image
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(stem) = file.strip_suffix(CS_IMAGE_SUFFIX) else {
                continue;
            };
            let name = stem.to_string();
            if !with_labels {
                pairs.push(Pair {
                    image,
                    label: None,
                    name,
                });
                continue;
            }
            let label = lbl_root
                .join(&city)
                .join(format!("{stem}{CS_LABEL_SUFFIX}"));
            pair_if_labelled(&mut pairs, &mut unpaired, image, label, name);
        }
    }
    Ok(Discovered { pairs, unpaired })
}

/// Lists the samples of `spec` (Cityscapes: of `split`). Training accepts a Cityscapes
/// split without `gtFine` (target images only); validation (`labels_required`) does not.
/// Returns an error naming the expected layout when nothing usable is found.
pub fn discover(
    spec: &DatasetSpec,
    split: Split,
    labels_required: bool,
) -> Result<Discovered, Error> {
    let found = match spec.kind {
        DatasetKind::Gta5 => flat(spec, Path::new("images"), Path::new("labels"))?,
        DatasetKind::Synthia => flat(spec, Path::new("RGB"), &Path::new("GT").join("LABELS"))?,
        DatasetKind::Cityscapes => cityscapes(spec, split, labels_required)?,
    };
    if found.pairs.is_empty() {
        let detail = if found.unpaired > 0 {
            format!(" ({} images without a matching label)", found.unpaired)
        } else {
            String::new()
        };
        return Err(Error::NoSamples {
            kind: spec.kind,
            root: spec.root.clone(),
            detail,
            expected: spec.kind.expected_layout(),
        });
    }
    Ok(found)
}
