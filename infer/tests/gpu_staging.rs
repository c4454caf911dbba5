//! The GPU provider staging (docs/deployment.md), on this (GPU-less) machine: the failure messages
//! of `scripts/stage-ort-cuda.sh` (missing and corrupt chunks, missing CUDA libraries) and
//! `scripts/gpu-infer-check.sh` (no binary, no GPU, nothing staged), and a pack ->
//! receive -> assemble round trip on a fake onnxruntime-gpu wheel split into 1 MiB chunks
//! that gives back every file byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::text;

fn script(name: &str) -> PathBuf {
    rccr_test_support::repo_root().join("scripts").join(name)
}

fn stage_cmd(stage: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(script("stage-ort-cuda.sh"))
        .args(args)
        .env("STAGE", stage)
        .env("CHUNK_MB", "1");
    c
}

fn out(mut c: Command) -> Output {
    c.output().expect("bash")
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    rccr_test_support::Rng::new(seed).bytes(len)
}

/// A fake onnxruntime-gpu wheel: the three libraries (the CUDA provider is a real ELF
/// shared library, so `ldd` can read it) in `onnxruntime/capi/`.
fn fake_wheel(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let provider = std::fs::read("/lib/x86_64-linux-gnu/libm.so.6")
        .or_else(|_| std::fs::read("/usr/lib/x86_64-linux-gnu/libm.so.6"))
        .expect("libm.so.6 (any ELF shared library stands in for the CUDA provider)");
    let files = vec![
        ("libonnxruntime.so.1.31.1".to_string(), noise(1_500_000, 1)),
        (
            "libonnxruntime_providers_shared.so".to_string(),
            noise(20_000, 2),
        ),
        ("libonnxruntime_providers_cuda.so".to_string(), provider),
    ];
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    for (name, bytes) in &files {
        std::fs::write(content.join(name), bytes).unwrap();
    }
    let wheel = dir.join("onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl");
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile, os\n\
             z = zipfile.ZipFile(sys.argv[1], 'w')\n\
             for f in sorted(os.listdir(sys.argv[2])):\n\
             \x20   z.write(os.path.join(sys.argv[2], f), 'onnxruntime/capi/' + f)\n\
             z.close()",
        )
        .arg(&wheel)
        .arg(&content)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", text(&o));
    (wheel, files)
}

#[test]
fn staging_round_trip_and_its_failure_messages() {
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().join("stage");
    let (wheel, files) = fake_wheel(d.path());
    let model = d.path().join("model.onnx");
    std::fs::write(&model, noise(900_000, 3)).unwrap();
    let data = d.path().join("data/leftImg8bit/val");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.png"), b"png bytes").unwrap();

    let o = out(stage_cmd(
        &stage,
        &[
            "pack",
            "--wheel",
            wheel.to_str().unwrap(),
            model.to_str().unwrap(),
            d.path().join("data").to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let chunks: Vec<PathBuf> = (0..)
        .map(|i| stage.join(format!("chunk-{i:02}")))
        .take_while(|p| p.is_file())
        .collect();
    assert!(chunks.len() >= 3, "{} chunks: {}", chunks.len(), text(&o));
    assert!(chunks
        .iter()
        .all(|c| c.metadata().unwrap().len() <= 1 << 20));
    assert!(text(&o).contains("chunk-02"), "{}", text(&o));

    // A chunk not carried yet: receive lists it (exit 3), assemble refuses naming it.
    let away = d.path().join("away");
    std::fs::rename(&chunks[1], &away).unwrap();
    let o = out(stage_cmd(&stage, &["receive"]));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("still to carry") && text(&o).contains("chunk-01"),
        "{}",
        text(&o)
    );
    let o = out(stage_cmd(&stage, &["assemble"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("chunk(s) missing: chunk-01"),
        "{}",
        text(&o)
    );
    std::fs::rename(&away, &chunks[1]).unwrap();

    // A corrupt chunk: named, with the fix.
    let good = std::fs::read(&chunks[2]).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&chunks[2], &bad).unwrap();
    let o = out(stage_cmd(&stage, &["receive"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("chunk-02 is corrupt") && text(&o).contains("carry it again"),
        "{}",
        text(&o)
    );
    std::fs::write(&chunks[2], &good).unwrap();

    // No manifest: says where it comes from.
    let manifest = stage.join("manifest");
    std::fs::rename(&manifest, &away).unwrap();
    let o = out(stage_cmd(&stage, &["receive"]));
    assert!(
        text(&o).contains("manifest is missing") && text(&o).contains("pack"),
        "{}",
        text(&o)
    );
    std::fs::rename(&away, &manifest).unwrap();

    // Everything there: assembled byte for byte, twice (idempotent).
    let o = out(stage_cmd(&stage, &["receive"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = out(stage_cmd(&stage, &["assemble"]));
    assert!(o.status.success(), "{}", text(&o));
    for (name, bytes) in &files {
        assert_eq!(
            &std::fs::read(stage.join("ort").join(name)).unwrap(),
            bytes,
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(stage.join("ort/extra/model.onnx")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    assert!(stage.join("ort/extra/data/leftImg8bit/val/a.png").is_file());
    let o = out(stage_cmd(&stage, &["assemble"]));
    assert!(text(&o).contains("already assembled"), "{}", text(&o));

    // `env`: the CUDA 13 / cuDNN 9 libraries of the venv are checked by name.
    let nvidia = d.path().join("site-packages/nvidia");
    for (pkg, lib) in [
        ("cublas", "libcublas.so.13"),
        ("cublas", "libcublasLt.so.13"),
        ("cuda_runtime", "libcudart.so.13"),
        ("curand", "libcurand.so.10"),
    ] {
        let dir = nvidia.join(pkg).join("lib");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(lib), b"").unwrap();
    }
    let mut c = stage_cmd(&stage, &["env"]);
    c.env("NVIDIA_LIB_ROOT", &nvidia);
    let o = out(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("libcudnn.so.9 is not in") && text(&o).contains("cuDNN 9"),
        "{}",
        text(&o)
    );
    std::fs::create_dir_all(nvidia.join("cudnn/lib")).unwrap();
    std::fs::write(nvidia.join("cudnn/lib/libcudnn.so.9"), b"").unwrap();
    let mut c = stage_cmd(&stage, &["env"]);
    c.env("NVIDIA_LIB_ROOT", &nvidia);
    let o = out(c);
    assert!(o.status.success(), "{}", text(&o));
    let exports = String::from_utf8_lossy(&o.stdout);
    assert!(
        exports.contains("export ORT_DYLIB_PATH=")
            && exports.contains("libonnxruntime.so.1.31.1")
            && exports.contains("cudnn/lib"),
        "{exports}"
    );
    let mut c = stage_cmd(&stage, &["env"]);
    c.env("NVIDIA_LIB_ROOT", d.path().join("nowhere"));
    assert!(text(&out(c)).contains("NVIDIA_LIB_ROOT"));
}

fn check_cmd(stage: &Path, bin: &Path, smi: &str) -> Output {
    Command::new("bash")
        .arg(script("gpu-infer-check.sh"))
        .env("GPU_CHECK_SKIP_BUILD", "1")
        .env("RCCR_INFER", bin)
        .env("NVIDIA_SMI", smi)
        .env("STAGE", stage)
        .output()
        .expect("bash")
}

#[test]
fn gpu_check_says_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().join("stage");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rccr-infer"));
    let o = check_cmd(&stage, &d.path().join("no-binary"), "nvidia-smi");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no-binary not found")
            && text(&o).contains("cargo build --release -p rccr-infer"),
        "{}",
        text(&o)
    );
    let o = check_cmd(&stage, &bin, "/nonexistent/nvidia-smi");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("no NVIDIA GPU visible"), "{}", text(&o));
    // A GPU (a stand-in nvidia-smi) but nothing staged: the staging step says what to do.
    let smi = d.path().join("nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\necho 'GPU 0: Stand-in'\n").unwrap();
    let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&smi, exec).unwrap();
    let o = check_cmd(&stage, &bin, smi.to_str().unwrap());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("manifest is missing"), "{}", text(&o));
}
