//! What the corpus harnesses share: the skip file (`case id<TAB>reason`), the pass /
//! skip / fail tally, and a comparison that shows both sides.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

/// The skip list `tests/NAME`, empty when the file is absent.
pub fn skips(file_name: &str) -> BTreeMap<String, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(file_name);
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, why) = l.split_once('\t').unwrap_or((l, "no reason given"));
            (id.to_string(), why.to_string())
        })
        .collect()
}

/// Counts cases; a failing case listed in the skip file counts as skipped.
pub struct Tally {
    pub passed: usize,
    pub skipped: Vec<String>,
    pub failed: Vec<String>,
    pub skips: BTreeMap<String, String>,
}

impl Tally {
    pub fn new(skip_file: &str) -> Self {
        Tally { passed: 0, skipped: Vec::new(), failed: Vec::new(), skips: skips(skip_file) }
    }

    pub fn check(&mut self, id: String, ok: Result<(), String>) {
        match (ok, self.skips.get(&id)) {
            (Ok(()), _) => self.passed += 1,
            (Err(_), Some(why)) => self.skipped.push(format!("{id}: {why}")),
            (Err(e), None) => self.failed.push(format!("{id}: {e}")),
        }
    }
}

/// `Ok` when equal, else both values.
pub fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("\n  got:  {got:?}\n  want: {want:?}"))
    }
}
