//! The flat configuration form written before the sections existed (every key at the top
//! level, as in the checkpoints and `config.json` files of earlier runs): each flat key
//! and the section it now lives in, and the move of a flat document into the nested form.

use serde_json::{Map, Value};

/// Each key of the flat form and its section in the nested form (same key name).
const MOVED: &[(&str, &str)] = &[
    ("backbone", "model"),
    ("num_classes", "model"),
    ("aspp_branches", "model"),
    ("source", "data"),
    ("target", "data"),
    ("val", "data"),
    ("source_size", "data"),
    ("target_size", "data"),
    ("val_size", "data"),
    ("crop", "data"),
    ("batch_size", "data"),
    ("workers", "data"),
    ("prefetch", "data"),
    ("data_rank", "data"),
    ("crop_padding", "data"),
    ("mode", "method"),
    ("components", "method"),
    ("lambda_cons", "method"),
    ("pseudo_threshold", "method"),
    ("mu_max", "method"),
    ("mu_schedule", "method"),
    ("tau", "method"),
    ("ps_threshold", "method"),
    ("ns_random_fraction", "method"),
    ("bank_iterations", "method"),
    ("bank_per_iteration", "method"),
    ("anchor_chunk", "method"),
    ("jitter_strength", "method"),
    ("jitter_prob", "method"),
    ("blur_prob", "method"),
    ("lr", "optim"),
    ("head_lr_mult", "optim"),
    ("momentum", "optim"),
    ("weight_decay", "optim"),
    ("poly_power", "optim"),
    ("train_bn_affine", "optim"),
    ("ema_alpha", "optim"),
    ("iterations", "run"),
    ("device", "run"),
    ("precision", "run"),
    ("seed", "run"),
    ("deterministic", "run"),
    ("init", "run"),
    ("init_from", "run"),
    ("val_every", "run"),
    ("val_limit", "run"),
    ("save_every", "run"),
    ("keep_last", "run"),
    ("log_every", "run"),
    ("dist", "run"),
];

/// The section a flat key moved to, if it is one.
pub(crate) fn section_of(key: &str) -> Option<&'static str> {
    MOVED.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
}

/// Moves the flat keys of a document into their sections (a nested document comes back
/// unchanged). A key given both flat and in its section is an error naming the new key;
/// an unknown top-level key is left for the nested form's parser to refuse.
pub(crate) fn nest(doc: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut moved = Vec::new();
    for (key, value) in doc {
        match section_of(&key) {
            Some(section) => moved.push((section, key, value)),
            None => {
                out.insert(key, value);
            }
        }
    }
    check_sections(&out)?;
    for (section, key, value) in moved {
        let entry = out
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(table) = entry else {
            return Err(format!("`{section}` must be a table"));
        };
        if table.contains_key(&key) {
            return Err(format!(
                "`{key}` is given both at the top level (the old flat form) and as \
                 `{section}.{key}`; keep only `{section}.{key}`"
            ));
        }
        table.insert(key, value);
    }
    Ok(out)
}

/// A key of the flat form written under another section than its own is an error naming
/// its place (`[run] lr = ..` -> `optim.lr`).
fn check_sections(doc: &Map<String, Value>) -> Result<(), String> {
    for (section, value) in doc {
        let Value::Object(table) = value else {
            continue;
        };
        for key in table.keys() {
            match section_of(key) {
                Some(home) if home != section => {
                    return Err(format!(
                        "`{section}.{key}` is not a setting: `{key}` belongs in `{home}.{key}`"
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}
