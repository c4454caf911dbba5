//! Finding the image/label pairs of a dataset folder in its real on-disk layout
//! (each dataset's own release): GTA5 `images/` + `labels/`, SYNTHIA `RGB/` +
//! `GT/LABELS/`, Cityscapes `leftImg8bit/<split>/<city>/` + `gtFine/<split>/<city>/`.
//! Pairs are sorted by name so that the sample order never depends on the file system.

use std::path::{Path, PathBuf};

use super::{DatasetKind, DatasetSpec, Error, Split};

/// One sample on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    /// The RGB image.
    pub(crate) image: PathBuf,
    /// Its label map; `None` for a Cityscapes split without `gtFine` (images only).
    pub(crate) label: Option<PathBuf>,
    /// A short name: the file stem (Cityscapes: without `_leftImg8bit`).
    pub(crate) name: String,
}

/// The pairs found in a dataset folder, and how many images had no label.
#[derive(Debug, Clone)]
pub(crate) struct Discovered {
    /// The pairs, sorted by name.
    pub(crate) pairs: Vec<Pair>,
    /// Images skipped because their label file is missing.
    pub(crate) unpaired: usize,
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

/// The entries directly inside `dir` that pass `keep`, sorted.
fn entries_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, Error> {
    let io = |e| Error::Read {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if keep(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The `*.png` files directly inside `dir`, sorted.
fn pngs_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    entries_in(dir, |p| is_png(p) && p.is_file())
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
    require_dir(kind, &img_root)?;
    let lbl_root = cityscapes_label_root(spec, split, labels_required)?;
    let mut found = Discovered {
        pairs: Vec::new(),
        unpaired: 0,
    };
    for city in entries_in(&img_root, Path::is_dir)? {
        let labels = lbl_root
            .as_ref()
            .zip(city.file_name())
            .map(|(l, c)| l.join(c));
        for image in pngs_in(&city)? {
            add_cityscapes_image(&mut found, image, labels.as_deref());
        }
    }
    Ok(found)
}

/// `root/gtFine/<split>`, or `None` (images only, with a warning) when it does not exist
/// and `labels_required` is false.
fn cityscapes_label_root(
    spec: &DatasetSpec,
    split: Split,
    labels_required: bool,
) -> Result<Option<PathBuf>, Error> {
    let lbl_root = spec.root.join("gtFine").join(split.dir_name());
    if lbl_root.is_dir() {
        return Ok(Some(lbl_root));
    }
    if labels_required {
        require_dir(spec.kind, &lbl_root)?;
    }
    tracing::warn!(
        folder = %lbl_root.display(),
        "no gtFine labels for this split: images only (labels are all 255)"
    );
    Ok(None)
}

/// Adds a `*_leftImg8bit.png` image (others are ignored) with its label from the city's
/// `labels` folder, or without a label when there is no such folder.
fn add_cityscapes_image(found: &mut Discovered, image: PathBuf, labels: Option<&Path>) {
    let file = image
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(stem) = file.strip_suffix(CS_IMAGE_SUFFIX) else {
        return;
    };
    let name = stem.to_string();
    match labels {
        None => found.pairs.push(Pair {
            image,
            label: None,
            name,
        }),
        Some(dir) => {
            let label = dir.join(format!("{stem}{CS_LABEL_SUFFIX}"));
            pair_if_labelled(&mut found.pairs, &mut found.unpaired, image, label, name);
        }
    }
}

/// Lists the samples of `spec` (Cityscapes: of `split`). Training accepts a Cityscapes
/// split without `gtFine` (target images only); validation (`labels_required`) does not.
/// Returns an error naming the expected layout when nothing usable is found.
pub(crate) fn discover(
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
