//! The `Segmenter` library API on tiny ONNX models built with the official `onnx` package:
//! metadata read back, exact labels from palette-painted images at the input size and at
//! the original size, batching (dynamic and fixed-batch padding), pure model runs.

mod common;

use common::*;
use rccr_infer::segmenter::{preprocess, Batch};
use rccr_infer::{Provider, Segmenter};

#[test]
fn metadata_and_exact_labels() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels,logits"]);
    let mut seg = Segmenter::open(&model, &cpu_options(Some((32, 16)), 2)).unwrap();
    let info = seg.info().clone();
    let meta = &info.metadata;
    assert_eq!(meta.num_classes, 19);
    assert_eq!(meta.label_set, "cityscapes19");
    assert_eq!(meta.class_names[18], "bicycle");
    assert_eq!(meta.palette[13], [0, 0, 142]);
    assert_eq!(meta.backbone.as_deref(), Some("test-nearest-colour"));
    assert_eq!(meta.iteration, Some(0));
    assert!(info.has_labels && info.has_logits);
    assert_eq!((info.fixed_batch, info.fixed_size), (None, None));
    assert_eq!(seg.provider(), Provider::Cpu);
    assert_eq!(seg.input_size(), (32, 16));

    // Three 32x16 images: labels at the input size are exactly the painted ids.
    let maps: Vec<Vec<u8>> = (0..3).map(|i| painted_map(i, 32, 16)).collect();
    let images: Vec<_> = maps.iter().map(|m| paint(m, 32, 16)).collect();
    let out = seg.segment(&images).unwrap();
    assert_eq!(out.len(), 3);
    for (o, m) in out.iter().zip(&maps) {
        assert_eq!((o.width, o.height), (32, 16));
        assert_eq!(&o.data, m);
    }
    // A 64x32 image of 2x2 blocks: segmented at 32x16 and brought back to 64x32 (nearest)
    // it is the block map again.
    let small = painted_map(1, 32, 16);
    let big: Vec<u8> = (0..64 * 32)
        .map(|i| small[(i / 64 / 2) * 32 + (i % 64) / 2])
        .collect();
    let back = seg.segment_original(&[paint(&big, 64, 32)]).unwrap();
    assert_eq!((back[0].width, back[0].height), (64, 32));
    assert_eq!(back[0].data, big);
}

#[test]
fn fixed_batch_is_padded_and_pure_runs_time() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("f.onnx"), &["--fixed", "2,16,32"]);
    let mut seg = Segmenter::open(&model, &cpu_options(None, 1)).unwrap();
    assert_eq!(seg.batch_size(), 2);
    assert_eq!(seg.input_size(), (32, 16));
    let m = painted_map(2, 32, 16);
    // One image in a batch of two: padded, one map back.
    let mut b = seg.new_batch();
    b.push_preprocessed(&preprocess(&paint(&m, 32, 16), 32, 16));
    let t = std::time::Instant::now();
    let out = seg.run(&b).unwrap();
    assert!(t.elapsed().as_secs_f64() > 0.0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, m);
    // Three images are an error for a fixed batch of two.
    let mut b3 = Batch::new(32, 16);
    for _ in 0..3 {
        b3.push(&paint(&m, 32, 16));
    }
    let e = seg.run(&b3).unwrap_err().to_string();
    assert!(e.contains("fixed batch of 2"), "{e}");
}

#[test]
fn out_of_bound_options_are_typed_errors() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &[]);
    for (input, batch, want) in [
        (Some((100_000, 100_000)), 1, "--input-size 100000x100000"),
        (Some((8192, 8192)), 1, "67108864 pixels"),
        (Some((32, 16)), 0, "--batch-size 0"),
        (Some((32, 16)), 257, "--batch-size 257"),
    ] {
        let e = Segmenter::open(&model, &cpu_options(input, batch)).unwrap_err();
        assert!(matches!(e, rccr_infer::InferError::Invalid(_)), "{e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}

#[test]
fn interleaved_frames_and_logits_equal_the_image_api() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels,logits"]);
    let mut seg = Segmenter::open(&model, &cpu_options(Some((32, 16)), 2)).unwrap();
    // Three 48x20 frames (resized in and out): the interleaved entry point (what the C ABI
    // calls) gives what segment_original gives for the same images.
    let images: Vec<_> = (0..3)
        .map(|i| paint(&painted_map(i, 48, 20), 48, 20))
        .collect();
    let want: Vec<u8> = seg
        .segment_original(&images)
        .unwrap()
        .into_iter()
        .flat_map(|m| m.data)
        .collect();
    let rgb: Vec<u8> = images.iter().flat_map(|i| i.as_raw().clone()).collect();
    let shape = rccr_infer::segmenter::Interleaved {
        count: 3,
        width: 48,
        height: 20,
    };
    let mut ids = vec![0u8; 3 * 48 * 20];
    seg.segment_interleaved(&rgb, shape, &mut ids, None)
        .unwrap();
    assert_eq!(ids, want);
    // With logits: same ids, and the logits' argmax at the input size is each image's
    // label map at the input size.
    let mut logits = vec![0f32; 3 * 19 * 32 * 16];
    let mut ids2 = vec![0u8; ids.len()];
    seg.segment_interleaved(&rgb, shape, &mut ids2, Some(&mut logits))
        .unwrap();
    assert_eq!(ids2, want);
    let at_input = seg.segment(&images).unwrap();
    for (i, map) in at_input.iter().enumerate() {
        let per = 19 * 32 * 16;
        let arg = rccr_infer::labelmap::argmax_planes(&logits[i * per..][..per], 19, 32 * 16);
        assert_eq!(arg, map.data, "image {i}");
    }
    // Wrong buffer sizes are errors naming the buffer.
    let e = seg
        .segment_interleaved(&rgb[1..], shape, &mut ids, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rgb holds"), "{e}");
    let e = seg
        .segment_interleaved(&rgb, shape, &mut ids[1..], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train_ids holds"), "{e}");
    // A model without logits says how to export them.
    let labels_only = make_model(&d.path().join("l.onnx"), &["--outputs", "labels"]);
    let mut seg = Segmenter::open(&labels_only, &cpu_options(Some((32, 16)), 1)).unwrap();
    let e = seg
        .segment_interleaved(&rgb, shape, &mut ids, Some(&mut logits))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no `logits` output") && e.contains("rccr-export"),
        "{e}"
    );
}
