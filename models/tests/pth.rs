//! `.pth` import (`rccr_models::pth`) against PyTorch itself: tests/reference/make_pth.py
//! saves the independent DACS DeepLabv2 of tests/reference/dacs_deeplabv2.py (ResNet-50
//! layers, 5 classes, random weights and batch-norm statistics) with the installed
//! PyTorch in the zip and legacy formats, as a bare state_dict and as a DACS checkpoint
//! (`module.` names, `model` + `ema_model` + optimizer + iteration + config), in fp16, as
//! views of one shared storage (offsets, permuted and strided views), with pickle
//! protocol 4, as a COCO-init look-alike (`Scale.` names, 91-class classifier), and as
//! hostile files whose pickle runs `os.system`; it also writes PyTorch's logits. Each
//! file imported here must give PyTorch's logits (1e-4 relative), report what it skipped,
//! and every bad file must be a clear error.

use rccr_models::checkpoint::{self, TEACHER};
use rccr_models::pth::{self, PthFormat, Which};
use rccr_models::{Backbone, ModelConfig, ModelError, RccrNet};
use rccr_test_support::{assert_matches_reference, python_outputs, read_f32_le, Deps};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{nn, Device, Kind, Tensor};

struct Fixture {
    dir: tempfile::TempDir,
    marker: PathBuf,
}

/// The files of make_pth.py, written once per test process.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = python_outputs(Deps::Torch, "models/tests/reference/make_pth.py");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap())
                .unwrap();
        let marker = PathBuf::from(manifest["marker"].as_str().unwrap());
        Fixture { dir, marker }
    })
}

fn file(name: &str) -> PathBuf {
    fixture().dir.path().join(name)
}

fn config(branches: usize) -> ModelConfig {
    ModelConfig {
        aspp_branches: branches,
        ..ModelConfig::new(Backbone::Resnet50, 5)
    }
}

fn network(branches: usize) -> (nn::VarStore, RccrNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &config(branches));
    (vs, net)
}

/// Our logits on make_pth.py's input must equal PyTorch's in `reference`.
fn assert_logits(net: &RccrNet, reference: &str) {
    let rgb = Tensor::from_slice(&read_f32_le(&file("input.bin")))
        .reshape([2, 3, 57, 70])
        .to_kind(Kind::Float);
    let ours = tch::no_grad(|| net.seg.forward_t(&net.seg.normalize(&rgb), false).logits);
    assert_eq!(ours.size(), [2, 5, 8, 9]);
    let ours: Vec<f32> = Vec::try_from(ours.flatten(0, -1)).unwrap();
    assert_matches_reference(&ours, &read_f32_le(&file(reference)), reference);
}

/// Imports `name` into a fresh ResNet-50 network and checks its logits against `reference`.
fn import_matches(name: &str, which: Which, reference: &str) -> pth::ImportReport {
    let (vs, net) = network(4);
    let report =
        pth::import_into(&vs, &file(name), which, true).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_logits(&net, reference);
    report
}

fn error_of(path: &Path) -> String {
    match pth::read(path, Which::Auto) {
        Ok(f) => panic!("{} read: {} tensors", path.display(), f.tensors.len()),
        Err(ModelError::Format(m)) => m,
        Err(e) => panic!("{}: unexpected error kind: {e}", path.display()),
    }
}

#[test]
fn zip_state_dict_gives_pytorch_logits_and_an_exact_report() {
    let report = import_matches("zip_state_dict.pth", Which::Auto, "ema.bin");
    assert_eq!(report.network, "state_dict");
    assert!(report.is_exact(), "{report}");
    let (vs, _) = network(4);
    let encoder_and_head = vs
        .variables()
        .keys()
        .filter(|n| !n.starts_with("projector."))
        .count();
    assert_eq!(report.load.loaded, encoder_and_head);
    // Every batch norm's num_batches_tracked, and nothing else, is ignored.
    assert!(report
        .ignored
        .iter()
        .all(|n| n.ends_with("num_batches_tracked")));
    assert_eq!(report.ignored.len(), 53, "{:?}", report.ignored);
    assert_eq!(report.iteration, None);
}

#[test]
fn dacs_checkpoints_default_to_the_teacher_and_select_the_student() {
    for name in ["zip_dacs.pth", "legacy_dacs.pth"] {
        let report = import_matches(name, Which::Auto, "ema.bin");
        assert_eq!(report.network, "ema_model", "{name}");
        assert_eq!(report.iteration, Some(1234), "{name}");
        assert!(report.is_exact(), "{name}: {report}");
        let report = import_matches(name, Which::Ema, "ema.bin");
        assert_eq!(report.network, "ema_model");
        let report = import_matches(name, Which::Student, "student.bin");
        assert_eq!(report.network, "model");
    }
    let file = pth::read(&file("legacy_dacs.pth"), Which::Auto).unwrap();
    assert_eq!(file.format, PthFormat::Legacy);
    assert_eq!(
        file.entries,
        ["config", "ema_model", "iteration", "model", "optimizer"]
    );
    assert!(file.tensors.contains_key("layer1.0.conv1.weight"));
    assert!(!file.tensors.keys().any(|n| n.starts_with("module.")));
}

#[test]
fn fp16_storages_import_as_their_values() {
    let file = pth::read(&file("zip_fp16.pth"), Which::Auto).unwrap();
    assert_eq!(file.format, PthFormat::Zip);
    assert_eq!(file.tensors["conv1.weight"].kind(), Kind::Half);
    assert_eq!(file.tensors["bn1.num_batches_tracked"].kind(), Kind::Int64);
    // Logits of PyTorch's network holding the same fp16-rounded weights.
    import_matches("zip_fp16.pth", Which::Auto, "fp16.bin");
}

#[test]
fn views_of_a_shared_storage_zip_and_legacy() {
    for name in ["zip_views.pth", "legacy_views.pth"] {
        import_matches(name, Which::Auto, "ema.bin");
    }
}

#[test]
fn pickle_protocol_4_stack_globals_are_checked_and_read() {
    import_matches("zip_protocol4.pth", Which::Auto, "ema.bin");
}

#[test]
fn two_branch_network_ignores_the_unused_aspp_branches() {
    let (vs, net) = network(2);
    let report = pth::import_into(&vs, &file("zip_state_dict.pth"), Which::Auto, true).unwrap();
    assert!(report.is_exact(), "{report}");
    let unused: Vec<_> = report
        .ignored
        .iter()
        .filter(|n| n.starts_with("layer5."))
        .collect();
    assert_eq!(
        unused,
        [
            "layer5.conv2d_list.2.bias",
            "layer5.conv2d_list.2.weight",
            "layer5.conv2d_list.3.bias",
            "layer5.conv2d_list.3.weight"
        ]
    );
    // The DACS release's forward (branches 6 and 12 only) in PyTorch.
    assert_logits(&net, "ema_two_branch.bin");
}

#[test]
fn coco_like_init_skips_the_classifier_and_strict_refuses() {
    let path = file("legacy_coco.pth");
    let (vs, _) = network(4);
    let before: Vec<Tensor> = ["layer5.conv2d_list.0.weight", "conv1.weight"]
        .iter()
        .map(|n| vs.variables()[*n].copy())
        .collect();
    let err = pth::import_into(&vs, &path, Which::Auto, true).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("strict") && msg.contains("layer5.conv2d_list.0.weight"),
        "{msg}"
    );
    assert!(msg.contains("[91, 2048, 3, 3]") && msg.contains(&path.display().to_string()));
    assert!(
        vs.variables()["conv1.weight"].equal(&before[1]),
        "strict copied something"
    );

    let report = pth::import_into(&vs, &path, Which::Auto, false).unwrap();
    assert_eq!(report.skipped.len(), 8, "{report}");
    let s = &report.skipped[0];
    assert_eq!(s.name, "layer5.conv2d_list.0.bias");
    assert_eq!((s.in_file.clone(), s.in_model.clone()), (vec![91], vec![5]));
    assert!(report.load.missing.is_empty() && report.load.unexpected.is_empty());
    let vars = vs.variables();
    assert!(
        vars["layer5.conv2d_list.0.weight"].equal(&before[0]),
        "classifier changed"
    );
    // The encoder is the `Scale.`-prefixed one of the file: the same as the state_dict's.
    let reference = pth::read(&file("zip_state_dict.pth"), Which::Auto).unwrap();
    for (name, t) in &reference.tensors {
        if let Some(v) = vars.get(name).filter(|_| !name.starts_with("layer5.")) {
            assert!(v.equal(t), "{name}");
        }
    }
}

#[test]
fn hostile_pickles_are_refused_without_running() {
    for name in ["evil_zip.pth", "evil_legacy.pth", "evil_protocol4.pth"] {
        let path = file(name);
        let msg = error_of(&path);
        assert!(
            msg.contains("refused") && msg.contains("`posix.system`"),
            "{name}: {msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let (vs, _) = network(4);
        assert!(pth::import_into(&vs, &path, Which::Auto, false).is_err());
    }
    assert!(!fixture().marker.exists(), "the payload ran");
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["zip_state_dict.pth", "legacy_dacs.pth"] {
        let bytes = std::fs::read(file(name)).unwrap();
        let n = bytes.len();
        for keep in [1, 40, 200, 5000, n / 2, n - 100, n - 1] {
            let path = dir.path().join(format!("{keep}-{name}"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let msg = error_of(&path);
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        }
    }
    let foreign = [
        ("empty.pth", b"".to_vec(), "empty"),
        (
            "text.pth",
            b"hello, not a checkpoint\n".to_vec(),
            "not a PyTorch checkpoint",
        ),
        ("model.safetensors", safetensors_bytes(), "safetensors"),
    ];
    for (name, bytes, expect) in foreign {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let msg = error_of(&path);
        assert!(msg.contains(expect), "{name}: {msg}");
    }
    match pth::read(&dir.path().join("absent.pth"), Which::Auto) {
        Err(ModelError::Io { path, .. }) => assert!(path.ends_with("absent.pth")),
        other => panic!("{other:?}"),
    }
}

fn safetensors_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = network(2);
    let path = dir.path().join("m.safetensors");
    checkpoint::save_model(&vs, &config(2), &path, 0).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn model_file_from_a_legacy_checkpoint_loads_as_the_teacher() {
    let file_ = pth::read(&file("legacy_dacs.pth"), Which::Auto).unwrap();
    let inferred = pth::infer_config(&file_).unwrap();
    assert_eq!(inferred, config(4));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported.safetensors");
    let report = pth::to_model_file(&file_, &inferred, &out, true).unwrap();
    assert_eq!(report.network, "ema_model");
    let loaded = checkpoint::load_network(&out, TEACHER, Device::Cpu).unwrap();
    assert_eq!(loaded.info.iteration, 1234);
    assert_eq!(loaded.info.model, config(4));
    assert_logits(&loaded.net, "ema.bin");
}

#[test]
fn names_and_choices() {
    assert_eq!(
        pth::rccr_name("module.Scale.layer5.conv2d_list.0.weight"),
        "layer5.conv2d_list.0.weight"
    );
    assert_eq!(pth::rccr_name("Scale.bn1.weight"), "bn1.weight");
    assert_eq!(
        pth::rccr_name("layer1.0.conv1.weight"),
        "layer1.0.conv1.weight"
    );
    assert_eq!("ema".parse::<Which>().unwrap(), Which::Ema);
    assert_eq!("student".parse::<Which>().unwrap(), Which::Student);
    assert!("best".parse::<Which>().is_err());
    // A checkpoint without a teacher, asked for one; a bare state_dict is one network.
    let msg = match pth::read(&file("student_only.pth"), Which::Ema) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("read a teacher that is not there"),
    };
    assert!(
        msg.contains("no `ema_model`") && msg.contains("--weights student"),
        "{msg}"
    );
    let student = pth::read(&file("student_only.pth"), Which::Auto).unwrap();
    assert_eq!(
        (student.network_name(), student.iteration),
        ("model", Some(5))
    );
    assert!(pth::read(&file("zip_fp16.pth"), Which::Ema).is_ok());
}
