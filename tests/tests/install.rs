//! `make install` (docs/deployment.md, "Install"): `make install-only` into a temporary
//! prefix, reusing the build of this test's own profile (`make test` builds it; alone:
//! `make build` first), then a C program built with `pkg-config --cflags --libs
//! rccr_infer` alone runs a model and gives the labels known by construction.
//!
//! The model is `infer/tests/support/make_model.py`'s nearest-colour classifier (a 1x1
//! convolution scoring the distance to each Cityscapes palette colour), so an image painted
//! in palette colours must come back as exactly the train ids it was painted with.

use rccr_test_support::{repo_root, run_python, Deps};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Cityscapes colours of train ids 0..18 (cityscapesscripts' `labels.py`).
const PALETTE: [[u8; 3]; 19] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
];
const SOVERSION: &str = "0";
const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";
const W: usize = 40;
const H: usize = 24;

/// `target/<profile>`: this test runs from its `deps/` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The train id painted at (x, y): 4-px stripes, shifted by 3 classes every 8 rows.
fn painted(x: usize, y: usize) -> u8 {
    ((x / 4 + 3 * (y / 8)) % 19) as u8
}

fn write_ppm(path: &Path) {
    let mut bytes = format!("P6\n{W} {H}\n255\n").into_bytes();
    for y in 0..H {
        for x in 0..W {
            bytes.extend_from_slice(&PALETTE[painted(x, y) as usize]);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn pkg_config(prefix: &Path, args: &[&str]) -> String {
    let out = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .args(args)
        .arg("rccr_infer"));
    stdout(&out)
}

/// `make install-only PREFIX=prefix` from this profile's build.
fn install(prefix: &Path) {
    let dir = profile_dir();
    for built in [
        "rccr-train",
        "rccr-export",
        "rccr-infer",
        "examples/librccr_infer.a",
    ] {
        assert!(
            dir.join(built).exists(),
            "{} is missing: run `make build` first",
            dir.join(built).display()
        );
    }
    // A `make test` above this test must not pass its flags (e.g. -n) or jobserver down.
    run(Command::new("make")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .current_dir(repo_root())
        .args(["--no-print-directory", "install-only"])
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("TARGET_DIR={}", dir.display())));
}

fn check_layout(prefix: &Path) {
    let version = env!("CARGO_PKG_VERSION");
    let lib = prefix.join("lib");
    for bin in ["rccr-train", "rccr-export", "rccr-infer"] {
        assert!(prefix.join("bin").join(bin).is_file(), "bin/{bin}");
    }
    let link = |name: &str| std::fs::read_link(lib.join(name)).unwrap();
    let so_version = format!("librccr_infer.so.{SOVERSION}");
    assert_eq!(link("librccr_infer.so"), PathBuf::from(&so_version));
    assert_eq!(
        link(&so_version),
        PathBuf::from(format!("librccr_infer.so.{version}"))
    );
    assert!(lib.join("librccr_infer.a").is_file());
    assert!(
        lib.join(ORT_LIBRARY).is_file(),
        "ONNX Runtime beside the library"
    );
    let header = std::fs::read_to_string(prefix.join("include/rccr_infer.h")).unwrap();
    let original = std::fs::read_to_string(repo_root().join("infer/include/rccr_infer.h"));
    assert_eq!(header, original.unwrap());

    let dynamic = stdout(&run(Command::new("readelf")
        .arg("-d")
        .arg(lib.join(format!("librccr_infer.so.{version}")))));
    assert!(
        dynamic.contains(&format!("Library soname: [{so_version}]")),
        "{dynamic}"
    );
    let symbols = stdout(&run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib.join("librccr_infer.so"))));
    let exported: BTreeSet<String> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
        .collect();
    assert_eq!(
        exported,
        rccr_test_support::c_functions(&header),
        "exported symbols"
    );
    assert_eq!(pkg_config(prefix, &["--modversion"]), version);
}

/// The system tools the test runs, with the Debian package that provides each.
const TOOLS: [(&str, &str); 5] = [
    ("make", "make"),
    ("cc", "gcc"),
    ("pkg-config", "pkg-config"),
    ("readelf", "binutils"),
    ("nm", "binutils"),
];

#[test]
fn installed_library_builds_and_runs_a_c_program_with_pkg_config_alone() {
    for (tool, package) in TOOLS {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "`{tool}` is not installed: apt-get install {package}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    install(&prefix);
    check_layout(&prefix);

    // The C example, built outside the repository with pkg-config's flags only.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let example = src.join("segment.c");
    std::fs::copy(repo_root().join("infer/examples/c/segment.c"), &example).unwrap();
    let flags = pkg_config(&prefix, &["--cflags", "--libs"]);
    let exe = src.join("segment");
    run(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .arg(&example)
            .args(flags.split_whitespace())
            .arg("-o")
            .arg(&exe),
    );

    let model = tmp.path().join("m.onnx");
    run_python(Deps::Py, "infer/tests/support/make_model.py", &[&model]);
    let image = tmp.path().join("frame.ppm");
    write_ppm(&image);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let size = format!("{W}x{H}");
    run(Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .args(["--provider", "cpu", "--input-size", &size])
        .args([&model, &out, &image]));
    let pgm = std::fs::read(out.join("frame.pgm")).unwrap();
    let header = format!("P5\n{W} {H}\n255\n");
    assert!(pgm.starts_with(header.as_bytes()), "PGM header");
    let ids = &pgm[header.len()..];
    let want: Vec<u8> = (0..H)
        .flat_map(|y| (0..W).map(move |x| painted(x, y)))
        .collect();
    assert_eq!(ids, &want[..], "train ids of the painted frame");

    // The installed CLI runs the same model (ONNX Runtime found, no build folder needed).
    let bench = run(Command::new(prefix.join("bin/rccr-infer"))
        .args([
            "bench",
            "--provider",
            "cpu",
            "--iterations",
            "1",
            "--warmup",
            "0",
        ])
        .args(["--input-size", &size, "--model"])
        .arg(&model));
    let text = format!(
        "{}{}",
        stdout(&bench),
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(text.contains("cpu"), "{text}");
}
