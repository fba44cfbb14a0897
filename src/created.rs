//! Stable image timestamps without SOURCE_DATE_EPOCH: the first build of a result
//! stamps its config (`created` and each history entry) with the time; a later build of
//! the same result — the same file system (the target's cache key) and the same
//! configuration — takes those timestamps again, so an unchanged rebuild gives the same
//! image digest, as BuildKit's cached image metadata does. Timestamps live in
//! `ROOT/created/<key>`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_oci::image::{canonical_json, ImageConfig};

#[derive(Serialize, Deserialize)]
struct Stamps {
    created: Option<String>,
    history: Vec<Option<String>>,
}

/// The key of a result: its file system's cache key and its config without timestamps.
fn key(target_cache_key: &[u8; 32], config: &ImageConfig) -> String {
    let mut blank = config.clone();
    blank.created = None;
    for h in &mut blank.history {
        h.created = None;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"strata-created-v1\0");
    h.update(target_cache_key);
    h.update(&canonical_json(&blank));
    h.finalize().to_hex()[..32].to_string()
}

/// `config` with the timestamps of the first build of the same result (remembered now
/// when this is the first).
pub fn reuse(root: &Path, target_cache_key: &[u8; 32], mut config: ImageConfig) -> ImageConfig {
    let path = root.join("created").join(key(target_cache_key, &config));
    let remembered = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Stamps>(&b).ok());
    match remembered {
        Some(s) if s.history.len() == config.history.len() => {
            config.created = s.created;
            for (h, c) in config.history.iter_mut().zip(s.history) {
                h.created = c;
            }
        }
        _ => {
            let stamps = Stamps {
                created: config.created.clone(),
                history: config.history.iter().map(|h| h.created.clone()).collect(),
            };
            if let Ok(bytes) = serde_json::to_vec(&stamps) {
                let _ = strata_oci::store::write_atomic(&path, &bytes);
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_result_keeps_its_first_timestamps() {
        let root = tempfile::tempdir().unwrap();
        let first = ImageConfig { created: Some("2026-01-01T00:00:00Z".into()), ..Default::default() };
        let first = reuse(root.path(), &[1; 32], first);
        let later = ImageConfig { created: Some("2026-02-02T00:00:00Z".into()), ..Default::default() };
        assert_eq!(reuse(root.path(), &[1; 32], later.clone()).created, first.created);
        // Another file system: its own timestamps.
        assert_eq!(reuse(root.path(), &[2; 32], later.clone()).created, later.created);
    }
}
