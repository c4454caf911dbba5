//! Finding images, labels and predictions on disk, and pairing them.
//!
//! Folders are walked recursively (walkdir) in a stable, sorted order. Files are paired
//! by a key: the Cityscapes `<city>_<seq>_<frame>` prefix when the name has one (so
//! `aachen_000000_000019_leftImg8bit.png` pairs with
//! `aachen_000000_000019_gtFine_labelIds.png` and with any prediction
//! `aachen_000000_000019*.png`, the official evaluation's rule), otherwise the file stem
//! (GTA5 / SYNTHIA style `images/00001.png` <-> `labels/00001.png`).
//!
//! Every file the workspace writes goes through [`write_atomic`] ([`atomic`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};

pub mod atomic;
pub use atomic::{
    temporary_owner, temporary_path, write_atomic, write_atomic_synced, write_atomic_with,
    Durability,
};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Suffix of the official ground-truth label files.
pub const CITYSCAPES_LABEL_SUFFIX: &str = "_gtFine_labelIds.png";

/// The images under a folder.
#[derive(Debug, Clone, Default)]
pub struct ImageList {
    /// Image files in stable order.
    pub images: Vec<PathBuf>,
    /// Other files that were skipped.
    pub skipped: Vec<PathBuf>,
}

/// `Ok` when `dir` is an existing folder; otherwise an error saying whether it does not
/// exist or is something else (a file, a dangling link).
pub fn check_folder(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let problem = if std::fs::symlink_metadata(dir).is_err() {
        "does not exist"
    } else {
        "is not a folder"
    };
    Err(InferError::NotAFolder {
        path: dir.to_path_buf(),
        problem,
    })
}

fn walk_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    check_folder(dir)?;
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(entry) => entry,
            // An entry below the root that cannot be followed (a dangling link, a folder
            // without permission): keep its path so the caller reports it as unreadable.
            Err(e) if e.depth() > 0 && e.path().is_some() => {
                out.push(e.path().unwrap_or(dir).to_path_buf());
                continue;
            }
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                return Err(InferError::io(
                    "cannot walk",
                    path,
                    e.into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
                ));
            }
        };
        if entry.file_type().is_file() {
            out.push(entry.into_path());
        }
    }
    Ok(out)
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether the file name starts with a dot (temporary / hidden files are never inputs).
fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// All images under `dir` (recursively, sorted); an error if there is none.
pub fn list_images(dir: &Path) -> Result<ImageList> {
    let mut list = ImageList::default();
    for p in walk_sorted(dir)? {
        if !hidden(&p) && has_extension(&p, &IMAGE_EXTENSIONS) {
            list.images.push(p);
        } else {
            list.skipped.push(p);
        }
    }
    if list.images.is_empty() {
        return Err(InferError::EmptyFolder {
            path: dir.to_path_buf(),
            what: "images (.png, .jpg, .jpeg)",
        });
    }
    Ok(list)
}

/// The Cityscapes `<city>_<seq>_<frame>` prefix of a file name (seq and frame six digits
/// each), if it has one.
pub fn cityscapes_key(file_name: &str) -> Option<&str> {
    let b = file_name.as_bytes();
    // Find "_dddddd_dddddd" followed by the end, '_' or '.'.
    let pat = 14;
    (1..b.len().saturating_sub(pat - 1)).find_map(|i| {
        let w = &b[i..i + pat];
        let ok = w[0] == b'_'
            && w[7] == b'_'
            && w[1..7].iter().all(u8::is_ascii_digit)
            && w[8..14].iter().all(u8::is_ascii_digit)
            && b.get(i + pat).is_none_or(|&c| c == b'_' || c == b'.');
        ok.then(|| &file_name[..i + pat])
    })
}

/// Suffixes stripped from a stem to get its key when the name is not Cityscapes-style.
const STEM_SUFFIXES: [&str; 5] = [
    "_leftImg8bit",
    "_gtFine_labelIds",
    "_labelIds",
    "_trainIds",
    "_pred",
];

/// The pairing key of a file: its Cityscapes prefix, else its stem without a known suffix.
pub fn pair_key(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(k) = cityscapes_key(&name) {
        return k.to_string();
    }
    let mut stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for s in STEM_SUFFIXES {
        if let Some(k) = stem.strip_suffix(s) {
            stem = k.to_string();
            break;
        }
    }
    stem
}

/// Builds key -> file, failing on two files with the same key.
fn keyed(files: Vec<PathBuf>) -> Result<BTreeMap<String, PathBuf>> {
    let mut map: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let key = pair_key(&f);
        if let Some(prev) = map.get(&key) {
            return Err(InferError::DuplicateKey {
                key,
                first: prev.clone(),
                second: f,
            });
        }
        map.insert(key, f);
    }
    Ok(map)
}

/// Ground-truth label files under `dir`, by key: the `*_gtFine_labelIds.png` files when
/// there are any (a Cityscapes `gtFine` tree also holds colour and instance PNGs), all
/// PNGs otherwise.
pub fn list_labels(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let pngs: Vec<PathBuf> = walk_sorted(dir)?
        .into_iter()
        .filter(|p| !hidden(p) && has_extension(p, &["png"]))
        .collect();
    let official: Vec<PathBuf> = pngs
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(CITYSCAPES_LABEL_SUFFIX))
        })
        .cloned()
        .collect();
    let files = if official.is_empty() { pngs } else { official };
    if files.is_empty() {
        return Err(InferError::EmptyFolder {
            path: dir.to_path_buf(),
            what: "label PNGs",
        });
    }
    keyed(files)
}

/// Prediction PNGs under `dir`, by key (two predictions for one key are an error, as in
/// the official evaluation).
pub fn list_predictions(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let files: Vec<PathBuf> = walk_sorted(dir)?
        .into_iter()
        .filter(|p| !hidden(p) && has_extension(p, &["png"]))
        .collect();
    if files.is_empty() {
        return Err(InferError::EmptyFolder {
            path: dir.to_path_buf(),
            what: "prediction PNGs",
        });
    }
    keyed(files)
}

/// The output file for `image` (found under `root`) in the folder `out/kind`: the same
/// relative folder and stem, with a `.png` extension. For Cityscapes images the name keeps
/// the `<city>_<seq>_<frame>` prefix, so `out/labelIds` is a valid `CITYSCAPES_RESULTS`
/// folder for the official evaluation.
pub fn output_path(out: &Path, kind: &str, root: &Path, image: &Path) -> PathBuf {
    let rel = image.strip_prefix(root).unwrap_or(image);
    let stem = rel.file_stem().unwrap_or_default();
    let mut p = out.join(kind);
    if let Some(parent) = rel.parent() {
        p.push(parent);
    }
    p.push(stem);
    p.set_extension("png");
    p
}

/// The first two `images` (under `root`) whose outputs would share a file name (same
/// folder and stem, e.g. `a.png` and `a.jpg`), as an error naming both and the output.
pub fn check_output_collisions(out: &Path, root: &Path, images: &[PathBuf]) -> Result<()> {
    let mut seen: BTreeMap<PathBuf, &PathBuf> = BTreeMap::new();
    for image in images {
        let output = output_path(out, "trainIds", root, image);
        if let Some(first) = seen.insert(output.clone(), image) {
            return Err(InferError::OutputCollision {
                first: first.clone(),
                second: image.clone(),
                output,
            });
        }
    }
    Ok(())
}

/// One of `count` deterministic, disjoint parts of a sorted file list (`--shard K/N`):
/// file `i` (0-based, in sorted order) belongs to shard `i mod N + 1`, so the N shards
/// together cover every file exactly once and each gets `len / N` or one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This shard, 1..=count.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Shard `index` of `count` (1-based); an error unless `1 <= index <= count`.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index == 0 || index > count {
            return Err(InferError::Invalid(format!(
                "--shard {index}/{count}: expected K/N with 1 <= K <= N, e.g. --shard 1/4"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The files of this shard, keeping their order.
    pub fn select<T: Clone>(&self, sorted: &[T]) -> Vec<T> {
        sorted
            .iter()
            .skip(self.index - 1)
            .step_by(self.count)
            .cloned()
            .collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || {
            InferError::Invalid(format!(
                "--shard `{s}`: expected K/N with 1 <= K <= N, e.g. --shard 1/4"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
        Shard::new(num(k)?, num(n)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cityscapes_keys() {
        assert_eq!(
            cityscapes_key("aachen_000000_000019_leftImg8bit.png"),
            Some("aachen_000000_000019")
        );
        assert_eq!(
            cityscapes_key("bad_city_name_000123_000456_gtFine_labelIds.png"),
            Some("bad_city_name_000123_000456")
        );
        assert_eq!(
            cityscapes_key("ulm_000001_000002.png"),
            Some("ulm_000001_000002")
        );
        assert_eq!(cityscapes_key("00001.png"), None);
        assert_eq!(cityscapes_key("x_0000001_000002.png"), None);
        assert_eq!(cityscapes_key("x_000001_0000021.png"), None);
        assert_eq!(
            pair_key(Path::new("a/b/lindau_000000_000019_leftImg8bit.png")),
            "lindau_000000_000019"
        );
        assert_eq!(pair_key(Path::new("gta5/images/00042.png")), "00042");
        assert_eq!(pair_key(Path::new("x/00042_labelIds.png")), "00042");
    }

    #[test]
    fn listing_and_pairing() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for f in [
            "img/b/b_000000_000001_leftImg8bit.png",
            "img/a/a_000000_000002_leftImg8bit.png",
            "img/a/a_000000_000001_leftImg8bit.jpg",
            "img/a/notes.txt",
            "gt/a/a_000000_000001_gtFine_labelIds.png",
            "gt/a/a_000000_000001_gtFine_color.png",
            "gt/a/a_000000_000002_gtFine_labelIds.png",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        let list = list_images(&root.join("img")).unwrap();
        let names: Vec<String> = list
            .images
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "img/a/a_000000_000001_leftImg8bit.jpg",
                "img/a/a_000000_000002_leftImg8bit.png",
                "img/b/b_000000_000001_leftImg8bit.png"
            ]
        );
        assert_eq!(list.skipped.len(), 1);
        let labels = list_labels(&root.join("gt")).unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["a_000000_000001", "a_000000_000002"]
        );
        // Two predictions for one key are an error naming both.
        let e = list_predictions(&root.join("gt/a"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gtFine_color.png") && e.contains("gtFine_labelIds.png"),
            "{e}"
        );
        // A missing folder says so; a file is not a folder.
        let e = list_images(&root.join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
        let e = list_images(&root.join("img/a/notes.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notes.txt") && e.contains("is not a folder"),
            "{e}"
        );
        // Empty folder.
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let e = list_images(&root.join("empty")).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        assert_eq!(
            output_path(
                Path::new("/o"),
                "labelIds",
                &root.join("img"),
                &list.images[0]
            ),
            Path::new("/o/labelIds/a/a_000000_000001_leftImg8bit.png")
        );
    }

    #[test]
    fn output_collisions_name_both_inputs() {
        let root = Path::new("/in");
        let imgs: Vec<PathBuf> = ["a.jpg", "a.png", "b/a.png", "c.png"]
            .iter()
            .map(|f| root.join(f))
            .collect();
        let e = check_output_collisions(Path::new("/o"), root, &imgs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/in/a.jpg") && e.contains("/in/a.png") && e.contains("/o/trainIds/a.png"),
            "{e}"
        );
        // Same stem in another folder is a different output.
        check_output_collisions(Path::new("/o"), root, &imgs[1..]).unwrap();
    }

    #[test]
    fn shards_partition_the_list() {
        let files: Vec<usize> = (0..10).collect();
        let parts: Vec<Vec<usize>> = (1..=3)
            .map(|k| Shard::new(k, 3).unwrap().select(&files))
            .collect();
        assert_eq!(parts[0], [0, 3, 6, 9]);
        assert_eq!(parts[1], [1, 4, 7]);
        assert_eq!(parts[2], [2, 5, 8]);
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/3", "4/3", "1/0", "1", "a/b", "1/3/4"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard"), "{bad}: {e}");
        }
    }
}
