//! TensorBoard out: event files in `RUN_DIR/tb/` that `tensorboard --logdir RUN_DIR/tb`
//! (and anything reading TensorFlow event files) shows, written the way TensorFlow,
//! tensorboardX and PyTorch's `SummaryWriter` write them.
//!
//! - A file `events.out.tfevents.<unix seconds>.<host>.<pid>.<n>` per [`TbWriter`]: a new
//!   file per process start, never appended to or overwritten.
//! - Records: the event's length (u64, little-endian), the masked CRC32C of those 8
//!   bytes, the serialized `Event`, the masked CRC32C of the event (masked: rotate right
//!   by 15, plus 0xa282ead8).
//! - The first event is `file_version: "brain.Event:2"`; scalars are `Summary.Value`s
//!   with `simple_value` (float32); images are `Summary.Image`s holding a PNG.
//! - Resume: [`TbWriter::resume`] writes a `SessionLog` START at the first step the
//!   resumed run logs, so TensorBoard hides what the interrupted run had logged from that
//!   step on (its restart convention, PyTorch's `purge_step`): every step shows once.
//!
//! [`scalars_of`] turns a `metrics.jsonl` record into tags (`train/loss_ce`, `val/miou`,
//! `val/iou/road`). The protobuf types are prost's, generated from the official
//! `.proto` files (`tensorboard_proto.rs`). This file uses nothing else of the crate, so
//! it can be compiled on its own.

#[rustfmt::skip]
#[allow(clippy::all, missing_docs, dead_code)]
#[path = "tensorboard_proto.rs"]
mod proto;

use image::RgbImage;
use prost::Message;
use proto::{event, summary, Event, SessionLog, Summary};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The version string of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Writes one event file.
#[derive(Debug)]
pub struct TbWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TbWriter {
    /// Creates `dir` if needed and a new event file in it, starting with the file-version
    /// event.
    pub fn create(dir: &Path) -> io::Result<TbWriter> {
        std::fs::create_dir_all(dir).map_err(|e| named(dir, e))?;
        let path = dir.join(file_name());
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| named(&path, e))?;
        let mut writer = TbWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.write_event(what_event(0, event::What::FileVersion(FILE_VERSION.into())))?;
        writer.flush()?;
        Ok(writer)
    }

    /// [`create`](Self::create) for a resumed run whose first logged step is
    /// `purge_step` (the checkpoint's iteration + 1): TensorBoard then hides every event
    /// of the earlier files at `purge_step` or later, which the interrupted run logged
    /// after its last checkpoint and the resumed run logs again.
    pub fn resume(dir: &Path, purge_step: u64) -> io::Result<TbWriter> {
        let mut writer = TbWriter::create(dir)?;
        let start = SessionLog {
            status: proto::session_log::SessionStatus::Start as i32,
            ..SessionLog::default()
        };
        writer.write_event(what_event(purge_step, event::What::SessionLog(start)))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar (stored as float32, as TensorBoard does) and flushes.
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f64) -> io::Result<()> {
        self.add_scalars(step, &[(tag.to_string(), value)])
    }

    /// Logs several scalars of one step as one event and flushes.
    pub fn add_scalars(&mut self, step: u64, scalars: &[(String, f64)]) -> io::Result<()> {
        let value = scalars
            .iter()
            .map(|(tag, v)| summary_value(tag, summary::value::Value::SimpleValue(*v as f32)))
            .collect();
        self.add_summary(step, Summary { value })
    }

    /// Logs an RGB image (PNG-encoded) and flushes.
    pub fn add_image(&mut self, tag: &str, step: u64, image: &RgbImage) -> io::Result<()> {
        self.add_image_rgb(tag, step, image.width(), image.height(), image.as_raw())
    }

    /// Logs `width x height` RGB pixels (row-major, 3 bytes each) as a PNG and flushes.
    pub fn add_image_rgb(
        &mut self,
        tag: &str,
        step: u64,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> io::Result<()> {
        let image = summary::Image {
            height: dimension(height)?,
            width: dimension(width)?,
            colorspace: 3,
            encoded_image_string: encode_png(width, height, rgb)?,
        };
        let value = summary_value(tag, summary::value::Value::Image(image));
        self.add_summary(step, Summary { value: vec![value] })
    }

    /// Writes buffered events to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| named(&self.path, e))
    }

    fn add_summary(&mut self, step: u64, summary: Summary) -> io::Result<()> {
        self.write_event(what_event(step, event::What::Summary(summary)))?;
        self.flush()
    }

    fn write_event(&mut self, event: Event) -> io::Result<()> {
        let record = frame(&event.encode_to_vec());
        self.out
            .write_all(&record)
            .map_err(|e| named(&self.path, e))
    }
}

fn what_event(step: u64, what: event::What) -> Event {
    Event {
        wall_time: now().as_secs_f64(),
        step: step.min(i64::MAX as u64) as i64,
        what: Some(what),
        ..Event::default()
    }
}

fn summary_value(tag: &str, value: summary::value::Value) -> summary::Value {
    summary::Value {
        tag: tag.to_string(),
        value: Some(value),
        ..summary::Value::default()
    }
}

/// One record: length, masked CRC of the length, data, masked CRC of the data.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&len);
    record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// CRC32C (Castagnoli) masked as TFRecord files store it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn encode_png(width: u32, height: u32, rgb: &[u8]) -> io::Result<Vec<u8>> {
    use image::ImageEncoder;
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected || expected == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "image of {width}x{height} needs {expected} RGB bytes (non-zero), got {}",
                rgb.len()
            ),
        ));
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(io::Error::other)?;
    Ok(png)
}

fn dimension(v: u32) -> io::Result<i32> {
    i32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large"))
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `events.out.tfevents.<secs>.<host>.<pid>.<n>`: unique per process and writer, in
/// creation order when sorted (TensorBoard reads a folder's files in name order).
fn file_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!(
        "events.out.tfevents.{:010}.{}.{}.{n}",
        now().as_secs(),
        hostname(),
        std::process::id()
    )
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The step of a `metrics.jsonl` record (its `iteration`).
pub fn step_of(record: &serde_json::Value) -> Option<u64> {
    record.get("iteration")?.as_u64()
}

/// The scalars of a `metrics.jsonl` record under TensorBoard tags: `<kind>/<key>` for
/// each number (`train/loss_ce`, `train/grad_share`, `val/miou`), nested objects one
/// level down (`val/iou/<class>` for `per_class_iou`, `train/phases/<phase>`); `kind`,
/// `iteration`, nulls (an absent class, SYNTHIA's 16/13-class mIoU on other data) and
/// non-numbers are left out. A record without a string `kind` gives nothing.
pub fn scalars_of(record: &serde_json::Value) -> Vec<(String, f64)> {
    let Some(kind) = record.get("kind").and_then(|k| k.as_str()) else {
        return Vec::new();
    };
    let Some(fields) = record.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in fields {
        if key == "kind" || key == "iteration" {
            continue;
        }
        let tag = format!(
            "{kind}/{}",
            if key == "per_class_iou" { "iou" } else { key }
        );
        match value {
            serde_json::Value::Object(inner) => out.extend(
                inner
                    .iter()
                    .filter_map(|(k, v)| Some((format!("{tag}/{k}"), v.as_f64()?))),
            ),
            v => out.extend(v.as_f64().map(|x| (tag, x))),
        }
    }
    out
}

/// The images side by side, left to right, top-aligned, on black.
pub fn side_by_side(images: &[RgbImage]) -> RgbImage {
    let width = images.iter().map(|i| i.width()).sum();
    let height = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let mut out = RgbImage::new(width, height);
    let mut x = 0;
    for image in images {
        image::imageops::replace(&mut out, image, x as i64, 0);
        x += image.width();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // The CRC-32C check value, and the masked values TensorBoard's own
        // `pywrap_tensorflow.masked_crc32c` gives (tensorboard 2.21.0).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn frame_layout() {
        let r = frame(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc32c(b"abc").to_le_bytes());
    }

    #[test]
    fn scalar_tags_of_train_and_val_records() {
        let train = json!({"kind": "train", "iteration": 7, "loss_ce": 1.5, "lr": 2.5e-4,
                           "kept_anchors": 12, "phases": {"teacher": 0.1}, "note": "x"});
        let mut tags = scalars_of(&train);
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            tags,
            [
                ("train/kept_anchors".to_string(), 12.0),
                ("train/loss_ce".to_string(), 1.5),
                ("train/lr".to_string(), 2.5e-4),
                ("train/phases/teacher".to_string(), 0.1),
            ]
        );
        let val = json!({"kind": "val", "iteration": 9, "miou": 0.5, "miou_16": null,
                         "per_class_iou": {"road": 0.9, "train": null}});
        let mut tags = scalars_of(&val);
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            tags,
            [
                ("val/iou/road".to_string(), 0.9),
                ("val/miou".to_string(), 0.5)
            ]
        );
        assert_eq!(step_of(&val), Some(9));
        assert!(scalars_of(&json!({"iteration": 1, "x": 2})).is_empty());
    }

    #[test]
    fn bad_image_sizes_are_errors() {
        assert!(encode_png(2, 2, &[0; 11]).is_err());
        assert!(encode_png(0, 0, &[]).is_err());
        assert!(encode_png(2, 1, &[1, 2, 3, 4, 5, 6]).is_ok());
    }

    #[test]
    fn side_by_side_places_images() {
        let a = RgbImage::from_pixel(2, 3, image::Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(1, 1, image::Rgb([0, 255, 0]));
        let s = side_by_side(&[a, b]);
        assert_eq!(s.dimensions(), (3, 3));
        assert_eq!(s.get_pixel(1, 2).0, [255, 0, 0]);
        assert_eq!(s.get_pixel(2, 0).0, [0, 255, 0]);
        assert_eq!(s.get_pixel(2, 1).0, [0, 0, 0]);
    }
}
