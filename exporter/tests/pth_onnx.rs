//! PyTorch checkpoints to ONNX, end to end: tests/reference/
//! pth_onnx.py writes `.pth` files with the installed PyTorch — the independent DACS
//! DeepLabv2 of models/tests/reference/dacs_deeplabv2.py (ResNet-50 layers, 5 classes,
//! random weights and batch-norm statistics) as a bare state_dict and as a DACS checkpoint
//! (`model` + `ema_model` with `module.` names, optimizer, iteration, config), each in the
//! zip and the legacy format — and PyTorch's forward of the same weights, resized to the
//! input size as the graph does (bilinear, align_corners). The files go through
//! `rccr-export --checkpoint FILE.pth` directly and through `rccr-train import` followed by
//! `rccr-export`; ONNX Runtime's `logits` must equal PyTorch's to
//! max |diff| <= 1e-4 x max(1, max |logit|).

mod common;

use rccr_test_support::{assert_matches_reference, python_outputs, read_f32_le, Deps};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SHAPE: [i64; 4] = [2, 3, 57, 70];
const CLASSES: i64 = 5;

/// The files of pth_onnx.py, written once per test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| python_outputs(Deps::Torch, "exporter/tests/reference/pth_onnx.py"))
        .path()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.env("RUST_LOG", "warn").output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `rccr-export --checkpoint ckpt --outputs logits` into `out`.
fn export(ckpt: &Path, out: &Path) {
    run(Command::new(env!("CARGO_BIN_EXE_rccr-export"))
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--out")
        .arg(out)
        .args(["--outputs", "logits"]));
}

/// ONNX Runtime's `logits` of `model` on pth_onnx.py's input.
fn onnx_logits(model: &Path) -> Vec<f32> {
    let mut session = common::ort_session(model);
    let input = read_f32_le(&fixture().join("input.bin"));
    let input = ort::value::Tensor::from_array((SHAPE.to_vec(), input)).unwrap();
    let outputs = session.run(ort::inputs!["image" => input]).unwrap();
    let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(**shape, [SHAPE[0], CLASSES, SHAPE[2], SHAPE[3]]);
    logits.to_vec()
}

/// The exported `model`'s logits equal PyTorch's in `reference` (ema.bin / student.bin).
fn assert_matches(model: &Path, reference: &str) {
    let theirs = read_f32_le(&fixture().join(reference));
    let what = format!("{} vs PyTorch {reference}", model.display());
    assert_matches_reference(&onnx_logits(model), &theirs, &what);
}

#[test]
fn rccr_export_of_torch_files_gives_pytorch_logits() {
    let out = tempfile::tempdir().unwrap();
    // DACS checkpoints: the teacher (`ema_model`) by default.
    for name in [
        "zip_state_dict.pth",
        "legacy_state_dict.pth",
        "zip_dacs.pth",
        "legacy_dacs.pth",
    ] {
        let model = out.path().join(name.replace(".pth", ".onnx"));
        export(&fixture().join(name), &model);
        assert_matches(&model, "ema.bin");
    }
}

/// `rccr-train` of this build, next to the test executable (target/PROFILE/): `make test`
/// (`cargo test --workspace`) builds it with the test binaries.
fn rccr_train() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("rccr-train{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

#[test]
fn rccr_train_import_then_export_gives_pytorch_logits() {
    let Some(train) = rccr_train() else {
        eprintln!("rccr-train is not built next to this test (run `make test`): skipped");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    for (name, weights, reference) in [
        // Both formats and layouts, and each network of a DACS checkpoint (the rest of
        // the format x layout x --weights grid is covered by models/tests/pth.rs).
        ("legacy_state_dict.pth", "auto", "ema.bin"),
        ("zip_dacs.pth", "auto", "ema.bin"),
        ("legacy_dacs.pth", "student", "student.bin"),
    ] {
        let stem = format!("{}_{weights}", name.trim_end_matches(".pth"));
        let imported = out.path().join(format!("{stem}.safetensors"));
        let report = run(Command::new(&train)
            .arg("import")
            .arg("--from")
            .arg(fixture().join(name))
            .arg("--out")
            .arg(&imported)
            .args(["--weights", weights, "--strict"]));
        let network = if name.contains("dacs") {
            if weights == "student" {
                "`model`"
            } else {
                "`ema_model`"
            }
        } else {
            "state_dict"
        };
        assert!(
            report.contains(network) && report.contains("copied 273"),
            "{name} --weights {weights}: {report}"
        );
        let model = out.path().join(format!("{stem}.onnx"));
        export(&imported, &model);
        assert_matches(&model, reference);
    }
}
