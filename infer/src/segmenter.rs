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

use std::path::{Path, PathBuf};

use image::RgbImage;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::error::{InferError, Result};
use crate::labelmap::LabelMap;
use crate::model::{ModelInfo, INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT};
use crate::provider::{create_session, create_session_with_dims, Provider, SessionOptions};
use crate::resample;
use crate::taxonomy::IGNORE;

/// Input size used when the model is dynamic and none is given: 1024 x 512, the DACS /
/// RCCR Cityscapes evaluation protocol (implementation notes, "Evaluation protocols").
pub const DEFAULT_INPUT_SIZE: (u32, u32) = (1024, 512);

/// How to build a [`Segmenter`].
#[derive(Debug, Clone)]
pub struct SegmenterOptions {
    /// Provider and session settings (default: auto provider, physical-core threads).
    pub session: SessionOptions,
    /// Images per model run. Default 1; a model exported with a fixed batch uses that.
    pub batch_size: usize,
    /// Input `(width, height)` the images are resized to. Default none: the model's fixed
    /// size, else [`DEFAULT_INPUT_SIZE`]. A size that contradicts a fixed-shape model is an
    /// error.
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

/// Per-pixel argmax over `c` planes of `plane` values each (the first maximum wins, as
/// ONNX `ArgMax` and `torch.argmax`); NaN scores never win.
pub fn argmax_planes(logits: &[f32], c: usize, plane: usize) -> Vec<u8> {
    let mut best = logits[..plane].to_vec();
    let mut out = vec![0u8; plane];
    for k in 1..c {
        let s = &logits[k * plane..(k + 1) * plane];
        for ((o, b), &v) in out.iter_mut().zip(best.iter_mut()).zip(s) {
            if v > *b || (b.is_nan() && !v.is_nan()) {
                *b = v;
                *o = k as u8;
            }
        }
    }
    out
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
    run_options: RunOptions<ort::session::HasSelectedOutputs>,
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

impl Segmenter {
    /// Loads `model` (an ONNX file made by `rccr-export`) with `options`.
    pub fn open(model: &Path, options: &SegmenterOptions) -> Result<Segmenter> {
        let (session, provider) = create_session(model, &options.session)?;
        let info = ModelInfo::from_session(&session, model)?;
        if info.num_classes > 255 {
            return Err(InferError::NotRccrModel {
                path: model.to_path_buf(),
                reason: "more than 255 classes do not fit 8-bit label maps".into(),
            });
        }
        let input_size = match (info.fixed_size, options.input_size) {
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
        if input_size.0 == 0 || input_size.1 == 0 {
            return Err(InferError::Invalid("input size must be positive".into()));
        }
        // On the CPU, a session with H and W fixed to the input size runs faster (ONNX
        // Runtime fuses every residual Add + Relu into its convolution only with static
        // shapes): rebuild it so. `info` keeps describing the model file (dynamic).
        let mut session = session;
        if provider == Provider::Cpu && info.fixed_size.is_none() {
            if let Some((h_name, w_name)) = spatial_dim_names(&session) {
                let dims = [(h_name, input_size.1 as i64), (w_name, input_size.0 as i64)];
                let cpu = SessionOptions {
                    provider: Provider::Cpu,
                    ..options.session.clone()
                };
                session = create_session_with_dims(model, &cpu, &dims)?.0;
            }
        }
        let batch_size = match info.fixed_batch {
            Some(n) => {
                if options.batch_size != n && options.batch_size != 1 {
                    tracing::warn!(
                        "{} has a fixed batch of {n}; using it instead of {}",
                        model.display(),
                        options.batch_size
                    );
                }
                n
            }
            None => options.batch_size.max(1),
        };
        let wanted = if info.has_labels {
            LABELS_OUTPUT
        } else {
            LOGITS_OUTPUT
        };
        let run_options = RunOptions::new()
            .map_err(|e| InferError::Session {
                path: model.to_path_buf(),
                reason: e.to_string(),
            })?
            .with_outputs(OutputSelector::no_default().with(wanted));
        tracing::info!(
            "model {}: {} classes ({}), input {}x{}, batch {batch_size}, provider {provider}",
            model.display(),
            info.num_classes,
            info.label_set,
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

    /// One model run on a preprocessed batch (at most [`Self::batch_size`] images; padded
    /// with zeros when the model has a fixed batch). Returns one train-id map per image at
    /// the batch's size; ids outside `0..num_classes` become 255. Batches must be at
    /// [`Self::input_size`] ([`Self::new_batch`]): on the CPU, a dynamic model's session is
    /// fixed to that size when opened.
    pub fn run(&mut self, batch: &Batch) -> Result<Vec<LabelMap>> {
        if batch.len == 0 {
            return Ok(Vec::new());
        }
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
        let padded;
        let data: &[f32] = if n > batch.len {
            let mut v = batch.data.clone();
            v.resize(n * 3 * plane, 0.0);
            padded = v;
            &padded
        } else {
            &batch.data
        };
        let fail = |e: ort::Error| InferError::Session {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(([n, 3, h, w], data)).map_err(fail)?;
        let path = self.path.clone();
        let fail = |e: ort::Error| InferError::Session {
            path: path.clone(),
            reason: e.to_string(),
        };
        let outputs = self
            .session
            .run_with_options(ort::inputs![INPUT_NAME => tensor], &self.run_options)
            .map_err(fail)?;
        let num_classes = self.info.num_classes;
        let bad_shape = |name: &str, shape: &[i64]| InferError::Session {
            path: path.clone(),
            reason: format!(
                "output `{name}` has shape {shape:?}, expected {} for an input of {n}x3x{h}x{w}",
                if name == LABELS_OUTPUT {
                    format!("[{n}, {h}, {w}]")
                } else {
                    format!("[{n}, {num_classes}, {h}, {w}]")
                }
            ),
        };
        let mut maps = Vec::with_capacity(batch.len);
        if self.info.has_labels {
            let value = outputs
                .get(LABELS_OUTPUT)
                .ok_or_else(|| bad_shape(LABELS_OUTPUT, &[]))?;
            let (shape, labels) = value.try_extract_tensor::<i64>().map_err(fail)?;
            if **shape != [n as i64, h as i64, w as i64] {
                return Err(bad_shape(LABELS_OUTPUT, shape));
            }
            for i in 0..batch.len {
                let data = labels[i * plane..(i + 1) * plane]
                    .iter()
                    .map(|&v| {
                        if (0..num_classes as i64).contains(&v) {
                            v as u8
                        } else {
                            IGNORE
                        }
                    })
                    .collect();
                maps.push(LabelMap {
                    width: w as u32,
                    height: h as u32,
                    data,
                });
            }
        } else {
            let value = outputs
                .get(LOGITS_OUTPUT)
                .ok_or_else(|| bad_shape(LOGITS_OUTPUT, &[]))?;
            let (shape, logits) = value.try_extract_tensor::<f32>().map_err(fail)?;
            if **shape != [n as i64, num_classes as i64, h as i64, w as i64] {
                return Err(bad_shape(LOGITS_OUTPUT, shape));
            }
            let per = num_classes * plane;
            for i in 0..batch.len {
                maps.push(LabelMap {
                    width: w as u32,
                    height: h as u32,
                    data: argmax_planes(&logits[i * per..(i + 1) * per], num_classes, plane),
                });
            }
        }
        Ok(maps)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_maximum_wins() {
        // 3 classes, 4 pixels.
        let logits = [
            1.0,
            5.0,
            0.0,
            f32::NAN, // class 0
            2.0,
            5.0,
            0.0,
            1.0, // class 1
            0.0,
            1.0,
            3.0,
            0.5, // class 2
        ];
        assert_eq!(argmax_planes(&logits, 3, 4), vec![1, 0, 2, 1]);
    }

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
