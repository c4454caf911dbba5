//! docs/design.md names the function, type or file that implements each equation and
//! contract. This test keeps those names true: every `code` span of the page that is a
//! Rust path (`Trainer::step`, `cross_entropy`) must name an item declared somewhere in
//! the workspace's sources, and every span that is a repository path must exist.

use rccr_test_support::repo_root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir` (no `target/`, no hidden folders).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The identifiers the sources declare: functions, types, modules, constants, fields and
/// enum variants (any identifier followed by `:`, `(`, `{` or `,` after a keyword or at a
/// line start is too loose, so fields and variants count by their `name:` / `Name,` form).
fn declared_names(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    for krate in ["models", "trainer", "exporter", "infer", "tests"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            names.extend(declared_in(line.trim_start()));
        }
    }
    names
}

fn declared_in(line: &str) -> Vec<String> {
    const KEYWORDS: [&str; 8] = [
        "fn ", "struct ", "enum ", "mod ", "const ", "static ", "type ", "trait ",
    ];
    let line = line
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub(super) ")
        .trim_start_matches("pub ");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for kw in KEYWORDS {
        if let Some(rest) = line.strip_prefix(kw) {
            return vec![ident(rest)];
        }
    }
    // A field (`name: Type,`) or an enum variant (`Name,` / `Name {` / `Name(`).
    let id = ident(line);
    let after = line[id.len()..].trim_start();
    if !id.is_empty()
        && [":", ",", " {", "{", "("]
            .iter()
            .any(|p| after.starts_with(p))
    {
        return vec![id];
    }
    Vec::new()
}

/// The `code` spans of a Markdown text, outside fenced blocks.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            spans.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    spans
}

/// `Type::method`, `module::function` or a snake/Camel identifier with at least one `_`
/// or `::` (so plain words such as `model` or `rccr` are not taken for code).
fn rust_path(span: &str) -> Option<&str> {
    let is_ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let parts: Vec<&str> = span.split("::").collect();
    let codey = span.contains("::") || span.contains('_');
    (codey && parts.iter().all(|p| is_ident(p))).then(|| *parts.last().unwrap())
}

/// Names the page uses that belong to PyTorch, ONNX, safetensors or the DACS code, not to
/// this workspace, and math written as code.
const FOREIGN: [&str; 10] = [
    "x_t",
    "__metadata__",
    "running_mean",
    "running_var",
    "dim_param",
    "align_corners",
    "max_dim",
    "ceil_mode",
    "use_sync_batchnorm",
    "reduce_range",
];

/// A path into the repository (`trainer/src/run.rs`, `docs/method.md`, `data/val.rs`).
fn repo_path(span: &str) -> bool {
    let top = [
        "models/",
        "trainer/",
        "exporter/",
        "infer/",
        "tests/",
        "docs/",
        "scripts/",
    ];
    span.ends_with(".rs") || top.iter().any(|t| span.starts_with(t))
}

#[test]
fn every_name_in_design_md_exists() {
    let root = repo_root();
    let page = std::fs::read_to_string(root.join("docs/design.md")).unwrap();
    let declared = declared_names(&root);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in code_spans(&page) {
        if FOREIGN.contains(&span.as_str()) {
            continue;
        }
        if repo_path(&span) && !span.contains([' ', '<', '#']) {
            checked += 1;
            let candidates = [root.join(&span), root.join("trainer/src").join(&span)];
            let bare_file = !span.contains('/') && files.iter().any(|f| f.ends_with(&span));
            if !bare_file && !candidates.iter().any(|p| p.exists()) {
                missing.push(format!("path {span}"));
            }
        } else if let Some(name) = rust_path(&span) {
            checked += 1;
            if !declared.contains(name) {
                missing.push(format!("item {span}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} names found: did the page change form?"
    );
    assert!(
        missing.is_empty(),
        "docs/design.md names what the tree does not have (rename it there):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_check_catches_a_missing_name() {
    let declared = declared_in("pub(crate) fn source_step(&mut self) {");
    assert_eq!(declared, vec!["source_step".to_string()]);
    assert_eq!(rust_path("Trainer::no_such_step"), Some("no_such_step"));
    assert_eq!(rust_path("model"), None);
    assert!(!declared_names(&repo_root()).contains("no_such_step"));
}
