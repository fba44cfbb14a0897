//! Shared by the integration tests: the rig's env file and small helpers.
//!
//! The rig (real registries on loopback) is described by `STRATA_TEST_ENV`
//! (default `/var/tmp/strata-test/env`): lines of `export NAME=value  # comment`.
//! Without it the tests print a loud `SKIPPED:` line and pass.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use strata_oci::digest::Digest;
use strata_oci::registry::RegistryOptions;
use strata_oci::store::BlobStore;

pub const DEFAULT_ENV: &str = "/var/tmp/strata-test/env";

pub struct Rig {
    vars: HashMap<String, String>,
}

/// Parse `export NAME=value  # comment` lines.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim();
        let Some((name, rest)) = line.split_once('=') else { continue };
        let value = match rest.trim_start().strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or("").to_string(),
            None => match rest.trim_start().strip_prefix('\'') {
                Some(q) => q.split('\'').next().unwrap_or("").to_string(),
                None => rest.split(" #").next().unwrap_or("").split('\t').next().unwrap_or("").trim().to_string(),
            },
        };
        vars.insert(name.trim().to_string(), value);
    }
    vars
}

impl Rig {
    /// The rig, or `None` after printing why the calling test is skipped.
    pub fn load(test: &str) -> Option<Rig> {
        let path = std::env::var("STRATA_TEST_ENV").unwrap_or_else(|_| DEFAULT_ENV.to_string());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Rig { vars: parse_env(&text) }),
            Err(e) => {
                strata_testsupport::skip::skipped(&format!(
                    "the test environment {path} is unreadable ({e}; run tests/setup): {test} NOT run"
                ));
                None
            }
        }
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("rig env file lacks {name}"))
    }

    pub fn plain(&self) -> &str {
        self.var("RIG_REGISTRY")
    }
    pub fn tls(&self) -> &str {
        self.var("RIG_TLS_REGISTRY")
    }
    pub fn token(&self) -> &str {
        self.var("RIG_TOKEN_REGISTRY")
    }
    pub fn ca(&self) -> PathBuf {
        PathBuf::from(self.var("RIG_CA"))
    }
    pub fn user(&self) -> &str {
        self.var("RIG_USER")
    }
    pub fn pass(&self) -> &str {
        self.var("RIG_PASS")
    }
    pub fn busybox_layout(&self) -> PathBuf {
        PathBuf::from(self.var("RIG_BUSYBOX_LAYOUT"))
    }
}

/// Options isolated from the machine: an empty docker config dir and no certs.d.
pub fn isolated_options(config_dir: &Path) -> RegistryOptions {
    RegistryOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        certs_dir: Some(config_dir.join("certs.d")),
        retry_base_delay: std::time::Duration::from_millis(50),
        ..RegistryOptions::default()
    }
}

/// Re-hash a blob in the store and compare with its name.
pub fn assert_blob_ok(store: &BlobStore, digest: &Digest) {
    let bytes = std::fs::read(store.path(digest)).unwrap_or_else(|e| panic!("blob {digest} missing from store: {e}"));
    assert_eq!(&Digest::of_bytes(&bytes), digest, "blob content matches its digest");
}

#[test]
fn env_file_parsing() {
    let v = parse_env(
        "export RIG_DIR=/var/tmp/oci-rig\nexport RIG_REGISTRY=127.0.0.1:5000            # plain HTTP, no auth\n\n# c\nexport Q=\"a b\"  # x\nX=1\n",
    );
    assert_eq!(v["RIG_REGISTRY"], "127.0.0.1:5000");
    assert_eq!(v["RIG_DIR"], "/var/tmp/oci-rig");
    assert_eq!(v["Q"], "a b");
    assert_eq!(v["X"], "1");
}
