//! [`Segmenter`]: an rccr ONNX model on ONNX Runtime, turning RGB images into train-id
//! label maps — the deployment form of the teacher network's prediction
//! `argmax_c p(c | x)` (paper Sec. 3.1; the teacher is what `rccr-export` freezes).
//!
//! Preprocessing is only a resize to the model's input size (PIL-style bilinear, see
//! [`crate::resample`]) and HWC u8 -> planar CHW f32 0..255: normalisation and channel
//! order live inside the graph. Predictions come at the input size ([`Segmenter::segment`])
//! or resized back to each image's own size with nearest sampling
//! ([`Segmenter::segment_original`]). [`Segmenter::run`] times pure model runs on
//! preprocessed [`Batch`]es.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::RgbImage;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::contract::{INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use crate::error::{InferError, Result};
use crate::labelmap::{argmax_planes, LabelMap};
use crate::model::ModelInfo;
use crate::provider::{create_session, create_session_with_dims, Provider, SessionOptions};
use crate::resample;
use crate::taxonomy::IGNORE;

/// Input size used when the model is dynamic and none is given: 1024 x 512, the DACS /
/// RCCR Cityscapes evaluation protocol (docs/design.md#evaluation-protocols).
pub const DEFAULT_INPUT_SIZE: (u32, u32) = (1024, 512);

/// Largest accepted input side (`--input-size`), in pixels.
pub const MAX_INPUT_SIDE: u32 = 8192;
/// Largest accepted input area, in pixels: 8192 x 4096, 16 Cityscapes frames (a
/// `3 x H x W` f32 input image is then 400 MB before the network's activations).
pub const MAX_INPUT_PIXELS: u64 = 8192 * 4096;
/// Largest accepted batch (`--batch-size`).
pub const MAX_BATCH_SIZE: usize = 256;

/// Checks an input size `(width, height)` against the stated bounds: both sides in
/// `1..=MAX_INPUT_SIDE`, the area at most [`MAX_INPUT_PIXELS`].
pub fn check_input_size(size: (u32, u32)) -> Result<()> {
    let (w, h) = size;
    let bad = |why: String| {
        InferError::Invalid(format!(
            "--input-size {w}x{h}: {why}; the limits are {MAX_INPUT_SIDE} per side and {MAX_INPUT_PIXELS} pixels (e.g. 8192x4096); the Cityscapes protocol is 1024x512"
        ))
    };
    if w == 0 || h == 0 {
        return Err(bad("both sides must be positive".into()));
    }
    if w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
        return Err(bad(format!("a side is over {MAX_INPUT_SIDE}")));
    }
    if w as u64 * h as u64 > MAX_INPUT_PIXELS {
        return Err(bad(format!("{} pixels", w as u64 * h as u64)));
    }
    Ok(())
}

/// Checks a batch size: `1..=MAX_BATCH_SIZE`.
pub fn check_batch_size(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH_SIZE {
        return Err(InferError::Invalid(format!(
            "--batch-size {n}: use 1 to {MAX_BATCH_SIZE} images per model run"
        )));
    }
    Ok(())
}

/// How to build a [`Segmenter`].
#[derive(Debug, Clone)]
pub struct SegmenterOptions {
    /// Provider and session settings (default: auto provider, physical-core threads).
    pub session: SessionOptions,
    /// Images per model run, `1..=MAX_BATCH_SIZE` (0 is an error). Default 1; a model
    /// exported with a fixed batch uses that.
    pub batch_size: usize,
    /// Input `(width, height)` the images are resized to. Default none: the model's fixed
    /// size, else [`DEFAULT_INPUT_SIZE`]. A size that contradicts a fixed-shape model, or
    /// is beyond [`check_input_size`]'s bounds, is an error.
    pub input_size: Option<(u32, u32)>,
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        SegmenterOptions {
            session: SessionOptions::default(),
            batch_size: 1,
            input_size: None,
        }
    }
}

/// A preprocessed batch: up to `capacity` images at one size, planar `N x 3 x H x W` f32
/// RGB 0..255 (the model's input format).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input width.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// Images in the batch.
    pub len: usize,
    /// `len * 3 * height * width` values.
    pub data: Vec<f32>,
}

impl Batch {
    /// An empty batch for `width x height` inputs.
    pub fn new(width: u32, height: u32) -> Batch {
        Batch {
            width,
            height,
            len: 0,
            data: Vec::new(),
        }
    }

    /// Appends one image (resized to the batch size when it differs).
    pub fn push(&mut self, image: &RgbImage) {
        let plane = self.width as usize * self.height as usize;
        let start = self.data.len();
        self.data.resize(start + 3 * plane, 0.0);
        preprocess_into(image, self.width, self.height, &mut self.data[start..]);
        self.len += 1;
    }

    /// Appends one interleaved RGB8 image of `width x height` (row-major, `3 * width *
    /// height` bytes), resized to the batch size as [`Self::push`] does.
    pub fn push_rgb(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<()> {
        let want = 3 * width as usize * height as usize;
        if rgb.len() != want || want == 0 {
            return Err(InferError::Invalid(format!(
                "an RGB8 image of {width}x{height} needs {want} bytes, got {}",
                rgb.len()
            )));
        }
        let plane = self.width as usize * self.height as usize;
        let start = self.data.len();
        self.data.resize(start + 3 * plane, 0.0);
        resample::resize_rgb_to_planar(
            rgb,
            width as usize,
            height as usize,
            self.width as usize,
            self.height as usize,
            &mut self.data[start..],
        );
        self.len += 1;
        Ok(())
    }

    /// Appends an image that was already preprocessed with [`preprocess`].
    pub fn push_preprocessed(&mut self, chw: &[f32]) {
        self.data.extend_from_slice(chw);
        self.len += 1;
    }

    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.len = 0;
        self.data.clear();
    }
}

/// Writes `image` resized to `width x height` (PIL-style bilinear, see [`resample`]) as
/// planar CHW f32 0..255 into `out` (`3 * width * height` values).
pub fn preprocess_into(image: &RgbImage, width: u32, height: u32, out: &mut [f32]) {
    resample::resize_rgb_to_planar(
        image.as_raw(),
        image.width() as usize,
        image.height() as usize,
        width as usize,
        height as usize,
        out,
    );
}

/// [`preprocess_into`] into a new vector.
pub fn preprocess(image: &RgbImage, width: u32, height: u32) -> Vec<f32> {
    let mut v = vec![0.0; 3 * width as usize * height as usize];
    preprocess_into(image, width, height, &mut v);
    v
}

/// The symbolic names of the input's H and W dimensions, when both have one.
fn spatial_dim_names(session: &Session) -> Option<(String, String)> {
    let input = session.inputs().iter().find(|i| i.name() == INPUT_NAME)?;
    let ort::value::ValueType::Tensor {
        dimension_symbols, ..
    } = input.dtype()
    else {
        return None;
    };
    let name = |i: usize| {
        dimension_symbols
            .get(i)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    Some((name(2)?, name(3)?))
}

/// An rccr segmentation model ready to run.
pub struct Segmenter {
    session: Session,
    info: ModelInfo,
    provider: Provider,
    path: PathBuf,
    input_size: (u32, u32),
    batch_size: usize,
    /// Selects the preferred output (`labels`, else `logits`).
    run_options: RunOptions<HasSelectedOutputs>,
    /// Selects `logits`, when the model has them ([`Segmenter::run_logits`]).
    logits_options: Option<RunOptions<HasSelectedOutputs>>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("input_size", &self.input_size)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// The input size a model runs at: its fixed size, else the asked one, else the default;
/// an asked size that contradicts a fixed one, or is out of bounds, is an error.
fn resolve_input_size(
    info: &ModelInfo,
    asked: Option<(u32, u32)>,
    model: &Path,
) -> Result<(u32, u32)> {
    let size = match (info.fixed_size, asked) {
        (Some(fixed), Some(asked)) if fixed != asked => {
            return Err(InferError::Invalid(format!(
                "input size {}x{} asked, but {} was exported with a fixed {}x{} input",
                asked.0,
                asked.1,
                model.display(),
                fixed.0,
                fixed.1
            )))
        }
        (Some(fixed), _) => fixed,
        (None, Some(asked)) => asked,
        (None, None) => DEFAULT_INPUT_SIZE,
    };
    check_input_size(size)?;
    Ok(size)
}

/// Images per run: the model's fixed batch, else the asked one.
fn resolve_batch_size(info: &ModelInfo, asked: usize, model: &Path) -> Result<usize> {
    check_batch_size(asked)?;
    Ok(match info.fixed_batch {
        Some(n) => {
            if asked != n && asked != 1 {
                tracing::warn!(
                    "{} has a fixed batch of {n}; using it instead of {asked}",
                    model.display()
                );
            }
            n
        }
        None => asked,
    })
}

/// Run options computing only `output`.
fn select_output(model: &Path, output: &str) -> Result<RunOptions<HasSelectedOutputs>> {
    Ok(RunOptions::new()
        .map_err(|e| InferError::ort(model, e))?
        .with_outputs(OutputSelector::no_default().with(output)))
}

/// On the CPU, a session with H and W fixed to the input size runs faster (ONNX Runtime
/// fuses every residual Add + Relu into its convolution only with static shapes): the
/// session rebuilt so when the input's H and W have symbolic names, else `session`.
fn fixed_size_cpu_session(
    session: Session,
    model: &Path,
    options: &SessionOptions,
    (width, height): (u32, u32),
) -> Result<Session> {
    let Some((h_name, w_name)) = spatial_dim_names(&session) else {
        return Ok(session);
    };
    let dims = [(h_name, height as i64), (w_name, width as i64)];
    let cpu = SessionOptions {
        provider: Provider::Cpu,
        ..options.clone()
    };
    Ok(create_session_with_dims(model, &cpu, &dims)?.0)
}

impl Segmenter {
    /// Loads `model` (an ONNX file made by `rccr-export`) with `options`.
    pub fn open(model: &Path, options: &SegmenterOptions) -> Result<Segmenter> {
        let (session, provider) = create_session(model, &options.session)?;
        // The contract (`ModelMetadata::from_props`) keeps num_classes within 8-bit ids.
        let info = ModelInfo::from_session(&session, model)?;
        let input_size = resolve_input_size(&info, options.input_size, model)?;
        let batch_size = resolve_batch_size(&info, options.batch_size, model)?;
        let session = if provider == Provider::Cpu && info.fixed_size.is_none() {
            fixed_size_cpu_session(session, model, &options.session, input_size)?
        } else {
            session
        };
        let wanted = if info.has_labels {
            LABELS_OUTPUT
        } else {
            LOGITS_OUTPUT
        };
        let run_options = select_output(model, wanted)?;
        let logits_options = match info.has_logits {
            true => Some(select_output(model, LOGITS_OUTPUT)?),
            false => None,
        };
        tracing::info!(
            "model {}: {} classes ({}), input {}x{}, batch {batch_size}, provider {provider}",
            model.display(),
            info.metadata.num_classes,
            info.metadata.label_set,
            input_size.0,
            input_size.1
        );
        Ok(Segmenter {
            session,
            info,
            provider,
            path: model.to_path_buf(),
            input_size,
            batch_size,
            run_options,
            logits_options,
        })
    }

    /// The model's metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The execution provider that runs the model.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.path
    }

    /// Input `(width, height)` images are resized to.
    pub fn input_size(&self) -> (u32, u32) {
        self.input_size
    }

    /// Images per model run.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// An empty batch at this model's input size.
    pub fn new_batch(&self) -> Batch {
        Batch::new(self.input_size.0, self.input_size.1)
    }

    /// Checks `batch` and returns the images per model run (`n`, the fixed batch when
    /// the model has one) with the input data, zero-padded to `n` images.
    fn input_data<'a>(&self, batch: &'a Batch) -> Result<(usize, Cow<'a, [f32]>)> {
        let (w, h) = (batch.width as usize, batch.height as usize);
        let plane = w * h;
        if batch.data.len() != batch.len * 3 * plane {
            return Err(InferError::Invalid(format!(
                "batch holds {} values, expected {} for {} images of {w}x{h}",
                batch.data.len(),
                batch.len * 3 * plane,
                batch.len
            )));
        }
        let n = match self.info.fixed_batch {
            Some(fixed) if batch.len > fixed => {
                return Err(InferError::Invalid(format!(
                    "batch of {} images for a model with a fixed batch of {fixed}",
                    batch.len
                )))
            }
            Some(fixed) => fixed,
            None => batch.len,
        };
        if n == batch.len {
            return Ok((n, Cow::Borrowed(&batch.data)));
        }
        let mut v = batch.data.clone();
        v.resize(n * 3 * plane, 0.0);
        Ok((n, Cow::Owned(v)))
    }

    /// The shape error of output `name` for an input of `n x 3 x h x w`.
    fn bad_shape(&self, name: &str, shape: &[i64], n: usize, h: usize, w: usize) -> InferError {
        let expected = if name == LABELS_OUTPUT {
            format!("[{n}, {h}, {w}]")
        } else {
            format!("[{n}, {}, {h}, {w}]", self.info.metadata.num_classes)
        };
        InferError::Session {
            path: self.path.clone(),
            reason: format!(
                "output `{name}` has shape {shape:?}, expected {expected} for an input of {n}x3x{h}x{w}"
            ),
        }
    }

    /// One ORT run of `batch` computing only `output`; returns its values for the batch's
    /// own images (padding dropped), after checking the output's shape.
    fn run_output(&mut self, batch: &Batch, output: &str) -> Result<RawOutput> {
        let (w, h) = (batch.width as usize, batch.height as usize);
        let (n, data) = self.input_data(batch)?;
        let tensor = TensorRef::from_array_view(([n, 3, h, w], &*data))
            .map_err(|e| InferError::ort(&self.path, e))?;
        let labels = output == LABELS_OUTPUT;
        let options = match labels {
            false => self.logits_options.as_ref().unwrap_or(&self.run_options),
            true => &self.run_options,
        };
        let path = &self.path;
        let fail = |e: ort::Error| InferError::ort(path, e);
        let (shape, raw) = {
            let outputs = self
                .session
                .run_with_options(ort::inputs![INPUT_NAME => tensor], options)
                .map_err(fail)?;
            match outputs.get(output) {
                None => (Vec::new(), None),
                Some(value) if labels => {
                    let (s, v) = value.try_extract_tensor::<i64>().map_err(fail)?;
                    (
                        s.iter().copied().collect(),
                        Some(RawOutput::Labels(v.to_vec())),
                    )
                }
                Some(value) => {
                    let (s, v) = value.try_extract_tensor::<f32>().map_err(fail)?;
                    (
                        s.iter().copied().collect(),
                        Some(RawOutput::Logits(v.to_vec())),
                    )
                }
            }
        };
        let c = self.info.metadata.num_classes;
        let expected: Vec<i64> = match labels {
            true => vec![n as i64, h as i64, w as i64],
            false => vec![n as i64, c as i64, h as i64, w as i64],
        };
        match raw {
            Some(raw) if shape == expected => Ok(raw.first_images(batch.len, n)),
            _ => Err(self.bad_shape(output, &shape, n, h, w)),
        }
    }

    /// One model run on a preprocessed batch (at most [`Self::batch_size`] images; padded
    /// with zeros when the model has a fixed batch). Returns one train-id map per image at
    /// the batch's size; ids outside `0..num_classes` become 255. Batches must be at
    /// [`Self::input_size`] ([`Self::new_batch`]): on the CPU, a dynamic model's session is
    /// fixed to that size when opened.
    pub fn run(&mut self, batch: &Batch) -> Result<Vec<LabelMap>> {
        if batch.len == 0 {
            return Ok(Vec::new());
        }
        let output = if self.info.has_labels {
            LABELS_OUTPUT
        } else {
            LOGITS_OUTPUT
        };
        let raw = self.run_output(batch, output)?;
        Ok(self.label_maps(batch, &raw))
    }

    /// [`Self::run`] computing the `logits` output too: the maps (argmax of the logits, the
    /// first maximum winning as ONNX `ArgMax` does) and the logits, `len x C x H x W` f32 at
    /// the batch's size. An error for a model exported without `logits`.
    pub fn run_logits(&mut self, batch: &Batch) -> Result<(Vec<LabelMap>, Vec<f32>)> {
        if !self.info.has_logits {
            return Err(InferError::Invalid(format!(
                "{} has no `logits` output; export it with `rccr-export --outputs both`",
                self.path.display()
            )));
        }
        if batch.len == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let raw = self.run_output(batch, LOGITS_OUTPUT)?;
        let maps = self.label_maps(batch, &raw);
        match raw {
            RawOutput::Logits(v) => Ok((maps, v)),
            RawOutput::Labels(_) => unreachable!("run_output(LOGITS_OUTPUT) returns logits"),
        }
    }

    /// One train-id map per image of `batch` from a model output.
    fn label_maps(&self, batch: &Batch, raw: &RawOutput) -> Vec<LabelMap> {
        let (w, h) = (batch.width, batch.height);
        let plane = w as usize * h as usize;
        let c = self.info.metadata.num_classes;
        (0..batch.len)
            .map(|i| {
                let data = match raw {
                    RawOutput::Labels(v) => v[i * plane..(i + 1) * plane]
                        .iter()
                        .map(|&l| match u8::try_from(l) {
                            Ok(id) if (id as usize) < c => id,
                            _ => IGNORE,
                        })
                        .collect(),
                    RawOutput::Logits(v) => {
                        argmax_planes(&v[i * c * plane..(i + 1) * c * plane], c, plane)
                    }
                };
                LabelMap {
                    width: w,
                    height: h,
                    data,
                }
            })
            .collect()
    }

    /// Segments `images` at the model's input size, in batches of [`Self::batch_size`].
    pub fn segment(&mut self, images: &[RgbImage]) -> Result<Vec<LabelMap>> {
        let mut out = Vec::with_capacity(images.len());
        let mut batch = self.new_batch();
        for chunk in images.chunks(self.batch_size) {
            batch.clear();
            for img in chunk {
                batch.push(img);
            }
            out.extend(self.run(&batch)?);
        }
        Ok(out)
    }

    /// Segments `images` and resizes each map back to its image's own size (nearest).
    pub fn segment_original(&mut self, images: &[RgbImage]) -> Result<Vec<LabelMap>> {
        let maps = self.segment(images)?;
        Ok(maps
            .into_iter()
            .zip(images)
            .map(|(m, img)| m.resize_nearest(img.width(), img.height()))
            .collect())
    }

    /// Segments `n` interleaved RGB8 images of one `width x height` (row-major, back to
    /// back in `rgb`) into `train_ids` (`n x height x width` ids at the images' own size,
    /// exactly what [`Self::segment_original`] and `rccr-infer --out .../trainIds` give).
    /// With `logits` (`n x C x H x W` at [`Self::input_size`]), the model's logits too.
    /// The C ABI's `rccr_segmenter_run`.
    pub fn segment_interleaved(
        &mut self,
        rgb: &[u8],
        images: Interleaved,
        train_ids: &mut [u8],
        mut logits: Option<&mut [f32]>,
    ) -> Result<()> {
        let frame = images.check(rgb, train_ids, logits.as_deref(), self)?;
        let per_logits = self.info.metadata.num_classes
            * self.input_size.0 as usize
            * self.input_size.1 as usize;
        let mut batch = self.new_batch();
        let mut done = 0;
        for chunk in rgb
            .chunks(3 * frame)
            .collect::<Vec<_>>()
            .chunks(self.batch_size)
        {
            batch.clear();
            for image in chunk {
                batch.push_rgb(image, images.width, images.height)?;
            }
            let maps = match logits.as_deref_mut() {
                Some(out) => {
                    let (maps, values) = self.run_logits(&batch)?;
                    out[done * per_logits..][..values.len()].copy_from_slice(&values);
                    maps
                }
                None => self.run(&batch)?,
            };
            for map in maps {
                let full = map.resize_nearest(images.width, images.height);
                train_ids[done * frame..(done + 1) * frame].copy_from_slice(&full.data);
                done += 1;
            }
        }
        Ok(())
    }
}

/// A model output for the images of one batch.
enum RawOutput {
    /// `labels`, `len x H x W`.
    Labels(Vec<i64>),
    /// `logits`, `len x C x H x W`.
    Logits(Vec<f32>),
}

impl RawOutput {
    /// The values of the first `keep` of `n` images (drops a fixed batch's padding).
    fn first_images(self, keep: usize, n: usize) -> RawOutput {
        match self {
            RawOutput::Labels(mut v) => {
                v.truncate(v.len() / n * keep);
                RawOutput::Labels(v)
            }
            RawOutput::Logits(mut v) => {
                v.truncate(v.len() / n * keep);
                RawOutput::Logits(v)
            }
        }
    }
}

/// Largest image side accepted by [`Segmenter::segment_interleaved`].
pub const MAX_IMAGE_SIDE: u32 = 32768;
/// Largest image area accepted by [`Segmenter::segment_interleaved`] (2^28 pixels).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 28;

/// The shape of a block of interleaved RGB8 images: `count` images of `width x height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interleaved {
    /// Images.
    pub count: usize,
    /// Width of each.
    pub width: u32,
    /// Height of each.
    pub height: u32,
}

impl Interleaved {
    /// Checks the buffers against the shape; returns the pixels of one image.
    fn check(
        &self,
        rgb: &[u8],
        train_ids: &[u8],
        logits: Option<&[f32]>,
        seg: &Segmenter,
    ) -> Result<usize> {
        let (n, w, h) = (self.count, self.width, self.height);
        if n == 0 || w == 0 || h == 0 {
            return Err(InferError::Invalid(format!(
                "{n} images of {w}x{h}: count, width and height must be positive"
            )));
        }
        if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
            return Err(InferError::Invalid(format!(
                "images of {w}x{h} are over the limits ({MAX_IMAGE_SIDE} per side, {MAX_IMAGE_PIXELS} pixels)"
            )));
        }
        let frame = w as usize * h as usize;
        let sizes = [
            ("rgb", rgb.len(), 3 * frame * n),
            ("train_ids", train_ids.len(), frame * n),
        ];
        for (name, got, want) in sizes {
            if got != want {
                return Err(InferError::Invalid(format!(
                    "{name} holds {got} bytes, expected {want} for {n} images of {w}x{h}"
                )));
            }
        }
        if let Some(l) = logits {
            let (iw, ih) = seg.input_size;
            let want = n * seg.info.metadata.num_classes * iw as usize * ih as usize;
            if l.len() != want {
                return Err(InferError::Invalid(format!(
                    "logits holds {} values, expected {want} ({n} x {} classes x {ih} x {iw})",
                    l.len(),
                    seg.info.metadata.num_classes
                )));
            }
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_is_planar_rgb_0_255() {
        let img = RgbImage::from_raw(2, 1, vec![1, 2, 3, 250, 251, 252]).unwrap();
        assert_eq!(
            preprocess(&img, 2, 1),
            vec![1.0, 250.0, 2.0, 251.0, 3.0, 252.0]
        );
        let mut b = Batch::new(2, 1);
        b.push(&img);
        b.push(&img);
        assert_eq!(b.len, 2);
        assert_eq!(b.data.len(), 12);
        // A uniform image stays uniform through the resize (up to f32 weight rounding).
        let flat = RgbImage::from_pixel(8, 4, image::Rgb([9, 99, 199]));
        let v = preprocess(&flat, 3, 2);
        for (i, x) in v.iter().enumerate() {
            let want = [9.0, 99.0, 199.0][i / 6];
            assert!((x - want).abs() < 1e-3, "{i}: {x}");
        }
    }
}
