//! The manuals and the programs agree on their flags, in both directions:
//! - every `--flag` that README.md, docs/*.md or a crate README names on an `rccr-train`,
//!   `rccr-export` or `rccr-infer` command line exists in the `--help` of that program
//!   (and subcommand); flags of the benchmark examples (`cargo run ... --example NAME --
//!   FLAGS`) exist in that example's `--help`; a flag named on its own (`--resume`) exists
//!   in some program's or example's `--help`, or belongs to another tool listed in
//!   [`OTHER_TOOLS`];
//! - every flag of every `--help` is documented somewhere in README.md or docs/*.md
//!   (docs/benchmark.md counts once it exists).
//!
//! The programs are the built ones next to this test's own profile folder (`make test`
//! builds them; alone: `cargo build --release --workspace` and
//! `cargo build --release -p rccr-exporter --examples` first).

use rccr_test_support::repo_root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs and the crate whose `src/` builds each (for the staleness check).
const PROGRAMS: [(&str, &str); 3] = [
    ("rccr-train", "trainer"),
    ("rccr-export", "exporter"),
    ("rccr-infer", "infer"),
];

/// Examples whose flags the manuals use (`cargo run -p rccr-exporter --example NAME`).
const EXAMPLES: [&str; 2] = ["infer_bench", "export_bench"];

/// Flags the manuals name that belong to other tools, with the tool.
const OTHER_TOOLS: [(&str, &str); 14] = [
    ("--release", "cargo"),
    ("--workspace", "cargo"),
    ("--examples", "cargo"),
    ("--example", "cargo"),
    ("--no-deps", "cargo doc"),
    ("--all-targets", "cargo clippy"),
    ("--check", "cargo fmt"),
    ("--cflags", "pkg-config"),
    ("--libs", "pkg-config"),
    ("--static", "pkg-config"),
    ("--logdir", "tensorboard"),
    ("--no-python", "torchrun"),
    ("--nproc-per-node", "torchrun"),
    ("--standalone", "torchrun"),
];

/// `target/<profile>`: this test runs from its `deps/` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The newest modification time of the `.rs` files below `dir`.
fn newest_source(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let time = entry.metadata().and_then(|m| m.modified()).ok();
                if let Some(t) = time {
                    if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                        newest = Some((t, path));
                    }
                }
            }
        }
    }
    newest
}

/// A built program, failing clearly when it is missing or older than its sources.
fn built(path: PathBuf, sources: &[PathBuf], build: &str) -> PathBuf {
    let time = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}; build it with `{build}`", path.display()));
    for dir in sources {
        if let Some((t, src)) = newest_source(dir) {
            assert!(
                t <= time,
                "{} is older than {}: rebuild it with `{build}`",
                path.display(),
                src.display()
            );
        }
    }
    path
}

fn help_text(exe: &Path, sub: Option<&str>) -> String {
    let out = Command::new(exe)
        .args(sub)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{} {sub:?} --help failed",
        exe.display()
    );
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The flags a clap `--help` defines: the `--name` tokens of its option lines (before the
/// description), and visible aliases.
fn defined_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if line.starts_with('-') {
            let definition = line.split("  ").next().unwrap_or("");
            flags.extend(flags_in(definition));
        }
        for marker in ["[aliases: ", "[alias: "] {
            if let Some(rest) = line.split(marker).nth(1) {
                flags.extend(flags_in(rest.split(']').next().unwrap_or("")));
            }
        }
    }
    flags
}

/// The `--name` tokens of a text (a `--` standing alone is not a flag).
fn flags_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("--") {
        let start = i + pos;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let mut end = start + 2;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-') {
            end += 1;
        }
        let boundary = before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'-'));
        if boundary && end > start + 2 && bytes[start + 2].is_ascii_lowercase() {
            out.push(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The subcommands a `--help` lists under `Commands:` (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|s| s != "help")
        .collect()
}

/// Every program (and subcommand) with its flags: keys `rccr-train train`, `rccr-export`,
/// `infer_bench`, ...
fn all_helps() -> BTreeMap<String, BTreeSet<String>> {
    let dir = profile_dir();
    let root = repo_root();
    let mut helps = BTreeMap::new();
    for (name, krate) in PROGRAMS {
        let exe = built(
            dir.join(name),
            &[root.join(krate).join("src")],
            "cargo build --release --workspace",
        );
        let top = help_text(&exe, None);
        helps.insert(name.to_string(), defined_flags(&top));
        for sub in subcommands(&top) {
            let flags = defined_flags(&help_text(&exe, Some(&sub)));
            helps.insert(format!("{name} {sub}"), flags);
        }
    }
    for name in EXAMPLES {
        let exe = built(
            dir.join("examples").join(name),
            &[root.join("exporter/src"), root.join("exporter/examples")],
            "cargo build --release -p rccr-exporter --examples",
        );
        helps.insert(name.to_string(), defined_flags(&help_text(&exe, None)));
    }
    helps
}

/// Pages as (path relative to the repository, text).
type Pages = Vec<(String, String)>;

/// The manuals: README.md and docs/*.md (the documentation the second check reads), then
/// the crate READMEs (checked for existing flags only).
fn manuals(root: &Path) -> (Pages, Pages) {
    let read = |rel: String| {
        let text =
            std::fs::read_to_string(root.join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        (rel, text)
    };
    let mut docs = vec![read("README.md".into())];
    let mut pages: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    docs.extend(pages.into_iter().map(|n| read(format!("docs/{n}"))));
    let crates = ["models", "trainer", "exporter", "infer", "support"]
        .iter()
        .map(|c| read(format!("{c}/README.md")))
        .collect();
    (docs, crates)
}

/// The command texts of a Markdown page: each line of a fenced block (continuation lines
/// ending in `\` joined; ```text blocks are diagrams, not commands) and each inline `code`
/// span outside them.
fn command_texts(markdown: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_string()),
                Some(_) => None,
            };
            continue;
        }
        if fence.as_deref() == Some("text") {
            continue;
        }
        if fence.is_some() {
            pending.push_str(line.trim_end().trim_end_matches('\\'));
            pending.push(' ');
            if !line.trim_end().ends_with('\\') {
                texts.push(std::mem::take(&mut pending));
            }
        } else {
            texts.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    texts
}

/// A flag use found in the manuals: the flag and the program it must belong to (`None`:
/// any program, example or listed tool).
#[derive(Debug)]
struct Use {
    flag: String,
    owner: Option<String>,
}

/// The flag uses of one command text.
fn uses_in(text: &str, helps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Use> {
    // A shell comment or a following command ends the flags of a program.
    let text = text.split(" #").next().unwrap_or(text);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.first().is_some_and(|t| t.starts_with("--")) {
        // A flag on its own (`--resume RUN`, `--mode rccr --mu-max 0`).
        return flags_in(text)
            .into_iter()
            .map(|flag| Use { flag, owner: None })
            .collect();
    }
    let mut uses = Vec::new();
    let mut owner: Option<String> = None;
    for (i, token) in tokens.iter().enumerate() {
        if ["|", ";", "&&", "||", ">", "2>"].contains(token) {
            owner = None;
            continue;
        }
        let name = token.rsplit('/').next().unwrap_or(token);
        let after_crate_flag = i > 0 && ["-p", "--package", "--bin"].contains(&tokens[i - 1]);
        if PROGRAMS.iter().any(|(p, _)| *p == name) && !after_crate_flag {
            let sub = tokens.get(i + 1).copied().unwrap_or("");
            let with_sub = format!("{name} {sub}");
            owner = Some(if helps.contains_key(&with_sub) {
                with_sub
            } else {
                name.to_string()
            });
        } else if i > 0 && tokens[i - 1] == "--example" && EXAMPLES.contains(&name) {
            owner = Some(name.to_string());
        } else if let Some(o) = &owner {
            uses.extend(flags_in(token).into_iter().map(|flag| Use {
                flag,
                owner: Some(o.clone()),
            }));
        }
    }
    uses
}

/// Flag uses of the pages that no program, example or listed tool defines.
fn unknown_uses(
    pages: &[(String, String)],
    helps: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let any: BTreeSet<&String> = helps.values().flatten().collect();
    let mut unknown = Vec::new();
    for (page, text) in pages {
        for cmd in command_texts(text) {
            for u in uses_in(&cmd, helps) {
                let ok = match &u.owner {
                    Some(o) => helps[o].contains(&u.flag),
                    None => any.contains(&u.flag) || OTHER_TOOLS.iter().any(|(f, _)| *f == u.flag),
                };
                if !ok {
                    let owner = u.owner.as_deref().unwrap_or("any program");
                    unknown.push(format!("{page}: {} ({owner}) in `{}`", u.flag, cmd.trim()));
                }
            }
        }
    }
    unknown
}

#[test]
fn every_flag_the_manuals_name_exists() {
    let root = repo_root();
    let helps = all_helps();
    let (docs, crates) = manuals(&root);
    let pages: Vec<_> = docs.into_iter().chain(crates).collect();
    let checked: usize = pages
        .iter()
        .flat_map(|(_, t)| command_texts(t))
        .map(|c| uses_in(&c, &helps).len())
        .sum();
    assert!(
        checked > 100,
        "only {checked} flag uses found: did the pages change form?"
    );
    let unknown = unknown_uses(&pages, &helps);
    assert!(
        unknown.is_empty(),
        "the manuals name flags the programs do not have (fix the page or the program):\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_flag_of_every_help_is_documented() {
    let root = repo_root();
    let helps = all_helps();
    let (docs, _) = manuals(&root);
    let documented: BTreeSet<String> = docs.iter().flat_map(|(_, t)| flags_in(t)).collect();
    let mut missing = Vec::new();
    for (program, flags) in &helps {
        if EXAMPLES.contains(&program.as_str()) {
            continue;
        }
        for flag in flags {
            if !["--help", "--version"].contains(&flag.as_str()) && !documented.contains(flag) {
                missing.push(format!("{program} {flag}"));
            }
        }
    }
    assert!(
        helps.len() >= 13,
        "programs and subcommands found: {:?}",
        helps.keys()
    );
    assert!(
        missing.is_empty(),
        "flags no page of README.md / docs/*.md documents (document them, e.g. in docs/training.md or docs/inference.md):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checks_catch_a_wrong_flag() {
    let help = "Options:\n      --out <OUT>  Output (not --fake)\n  -h, --help   Print help\n          - auto: NCCL\n";
    let flags = defined_flags(help);
    assert_eq!(flags, ["--help", "--out"].map(String::from).into());
    let helps: BTreeMap<_, _> = [("rccr-export".to_string(), flags)].into();
    let page = "```sh\nrccr-export --out m.onnx \\\n    --fake 1 # --also-ignored\ncargo build -p rccr-export --other\n```\n```text\nrccr-export --diagram\n```\nUse `--out DIR` or `--missing`.";
    let pages = vec![("p.md".to_string(), page.to_string())];
    let unknown = unknown_uses(&pages, &helps);
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert!(unknown[0].contains("--fake (rccr-export)"), "{unknown:?}");
    assert!(
        unknown[1].contains("--missing (any program)"),
        "{unknown:?}"
    );
    assert_eq!(
        flags_in("a--b --c-d -- --E x--y"),
        vec!["--c-d".to_string()]
    );
}
