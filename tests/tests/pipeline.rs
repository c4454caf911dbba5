//! The whole pipeline through the crates' public APIs, in the order data flows:
//! synthetic data (GTA5 + Cityscapes layouts) -> `rccr-train` (a few RCCR iterations,
//! small backbone, CPU) -> checkpoint -> `rccr-export` (teacher to ONNX, verified
//! against libtorch) -> `rccr-infer` (ONNX Runtime segmentation + scoring).
//!
//! Cross-check with an independent computation: the trainer validates the teacher with
//! libtorch on the target val split; rccr-infer scores the ONNX model on the same images
//! and labels with its own pipeline (PNG decoding, preprocessing, ORT, official-style
//! scoring). With images generated at the validation size the two protocols coincide, so
//! their mIoU must agree up to the few pixels where ORT and libtorch round differently.

use rccr_exporter::{
    encode, export_loaded, load_teacher, verify, write_model, ExportOptions, VerifyOptions,
};
use rccr_infer::pipeline::{self, PipelineOptions};
use rccr_models::Backbone;
use rccr_trainer::config::{Mode, Size, TrainConfig};
use rccr_trainer::run::{run, RunOptions};
use rccr_trainer::synth::{self, SynthArgs};

#[test]
fn synth_train_export_infer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (w, h) = (128u32, 64u32);

    // 1. Data, in the real on-disk layouts.
    let mut args = SynthArgs::new(&data);
    args.count = 8;
    args.val_count = 4;
    args.size = synth::ImageSize {
        width: w,
        height: h,
    };
    let report = synth::run(&args).expect("synth");
    assert_eq!(report.target_val, 4);

    // 2. A few RCCR iterations on the CPU, with validation and a checkpoint at the end.
    let mut cfg = TrainConfig {
        model: rccr_models::ModelConfig::new(Backbone::Small, 19),
        ..TrainConfig::default()
    };
    let d = &mut cfg.data;
    d.source = Some(
        format!("gta5:{}", data.join("gta5").display())
            .parse()
            .unwrap(),
    );
    d.target = Some(
        format!("cityscapes:{}", data.join("cityscapes").display())
            .parse()
            .unwrap(),
    );
    (d.crop, d.batch_size, d.workers) = (64, 2, 2);
    (d.source_size, d.target_size) = (Some(Size::new(w, h)), Some(Size::new(w, h)));
    // Validation at the images' own size, the size rccr-infer segments at below (the
    // default, the dataset's paper size, would score upsampled predictions).
    d.val_size = Some(Size::new(w, h));
    cfg.method.mode = Mode::Rccr;
    let r = &mut cfg.run;
    (r.iterations, r.device) = (4, "cpu".into());
    (r.val_every, r.save_every, r.log_every) = (0, 0, 1);
    let run_dir = dir.path().join("run");
    let summary = run(
        &cfg,
        &RunOptions {
            out: run_dir.clone(),
            quiet: true,
            ..Default::default()
        },
    )
    .expect("train");
    assert_eq!(summary.iterations, 4);
    let ckpt = summary.last_checkpoint.expect("a checkpoint");
    let train_miou = summary.final_miou.expect("final validation");
    assert!(run_dir.join("metrics.jsonl").is_file());

    // 3. Export the teacher and verify it against libtorch.
    let loaded = load_teacher(&ckpt).expect("teacher");
    let model = export_loaded(&loaded, &ckpt, &ExportOptions::default()).expect("export");
    let bytes = encode(&model).unwrap();
    let onnx = dir.path().join("teacher.onnx");
    write_model(&onnx, &bytes).unwrap();
    let check = verify(&loaded.net.seg, &bytes, &VerifyOptions::default()).expect("verify runs");
    assert!(check.passed, "{}", check.summary());

    // 4. rccr-infer on the target val images, scored against their labels.
    let mut opts = PipelineOptions::new(&onnx, data.join("cityscapes/leftImg8bit/val"));
    opts.labels = Some(data.join("cityscapes/gtFine/val"));
    opts.out = Some(dir.path().join("pred"));
    opts.segmenter.input_size = Some((w, h));
    opts.segmenter.batch_size = 2;
    let infer = pipeline::run(&opts).expect("infer");
    assert_eq!(infer.images, 4);
    assert_eq!(infer.provider.as_deref(), Some("cpu"));
    let infer_miou = infer.miou.expect("scored");
    eprintln!("teacher mIoU: libtorch validation {train_miou:.4}, ONNX Runtime {infer_miou:.4}");
    assert!(
        (infer_miou - train_miou).abs() < 0.005,
        "ONNX Runtime mIoU {infer_miou} vs libtorch validation {train_miou}"
    );
    let written = walk(&dir.path().join("pred"));
    assert!(
        written
            .iter()
            .any(|p| p.ends_with("_gtFine_labelIds.png") || p.contains("labelIds")),
        "{written:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
