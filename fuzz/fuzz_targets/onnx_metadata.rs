//! The `rccr.*` metadata of an ONNX model (`rccr_infer::contract::ModelMetadata::
//! from_props`, what `ModelInfo::from_session` applies to a session's custom metadata).
//! The input is `key\tvalue` lines; keys are taken as written, so the fuzzer reaches
//! every contract key from the seeds. Contract: a value whose lists match its class
//! count, or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_infer::contract::ModelMetadata;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let props: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.replace("\\n", "\n")))
        .collect();
    if let Ok(meta) = ModelMetadata::from_map(&props) {
        assert_eq!(meta.class_names.len(), meta.num_classes);
        assert_eq!(meta.palette.len(), meta.num_classes);
        // What is read back writes out and reads back the same.
        let again: HashMap<String, String> = meta.to_props().into_iter().collect();
        assert_eq!(ModelMetadata::from_map(&again).ok().as_ref(), Some(&meta));
    }
});
