//! PyTorch checkpoints in, without Python: reads the files `torch.save` writes into named
//! tensors, and imports a DACS / RCCR DeepLabv2 into the variables of an [`RccrNet`].
//!
//! # What is read
//!
//! - Both containers of `torch.save`: the zip archive of PyTorch >= 1.6 (`data.pkl` plus
//!   one entry per storage) and the legacy stream of older releases (magic number,
//!   protocol, system info, the pickled object, the storage keys, then the raw storages),
//!   which is what old files such as the COCO-pretrained DeepLab init of DACS are. The
//!   pre-0.1.10 TAR container is refused with a re-save hint.
//! - A bare `state_dict`, or a DACS / RCCR training checkpoint, a dict holding
//!   `model` (the student), `ema_model` (the teacher), `optimizer`, `iteration` and
//!   `config`. [`Which::Auto`] takes `ema_model` when present, else `model` (else a
//!   `state_dict` entry); [`Which::Student`] / [`Which::Ema`] pick one explicitly.
//! - float32, float16 (and the other plain dtypes) storages; tensors that are views of
//!   a shared storage (storage offsets, non-contiguous strides) are gathered.
//! - Names lose their `module.` (DataParallel) and `Scale.` (the COCO init's wrapper)
//!   prefixes; the rest of the DACS names (`conv1.weight`, `bn1.running_mean`,
//!   `layer3.5.downsample.0.weight`, `layer5.conv2d_list.0.bias`) are already ours.
//! - The Mix Transformer layouts (see [`mmseg_names`]): the SegFormer release's ImageNet
//!   `mit_b*.pth` (a bare state_dict with the official names, `patch_embed1.proj.weight`,
//!   ..., plus the ImageNet classifier `head.*`, reported as unexpected); an mmseg
//!   checkpoint (`state_dict` with `backbone.*` and `decode_head.*`: `backbone.` is
//!   removed, `decode_head.` kept); and a whole DAFormer / MIC UDA checkpoint, whose
//!   `state_dict` holds the student under `model.`, the EMA teacher under `ema_model.`
//!   and, with the feature distance, the frozen ImageNet encoder under `imnet_model.`:
//!   [`Which::Auto`] takes the teacher, as for DACS (note that DAFormer's own test
//!   script evaluates the student, `--weights student`), and the other networks are
//!   left out.
//!
//! # Nothing in the file is executed
//!
//! A pickle is a program. Before anything is built from it, every callable it names
//! (each `GLOBAL`, `INST` and `STACK_GLOBAL` opcode of every pickle in the file) is
//! checked against the allow-list of what a weights file needs: the tensor and storage
//! rebuild functions of `torch._utils`, `torch.*Storage` types, `torch` dtypes,
//! `collections.OrderedDict`, `set` / `frozenset` and `_codecs.encode` (how protocol 2
//! spells bytes). Anything else (`os.system`, `builtins.eval`, a pickled `nn.Module`
//! class, numpy objects) is an error naming the callable; no Python ever runs here, and
//! the check makes sure a file that relies on such calls is refused rather than half read
//! (the same contract as `torch.load(weights_only=True)`). Truncated, damaged or
//! non-PyTorch files are errors naming the file, never panics.
//!
//! # Why `pytorch-reader` (and a small opcode scan on top)
//!
//! The pickle virtual machine and both containers come from `pytorch-reader` (the
//! checkpoint reader of the Burn project, maintained with it; started from candle's
//! `pickle.rs`): it resolves persistent ids to storages, rebuilds tensors (offsets,
//! strides, fp16/bf16), reads zip and legacy files lazily and is hardened against
//! hostile input (memo bombs, nesting depth, declared sizes checked against the file).
//! The alternatives fit worse: `serde-pickle` (maintained) has no persistent-id opcodes
//! and discards the names of globals, so it can neither rebuild tensors nor enforce an
//! allow-list; `repugnant-pickle` is a 0.0.1 experiment; candle's reader is internal to
//! `candle-core`. `pytorch-reader` keeps calls it does not know as opaque values instead
//! of refusing them, so the allow-list is enforced here by a scan of the opcode stream
//! (about a hundred lines, no evaluation), using the `zip` crate `pytorch-reader` already
//! depends on to reach `data.pkl`.

use crate::checkpoint;
use crate::config::{Backbone, Decoder, ModelConfig};
use crate::weights::LoadReport;
use crate::{ModelError, RccrNet};
use pytorch_reader::{DType, PickleValue, PytorchReader};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Which network of a DACS / RCCR training checkpoint to take (a bare `state_dict` holds
/// only one, taken whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// `ema_model` (the teacher) when present, else `model`.
    #[default]
    Auto,
    /// `model`: the student.
    Student,
    /// `ema_model`: the mean teacher.
    Ema,
}

impl std::str::FromStr for Which {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Which, ModelError> {
        match s {
            "auto" => Ok(Which::Auto),
            "student" | "model" => Ok(Which::Student),
            "ema" | "teacher" | "ema_model" => Ok(Which::Ema),
            _ => Err(ModelError::Config(format!(
                "unknown weights `{s}`: use ema (the teacher, `ema_model`), student (`model`) or auto"
            ))),
        }
    }
}

/// The container a file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthFormat {
    /// The zip archive of PyTorch >= 1.6.
    Zip,
    /// The legacy pickle stream of older releases.
    Legacy,
}

/// The tensors of one network read from a `.pth` file.
#[derive(Debug)]
pub struct PthFile {
    /// The file.
    pub path: PathBuf,
    /// Its container.
    pub format: PthFormat,
    /// The checkpoint entry the tensors come from (`ema_model`, `model`, `state_dict`);
    /// `None` for a bare state_dict.
    pub network: Option<String>,
    /// The top-level keys of a checkpoint dict (empty for a bare state_dict).
    pub entries: Vec<String>,
    /// The checkpoint's `iteration`, when it has one.
    pub iteration: Option<u64>,
    /// The tensors under rccr names (prefixes stripped), on the CPU, in the file's dtype.
    pub tensors: BTreeMap<String, Tensor>,
}

impl PthFile {
    /// What the tensors were taken from, for reports: `ema_model`, `model` or `state_dict`.
    pub fn network_name(&self) -> &str {
        self.network.as_deref().unwrap_or("state_dict")
    }
}

/// Whether `path` names a PyTorch file (`.pth`, `.pt`, `.pkl`, `.bin` extension).
pub fn is_pth(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "pth" | "pt" | "pkl" | "bin"
        )
    })
}

/// Reads the tensors of one network from a `.pth` file (see the module docs).
pub fn read(path: &Path, which: Which) -> Result<PthFile, ModelError> {
    let format = detect(path)?;
    check_callables(path, format)?;
    let root = PytorchReader::read_pickle_data(path, None).map_err(|e| unreadable(path, e))?;
    let layout = layout_of(path, &root, which)?;
    let reader = match &layout.network {
        Some(key) => PytorchReader::with_top_level_key(path, key),
        None => PytorchReader::new(path),
    }
    .map_err(|e| unreadable(path, e))?;
    let tensors = convert(path, reader.into_tensors())?;
    let (tensors, part) = mmseg_names(path, tensors, which)?;
    let network = match (layout.network, part) {
        (Some(n), Some(p)) => Some(format!("{n}/{p}")),
        (n, None) => n,
        (None, Some(p)) => Some(p.to_string()),
    };
    Ok(PthFile {
        path: path.to_path_buf(),
        format,
        network,
        entries: layout.entries,
        iteration: layout.iteration,
        tensors,
    })
}

/// The networks a DAFormer / MIC UDA checkpoint's state_dict holds, by name prefix.
const UDA_PREFIXES: [&str; 3] = ["ema_model.", "model.", "imnet_model."];

/// mmseg's names made ours: of a UDA state_dict (`model.*`, `ema_model.*`,
/// `imnet_model.*`) only the network `which` asks for is kept (the teacher for
/// [`Which::Auto`] when saved, else the student), its prefix removed; then `backbone.`
/// (mmseg's `EncoderDecoder`) is removed. Returns the tensors and the UDA network taken.
pub fn mmseg_names(
    path: &Path,
    tensors: BTreeMap<String, Tensor>,
    which: Which,
) -> Result<(BTreeMap<String, Tensor>, Option<&'static str>), ModelError> {
    let has = |p: &str| tensors.keys().any(|n| n.starts_with(p));
    let part = if has("model.") || has("ema_model.") {
        let wanted: &[&'static str] = match which {
            Which::Auto => &UDA_PREFIXES[..2],
            Which::Student => &UDA_PREFIXES[1..2],
            Which::Ema => &UDA_PREFIXES[..1],
        };
        let part = wanted.iter().copied().find(|p| has(p)).ok_or_else(|| {
            format_error(
                path,
                format!(
                    "the UDA checkpoint has no `{}` network; ask for one it has (--weights \
                     student for `model.`, ema for `ema_model.`)",
                    wanted[0].trim_end_matches('.')
                ),
            )
        })?;
        Some(part)
    } else {
        None
    };
    let mut out = BTreeMap::new();
    for (name, t) in tensors {
        let name = match part {
            Some(p) => match name.strip_prefix(p) {
                Some(rest) => rest.to_string(),
                None => continue,
            },
            None => name,
        };
        let name = name
            .strip_prefix("backbone.")
            .map_or(name.clone(), str::to_string);
        if out.insert(name.clone(), t).is_some() {
            return Err(format_error(
                path,
                format!("two tensors map to `{name}` once the backbone. prefix is removed"),
            ));
        }
    }
    Ok((out, part.map(|p| p.trim_end_matches('.'))))
}

/// The rccr name of a DACS / RCCR tensor name: `module.` and `Scale.` prefixes removed.
pub fn rccr_name(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = name
        .strip_prefix("module.")
        .or_else(|| name.strip_prefix("Scale."))
    {
        name = rest;
    }
    name
}

fn format_error(path: &Path, what: impl std::fmt::Display) -> ModelError {
    ModelError::Format(format!("{}: {what}", path.display()))
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> ModelError {
    format_error(
        path,
        format!(
            "not a readable PyTorch checkpoint ({e}); is the file truncated or damaged? \
             Copy it again or re-save it with torch.save"
        ),
    )
}

fn io_error(path: &Path, cause: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

// ---------------------------------------------------------------------------------------
// Container detection
// ---------------------------------------------------------------------------------------

/// The legacy magic number 0x1950a86a20f9469cfc6c as pickle protocol >= 2 writes it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The same number as protocols 0 and 1 write it.
const LEGACY_MAGIC_TEXT: &[u8] = b"119547037146038801333356";

fn detect(path: &Path) -> Result<PthFormat, ModelError> {
    let mut head = Vec::with_capacity(262);
    std::fs::File::open(path)
        .and_then(|f| f.take(262).read_to_end(&mut head))
        .map_err(|e| io_error(path, e))?;
    let window = &head[..head.len().min(64)];
    let has = |needle: &[u8]| window.windows(needle.len()).any(|w| w == needle);
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(PthFormat::Zip);
    }
    if has(&LEGACY_MAGIC) || has(LEGACY_MAGIC_TEXT) {
        return Ok(PthFormat::Legacy);
    }
    Err(format_error(path, not_pytorch(&head)))
}

fn not_pytorch(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty, not a PyTorch checkpoint".into();
    }
    if head.get(257..262) == Some(b"ustar") {
        return "a TAR-format checkpoint (PyTorch < 0.1.10), which is not supported: re-save it \
                with a current PyTorch (torch.save(torch.load(f), 'new.pth'))"
            .into();
    }
    if head.len() > 8 && head[8] == b'{' {
        return "a safetensors file, not a PyTorch checkpoint: pass it as a safetensors model \
                (--init for torchvision names, or an rccr model file) instead"
            .into();
    }
    "not a PyTorch checkpoint: neither the zip format of torch.save (PyTorch >= 1.6) nor its \
     legacy format; expected a .pth/.pt file written by torch.save"
        .into()
}

// ---------------------------------------------------------------------------------------
// The allow-list check
// ---------------------------------------------------------------------------------------

/// Largest `data.pkl` looked at (the tensor bytes are elsewhere; see pytorch-reader).
const MAX_PICKLE: u64 = pytorch_reader::MAX_PICKLE_SIZE;

/// Whether a weights file may name `module.name`.
fn allowed(module: &str, name: &str) -> bool {
    const STORAGES: [&str; 11] = [
        "FloatStorage",
        "HalfStorage",
        "BFloat16Storage",
        "DoubleStorage",
        "LongStorage",
        "IntStorage",
        "ShortStorage",
        "CharStorage",
        "ByteStorage",
        "BoolStorage",
        "UntypedStorage",
    ];
    const DTYPES: [&str; 10] = [
        "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8",
        "bool",
    ];
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => matches!(name, "_rebuild_from_type_v2" | "Tensor"),
        "torch.nn.parameter" => name == "Parameter",
        "torch" => {
            STORAGES.contains(&name) || DTYPES.contains(&name) || matches!(name, "Size" | "Tensor")
        }
        // Storages saved from the GPU (older files, such as the COCO init).
        "torch.cuda" => STORAGES.contains(&name),
        "builtins" | "__builtin__" => matches!(name, "set" | "frozenset"),
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// Scans every pickle of the file for callables outside [`allowed`].
fn check_callables(path: &Path, format: PthFormat) -> Result<(), ModelError> {
    match format {
        PthFormat::Zip => scan_pickle(path, "data.pkl", &mut &zip_pickle(path)?[..]),
        PthFormat::Legacy => scan_legacy(path),
    }
}

fn refused(what: &str) -> String {
    format!(
        "refused: the pickle calls {what}, which is not one of the tensor-rebuild functions \
         a weights file needs (torch._utils._rebuild_tensor_v2, collections.OrderedDict, \
         torch.*Storage, ...); nothing was executed. If you trust the file, re-save just \
         the weights from Python, e.g. torch.save(torch.load(f, weights_only=False)\
         ['ema_model'], 'clean.pth') (a pickled module: its .state_dict())"
    )
}

/// The bytes of the archive's `data.pkl`.
fn zip_pickle(path: &Path) -> Result<Vec<u8>, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let bad = |e: zip::result::ZipError| unreadable(path, format!("zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
    let name = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.into_owned())
        .ok_or_else(|| unreadable(path, "the zip archive has no data.pkl"))?;
    let entry = archive.by_name(&name).map_err(bad)?;
    let mut bytes = Vec::new();
    entry
        .take(MAX_PICKLE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, format!("{name}: {e}")))?;
    if bytes.len() as u64 > MAX_PICKLE {
        return Err(unreadable(
            path,
            format!("{name} is larger than {MAX_PICKLE} bytes"),
        ));
    }
    Ok(bytes)
}

/// The legacy stream: magic, protocol, system info, the object, the storage keys.
fn scan_legacy(path: &Path) -> Result<(), ModelError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut r = BufReader::new(file);
    for what in [
        "magic number",
        "protocol",
        "system info",
        "object",
        "storage keys",
    ] {
        scan_pickle(path, what, &mut r)?;
    }
    Ok(())
}

/// How the argument of an opcode is laid out.
enum Arg {
    Fixed(u64),
    Len1,
    Len4,
    Len8,
    Line,
}

/// The argument layout of a pickle opcode (`None`: not an opcode). Taken from the
/// opcode table of CPython's `pickletools`.
fn arg_of(op: u8) -> Option<Option<Arg>> {
    Some(match op {
        b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b']' | b'a' | b'e' | b'l'
        | b')' | b't' | 0x85 | 0x86 | 0x87 | b'}' | b'd' | b's' | b'u' | 0x8f | 0x90 | 0x91
        | b'Q' | b'R' | b'b' | b'o' | 0x81 | 0x92 | 0x93 | 0x94 | 0x97 | 0x98 => None,
        b'K' | 0x80 | b'q' | b'h' | 0x82 => Some(Arg::Fixed(1)),
        b'M' | 0x83 => Some(Arg::Fixed(2)),
        b'J' | b'r' | b'j' | 0x84 => Some(Arg::Fixed(4)),
        b'G' | 0x95 => Some(Arg::Fixed(8)),
        0x8a | b'U' | b'C' | 0x8c => Some(Arg::Len1),
        b'T' | b'X' | b'B' | 0x8b => Some(Arg::Len4),
        0x8d | 0x8e | 0x96 => Some(Arg::Len8),
        b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'g' | b'p' => Some(Arg::Line),
        b'c' | b'i' => Some(Arg::Line), // two lines: module, then name
        _ => return None,
    })
}

/// Opcodes whose argument is a string the scan keeps (a `STACK_GLOBAL` operand).
fn is_string_op(op: u8) -> bool {
    matches!(op, b'U' | 0x8c | b'T' | b'X' | 0x8d | b'S' | b'V')
}

/// The scan state: which recent stack pushes were strings, and the strings memoised;
/// the file and the pickle's name (`data.pkl`, `object`, ...) for errors.
struct Scan<'a> {
    path: &'a Path,
    which: &'a str,
    /// The last two stack-changing events: `Some(s)` a push of the string `s`, `None`
    /// anything else. When both are strings, they are the top two stack items.
    recent: [Option<String>; 2],
    memo: HashMap<u64, Option<String>>,
    pos: u64,
}

/// Checks one pickle (`which` of the file at `path`, up to and including its STOP)
/// without evaluating it.
fn scan_pickle(path: &Path, which: &str, r: &mut impl BufRead) -> Result<(), ModelError> {
    let mut scan = Scan {
        path,
        which,
        recent: Default::default(),
        memo: HashMap::new(),
        pos: 0,
    };
    loop {
        let op = scan.byte(r)?;
        if op == b'.' {
            return Ok(());
        }
        scan.step(r, op)?;
    }
}

impl Scan<'_> {
    /// A malformed pickle: `why`, prefixed with the pickle's name.
    fn bad(&self, why: String) -> ModelError {
        unreadable(self.path, format!("{}: {why}", self.which))
    }

    /// A callable outside the allow-list (`what` describes it).
    fn refused(&self, what: String) -> ModelError {
        format_error(self.path, refused(&what))
    }

    fn io(&self, e: std::io::Error) -> ModelError {
        io_error(self.path, e)
    }

    fn step(&mut self, r: &mut impl BufRead, op: u8) -> Result<(), ModelError> {
        let at = self.pos - 1;
        let arg = arg_of(op)
            .ok_or_else(|| self.bad(format!("byte 0x{op:02x} at {at} is no pickle opcode")))?;
        match op {
            b'c' | b'i' => {
                let module = self.line(r)?;
                let name = self.line(r)?;
                self.global(&module, &name)?;
            }
            0x93 => {
                let [module, name] = std::mem::take(&mut self.recent);
                match (module, name) {
                    (Some(m), Some(n)) => self.global(&m, &n)?,
                    _ => return Err(self.refused(format!("a STACK_GLOBAL at byte {at} whose names cannot be read without evaluating the pickle"))),
                }
            }
            0x82..=0x84 => {
                return Err(self.refused(format!(
                    "an extension-registry callable (EXT opcode at byte {at})"
                )))
            }
            0x80 | 0x95 => {
                self.skip_arg(r, arg)?; // PROTO, FRAME: no stack effect
            }
            0x94 => {
                let top = self.recent[1].clone();
                self.memo.insert(self.memo.len() as u64, top);
            }
            b'p' | b'q' | b'r' => {
                let index = self.index(r, op)?;
                self.memo.insert(index, self.recent[1].clone());
            }
            b'g' | b'h' | b'j' => {
                let index = self.index(r, op)?;
                let value = self.memo.get(&index).cloned().flatten();
                self.push(value);
            }
            _ if is_string_op(op) => {
                let s = self.string_arg(r, arg)?;
                self.push(s);
            }
            _ => {
                self.skip_arg(r, arg)?;
                self.push(None);
            }
        }
        Ok(())
    }

    fn push(&mut self, value: Option<String>) {
        self.recent[0] = self.recent[1].take();
        self.recent[1] = value;
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), ModelError> {
        if !allowed(module, name) {
            return Err(self.refused(format!("`{module}.{name}`")));
        }
        self.push(None);
        Ok(())
    }

    fn byte(&mut self, r: &mut impl BufRead) -> Result<u8, ModelError> {
        let mut b = [0u8; 1];
        self.exact(r, &mut b)?;
        Ok(b[0])
    }

    fn exact(&mut self, r: &mut impl BufRead, buf: &mut [u8]) -> Result<(), ModelError> {
        r.read_exact(buf).map_err(|e| self.eof(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn eof(&self, e: std::io::Error) -> ModelError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.bad(format!("the pickle ends early, at byte {}", self.pos))
        } else {
            self.io(e)
        }
    }

    fn le(&mut self, r: &mut impl BufRead, n: usize) -> Result<u64, ModelError> {
        let mut b = [0u8; 8];
        self.exact(r, &mut b[..n])?;
        Ok(u64::from_le_bytes(b))
    }

    /// A newline-terminated argument (at most 4 KiB), without the newline.
    fn line(&mut self, r: &mut impl BufRead) -> Result<String, ModelError> {
        let mut buf = Vec::new();
        r.take(4096)
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.eof(e))?;
        self.pos += buf.len() as u64;
        if buf.pop() != Some(b'\n') {
            return Err(self.bad(format!(
                "an unterminated text argument before byte {}",
                self.pos
            )));
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The byte length of a binary argument.
    fn length(&mut self, r: &mut impl BufRead, arg: &Arg) -> Result<u64, ModelError> {
        match arg {
            Arg::Fixed(n) => Ok(*n),
            Arg::Len1 => self.le(r, 1),
            Arg::Len4 => self.le(r, 4),
            Arg::Len8 | Arg::Line => self.le(r, 8),
        }
    }

    fn skip_arg(&mut self, r: &mut impl BufRead, arg: Option<Arg>) -> Result<(), ModelError> {
        match arg {
            None => Ok(()),
            Some(Arg::Line) => self.line(r).map(drop),
            Some(arg) => {
                let n = self.length(r, &arg)?;
                self.skip_bytes(r, n)
            }
        }
    }

    /// A string argument (kept when under 1 KiB: module and attribute names are short).
    fn string_arg(
        &mut self,
        r: &mut impl BufRead,
        arg: Option<Arg>,
    ) -> Result<Option<String>, ModelError> {
        let Some(arg) = arg else { return Ok(None) };
        if matches!(arg, Arg::Line) {
            let s = self.line(r)?;
            return Ok(Some(s.trim_matches(|c| c == '\'' || c == '"').to_string()));
        }
        let n = self.length(r, &arg)?;
        if n > 1024 {
            self.skip_bytes(r, n)?;
            return Ok(None);
        }
        let mut buf = vec![0u8; n as usize];
        self.exact(r, &mut buf)?;
        Ok(String::from_utf8(buf).ok())
    }

    fn skip_bytes(&mut self, r: &mut impl BufRead, n: u64) -> Result<(), ModelError> {
        let copied = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| self.io(e))?;
        self.pos += copied;
        if copied < n {
            return Err(self.bad(format!("the pickle ends early, at byte {}", self.pos)));
        }
        Ok(())
    }

    /// The memo index of a PUT / GET opcode.
    fn index(&mut self, r: &mut impl BufRead, op: u8) -> Result<u64, ModelError> {
        match op {
            b'q' | b'h' => self.le(r, 1),
            b'r' | b'j' => self.le(r, 4),
            _ => {
                let line = self.line(r)?;
                line.trim()
                    .parse()
                    .map_err(|_| self.bad(format!("bad memo index `{line}`")))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Layout: bare state_dict or training checkpoint
// ---------------------------------------------------------------------------------------

/// Checkpoint entries that hold a network's state_dict, in [`Which::Auto`] order.
const NETWORK_KEYS: [&str; 3] = ["ema_model", "model", "state_dict"];

struct Layout {
    network: Option<String>,
    entries: Vec<String>,
    iteration: Option<u64>,
}

fn layout_of(path: &Path, root: &PickleValue, which: Which) -> Result<Layout, ModelError> {
    let PickleValue::Dict(top) = root else {
        return Err(format_error(
            path,
            "the saved object is not a dict: expected a state_dict or a training checkpoint \
             ({'model': ..., 'ema_model': ...})",
        ));
    };
    let mut entries: Vec<String> = top.keys().cloned().collect();
    entries.sort();
    let networks: Vec<&str> = NETWORK_KEYS
        .into_iter()
        .filter(|k| matches!(top.get(*k), Some(PickleValue::Dict(_))))
        .collect();
    if networks.is_empty() {
        return bare_layout(path, top, entries);
    }
    let wanted: &[&str] = match which {
        Which::Auto => &NETWORK_KEYS,
        Which::Student => &["model", "state_dict"],
        // A DAFormer / MIC UDA checkpoint keeps its teacher inside `state_dict`
        // (`ema_model.*`); [`mmseg_names`] refuses a state_dict without one.
        Which::Ema => &["ema_model", "state_dict"],
    };
    let network = wanted
        .iter()
        .find(|k| networks.contains(k))
        .ok_or_else(|| {
            format_error(
                path,
                format!(
                    "the checkpoint has no {} network (it holds: {}); ask for one it has \
                 (--weights student for `model`, ema for `ema_model`)",
                    if which == Which::Ema {
                        "`ema_model`"
                    } else {
                        "`model`"
                    },
                    entries.join(", ")
                ),
            )
        })?;
    let iteration = match top.get("iteration") {
        Some(PickleValue::Int(i)) => u64::try_from(*i).ok(),
        _ => None,
    };
    Ok(Layout {
        network: Some(network.to_string()),
        entries,
        iteration,
    })
}

fn bare_layout(
    path: &Path,
    top: &HashMap<String, PickleValue>,
    entries: Vec<String>,
) -> Result<Layout, ModelError> {
    let tensor = |v: &PickleValue| matches!(v, PickleValue::Unsupported(t) if t == "torch.Tensor");
    if !top.values().any(tensor) {
        let shown: Vec<&str> = entries.iter().take(8).map(String::as_str).collect();
        return Err(format_error(
            path,
            format!(
                "holds neither a state_dict (name -> tensor) nor a training checkpoint with \
                 `model` / `ema_model` (its keys: {})",
                shown.join(", ")
            ),
        ));
    }
    Ok(Layout {
        network: None,
        entries: Vec::new(),
        iteration: None,
    })
}

// ---------------------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------------------

fn kind_of(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        DType::U16 | DType::U32 | DType::U64 => return None,
    })
}

/// The file's tensors as libtorch tensors under rccr names.
fn convert(
    path: &Path,
    tensors: HashMap<String, pytorch_reader::Tensor>,
) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let sorted: BTreeMap<String, pytorch_reader::Tensor> = tensors.into_iter().collect();
    let mut origin: HashMap<String, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (raw, t) in sorted {
        let name = rccr_name(&raw).to_string();
        if let Some(other) = origin.insert(name.clone(), raw.clone()) {
            return Err(format_error(
                path,
                format!("tensors `{other}` and `{raw}` both map to `{name}` once the module./Scale. prefixes are removed"),
            ));
        }
        out.insert(name, to_tch(path, &raw, &t)?);
    }
    Ok(out)
}

fn to_tch(path: &Path, raw: &str, t: &pytorch_reader::Tensor) -> Result<Tensor, ModelError> {
    let kind = kind_of(t.dtype()).ok_or_else(|| {
        format_error(
            path,
            format!(
                "tensor `{raw}` has dtype {:?}, which libtorch cannot hold",
                t.dtype()
            ),
        )
    })?;
    let bytes = t.read().map_err(|e| unreadable(path, e))?;
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(&bytes, &shape, kind)?)
}

// ---------------------------------------------------------------------------------------
// Import into a network
// ---------------------------------------------------------------------------------------

/// A tensor of the file left out because its shape differs from the model's variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTensor {
    /// The rccr name.
    pub name: String,
    /// Its shape in the file.
    pub in_file: Vec<i64>,
    /// The variable's shape.
    pub in_model: Vec<i64>,
}

/// What an import copied and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The checkpoint entry imported (`ema_model`, `model`, `state_dict`).
    pub network: String,
    /// `loaded`: variables copied; `missing`: encoder / classifier variables (and
    /// projector variables, when the file has any) that the file does not provide;
    /// `unexpected`: file tensors with no variable of that name.
    pub load: LoadReport,
    /// File tensors whose shape differs from the variable (e.g. the 91-class classifier
    /// of the COCO init); the variable keeps its value.
    pub skipped: Vec<SkippedTensor>,
    /// File tensors with no use here: `num_batches_tracked`, and the ASPP branches 3-4
    /// that a two-branch (DACS release) classifier never sums.
    pub ignored: Vec<String>,
    /// The checkpoint's iteration, when it has one.
    pub iteration: Option<u64>,
}

impl ImportReport {
    /// True when every expected variable was copied and nothing was skipped or left over.
    pub fn is_exact(&self) -> bool {
        self.load.is_exact() && self.skipped.is_empty()
    }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}`: copied {}, skipped for shape {}, missing {}, unexpected {}, ignored {}",
            self.network,
            self.load.loaded,
            self.skipped.len(),
            self.load.missing.len(),
            self.load.unexpected.len(),
            self.ignored.len()
        )?;
        for s in self.skipped.iter().take(4) {
            write!(
                f,
                "\n  skipped {}: file {:?}, model {:?}",
                s.name, s.in_file, s.in_model
            )?;
        }
        list(f, "missing", &self.load.missing)?;
        list(f, "unexpected", &self.load.unexpected)
    }
}

fn list(f: &mut std::fmt::Formatter<'_>, what: &str, names: &[String]) -> std::fmt::Result {
    for n in names.iter().take(4) {
        write!(f, "\n  {what} {n}")?;
    }
    if names.len() > 4 {
        write!(f, "\n  ... and {} more {what}", names.len() - 4)?;
    }
    Ok(())
}

/// Reads `path` ([`read`]) and copies its tensors into `vs` ([`load_into`]).
pub fn import_into(
    vs: &nn::VarStore,
    path: &Path,
    which: Which,
    strict: bool,
) -> Result<ImportReport, ModelError> {
    load_into(vs, &read(path, which)?, strict)
}

/// Copies the tensors of `file` into the variables of `vs` (built by [`RccrNet::new`] at
/// the root) with the same rccr name and shape, converting dtype and device. Tensors of
/// another shape are skipped, unknown ones reported as unexpected, absent ones as
/// missing. With `strict`, any skip, missing or unexpected tensor is an error and nothing
/// is copied; a file sharing no tensor with the network is always an error.
pub fn load_into(
    vs: &nn::VarStore,
    file: &PthFile,
    strict: bool,
) -> Result<ImportReport, ModelError> {
    let vars = vs.variables();
    let mut report = ImportReport {
        network: file.network_name().to_string(),
        iteration: file.iteration,
        ..ImportReport::default()
    };
    let copy = classify(&vars, &file.tensors, &mut report);
    if copy.is_empty() {
        return Err(nothing_matches(file, &vars));
    }
    report.load.loaded = copy.len();
    if strict && !report.is_exact() {
        return Err(format_error(
            &file.path,
            format!(
                "strict import refused, nothing was copied; the import would have been {report}\n\
                 (drop --strict to import what matches, or fix --backbone / --num-classes / \
                 --aspp-branches)"
            ),
        ));
    }
    tch::no_grad(|| {
        for name in &copy {
            let mut var = vars[name].shallow_clone();
            let t = &file.tensors[name];
            var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(report)
}

/// Sorts the file's tensors into the report; returns the names to copy. mmseg's
/// BaseDecodeHead builds `conv_seg` even for SegFormer's head, which classifies with
/// `linear_pred` and never uses it: ignored when the network has no `conv_seg`.
fn classify(
    vars: &HashMap<String, Tensor>,
    tensors: &BTreeMap<String, Tensor>,
    report: &mut ImportReport,
) -> Vec<String> {
    let branches = aspp_branches(vars);
    let mut copy = Vec::new();
    for (name, t) in tensors {
        match vars.get(name) {
            None if name.starts_with("decode_head.conv_seg.") && !has_conv_seg(vars) => {
                report.ignored.push(name.clone())
            }
            Some(v) if v.size() == t.size() => copy.push(name.clone()),
            Some(v) => report.skipped.push(SkippedTensor {
                name: name.clone(),
                in_file: t.size(),
                in_model: v.size(),
            }),
            None if is_ignored(name, branches) => report.ignored.push(name.clone()),
            None => report.load.unexpected.push(name.clone()),
        }
    }
    let has_projector = tensors.keys().any(|n| n.starts_with("projector."));
    let mut missing: Vec<String> = vars
        .keys()
        .filter(|n| !tensors.contains_key(*n))
        .filter(|n| has_projector || !n.starts_with("projector."))
        .cloned()
        .collect();
    missing.sort();
    report.load.missing = missing;
    copy
}

fn has_conv_seg(vars: &HashMap<String, Tensor>) -> bool {
    vars.contains_key("decode_head.conv_seg.weight")
}

/// How many ASPP branches the network has.
fn aspp_branches(vars: &HashMap<String, Tensor>) -> usize {
    (0..)
        .take_while(|i| vars.contains_key(&format!("layer5.conv2d_list.{i}.weight")))
        .count()
}

fn is_ignored(name: &str, branches: usize) -> bool {
    if name.ends_with("num_batches_tracked") {
        return true;
    }
    let branch = name
        .strip_prefix("layer5.conv2d_list.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok());
    matches!(branch, Some(i) if branches > 0 && i >= branches && i < 4)
}

fn nothing_matches(file: &PthFile, vars: &HashMap<String, Tensor>) -> ModelError {
    let first = |names: Vec<&String>| {
        let mut names = names;
        names.sort();
        names
            .iter()
            .take(3)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format_error(
        &file.path,
        format!(
            "no tensor of `{}` matches a variable of the network by name and shape (file: {}, \
             ...; network: {}, ...): is it a DeepLabv2 in the DACS layout or a MiT in the SegFormer / mmseg layout, with this backbone?",
            file.network_name(),
            first(file.tensors.keys().collect()),
            first(vars.keys().collect())
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Model files
// ---------------------------------------------------------------------------------------

/// The network configuration a DACS-layout file implies: the backbone from the number of
/// layer3 blocks (23: ResNet-101, 6: ResNet-50; basic blocks: `small`) and the number of
/// classes from the classifier. Everything else (ASPP branches, input normalisation) is
/// [`ModelConfig::new`]'s default: DACS files always store four ASPP branches, whether or
/// not the code that trained them summed only two, so the caller decides that.
pub fn infer_config(file: &PthFile) -> Result<ModelConfig, ModelError> {
    if file.tensors.contains_key("patch_embed1.proj.weight") {
        return infer_mit_config(file);
    }
    let layer3 = (0..)
        .take_while(|i| {
            file.tensors
                .contains_key(&format!("layer3.{i}.conv1.weight"))
        })
        .count();
    let bottleneck = file.tensors.contains_key("layer1.0.conv3.weight");
    let backbone = match (bottleneck, layer3) {
        (true, 23) => Backbone::Resnet101,
        (true, 6) => Backbone::Resnet50,
        (false, 1) => Backbone::Small,
        _ => {
            return Err(format_error(
                &file.path,
                format!("cannot tell the backbone: {layer3} layer3 blocks (ResNet-101 has 23, ResNet-50 6); pass --backbone"),
            ))
        }
    };
    let classes = file
        .tensors
        .get("layer5.conv2d_list.0.weight")
        .map(|t| t.size()[0])
        .ok_or_else(|| {
            format_error(
                &file.path,
                "has no classifier (layer5.conv2d_list.0.weight); pass --num-classes",
            )
        })?;
    Ok(ModelConfig::new(backbone, classes))
}

/// The MiT configuration of a file in the official names: the variant from the stage
/// widths and block counts, the decoder from its layers (`embed_layers`: DAFormer's,
/// `linear_c`: SegFormer's), the classes from its classifier. The input normalisation is
/// MiT's default, the ImageNet RGB mean / std that SegFormer, DAFormer and MIC train with.
fn infer_mit_config(file: &PthFile) -> Result<ModelConfig, ModelError> {
    let has = |n: &str| file.tensors.contains_key(n);
    let mut widths = [0i64; 4];
    let mut depths = [0usize; 4];
    for s in 1..=4 {
        let proj = file.tensors.get(&format!("patch_embed{s}.proj.weight"));
        widths[s - 1] = proj.map_or(0, |t| t.size()[0]);
        depths[s - 1] = (0..)
            .take_while(|j| has(&format!("block{s}.{j}.norm1.weight")))
            .count();
    }
    let backbone = Backbone::ALL
        .into_iter()
        .find(|b| b.mit().is_some_and(|m| m.widths == widths && m.depths == depths))
        .ok_or_else(|| {
            format_error(
                &file.path,
                format!("cannot tell the MiT variant: stage widths {widths:?}, blocks {depths:?} match none of MiT-B0..B5"),
            )
        })?;
    let (decoder, classifier) = if has("decode_head.embed_layers.0.proj.weight") {
        (Decoder::Daformer, "decode_head.conv_seg.weight")
    } else {
        (Decoder::Segformer, "decode_head.linear_pred.weight")
    };
    let classes = file
        .tensors
        .get(classifier)
        .map(|t| t.size()[0])
        .ok_or_else(|| {
            format_error(
                &file.path,
                "has a MiT encoder but no DAFormer or SegFormer decoder (an ImageNet encoder such \
             as mit_b5.pth goes to `rccr-train train --init`)",
            )
        })?;
    Ok(ModelConfig {
        decoder: (decoder != backbone.default_decoder()).then_some(decoder),
        ..ModelConfig::new(backbone, classes)
    })
}

/// Builds `config`'s network on the CPU, imports `file` into it ([`load_into`]) and saves
/// it as an rccr model file (`rccr-model-v1`, atomically) at `out`, with the checkpoint's
/// iteration. Variables the file does not provide keep their initial values (and are in
/// the report); `strict` refuses that.
pub fn to_model_file(
    file: &PthFile,
    config: &ModelConfig,
    out: &Path,
    strict: bool,
) -> Result<ImportReport, ModelError> {
    config.validate()?;
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = RccrNet::new(&vs.root(), config);
    let report = load_into(&vs, file, strict)?;
    checkpoint::save_model(&vs, config, out, report.iteration.unwrap_or(0))?;
    Ok(report)
}
