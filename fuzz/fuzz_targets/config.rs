//! Training config parser (`rccr_trainer::config::TrainConfig::from_file`): the same
//! bytes as TOML and as JSON, nested and legacy flat forms, then `validate`. Contract: a
//! config or an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rccr_fuzz::{assert_names, scratch};
use rccr_trainer::config::TrainConfig;

fuzz_target!(|data: &[u8]| {
    for ext in ["toml", "json"] {
        let path = scratch("config", ext, data);
        match TrainConfig::from_file(&path) {
            Ok(config) => {
                let _ = config.validate();
            }
            Err(e) => assert_names(&path, &e.to_string()),
        }
    }
});
