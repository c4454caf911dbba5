//! Decoding dataset files: RGB images (any PNG/JPEG the `image` crate reads, converted to
//! 8-bit RGB) and label maps, read with the `png` crate without palette expansion so that
//! the raw ids survive: GTA5 labels are paletted PNGs whose index is the labelId,
//! Cityscapes `*_gtFine_labelIds.png` are 8-bit grey, SYNTHIA `GT/LABELS` are 16-bit with
//! the class id in the first channel. Ids are mapped to trainIds with the tables of
//! `rccr_infer::taxonomy` (the official Cityscapes and SYNTHIA id tables); unknown ids
//! become the ignore label 255.

use std::io::Cursor;
use std::path::Path;

use image::RgbImage;
use rccr_infer::labelmap::resize_nearest;
use rccr_infer::taxonomy::{label_to_train, synthia_to_train, IGNORE};

use super::{DatasetKind, Error};

/// A decoded label map in trainIds (255 = ignore), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelMap {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// `width * height` trainIds.
    pub(crate) ids: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e,
    })
}

fn decode_err(path: &Path, reason: impl ToString) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Decodes an image file to 8-bit RGB (alpha dropped, 16-bit scaled down).
pub(crate) fn decode_rgb(path: &Path) -> Result<RgbImage, Error> {
    let bytes = read(path)?;
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(path, e))?
        .decode()
        .map_err(|e| decode_err(path, e))?;
    Ok(img.into_rgb8())
}

/// The id -> trainId table of a dataset for ids 0..=255 (larger ids map to 255).
pub(crate) fn train_id_table(kind: DatasetKind) -> [u8; 256] {
    let mut lut = [IGNORE; 256];
    for (id, slot) in lut.iter_mut().enumerate() {
        *slot = match kind {
            DatasetKind::Gta5 | DatasetKind::Cityscapes => label_to_train(id as u8),
            DatasetKind::Synthia => synthia_to_train(id as u16),
        };
    }
    lut
}

/// Decodes a label PNG of `kind` and maps its ids to trainIds.
pub(crate) fn decode_label(path: &Path, kind: DatasetKind) -> Result<LabelMap, Error> {
    let bytes = read(path)?;
    decode_label_bytes(&bytes, kind).map_err(|reason| decode_err(path, reason))
}

/// Decodes a label PNG of `kind` and nearest-resizes it to `size` (W, H); an empty label
/// image is an error.
pub(crate) fn decode_label_resized(
    path: &Path,
    kind: DatasetKind,
    size: (u32, u32),
) -> Result<Vec<u8>, Error> {
    let map = decode_label(path, kind)?;
    if map.width == 0 || map.height == 0 {
        return Err(decode_err(path, "empty label image"));
    }
    Ok(resize_nearest(&map.ids, (map.width, map.height), size))
}

/// Decodes label PNG bytes (see [`decode_label`]); the error is a reason without the path.
pub(crate) fn decode_label_bytes(bytes: &[u8], kind: DatasetKind) -> Result<LabelMap, String> {
    let (buf, frame) = read_raw_png(bytes)?;
    let (width, height) = (frame.width, frame.height);
    let lut = train_id_table(kind);
    let map = |v: u16| -> u8 {
        if v < 256 {
            lut[v as usize]
        } else {
            IGNORE
        }
    };
    // Colour label images are only accepted when grey in disguise (R == G == B), except
    // for SYNTHIA whose id lives in the first channel by definition.
    let colour = matches!(frame.color_type, png::ColorType::Rgb | png::ColorType::Rgba);
    let check_grey = colour && kind != DatasetKind::Synthia;
    let (w, line) = (width as usize, frame.line_size);
    let mut ids = Vec::with_capacity(w * height as usize);
    for y in 0..height as usize {
        let raw = RawRow {
            row: &buf[y * line..(y + 1) * line],
            width: w,
            depth: frame.bit_depth,
            samples: frame.color_type.samples(),
        };
        raw.push_ids(check_grey, &map, &mut ids)?;
    }
    Ok(LabelMap { width, height, ids })
}

/// The samples of a PNG exactly as stored (no palette expansion, no 16 -> 8 bit
/// reduction) and the frame's layout.
fn read_raw_png(bytes: &[u8]) -> Result<(Vec<u8>, png::OutputInfo), String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    Ok((buf, frame))
}

/// One row of a raw PNG frame.
struct RawRow<'a> {
    row: &'a [u8],
    width: usize,
    depth: png::BitDepth,
    samples: usize,
}

impl RawRow<'_> {
    /// Appends the id of each pixel (its first sample, through `map`) to `ids`; with
    /// `check_grey`, a pixel whose channels differ is an error.
    fn push_ids(
        &self,
        check_grey: bool,
        map: &impl Fn(u16) -> u8,
        ids: &mut Vec<u8>,
    ) -> Result<(), String> {
        let (row, samples) = (self.row, self.samples);
        match self.depth {
            png::BitDepth::Sixteen => {
                for p in row.chunks_exact(samples * 2).take(self.width) {
                    if check_grey && (p[0..2] != p[2..4] || p[0..2] != p[4..6]) {
                        return Err(colour_label_error());
                    }
                    ids.push(map(u16::from_be_bytes([p[0], p[1]])));
                }
            }
            png::BitDepth::Eight => {
                for p in row.chunks_exact(samples).take(self.width) {
                    if check_grey && (p[0] != p[1] || p[0] != p[2]) {
                        return Err(colour_label_error());
                    }
                    ids.push(map(p[0] as u16));
                }
            }
            depth => {
                // 1, 2 or 4 bits: grey or paletted, one sample per pixel, MSB first.
                let bits = depth as usize;
                let mask = (1u16 << bits) - 1;
                for x in 0..self.width {
                    let bit = x * bits;
                    let shift = 8 - bits - (bit % 8);
                    ids.push(map((row[bit / 8] as u16 >> shift) & mask));
                }
            }
        }
        Ok(())
    }
}

fn colour_label_error() -> String {
    "a colour label image: expected labelIds (8-bit grey or paletted PNG, the id in each \
     pixel), not the colour visualisation"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_design_doc() {
        let gta = train_id_table(DatasetKind::Gta5);
        assert_eq!(gta[7], 0);
        assert_eq!(gta[33], 18);
        assert_eq!(gta[0], IGNORE);
        assert_eq!(gta[34], IGNORE);
        let syn = train_id_table(DatasetKind::Synthia);
        assert_eq!(syn[3], 0);
        assert_eq!(syn[21], 3);
        assert_eq!(syn[13], IGNORE);
    }
}
