//! Reading images and label maps, writing PNGs atomically.
//!
//! Label maps are read with the `png` crate directly and without colour expansion, so a
//! palette (indexed) PNG yields its indices, as `numpy.array(PIL.Image.open(f))` does in the
//! official Cityscapes evaluation; multi-channel files are rejected as it rejects them.
//! Every write goes to a temporary file in the destination folder that is then renamed,
//! so an interrupted run never leaves a partial output.

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};
use crate::files;
use crate::labelmap::LabelMap;

/// Decodes a PNG or JPEG file (format from its content) into 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| InferError::io("cannot read image", path, e))?;
    decode_rgb(path, &bytes)
}

/// Decodes image bytes (PNG or JPEG) that came from `path` into 8-bit RGB.
pub fn decode_rgb(path: &Path, bytes: &[u8]) -> Result<image::RgbImage> {
    let err = |reason: String| InferError::ImageDecode {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("unknown file format".into()));
    }
    let decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let needed = image::ImageDecoder::total_bytes(&decoder);
    let limit = decoder_limit();
    if needed > limit {
        return Err(InferError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            bytes: needed,
            limit,
        });
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("image has no pixels".into()));
    }
    Ok(img.into_rgb8())
}

/// The decoder's memory limit for one image's decoded pixels (the `image` crate's default,
/// 512 MiB: a 16-bit RGBA 8192x8192 frame, or 8-bit RGB ~ 13400x13400).
pub fn decoder_limit() -> u64 {
    image::Limits::default().max_alloc.unwrap_or(u64::MAX)
}

/// Reads a single-channel label PNG: 8-bit grayscale, 8-bit indexed (the indices) or
/// 16-bit grayscale with values below 256.
pub fn read_label_png(path: &Path) -> Result<LabelMap> {
    let file = File::open(path).map_err(|e| InferError::io("cannot read label map", path, e))?;
    decode_label_png(path, BufReader::new(file))
}

/// [`read_label_png`] on bytes already in memory (`path` names them in errors).
pub fn decode_label_bytes(path: &Path, bytes: &[u8]) -> Result<LabelMap> {
    decode_label_png(path, Cursor::new(bytes))
}

/// An opened, validated single-channel label PNG whose rows can be streamed.
pub struct LabelReader<R: std::io::BufRead + std::io::Seek> {
    path: PathBuf,
    reader: png::Reader<R>,
    sixteen: bool,
}

impl LabelReader<BufReader<File>> {
    /// Opens `path` and checks it is a single-channel 8- or 16-bit PNG.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| InferError::io("cannot read label map", path, e))?;
        LabelReader::new(path, BufReader::new(file))
    }
}

impl<R: std::io::BufRead + std::io::Seek> LabelReader<R> {
    /// Reads the header of a label PNG from `r` (`path` names it in errors).
    pub fn new(path: &Path, r: R) -> Result<Self> {
        let bad = |reason: String| InferError::LabelFormat {
            path: path.to_path_buf(),
            reason,
        };
        let mut decoder = png::Decoder::new(r);
        decoder.set_transformations(png::Transformations::IDENTITY);
        let reader = decoder
            .read_info()
            .map_err(|e| bad(format!("not a readable PNG ({e})")))?;
        let (color, depth) = reader.output_color_type();
        if !matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed) {
            return Err(bad(format!(
                "it has colour type {color:?}; a label map must be a single-channel (grayscale) PNG of ids"
            )));
        }
        if !matches!(depth, png::BitDepth::Eight | png::BitDepth::Sixteen) {
            return Err(bad(format!(
                "bit depth {depth:?} is not supported; write 8-bit ids"
            )));
        }
        Ok(LabelReader {
            path: path.to_path_buf(),
            reader,
            sixteen: depth == png::BitDepth::Sixteen,
        })
    }

    /// `(width, height)`.
    pub fn size(&self) -> (u32, u32) {
        let i = self.reader.info();
        (i.width, i.height)
    }

    /// Whether rows can be streamed with [`Self::next_row`] (8-bit, not interlaced).
    pub fn streamable(&self) -> bool {
        !self.sixteen && !self.reader.info().interlaced
    }

    /// The next row of ids (only when [`Self::streamable`]); `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<&[u8]>> {
        let path = &self.path;
        match self.reader.next_row() {
            Ok(Some(row)) => Ok(Some(row.data())),
            Ok(None) => Ok(None),
            Err(e) => Err(InferError::LabelFormat {
                path: path.clone(),
                reason: format!("corrupt or truncated PNG ({e})"),
            }),
        }
    }

    /// Decodes the whole map.
    pub fn read(mut self) -> Result<LabelMap> {
        let path = self.path.clone();
        let bad = |reason: String| InferError::LabelFormat {
            path: path.clone(),
            reason,
        };
        // The header's size is checked before the buffer is allocated: a few bytes of
        // PNG can declare a 64 GiB frame (docs/hardening.md, "Findings").
        let (width, height) = self.size();
        let size = self
            .reader
            .output_buffer_size()
            .filter(|&s| s as u64 <= decoder_limit())
            .ok_or_else(|| {
                bad(format!(
                    "its {width}x{height} ids are over the decoder's limit of {} MiB decoded",
                    decoder_limit() / (1024 * 1024)
                ))
            })?;
        let mut buf = vec![0u8; size];
        let info = self
            .reader
            .next_frame(&mut buf)
            .map_err(|e| bad(format!("corrupt or truncated PNG ({e})")))?;
        let (w, h) = (info.width, info.height);
        let n = w as usize * h as usize;
        let data = if self.sixteen {
            let mut out = Vec::with_capacity(n);
            for (i, px) in buf[..n * 2].chunks_exact(2).enumerate() {
                let v = u16::from_be_bytes([px[0], px[1]]);
                if v > 255 {
                    return Err(bad(format!(
                        "16-bit value {v} at pixel ({}, {}) does not fit a label id",
                        i % w as usize,
                        i / w as usize
                    )));
                }
                out.push(v as u8);
            }
            out
        } else {
            // Rows of 8-bit single-channel PNGs are packed: line size = width.
            buf.truncate(n);
            buf
        };
        Ok(LabelMap {
            width: w,
            height: h,
            data,
        })
    }
}

fn decode_label_png<R: std::io::BufRead + std::io::Seek>(path: &Path, r: R) -> Result<LabelMap> {
    LabelReader::new(path, r)?.read()
}

/// The colour layout of an 8-bit PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngColor<'a> {
    /// One byte per pixel, grey (label maps).
    Gray,
    /// Three bytes per pixel, RGB.
    Rgb,
    /// One palette index per pixel; the palette is `[r, g, b]` triples, flattened.
    Indexed(&'a [u8]),
}

impl PngColor<'_> {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            PngColor::Rgb => 3,
            PngColor::Gray | PngColor::Indexed(_) => 1,
        }
    }
}

/// Encodes `width x height` 8-bit pixels (row-major, [`PngColor::channels`] bytes each)
/// as PNG bytes with fast compression. Fails on an empty image or a `data` length that
/// does not match the size.
pub fn encode_png(
    width: u32,
    height: u32,
    color: PngColor,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    let expected = width as usize * height as usize * color.channels();
    if data.len() != expected || expected == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a {width}x{height} PNG needs {expected} bytes (non-zero), got {}",
                data.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(data.len() / 2);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    match color {
        PngColor::Gray => enc.set_color(png::ColorType::Grayscale),
        PngColor::Rgb => enc.set_color(png::ColorType::Rgb),
        PngColor::Indexed(palette) => {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(palette.to_vec());
        }
    }
    let mut writer = enc.write_header()?;
    writer.write_image_data(data)?;
    writer.finish()?;
    Ok(out)
}

/// Writes `bytes` to `path` atomically ([`files::write_atomic`]), naming `path` in the
/// error.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    files::write_atomic(path, bytes).map_err(|e| InferError::io("cannot write", path, e))
}

/// Writes a label map as an 8-bit grayscale PNG, atomically.
pub fn write_label_png(path: &Path, map: &LabelMap) -> Result<()> {
    write_png(path, map.width, map.height, PngColor::Gray, &map.data)
}

/// Writes RGB bytes as a PNG, atomically.
pub fn write_rgb_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    write_png(path, width, height, PngColor::Rgb, rgb)
}

fn write_png(path: &Path, width: u32, height: u32, color: PngColor, data: &[u8]) -> Result<()> {
    let bytes = encode_png(width, height, color, data)
        .map_err(|e| InferError::io("cannot encode", path, e))?;
    write_output(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_png_round_trip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let map = LabelMap {
            width: 3,
            height: 2,
            data: vec![0, 7, 33, 255, 1, 2],
        };
        let p = dir.path().join("sub/a.png");
        write_label_png(&p, &map).unwrap();
        assert_eq!(read_label_png(&p).unwrap(), map);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);

        // RGB is rejected, naming the file.
        let rgb = dir.path().join("rgb.png");
        write_rgb_png(&rgb, 1, 1, &[1, 2, 3]).unwrap();
        let e = read_label_png(&rgb).unwrap_err().to_string();
        assert!(e.contains("rgb.png") && e.contains("single-channel"), "{e}");

        // Truncated file.
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
        let e = read_label_png(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.png"), "{e}");

        // Missing file.
        let e = read_label_png(&dir.path().join("nope.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.png"), "{e}");
    }

    #[test]
    fn indexed_png_yields_indices() {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 2, 1);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette(vec![0u8, 0, 0, 255, 0, 0, 0, 255, 0]);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[2, 1]).unwrap();
        }
        let m = decode_label_bytes(Path::new("p.png"), &out).unwrap();
        assert_eq!(m.data, vec![2, 1]);
    }

    #[test]
    fn corrupt_image_is_a_named_error() {
        let e = decode_rgb(Path::new("x/broken.png"), b"\x89PNG\r\n\x1a\nxxxx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken.png"), "{e}");
        let e = decode_rgb(Path::new("x/text.png"), b"hello")
            .unwrap_err()
            .to_string();
        assert!(e.contains("text.png"), "{e}");
    }
}
