//! The dataset loaders on tiny datasets written by the test in the real on-disk layouts
//! (GTA5 paletted labelIds, SYNTHIA 16-bit RGB labels, Cityscapes grey labelIds), with the
//! label maps checked against literal tables copied from the official Cityscapes and
//! SYNTHIA id definitions.

use std::path::Path;

use rccr_trainer::data::{DatasetKind, DatasetSpec, LoaderConfig, Split, TrainLoader, ValSet};
use rccr_trainer::Error;

/// Cityscapes labelId -> trainId, typed in from docs/design.md#data-and-label-maps, independent of the
/// crate's tables.
fn notes_label_to_train(id: u16) -> u8 {
    match id {
        7 => 0,
        8 => 1,
        11 => 2,
        12 => 3,
        13 => 4,
        17 => 5,
        19 => 6,
        20 => 7,
        21 => 8,
        22 => 9,
        23 => 10,
        24 => 11,
        25 => 12,
        26 => 13,
        27 => 14,
        28 => 15,
        31 => 16,
        32 => 17,
        33 => 18,
        _ => 255,
    }
}

/// SYNTHIA id -> trainId, typed in from docs/design.md#data-and-label-maps.
fn notes_synthia_to_train(id: u16) -> u8 {
    match id {
        3 => 0,
        4 => 1,
        2 => 2,
        21 => 3,
        5 => 4,
        7 => 5,
        15 => 6,
        9 => 7,
        6 => 8,
        1 => 10,
        10 => 11,
        17 => 12,
        8 => 13,
        19 => 15,
        12 => 17,
        11 => 18,
        _ => 255,
    }
}

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<Vec<u8>>,
) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
}

/// An RGB image whose pixel (x, y) is (x * 10 + tag, y * 10, tag).
fn write_rgb(path: &Path, w: u32, h: u32, tag: u8) {
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 10) as u8 + tag, (y * 10) as u8, tag]);
        }
    }
    write_png(
        path,
        w,
        h,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &data,
        None,
    );
}

/// A paletted label PNG (as the GTA5 release ships them): index = labelId.
fn write_paletted(path: &Path, w: u32, h: u32, ids: &[u8]) {
    let palette: Vec<u8> = (0..256u32)
        .flat_map(|i| [i as u8, (i * 7) as u8, (i * 13) as u8])
        .collect();
    write_png(
        path,
        w,
        h,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        ids,
        Some(palette),
    );
}

fn write_grey(path: &Path, w: u32, h: u32, ids: &[u8]) {
    write_png(
        path,
        w,
        h,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        ids,
        None,
    );
}

/// A 16-bit RGB label PNG with `ids` in the first channel and noise in the others.
fn write_synthia_label(path: &Path, w: u32, h: u32, ids: &[u16]) {
    let mut data = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        data.extend_from_slice(&id.to_be_bytes());
        data.extend_from_slice(&(1000 + i as u16).to_be_bytes());
        data.extend_from_slice(&(7u16).to_be_bytes());
    }
    write_png(
        path,
        w,
        h,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        &data,
        None,
    );
}

fn cfg(w: u32, h: u32, crop: u32, batch: usize) -> LoaderConfig {
    LoaderConfig {
        resize: Some((w, h)),
        crop,
        batch_size: batch,
        seed: 7,
        workers: 2,
        prefetch: 2,
        split: Split::Train,
        ..LoaderConfig::default()
    }
}

fn labels_of(batch: &rccr_trainer::data::Batch) -> Vec<i64> {
    Vec::<i64>::try_from(batch.labels.flatten(0, -1)).unwrap()
}

fn images_of(batch: &rccr_trainer::data::Batch) -> Vec<f32> {
    Vec::<f32>::try_from(batch.images.flatten(0, -1)).unwrap()
}

#[test]
fn gta5_paletted_labels_map_to_train_ids() {
    let dir = tempfile::tempdir().unwrap();
    // Every labelId 0..=39 once, in an 8x5 image.
    let ids: Vec<u8> = (0..40).collect();
    write_rgb(&dir.path().join("images/00001.png"), 8, 5, 3);
    write_paletted(&dir.path().join("labels/00001.png"), 8, 5, &ids);
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    assert_eq!(spec.kind, DatasetKind::Gta5);
    // Native size, crop larger than the image: no resampling, padding at bottom/right.
    let mut loader = TrainLoader::open(&spec, &cfg(8, 5, 8, 1), 0).unwrap();
    assert_eq!(loader.len(), 1);
    let b = loader.next_batch().unwrap();
    assert_eq!(b.images.size(), vec![1, 3, 8, 8]);
    assert_eq!(b.labels.size(), vec![1, 8, 8]);
    assert_eq!(b.names, vec!["00001".to_string()]);
    let labels = labels_of(&b);
    let images = images_of(&b);
    for y in 0..8usize {
        for x in 0..8usize {
            let got = labels[y * 8 + x];
            if y < 5 {
                let id = (y * 8 + x) as u16;
                assert_eq!(got, notes_label_to_train(id) as i64, "labelId {id}");
                assert_eq!(images[y * 8 + x], (x * 10 + 3) as f32);
                assert_eq!(images[64 + y * 8 + x], (y * 10) as f32);
                assert_eq!(images[128 + y * 8 + x], 3.0);
            } else {
                assert_eq!(got, 255, "padding label");
                assert_eq!(images[y * 8 + x], 0.0, "padding image");
            }
        }
    }
}

#[test]
fn synthia_16bit_first_channel_maps_to_train_ids() {
    let dir = tempfile::tempdir().unwrap();
    // SYNTHIA ids 0..=23 plus ids above 255, in a 7x4 image.
    let mut ids: Vec<u16> = (0..24).collect();
    ids.extend_from_slice(&[256, 259, 1000, 65535]);
    write_rgb(&dir.path().join("RGB/0000001.png"), 7, 4, 1);
    write_synthia_label(&dir.path().join("GT/LABELS/0000001.png"), 7, 4, &ids);
    let spec: DatasetSpec = format!("synthia:{}", dir.path().display()).parse().unwrap();
    let mut loader = TrainLoader::open(&spec, &cfg(7, 4, 7, 1), 0).unwrap();
    let labels = labels_of(&loader.next_batch().unwrap());
    for (i, &id) in ids.iter().enumerate() {
        let (y, x) = (i / 7, i % 7);
        assert_eq!(
            labels[y * 7 + x],
            notes_synthia_to_train(id) as i64,
            "SYNTHIA id {id}"
        );
    }
    // The 16 mapped ids of docs/design.md#data-and-label-maps give 16 distinct trainIds, no terrain/truck/train.
    let mapped: std::collections::BTreeSet<i64> =
        labels.iter().copied().filter(|&v| v != 255).collect();
    assert_eq!(mapped.len(), 16);
    assert!(!mapped.contains(&9) && !mapped.contains(&14) && !mapped.contains(&16));
}

/// Writes a Cityscapes split with `n` images per city of size w x h.
fn write_cityscapes(
    root: &Path,
    split: &str,
    cities: &[&str],
    n: usize,
    w: u32,
    h: u32,
    ids: &[u8],
) {
    for city in cities {
        for k in 0..n {
            let stem = format!("{city}_{k:06}_000019");
            write_rgb(
                &root.join(format!("leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")),
                w,
                h,
                k as u8,
            );
            write_grey(
                &root.join(format!("gtFine/{split}/{city}/{stem}_gtFine_labelIds.png")),
                w,
                h,
                ids,
            );
        }
    }
}

#[test]
fn cityscapes_train_and_val_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u8> = (0..32).collect(); // 8x4
    write_cityscapes(dir.path(), "train", &["aachen", "bremen"], 2, 8, 4, &ids);
    write_cityscapes(dir.path(), "val", &["frankfurt"], 3, 8, 4, &ids);
    // An unrelated file in the split is ignored.
    std::fs::write(dir.path().join("leftImg8bit/train/aachen/notes.txt"), "x").unwrap();
    let spec: DatasetSpec = format!("cityscapes:{}", dir.path().display())
        .parse()
        .unwrap();

    let mut train = TrainLoader::open(&spec, &cfg(8, 4, 4, 2), 0).unwrap();
    assert_eq!(train.len(), 4);
    let b = train.next_batch().unwrap();
    assert_eq!(b.images.size(), vec![2, 3, 4, 4]);
    for name in &b.names {
        assert!(
            name.starts_with("aachen_") || name.starts_with("bremen_"),
            "{name}"
        );
    }
    let mut vcfg = cfg(8, 4, 8, 1);
    vcfg.split = Split::Val;
    let val_loader = TrainLoader::open(&spec, &vcfg, 0).unwrap();
    assert_eq!(val_loader.len(), 3);

    // Validation: fixed order, labels nearest-resized with the image (8x4 -> 4x2 keeps
    // source pixels x = 1, 3, 5, 7 of rows 1 and 3: floor((2i + 1) * 8 / 8)).
    let val = ValSet::open(&spec, Some((4, 2)), None).unwrap();
    assert_eq!(val.len(), 3);
    let samples: Vec<_> = val.iter().map(|s| s.unwrap()).collect();
    let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "frankfurt_000000_000019",
            "frankfurt_000001_000019",
            "frankfurt_000002_000019"
        ]
    );
    let s = &samples[0];
    assert_eq!((s.width, s.height), (4, 2));
    assert_eq!(s.image.size(), vec![1, 3, 2, 4]);
    let expect: Vec<u8> = [9u16, 11, 13, 15, 25, 27, 29, 31]
        .iter()
        .map(|&id| notes_label_to_train(id))
        .collect();
    assert_eq!(s.label, expect);

    // Default protocol: 1024x512.
    let val = ValSet::open(&spec, None, Some(1)).unwrap();
    assert_eq!(val.len(), 1);
    let s = val.iter().next().unwrap().unwrap();
    assert_eq!((s.width, s.height), (1024, 512));
    assert_eq!(s.label.len(), 1024 * 512);
    // 128x128 blocks of one source pixel each.
    assert_eq!(s.label[0], notes_label_to_train(0));
    assert_eq!(s.label[511 * 1024 + 1023], notes_label_to_train(31));
}

#[test]
fn gta5_val_keeps_native_size_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    for k in 1..=3 {
        write_rgb(
            &dir.path().join(format!("images/{k:05}.png")),
            6,
            3,
            k as u8,
        );
        write_grey(
            &dir.path().join(format!("labels/{k:05}.png")),
            6,
            3,
            &[7; 18],
        );
    }
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let val = ValSet::open(&spec, None, Some(2)).unwrap();
    assert_eq!(val.len(), 2);
    let all: Vec<_> = val.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[1].width, all[1].height), (6, 3));
    assert_eq!(all[1].label, vec![0u8; 18]);
    let img = Vec::<f32>::try_from(all[1].image.flatten(0, -1)).unwrap();
    assert_eq!(img[2 * 6 + 5], 52.0); // red at (5, 2) = 5 * 10 + tag 2
}

/// A GTA5 dataset of `n` 12x10 pairs whose red channel encodes the sample number.
fn gta5_dataset(root: &Path, n: usize) {
    for k in 0..n {
        let name = format!("{:05}.png", k + 1);
        write_rgb(&root.join("images").join(&name), 12, 10, k as u8);
        let ids: Vec<u8> = (0..120).map(|i| [7u8, 8, 11, 26][(i + k) % 4]).collect();
        write_grey(&root.join("labels").join(&name), 12, 10, &ids);
    }
}

fn run_loader(
    spec: &DatasetSpec,
    c: &LoaderConfig,
    start: u64,
    n: usize,
) -> Vec<(Vec<String>, Vec<f32>, Vec<i64>)> {
    let mut l = TrainLoader::open(spec, c, start).unwrap();
    (0..n)
        .map(|_| {
            let b = l.next_batch().unwrap();
            (b.names.clone(), images_of(&b), labels_of(&b))
        })
        .collect()
}

#[test]
fn batches_depend_only_on_seed_and_iteration() {
    let dir = tempfile::tempdir().unwrap();
    gta5_dataset(dir.path(), 5);
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let mut c = cfg(12, 10, 6, 2);
    c.workers = 3;
    let full = run_loader(&spec, &c, 0, 9);
    // Resume at iteration 4 reproduces the tail, with another worker count.
    c.workers = 1;
    let tail = run_loader(&spec, &c, 4, 5);
    assert_eq!(&full[4..], &tail[..]);
    // Same seed again: identical; another seed: a different stream.
    c.workers = 2;
    assert_eq!(run_loader(&spec, &c, 0, 9), full);
    c.seed = 8;
    assert_ne!(run_loader(&spec, &c, 0, 9), full);
    // Each epoch is a permutation: global samples 0..5 and 5..10 each name all 5 images.
    let names: Vec<String> = full.iter().flat_map(|b| b.0.clone()).collect();
    for epoch in names.chunks(5).take(3) {
        let mut e = epoch.to_vec();
        e.sort();
        assert_eq!(e, ["00001", "00002", "00003", "00004", "00005"]);
    }
    // Crops are windows of the image: the red channel of a crop at (x0, y0) is
    // (x0 + x) * 10 + k, green (y0 + y) * 10, blue k for sample k.
    for (names, images, labels) in &full {
        for (b, name) in names.iter().enumerate() {
            let k: usize = name.parse::<usize>().unwrap() - 1;
            let plane = &images[b * 108..b * 108 + 36];
            let x0 = ((plane[0] - k as f32) / 10.0) as usize;
            let y0 = (images[b * 108 + 36] / 10.0) as usize;
            assert!(x0 <= 6 && y0 <= 4);
            for y in 0..6 {
                for x in 0..6 {
                    assert_eq!(plane[y * 6 + x], ((x0 + x) * 10 + k) as f32);
                    assert_eq!(images[b * 108 + 72 + y * 6 + x], k as f32);
                    let i = (y0 + y) * 12 + x0 + x;
                    let id = [7u16, 8, 11, 26][(i + k) % 4];
                    assert_eq!(labels[b * 36 + y * 6 + x], notes_label_to_train(id) as i64);
                }
            }
        }
    }
}

#[test]
fn corrupt_files_are_skipped_counted_and_replaced_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    gta5_dataset(dir.path(), 6);
    std::fs::write(dir.path().join("images/00003.png"), b"not a png at all").unwrap();
    // A colour visualisation instead of labelIds is rejected too.
    let colour: Vec<u8> = (0..120).flat_map(|_| [128u8, 64, 128]).collect();
    write_png(
        &dir.path().join("labels/00005.png"),
        12,
        10,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &colour,
        None,
    );
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let c = cfg(12, 10, 6, 2);
    let mut l = TrainLoader::open(&spec, &c, 0).unwrap();
    let mut seen = Vec::new();
    for _ in 0..12 {
        let b = l.next_batch().unwrap();
        assert_eq!(b.names.len(), 2);
        assert_eq!(b.images.size(), vec![2, 3, 6, 6]);
        seen.extend(b.names);
    }
    assert_eq!(l.skipped(), 2);
    assert_eq!(l.len(), 4);
    assert!(!seen.iter().any(|n| n == "00003" || n == "00005"));
    // Replacement is deterministic: the same stream from a fresh loader and on resume.
    let a = run_loader(&spec, &c, 0, 12);
    let b = run_loader(&spec, &c, 0, 12);
    assert_eq!(a, b);
    assert_eq!(run_loader(&spec, &c, 7, 5), a[7..].to_vec());
}

#[test]
fn all_corrupt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    gta5_dataset(dir.path(), 2);
    for k in 1..=2 {
        std::fs::write(dir.path().join(format!("labels/{k:05}.png")), b"garbage").unwrap();
    }
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let mut l = TrainLoader::open(&spec, &cfg(12, 10, 6, 1), 0).unwrap();
    let err = l.next_batch().unwrap_err();
    assert!(matches!(err, Error::NoSamples { .. }), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn empty_or_missing_folders_name_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("labels")).unwrap();
    // An image without its label is not a pair.
    write_rgb(&dir.path().join("images/00001.png"), 4, 4, 0);
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let err = TrainLoader::open(&spec, &cfg(4, 4, 4, 1), 0).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoSamples { .. }), "{msg}");
    assert!(
        msg.contains("images/*.png") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("1 images without a matching label"), "{msg}");

    let spec: DatasetSpec = format!("synthia:{}", dir.path().display()).parse().unwrap();
    let err = TrainLoader::open(&spec, &cfg(4, 4, 4, 1), 0).err().unwrap();
    assert!(matches!(err, Error::MissingDir { .. }), "{err}");
    assert!(err.to_string().contains("GT/LABELS"), "{err}");

    let spec: DatasetSpec = format!("cityscapes:{}", dir.path().display())
        .parse()
        .unwrap();
    let err = ValSet::open(&spec, None, None).err().unwrap();
    assert!(err.to_string().contains("leftImg8bit"), "{err}");
}

#[test]
fn cityscapes_without_gtfine_trains_on_images_only() {
    let dir = tempfile::tempdir().unwrap();
    write_rgb(
        &dir.path()
            .join("leftImg8bit/train/x/x_000000_000019_leftImg8bit.png"),
        5,
        5,
        0,
    );
    let spec: DatasetSpec = format!("cityscapes:{}", dir.path().display())
        .parse()
        .unwrap();
    let mut l = TrainLoader::open(&spec, &cfg(5, 5, 5, 1), 0).unwrap();
    let b = l.next_batch().unwrap();
    assert!(labels_of(&b).iter().all(|&v| v == 255));
    // Validation needs labels.
    assert!(ValSet::open(&spec, None, None).is_err());
}

#[test]
fn specs_parse_print_and_serialise() {
    let s: DatasetSpec = "synthia:/data/RAND_CITYSCAPES".parse().unwrap();
    assert_eq!(s.kind, DatasetKind::Synthia);
    assert_eq!(s.to_string(), "synthia:/data/RAND_CITYSCAPES");
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, "\"synthia:/data/RAND_CITYSCAPES\"");
    let back: DatasetSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    for bad in ["", "gta5", "kitti:/x", "gta5:"] {
        assert!(bad.parse::<DatasetSpec>().is_err(), "{bad}");
    }
    let c = LoaderConfig::default();
    assert_eq!(
        (c.resize, c.crop, c.batch_size, c.prefetch, c.split),
        (None, 512, 2, 4, Split::Train)
    );
    assert!(c.workers >= 1);
    assert_eq!(DatasetKind::Gta5.paper_size(), (1280, 720));
    assert_eq!(DatasetKind::Synthia.paper_size(), (1280, 760));
    assert_eq!(DatasetKind::Cityscapes.paper_size(), (1024, 512));
}

#[test]
fn resize_then_crop_uses_the_paper_filters() {
    // Source: 4x2 image resized to 8x4 (bicubic image, nearest label), crop 8: the label
    // doubles every pixel; the image keeps a constant image constant.
    let dir = tempfile::tempdir().unwrap();
    let rgb = vec![100u8; 4 * 2 * 3];
    write_png(
        &dir.path().join("images/a.png"),
        4,
        2,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &rgb,
        None,
    );
    write_grey(
        &dir.path().join("labels/a.png"),
        4,
        2,
        &[7, 8, 11, 12, 13, 17, 19, 20],
    );
    let spec: DatasetSpec = format!("gta5:{}", dir.path().display()).parse().unwrap();
    let mut l = TrainLoader::open(&spec, &cfg(8, 4, 8, 1), 0).unwrap();
    let b = l.next_batch().unwrap();
    let labels = labels_of(&b);
    let src = [0i64, 1, 2, 3, 4, 5, 6, 7];
    for y in 0..4 {
        for x in 0..8 {
            assert_eq!(labels[y * 8 + x], src[(y / 2) * 4 + x / 2]);
        }
        for x in 0..8 {
            assert_eq!(labels[(y + 4) * 8 + x], 255);
        }
    }
    let img = images_of(&b);
    assert!(img[..32].iter().all(|&v| (v - 100.0).abs() < 0.5));
}
