//! Label-map decoder of rccr-infer (`rccr_infer::imageio`): the whole-map read and the
//! row streaming of `LabelReader`, over the same bytes. Contract: a map of width x height
//! ids (the streamed rows equal the whole read), or a typed error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_fuzz::assert_names;
use rccr_infer::imageio::{decode_label_bytes, LabelReader};
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-label.png");
    let whole = decode_label_bytes(path, data);
    match &whole {
        Ok(map) => assert_eq!(map.data.len(), map.width as usize * map.height as usize),
        Err(e) => assert_names(path, &e.to_string()),
    }
    let Ok(mut reader) = LabelReader::new(path, Cursor::new(data)) else {
        return;
    };
    if !reader.streamable() {
        return;
    }
    let mut rows = Vec::new();
    loop {
        match reader.next_row() {
            Ok(Some(row)) => rows.extend_from_slice(row),
            Ok(None) => break,
            Err(e) => {
                assert_names(path, &e.to_string());
                return;
            }
        }
    }
    if let Ok(map) = whole {
        assert_eq!(rows, map.data, "streamed rows differ from the whole read");
    }
});
