//! Weights on disk as safetensors: whole models (and any named tensor set, such as a
//! trainer checkpoint) with string metadata, written atomically (temporary file, then
//! rename); and import of a backbone saved with torchvision's names.

use crate::ModelError;
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// A named tensor set plus its string metadata.
#[derive(Debug, Default)]
pub struct TensorFile {
    /// Tensors by name, on the CPU.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` entries.
    pub metadata: HashMap<String, String>,
}

fn dtype_of(kind: Kind) -> Result<Dtype, ModelError> {
    Ok(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        k => {
            return Err(ModelError::Format(format!(
                "cannot store tensors of kind {k:?}"
            )))
        }
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<Bytes, ModelError> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Bytes {
        dtype: dtype_of(t.kind())?,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes `tensors` and `metadata` to `path` as safetensors, atomically: the file is
/// written next to `path` under a temporary name, synced, then renamed over it, so an
/// interrupted write never leaves a partial file or destroys the previous one.
pub fn write_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, &'a Tensor)>,
    metadata: &HashMap<String, String>,
) -> Result<(), ModelError> {
    let bytes: Vec<(String, Bytes)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, to_bytes(t)?)))
        .collect::<Result<_, ModelError>>()?;
    let views = bytes.iter().map(|(n, b)| (n.as_str(), b));
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let buf = safetensors::tensor::serialize(views, meta)
        .map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))?;
    write_atomic(path, &buf)
}

/// The name of the first tensor holding a NaN or an infinity, in name order (None when all
/// are finite). One device synchronisation: per-tensor float64 sums are finite exactly
/// when every element is (an f32 tensor cannot overflow an f64 sum).
pub fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Option<String> {
    let mut named: Vec<(&str, &Tensor)> = tensors
        .into_iter()
        .filter(|(_, t)| t.is_floating_point())
        .collect();
    if named.is_empty() {
        return None;
    }
    named.sort_by(|a, b| a.0.cmp(b.0));
    let sums: Vec<Tensor> = named
        .iter()
        .map(|(_, t)| {
            t.detach()
                .sum(tch::Kind::Double)
                .to_device(tch::Device::Cpu)
        })
        .collect();
    let sums = Vec::<f64>::try_from(Tensor::stack(&sums, 0)).unwrap_or_default();
    sums.iter()
        .position(|v| !v.is_finite())
        .map(|i| named[i].0.to_string())
}

/// Writes `bytes` to `path` atomically and durably (fsync before the rename,
/// `rccr_infer::files::write_atomic_synced`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    rccr_infer::files::write_atomic_synced(path, bytes).map_err(|cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Reads a safetensors file written by [`write_tensors`] or by Python's safetensors.
pub fn read_tensors(path: &Path) -> Result<TensorFile, ModelError> {
    let buf = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let bad = |msg: String| {
        ModelError::Format(format!(
            "{}: not a readable safetensors file ({msg})",
            path.display()
        ))
    };
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| bad(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// What a load found beyond the exact set of expected tensors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables of the model that the file did not provide (left as they were).
    pub missing: Vec<String>,
    /// Tensors of the file that the model has no variable for (ignored).
    pub unexpected: Vec<String>,
    /// How many variables were copied.
    pub loaded: usize,
}

impl LoadReport {
    /// True when every expected variable was loaded and nothing was left over.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Copies tensors into the variables of `vs` with the same name. `expected` selects the
/// variables the file should provide (for `missing`); names whose shapes disagree are an
/// error naming the tensor and both shapes, and nothing is copied in that case.
pub fn load_into(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    expected: impl Fn(&str) -> bool,
    source: &Path,
) -> Result<LoadReport, ModelError> {
    let vars = vs.variables();
    let mut report = LoadReport::default();
    for (name, t) in tensors {
        match vars.get(name) {
            None => report.unexpected.push(name.clone()),
            Some(v) if v.size() != t.size() => {
                return Err(ModelError::ShapeMismatch {
                    path: source.to_path_buf(),
                    tensor: name.clone(),
                    expected: v.size(),
                    found: t.size(),
                })
            }
            Some(_) => {}
        }
    }
    tch::no_grad(|| {
        for (name, var) in vars.iter() {
            match tensors.get(name) {
                Some(t) => {
                    let mut var = var.shallow_clone();
                    var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
                    report.loaded += 1;
                }
                None if expected(name) => report.missing.push(name.clone()),
                None => {}
            }
        }
    });
    report.missing.sort();
    Ok(report)
}

/// Imports an ImageNet backbone saved with torchvision's names (`conv1.weight`,
/// `bn1.running_mean`, `layer3.0.downsample.0.weight`, ...) into the encoder variables
/// of `vs`. `num_batches_tracked` is skipped; the classifier (`fc.*`) and any other
/// unknown name is reported as unexpected; encoder variables the file lacks as missing.
pub fn import_torchvision(vs: &nn::VarStore, path: &Path) -> Result<LoadReport, ModelError> {
    let mut file = read_tensors(path)?;
    file.tensors
        .retain(|n, _| !n.ends_with("num_batches_tracked"));
    load_into(vs, &file.tensors, is_encoder_var, path)
}

/// Whether a variable name belongs to the encoder (not the classifier / decoder or the
/// projector).
pub fn is_encoder_var(name: &str) -> bool {
    !(crate::is_head_var(name) || name.starts_with("projector."))
}

/// Saves every variable of `vs` with `metadata` (see [`write_tensors`]).
pub fn save_var_store(
    vs: &nn::VarStore,
    path: &Path,
    metadata: &HashMap<String, String>,
) -> Result<(), ModelError> {
    let vars = vs.variables();
    let sorted: BTreeMap<_, _> = vars.iter().collect();
    write_tensors(
        path,
        sorted.into_iter().map(|(n, t)| (n.clone(), t)),
        metadata,
    )
}
