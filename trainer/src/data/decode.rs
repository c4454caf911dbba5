//! Decoding dataset files: RGB images (any PNG/JPEG the `image` crate reads, converted to
//! 8-bit RGB) and label maps, read with the `png` crate without palette expansion so that
//! the raw ids survive: GTA5 labels are paletted PNGs whose index is the labelId,
//! Cityscapes `*_gtFine_labelIds.png` are 8-bit grey, SYNTHIA `GT/LABELS` are 16-bit with
//! the class id in the first channel. Ids are mapped to trainIds with the tables of
//! `rccr_infer::taxonomy` (implementation notes, "Data"); unknown ids become 255.

use std::io::Cursor;
use std::path::Path;

use image::RgbImage;
use rccr_infer::taxonomy::{label_to_train, synthia_to_train, IGNORE};

use super::{DatasetKind, Error};

/// A decoded label map in trainIds (255 = ignore), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` trainIds.
    pub ids: Vec<u8>,
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
pub fn decode_rgb(path: &Path) -> Result<RgbImage, Error> {
    let bytes = read(path)?;
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(path, e))?
        .decode()
        .map_err(|e| decode_err(path, e))?;
    Ok(img.into_rgb8())
}

/// The id -> trainId table of a dataset for ids 0..=255 (larger ids map to 255).
pub fn train_id_table(kind: DatasetKind) -> [u8; 256] {
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
pub fn decode_label(path: &Path, kind: DatasetKind) -> Result<LabelMap, Error> {
    let bytes = read(path)?;
    decode_label_bytes(&bytes, kind).map_err(|reason| decode_err(path, reason))
}

/// Decodes label PNG bytes (see [`decode_label`]); the error is a reason without the path.
pub fn decode_label_bytes(bytes: &[u8], kind: DatasetKind) -> Result<LabelMap, String> {
    use png::{BitDepth, ColorType, Transformations};
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (width, height) = (frame.width, frame.height);
    let line = frame.line_size;
    let samples = frame.color_type.samples();
    let bits = frame.bit_depth as usize;
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
    let colour = matches!(frame.color_type, ColorType::Rgb | ColorType::Rgba);
    let check_grey = colour && kind != DatasetKind::Synthia;
    let (w, h) = (width as usize, height as usize);
    let mut ids = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &buf[y * line..y * line + line];
        match frame.bit_depth {
            BitDepth::Sixteen => {
                let stride = samples * 2;
                for x in 0..w {
                    let p = &row[x * stride..x * stride + stride];
                    if check_grey && (p[0..2] != p[2..4] || p[0..2] != p[4..6]) {
                        return Err(colour_label_error());
                    }
                    ids.push(map(u16::from_be_bytes([p[0], p[1]])));
                }
            }
            BitDepth::Eight => {
                for x in 0..w {
                    let p = &row[x * samples..x * samples + samples];
                    if check_grey && (p[0] != p[1] || p[0] != p[2]) {
                        return Err(colour_label_error());
                    }
                    ids.push(map(p[0] as u16));
                }
            }
            _ => {
                // 1, 2 or 4 bits: grey or paletted, one sample per pixel, MSB first.
                let mask = (1u16 << bits) - 1;
                for x in 0..w {
                    let bit = x * bits;
                    let shift = 8 - bits - (bit % 8);
                    let v = (row[bit / 8] as u16 >> shift) & mask;
                    ids.push(map(v));
                }
            }
        }
    }
    Ok(LabelMap { width, height, ids })
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
    fn tables_match_the_notes() {
        let gta = train_id_table(DatasetKind::Gta5);
        assert_eq!(gta[7], 0);
        assert_eq!(gta[33], 18);
        assert_eq!(gta[0], 255);
        assert_eq!(gta[34], 255);
        let syn = train_id_table(DatasetKind::Synthia);
        assert_eq!(syn[3], 0);
        assert_eq!(syn[21], 3);
        assert_eq!(syn[13], 255);
    }
}
