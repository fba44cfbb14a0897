//! The configuration file, `strata.toml`: defaults for what the command line can also
//! say. Read from `--config FILE`, else `/etc/strata/strata.toml` and then
//! `~/.config/strata/strata.toml` (its values win). Flags win over both.
//!
//! ```toml
//! root = "/var/lib/strata"
//! jobs = 4
//! runtime = "/usr/sbin/runc"
//!
//! [registry]
//! insecure = ["registry.lan:5000"]
//! ca_files = ["/etc/ssl/certs/lan-ca.pem"]
//!
//! [registry.mirrors]
//! "docker.io" = ["mirror.lan:5000"]
//!
//! [storage]
//! keep = "20GB"   # after each build, prune what no image holds beyond this
//!
//! [cache]         # used when the command line gives no --cache-from / --cache-to
//! from = ["type=registry,ref=registry.lan/app:buildcache"]
//! to = ["type=registry,ref=registry.lan/app:buildcache,mode=max"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Failure, Result};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub root: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub runtime: Option<PathBuf>,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub cache: CacheSettings,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `--cache-from` specs used when the command line gives none.
    #[serde(default)]
    pub from: Vec<String>,
    /// `--cache-to` specs used when the command line gives none.
    #[serde(default)]
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries allowed plain HTTP / unverified TLS.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Extra CA certificates trusted for every registry.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// Registry host → mirrors tried first, in order, when pulling from it.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// After each successful build, prune unreferenced data beyond this size (`20GB`).
    pub keep: Option<String>,
}

impl Settings {
    /// Parse one file; errors name the file, line and column.
    pub fn parse(path: &Path, text: &str) -> Result<Settings> {
        let s: Settings = toml::from_str(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
                    format!("{}:{line}:{column}", path.display())
                }
                None => path.display().to_string(),
            };
            Failure::usage(format!("error: {place}: {}", e.message()))
        })?;
        if let Some(keep) = &s.storage.keep {
            crate::units::parse_size(keep)
                .map_err(|e| Failure::usage(format!("error: {}: storage.keep: {e}", path.display())))?;
        }
        for spec in &s.cache.from {
            crate::cache::spec::parse_import(spec)
                .map_err(|e| Failure::usage(format!("error: {}: cache.from {spec:?}: {e}", path.display())))?;
        }
        for spec in &s.cache.to {
            crate::cache::spec::parse_export(spec)
                .map_err(|e| Failure::usage(format!("error: {}: cache.to {spec:?}: {e}", path.display())))?;
        }
        if s.jobs == Some(0) {
            return Err(Failure::usage(format!("error: {}: jobs must be at least 1", path.display())));
        }
        Ok(s)
    }

    /// `other`'s values over these.
    fn overlay(mut self, other: Settings) -> Settings {
        self.root = other.root.or(self.root);
        self.jobs = other.jobs.or(self.jobs);
        self.runtime = other.runtime.or(self.runtime);
        self.registry.insecure.extend(other.registry.insecure);
        self.registry.ca_files.extend(other.registry.ca_files);
        self.registry.mirrors.extend(other.registry.mirrors);
        self.storage.keep = other.storage.keep.or(self.storage.keep);
        if !other.cache.from.is_empty() {
            self.cache.from = other.cache.from;
        }
        if !other.cache.to.is_empty() {
            self.cache.to = other.cache.to;
        }
        self
    }
}

/// The files read when `--config` is not given, lowest precedence first.
fn default_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/strata/strata.toml")];
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = user {
        files.push(dir.join("strata/strata.toml"));
    }
    files
}

/// Read the configuration: `explicit` (`--config FILE`), else the default files.
pub fn load(explicit: Option<&Path>) -> Result<Settings> {
    let mut settings = Settings::default();
    match explicit {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("error: --config {}: {e}", path.display())))?;
            settings = Settings::parse(path, &text)?;
        }
        None => {
            for path in default_files() {
                match std::fs::read_to_string(&path) {
                    Ok(text) => settings = settings.overlay(Settings::parse(&path, &text)?),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Failure::usage(format!("error: {}: {e}", path.display()))),
                }
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section() {
        let s = Settings::parse(
            Path::new("strata.toml"),
            "jobs = 3\nruntime = \"/usr/sbin/runc\"\n[registry]\ninsecure = [\"r:5000\"]\n\
             [registry.mirrors]\n\"docker.io\" = [\"m1:5000\", \"m2\"]\n[storage]\nkeep = \"20GB\"\n",
        )
        .unwrap();
        assert_eq!(s.jobs, Some(3));
        assert_eq!(s.registry.mirrors["docker.io"], vec!["m1:5000".to_string(), "m2".into()]);
        assert_eq!(s.storage.keep.as_deref(), Some("20GB"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e =
            Settings::parse(Path::new("/etc/strata/strata.toml"), "jobs = 2\n[registry]\nmirors = {}\n").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("/etc/strata/strata.toml:3:1"), "{}", e.message);
        assert!(e.message.contains("mirors"), "{}", e.message);
        let e = Settings::parse(Path::new("s.toml"), "[storage]\nkeep = \"lots\"\n").unwrap_err();
        assert!(e.message.contains("storage.keep"), "{}", e.message);
        let e = Settings::parse(Path::new("s.toml"), "[cache]\nto = [\"type=gha\"]\n").unwrap_err();
        assert!(e.message.contains("s.toml: cache.to \"type=gha\": type=gha is not supported"), "{}", e.message);
    }

    #[test]
    fn later_files_win() {
        let a = Settings::parse(Path::new("a"), "jobs = 1\nruntime = \"/a\"\n").unwrap();
        let b = Settings::parse(Path::new("b"), "jobs = 2\n").unwrap();
        let s = a.overlay(b);
        assert_eq!((s.jobs, s.runtime), (Some(2), Some(PathBuf::from("/a"))));
    }
}
