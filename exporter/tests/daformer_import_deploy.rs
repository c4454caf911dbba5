//! "Bring your DAFormer checkpoint, get ONNX, int8 and the C ABI", end to end with the
//! real binaries. tests/reference/daformer_deploy.py writes, with the installed PyTorch,
//! a whole DAFormer / MIC UDA checkpoint of a random MiT-B0 + DAFormer decoder (19
//! classes; student `model.*`, a different EMA teacher `ema_model.*`, `imnet_model.*`,
//! optimizer, and the release's meta with its img_norm_cfg), PNG / PPM images, and the
//! outputs of models/tests/reference/mit_reference.py's independent implementation after
//! the release's own preprocessing (ImageNet RGB mean / std) and logit resize. Then
//! `rccr-train import` -> `rccr-export --verify` (fp32, labels + logits) -> `rccr-infer`,
//! `rccr-export --int8` on calibration images -> `rccr-infer`, and the C ABI example
//! (`infer/examples/c/segment.c` linked against `librccr_infer.so`). The fp32 logits must
//! equal the teacher's (1e-4) and be far from the student's; rccr-infer's and the C ABI's
//! labels must equal the teacher's argmax; the int8 labels must mostly equal the fp32
//! ones; both models pass the official ONNX checker and carry the MiT normalisation.
//! The three tests share one fixture, import, fp32 export and rccr-infer run per process.
//!
//! rccr-train, rccr-infer and the C library are other packages' targets: `make test`
//! (`cargo test --workspace`) builds them; with these tests alone, build them first
//! (`cargo build --release -p rccr-trainer -p rccr-infer --bins --examples`). A missing or
//! stale one is a failure naming that command, never a skip.

mod common;

use prost::Message;
use rccr_test_support::{assert_matches_reference, python_outputs, read_f32_le, Deps};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The test images' size (W x H) and count; the classes of the checkpoint.
const W: u32 = 96;
const H: u32 = 64;
const IMAGES: usize = 3;
const CLASSES: usize = 19;
/// The odd-sized image of the logits check (N x 3 x H x W).
const ODD: [i64; 4] = [1, 3, 65, 70];
/// The least share of int8 labels equal to fp32's. Random weights give near-tied logits
/// (max |logit| about 1 over 19 classes), so int8 rounding flips some 7-10% of the pixels
/// here (measured 0.90-0.93); a wrong scale, zero point or layout falls to chance level.
const MIN_INT8_AGREEMENT: &str = "0.85";
const BUILD: &str = "cargo build --release -p rccr-trainer -p rccr-infer --bins --examples";

/// The files of daformer_deploy.py, written once per test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        python_outputs(
            Deps::TorchAndPy,
            "exporter/tests/reference/daformer_deploy.py",
        )
    })
    .path()
}

/// The newest modification time of the sources a cargo dep-info file (`X.d`) lists.
fn newest_source(dep_info: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let text = std::fs::read_to_string(dep_info).ok()?;
    text.lines()
        .filter_map(|l| l.split_once(": ").map(|(_, deps)| deps))
        .flat_map(str::split_whitespace)
        .filter_map(|p| {
            let t = std::fs::metadata(p).ok()?.modified().ok()?;
            Some((t, PathBuf::from(p)))
        })
        .max()
}

/// `rel` under this build's target/<profile>/ (the test runs from target/<profile>/deps),
/// asserted to exist and to be newer than every source its dep-info file names.
fn built(rel: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join(rel);
    let time = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}; build it with `{BUILD}`", path.display()));
    let stem = rel.trim_end_matches(".so");
    if let Some((newest, src)) = newest_source(&profile.join(format!("{stem}.d"))) {
        assert!(
            newest <= time,
            "{} is older than {}: rebuild it with `{BUILD}`",
            path.display(),
            src.display()
        );
    }
    path
}

/// Runs `cmd` (logging at warn), asserting success; returns stdout.
fn run(cmd: &mut Command) -> String {
    let o: Output = cmd.env("RUST_LOG", "warn").output().expect("runs");
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `rccr-export --verify` with `args`, asserting success and a passed verification;
/// returns its JSON report.
fn export(args: &[&str]) -> serde_json::Value {
    let args = [&["--verify"], args].concat();
    let o = common::rccr_export(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "rccr-export {args:?}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verify"]["passed"], true, "{args:?}: {v}");
    v
}

/// rccr-infer's train ids for the test images with `model` (CPU, at the images' own size,
/// batches of 2), image after image.
fn infer_labels(model: &Path, out: &Path) -> Vec<u8> {
    let images = fixture().join("images");
    run(Command::new(built("rccr-infer"))
        .arg("--model")
        .arg(model)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(out)
        .args(["--input-size", &format!("{W}x{H}"), "--batch-size", "2"])
        .args(["--provider", "cpu", "--threads", "1", "--quiet"]));
    let mut ids = Vec::new();
    for k in 0..IMAGES {
        let png = out.join(format!("trainIds/img{k}.png"));
        let labels = image::open(&png).unwrap().to_luma8();
        assert_eq!(labels.dimensions(), (W, H), "{}", png.display());
        ids.extend_from_slice(labels.as_raw());
    }
    ids
}

/// The share of equal entries.
fn agreement(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// The checkpoint imported, exported in fp32 (labels + logits) and run by rccr-infer.
struct Deployed {
    dir: tempfile::TempDir,
    import_report: String,
    export_report: serde_json::Value,
    fp32: PathBuf,
    fp32_labels: Vec<u8>,
}

impl Deployed {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn deployed() -> &'static Deployed {
    static D: OnceLock<Deployed> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("daformer.safetensors");
        let import_report = run(Command::new(built("rccr-train"))
            .arg("import")
            .arg("--from")
            .arg(fixture().join("uda.pth"))
            .arg("--out")
            .arg(&model)
            .arg("--strict"));
        let fp32 = dir.path().join("daformer.onnx");
        let export_report = export(&[
            "--checkpoint",
            model.to_str().unwrap(),
            "--out",
            fp32.to_str().unwrap(),
            "--outputs",
            "both",
            "--verify-shape",
            "1x65x70",
            "--json",
        ]);
        let fp32_labels = infer_labels(&fp32, &dir.path().join("pred-fp32"));
        Deployed {
            dir,
            import_report,
            export_report,
            fp32,
            fp32_labels,
        }
    })
}

/// The logits output of `model` in ONNX Runtime on the fixture's odd-sized image.
fn onnx_logits(model: &Path) -> Vec<f32> {
    let mut session = common::ort_session(model);
    let input = read_f32_le(&fixture().join("odd.bin"));
    let input = ort::value::Tensor::from_array((ODD.to_vec(), input)).unwrap();
    let outputs = session.run(ort::inputs!["image" => input]).unwrap();
    let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(**shape, [1, CLASSES as i64, ODD[2], ODD[3]]);
    logits.to_vec()
}

/// The official checker accepts `model`, whose metadata names MiT-B0, 19 classes and the
/// ImageNet RGB mean / std of the release's img_norm_cfg.
fn check_model(model: &Path) {
    let out = common::onnx_checker(
        model,
        "print(json.dumps({p.key: p.value for p in m.metadata_props}))",
    );
    let meta: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(meta["rccr.backbone"], "mit-b0", "{meta}");
    assert_eq!(meta["rccr.num_classes"], "19", "{meta}");
    let config: serde_json::Value =
        serde_json::from_str(meta["rccr.model_config"].as_str().unwrap()).unwrap();
    let input = &config["input"];
    assert_eq!(input["bgr"], false, "{config}");
    assert_eq!(input["mean"], serde_json::json!([123.675, 116.28, 103.53]));
    assert_eq!(input["std"], serde_json::json!([58.395, 57.12, 57.375]));
}

#[test]
fn a_daformer_uda_checkpoint_deploys_its_teacher_in_fp32() {
    let d = deployed();
    let fixture = fixture();

    // The EMA teacher, every tensor used, as MiT-B0 with DAFormer's decoder.
    let report = &d.import_report;
    assert!(
        report.contains("`state_dict/ema_model`") && report.contains("missing 0, unexpected 0"),
        "{report}"
    );
    assert!(
        report.contains("mit-b0 / 19 classes / daformer decoder"),
        "{report}"
    );
    let v = &d.export_report["verify"];
    assert!(v["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{v}");
    check_model(&d.fp32);

    // fp32 logits: PyTorch's teacher to 1e-4, and nowhere near the student.
    let ours = onnx_logits(&d.fp32);
    let teacher = read_f32_le(&fixture.join("odd_teacher.bin"));
    assert_matches_reference(&ours, &teacher, "fp32 ONNX vs PyTorch teacher");
    let student = read_f32_le(&fixture.join("odd_student.bin"));
    let off = ours
        .iter()
        .zip(&student)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // 1000 times the bound above: these are another network's logits.
    assert!(
        off > 0.1,
        "the logits match the student's: max |diff| {off}"
    );

    // rccr-infer's fp32 labels: the teacher's argmax, not the student's.
    let teacher_ids = std::fs::read(fixture.join("teacher_labels.bin")).unwrap();
    let student_ids = std::fs::read(fixture.join("student_labels.bin")).unwrap();
    let classes: std::collections::BTreeSet<u8> = teacher_ids.iter().copied().collect();
    assert!(
        classes.len() >= 5,
        "degenerate reference labels: {classes:?}"
    );
    let (vs_teacher, vs_student) = (
        agreement(&d.fp32_labels, &teacher_ids),
        agreement(&d.fp32_labels, &student_ids),
    );
    eprintln!("fp32 labels: {vs_teacher:.5} teacher, {vs_student:.5} student");
    assert!(vs_teacher >= 0.999, "fp32 vs PyTorch teacher: {vs_teacher}");
    assert!(vs_student < 0.5, "fp32 vs PyTorch student: {vs_student}");
}

#[test]
fn its_int8_export_calibrated_on_other_images_keeps_the_fp32_labels() {
    let (d, fixture) = (deployed(), fixture());
    // Verified by rccr-export against libtorch fp32 on the test images.
    let int8 = d.path("daformer-int8.onnx");
    let (model, calib) = (d.path("daformer.safetensors"), fixture.join("calib"));
    let images = fixture.join("images");
    let r = export(&[
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        int8.to_str().unwrap(),
        "--int8",
        "--calibration-images",
        calib.to_str().unwrap(),
        "--calibration-size",
        &format!("{W}x{H}"),
        "--verify-images",
        images.to_str().unwrap(),
        "--min-agreement",
        MIN_INT8_AGREEMENT,
        "--json",
    ]);
    eprintln!("int8 verify: {}", r["verify"]["min_argmax_agreement"]);
    check_model(&int8);
    let int8_labels = infer_labels(&int8, &d.path("pred-int8"));
    let vs_fp32 = agreement(&int8_labels, &d.fp32_labels);
    eprintln!("int8 labels: {vs_fp32:.5} fp32");
    let min: f64 = MIN_INT8_AGREEMENT.parse().unwrap();
    assert!(vs_fp32 >= min, "int8 vs fp32 labels: {vs_fp32}");
    // It is the quantized graph that ran.
    let q = rccr_exporter::onnx::ModelProto::decode(&std::fs::read(&int8).unwrap()[..]).unwrap();
    let ops = common::op_types(&q);
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert!(
        count("QuantizeLinear") > 0 && count("DequantizeLinear") > 0,
        "{ops:?}"
    );
}

/// The train ids of a binary PGM (P5) the C example writes.
fn read_pgm(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<&[u8]> = bytes.splitn(5, |b| b.is_ascii_whitespace()).collect();
    assert_eq!(header[0], b"P5", "{}", path.display());
    let num = |b: &[u8]| std::str::from_utf8(b).unwrap().parse::<u32>().unwrap();
    (num(header[1]), num(header[2]), header[4].to_vec())
}

#[test]
fn the_c_abi_segments_with_the_exported_daformer_like_rccr_infer_and_pytorch() {
    let d = deployed();
    let lib = built("examples/librccr_infer.so");
    let infer = common::repo_root().join("infer");
    let exe = d.path("segment");
    rccr_test_support::compile_c(
        &infer.join("include"),
        &[infer.join("examples/c/segment.c")],
        &exe,
        &rccr_test_support::c_library_link(lib.parent().unwrap()),
    );
    let out = d.path("pred-c");
    std::fs::create_dir_all(&out).unwrap();
    let ppm: Vec<PathBuf> = (0..IMAGES)
        .map(|k| fixture().join(format!("ppm/img{k}.ppm")))
        .collect();
    let stdout = run(Command::new(&exe)
        .args(["--provider", "cpu", "--input-size", &format!("{W}x{H}")])
        .args(["--batch-size", "2", "--threads", "1"])
        .arg(&d.fp32)
        .arg(&out)
        .args(&ppm));
    assert!(stdout.contains("19 classes"), "{stdout}");
    let mut ids = Vec::new();
    for k in 0..IMAGES {
        let (w, h, data) = read_pgm(&out.join(format!("img{k}.pgm")));
        assert_eq!((w, h), (W, H), "img{k}");
        ids.extend(data);
    }
    // The same Segmenter behind both: exactly rccr-infer's ids, hence PyTorch's teacher.
    assert_eq!(ids, d.fp32_labels, "C ABI vs rccr-infer");
    let teacher_ids = std::fs::read(fixture().join("teacher_labels.bin")).unwrap();
    let vs_teacher = agreement(&ids, &teacher_ids);
    assert!(
        vs_teacher >= 0.999,
        "C ABI vs PyTorch teacher: {vs_teacher}"
    );
}
