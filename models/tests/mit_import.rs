//! Import of Mix Transformer checkpoints in the official layouts (`rccr_models::pth`)
//! against PyTorch itself: tests/reference/mit_reference.py (`checkpoints`) builds
//! random MiT-B0 + DAFormer networks (5 classes) under the official names with the
//! installed PyTorch, saves them as the SegFormer release's ImageNet `mit_b0.pth` (bare
//! state_dict with the classifier `head.*`), as an mmseg checkpoint (`state_dict` with
//! `backbone.*` / `decode_head.*`) and as a whole DAFormer UDA checkpoint (`model.*`,
//! `ema_model.*`, `imnet_model.*`, optimizer, meta), and writes what its independent
//! functional implementation computes on them. Imported, each must give those outputs
//! (1e-4): the encoder's stage 4 for the ImageNet file, the logits for the others.

use rccr_models::checkpoint::{self, STUDENT};
use rccr_models::pth::{self, Which};
use rccr_models::{Backbone, Decoder, ModelConfig, RccrNet};
use rccr_test_support::{assert_matches_reference, read_f32_le, run_python, Deps};
use std::path::PathBuf;
use std::sync::OnceLock;
use tch::{nn, Device, Kind, Tensor};

/// The files of mit_reference.py's `checkpoints`, written once per test process.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let args = ["checkpoints".to_string(), dir.path().display().to_string()];
        run_python(
            Deps::Torch,
            "models/tests/reference/mit_reference.py",
            &args,
        );
        dir
    })
}

fn file(name: &str) -> PathBuf {
    dir().path().join(name)
}

fn network() -> (nn::VarStore, RccrNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &ModelConfig::new(Backbone::MitB0, 5));
    (vs, net)
}

fn input() -> Tensor {
    Tensor::from_slice(&read_f32_le(&file("input.bin")))
        .reshape([2, 3, 57, 70])
        .to_kind(Kind::Float)
}

/// Our eval-mode logits on the script's input must equal PyTorch's in `reference`.
fn assert_logits(net: &RccrNet, reference: &str) {
    let rgb = input();
    let ours = tch::no_grad(|| net.seg.forward_t(&net.seg.normalize(&rgb), false).logits);
    assert_eq!(ours.size(), [2, 5, 15, 18]);
    let ours: Vec<f32> = Vec::try_from(ours.flatten(0, -1)).unwrap();
    assert_matches_reference(&ours, &read_f32_le(&file(reference)), reference);
}

#[test]
fn an_imagenet_encoder_loads_its_stages_and_reports_the_classifier_as_unexpected() {
    let (vs, net) = network();
    let report = pth::import_into(&vs, &file("imagenet.pth"), Which::Auto, false).unwrap();
    assert_eq!(report.load.unexpected, ["head.bias", "head.weight"]);
    assert!(!report.load.missing.is_empty());
    assert!(report
        .load
        .missing
        .iter()
        .all(|m| m.starts_with("decode_head.")));
    assert!(report.skipped.is_empty());
    assert_eq!(report.network, "state_dict");
    let rgb = input();
    let stage4 = tch::no_grad(|| net.seg.forward_t(&net.seg.normalize(&rgb), false).encoder);
    assert_eq!(stage4.size(), [2, 256, 2, 3]);
    let ours: Vec<f32> = Vec::try_from(stage4.flatten(0, -1)).unwrap();
    assert_matches_reference(&ours, &read_f32_le(&file("imagenet_stage4.bin")), "stage 4");
    // Strict import refuses the leftovers and copies nothing.
    let e = pth::import_into(&vs, &file("imagenet.pth"), Which::Auto, true).unwrap_err();
    assert!(e.to_string().contains("strict import refused"), "{e}");
}

#[test]
fn an_mmseg_checkpoint_loads_exactly_and_gives_pytorchs_logits() {
    let (vs, net) = network();
    let report = pth::import_into(&vs, &file("mmseg.pth"), Which::Auto, true).unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(report.network, "state_dict");
    assert!(report
        .ignored
        .iter()
        .all(|n| n.ends_with("num_batches_tracked")));
    assert_logits(&net, "student_logits.bin");
}

#[test]
fn a_daformer_uda_checkpoint_gives_the_teacher_by_default_and_the_student_on_request() {
    for (which, part, reference) in [
        (Which::Auto, "state_dict/ema_model", "teacher_logits.bin"),
        (Which::Ema, "state_dict/ema_model", "teacher_logits.bin"),
        (Which::Student, "state_dict/model", "student_logits.bin"),
    ] {
        let (vs, net) = network();
        let report = pth::import_into(&vs, &file("uda.pth"), which, true).unwrap();
        assert_eq!(report.network, part);
        assert!(report.load.unexpected.is_empty(), "{report}");
        assert_logits(&net, reference);
    }
}

#[test]
fn a_uda_checkpoint_becomes_a_model_file_with_the_mit_input_normalisation() {
    let file_in = pth::read(&file("uda.pth"), Which::Auto).unwrap();
    let config = pth::infer_config(&file_in).unwrap();
    assert_eq!(config.backbone, Backbone::MitB0);
    assert_eq!(
        (config.decoder(), config.num_classes),
        (Decoder::Daformer, 5)
    );
    assert!(!config.input.bgr);
    assert_eq!(config.input.mean, [123.675, 116.28, 103.53]);
    assert_eq!(config.input.std, [58.395, 57.12, 57.375]);
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("daformer.safetensors");
    let report = pth::to_model_file(&file_in, &config, &model, true).unwrap();
    assert!(report.is_exact(), "{report}");
    let loaded = checkpoint::load_network(&model, STUDENT, Device::Cpu).unwrap();
    assert_eq!(loaded.info.model, config);
    assert_logits(&loaded.net, "teacher_logits.bin");
    // The .pth itself loads as a network too (the exporter's path).
    let direct = checkpoint::load_network(&file("mmseg.pth"), STUDENT, Device::Cpu).unwrap();
    assert_logits(&direct.net, "student_logits.bin");
}

#[test]
fn an_imagenet_encoder_is_not_a_whole_model() {
    let f = pth::read(&file("imagenet.pth"), Which::Auto).unwrap();
    let e = pth::infer_config(&f).unwrap_err().to_string();
    assert!(e.contains("no DAFormer or SegFormer decoder"), "{e}");
    assert!(e.contains("imagenet.pth"), "{e}");
}
