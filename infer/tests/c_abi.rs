//! The C ABI (docs/deployment.md): `include/rccr_infer.h` checked against the Rust definitions
//! (struct layout, constants, exported symbols), every entry point's error cases and a
//! shared handle under 4 threads from C (`tests/support/abi_check.c`), and the C example
//! `examples/c/segment.c`, compiled with the system C compiler and linked against the
//! built `librccr_infer.so` and `librccr_infer.a`, giving exactly the Rust API's and the
//! CLI's train ids.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rccr_infer::capi::{self, RccrOptions};
use rccr_infer::Segmenter;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/examples`, where cargo puts the C library (the `rccr_infer` example
/// target: plain `cargo test` builds it; with `--test c_abi` alone, build it first with
/// `cargo build -p rccr-infer --examples`). The test runs from `target/<profile>/deps`, so
/// this holds for any profile and target folder. A library older than a source file of
/// the library is an error (it would test stale code).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    let dir = deps.parent().unwrap_or(deps).join("examples");
    let lib = dir.join("librccr_infer.so");
    let built = std::fs::metadata(&lib)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with `cargo build -p rccr-infer --examples`",
                lib.display()
            )
        });
    let newest = walkdir::WalkDir::new(manifest().join("src"))
        .into_iter()
        .chain(walkdir::WalkDir::new(manifest().join("examples/c")))
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        // The CLI's source is not part of the library.
        .filter(|e| e.path() != manifest().join("src/main.rs"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.into_path())))
        .max();
    if let Some((time, src)) = newest {
        assert!(
            time <= built,
            "{} is older than {}: rebuild it with `cargo build -p rccr-infer --examples`",
            lib.display(),
            src.display()
        );
    }
    dir
}

/// Compiles C `sources` into `out` against this crate's header, linking `link`.
fn compile(sources: &[PathBuf], out: &Path, link: &[String]) {
    rccr_test_support::compile_c(&manifest().join("include"), sources, out, link);
}

fn dynamic_link() -> Vec<String> {
    rccr_test_support::c_library_link(&lib_dir())
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.env("RUST_BACKTRACE", "0").output().expect("run")
}

#[test]
fn header_matches_the_rust_definitions_and_exports() {
    let d = tempfile::tempdir().unwrap();
    let exe = d.path().join("abi_check");
    compile(
        &[manifest().join("tests/support/abi_check.c")],
        &exe,
        &dynamic_link(),
    );
    let o = run(Command::new(&exe).arg("layout"));
    assert!(o.status.success(), "{}", text(&o));
    let c: std::collections::BTreeMap<String, i64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap()))
        .collect();
    let offsets = [
        (
            "struct_size",
            std::mem::offset_of!(RccrOptions, struct_size),
        ),
        ("provider", std::mem::offset_of!(RccrOptions, provider)),
        ("threads", std::mem::offset_of!(RccrOptions, threads)),
        (
            "input_width",
            std::mem::offset_of!(RccrOptions, input_width),
        ),
        (
            "input_height",
            std::mem::offset_of!(RccrOptions, input_height),
        ),
        ("batch_size", std::mem::offset_of!(RccrOptions, batch_size)),
        ("device_id", std::mem::offset_of!(RccrOptions, device_id)),
        ("trt_fp16", std::mem::offset_of!(RccrOptions, trt_fp16)),
        (
            "trt_cache_dir",
            std::mem::offset_of!(RccrOptions, trt_cache_dir),
        ),
    ];
    let mut rust: Vec<(String, i64)> =
        vec![("sizeof".into(), std::mem::size_of::<RccrOptions>() as i64)];
    rust.extend(
        offsets
            .iter()
            .map(|(f, o)| (format!("offset.{f}"), *o as i64)),
    );
    let constants = [
        ("RCCR_OK", capi::RCCR_OK as i64),
        (
            "RCCR_ERR_INVALID_ARGUMENT",
            capi::RCCR_ERR_INVALID_ARGUMENT as i64,
        ),
        ("RCCR_ERR_BAD_HANDLE", capi::RCCR_ERR_BAD_HANDLE as i64),
        ("RCCR_ERR_IO", capi::RCCR_ERR_IO as i64),
        ("RCCR_ERR_MODEL", capi::RCCR_ERR_MODEL as i64),
        ("RCCR_ERR_PROVIDER", capi::RCCR_ERR_PROVIDER as i64),
        ("RCCR_ERR_RUNTIME", capi::RCCR_ERR_RUNTIME as i64),
        ("RCCR_ERR_INFERENCE", capi::RCCR_ERR_INFERENCE as i64),
        ("RCCR_ERR_INTERNAL", capi::RCCR_ERR_INTERNAL as i64),
        ("RCCR_PROVIDER_AUTO", capi::RCCR_PROVIDER_AUTO as i64),
        ("RCCR_PROVIDER_CPU", capi::RCCR_PROVIDER_CPU as i64),
        ("RCCR_PROVIDER_CUDA", capi::RCCR_PROVIDER_CUDA as i64),
        (
            "RCCR_PROVIDER_TENSORRT",
            capi::RCCR_PROVIDER_TENSORRT as i64,
        ),
        (
            "RCCR_MAX_IMAGE_SIDE",
            rccr_infer::segmenter::MAX_IMAGE_SIDE as i64,
        ),
        (
            "RCCR_MAX_IMAGE_PIXELS",
            rccr_infer::segmenter::MAX_IMAGE_PIXELS as i64,
        ),
    ];
    rust.extend(constants.iter().map(|(k, v)| (k.to_string(), *v)));
    for (k, v) in &rust {
        assert_eq!(c.get(k), Some(v), "{k}: header vs Rust");
    }
    assert_eq!(c.len(), rust.len(), "the C side printed other names: {c:?}");

    // The functions the header declares are exactly the library's exported rccr_ symbols.
    let header = std::fs::read_to_string(manifest().join("include/rccr_infer.h")).unwrap();
    let declared = rccr_test_support::c_functions(&header);
    let nm = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_dir().join("librccr_infer.so")));
    assert!(nm.status.success(), "nm: {}", text(&nm));
    let exported: BTreeSet<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("rccr_"))
        .map(String::from)
        .collect();
    assert_eq!(
        declared, exported,
        "header declarations vs exported symbols"
    );
    for required in [
        "rccr_segmenter_open",
        "rccr_segmenter_num_classes",
        "rccr_segmenter_run",
        "rccr_segmenter_close",
        "rccr_last_error",
    ] {
        assert!(declared.contains(required), "{required} missing");
    }
}

#[test]
fn every_entry_point_and_its_errors_from_c_with_four_threads() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels,logits"]);
    let exe = d.path().join("abi_check");
    compile(
        &[manifest().join("tests/support/abi_check.c")],
        &exe,
        &dynamic_link(),
    );
    let o = run(Command::new(&exe).arg(&model));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ALL OK"),
        "{}",
        text(&o)
    );
}

fn write_ppm(path: &Path, img: &image::RgbImage) {
    let mut bytes =
        format!("P6\n# test frame\n{} {}\n255\n", img.width(), img.height()).into_bytes();
    bytes.extend_from_slice(img.as_raw());
    std::fs::write(path, bytes).unwrap();
}

fn read_pgm(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<&[u8]> = bytes.splitn(5, |b| b.is_ascii_whitespace()).collect();
    assert_eq!(header[0], b"P5");
    let num = |b: &[u8]| std::str::from_utf8(b).unwrap().parse::<u32>().unwrap();
    (num(header[1]), num(header[2]), header[4].to_vec())
}

/// Frames that are not palette-exact (noise, and sizes other than the input), so the
/// resize in and out decides many pixels: two 64x32 (one call of n = 2) and one 50x30.
fn frames() -> Vec<(String, image::RgbImage)> {
    let mut out = Vec::new();
    for (i, (w, h)) in [(64u32, 32u32), (64, 32), (50, 30)].into_iter().enumerate() {
        let mut img = paint(&painted_map(i, w, h), w, h);
        for (k, px) in img.pixels_mut().enumerate() {
            let n = ((k * 7919 + i * 31) % 61) as u8;
            px.0 = [
                px.0[0].wrapping_add(n),
                px.0[1].saturating_sub(n),
                px.0[2] ^ (n & 24),
            ];
        }
        out.push((format!("f{i}"), img));
    }
    out
}

fn rust_reference(model: &Path, frames: &[(String, image::RgbImage)]) -> Vec<Vec<u8>> {
    let mut seg = Segmenter::open(model, &cpu_options(Some((32, 16)), 2)).unwrap();
    let images: Vec<_> = frames.iter().map(|(_, i)| i.clone()).collect();
    seg.segment_original(&images)
        .unwrap()
        .into_iter()
        .map(|m| m.data)
        .collect()
}

#[test]
fn c_example_equals_the_rust_api_and_the_cli_dynamic_and_static() {
    let d = tempfile::tempdir().unwrap();
    let model = make_model(&d.path().join("m.onnx"), &["--outputs", "labels"]);
    let frames = frames();
    let (ppm, png) = (d.path().join("ppm"), d.path().join("png"));
    std::fs::create_dir_all(&ppm).unwrap();
    for (name, img) in &frames {
        write_ppm(&ppm.join(format!("{name}.ppm")), img);
        save_rgb(&png.join(format!("{name}.png")), img);
    }
    let expected = rust_reference(&model, &frames);

    // The CLI on the same frames as PNGs.
    let cli_out = d.path().join("cli");
    let o = run_infer(
        &model,
        &png,
        &[
            "--out",
            cli_out.to_str().unwrap(),
            "--input-size",
            "32x16",
            "--batch-size",
            "2",
            "--threads",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    let lib = lib_dir();
    let example = manifest().join("examples/c/segment.c");
    let static_link = vec![
        lib.join("librccr_infer.a").display().to_string(),
        "-lpthread".into(),
        "-ldl".into(),
        "-lm".into(),
    ];
    for (kind, link) in [("dynamic", dynamic_link()), ("static", static_link)] {
        let exe = d.path().join(format!("segment-{kind}"));
        compile(std::slice::from_ref(&example), &exe, &link);
        let out = d.path().join(format!("out-{kind}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--provider",
            "cpu",
            "--input-size",
            "32x16",
            "--batch-size",
            "2",
        ])
        .args(["--threads", "1"])
        .arg(&model)
        .arg(&out);
        for (name, _) in &frames {
            cmd.arg(ppm.join(format!("{name}.ppm")));
        }
        let o = run(&mut cmd);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("19 classes (0 = road), input 32x16, provider cpu")
                && stdout.contains("segmented 2 image(s) of 64x32")
                && stdout.contains("segmented 1 image(s) of 50x30"),
            "{kind}: {stdout}"
        );
        for ((name, img), want) in frames.iter().zip(&expected) {
            let (w, h, ids) = read_pgm(&out.join(format!("{name}.pgm")));
            assert_eq!((w, h), img.dimensions(), "{kind} {name}");
            assert_eq!(&ids, want, "{kind} {name}: C vs Rust API");
            let cli = load_gray(&cli_out.join(format!("trainIds/{name}.png")));
            assert_eq!(cli.as_raw(), want, "{name}: CLI vs Rust API");
        }
    }
}
