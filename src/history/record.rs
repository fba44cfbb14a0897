//! The record of a build: every step's key and the inputs that made it, stored in
//! `ROOT/history/builds/<started ms>-<id>.json`, and the entries each COPY selected
//! in `ROOT/history/files/<content key>.zst`, written once per content key (an
//! unchanged context writes nothing new).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_executor::context::SelectedFile;

/// The most builds kept; the oldest go first (with the file lists only they used).
pub const MAX_BUILDS: usize = 200;
/// A file list larger than this (compressed) is not read back.
const MAX_FILES_BYTES: u64 = 64 << 20;
/// A build record larger than this is not read back.
const MAX_RECORD_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    /// 12 hex digits.
    pub id: String,
    /// Milliseconds since the epoch when the build started.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// The context, Dockerfile and target: a later build of the same compares with it.
    pub context: String,
    pub dockerfile: String,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    /// `built` or `failed`.
    pub result: String,
    pub steps: Vec<StepRecord>,
}

impl BuildRecord {
    /// Builds of the same context, Dockerfile and target are compared step by step.
    pub fn same_build(&self, context: &str, dockerfile: &str, target: Option<&str>) -> bool {
        self.context == context && self.dockerfile == dockerfile && self.target.as_deref() == target
    }

    pub fn count(&self, result: StepResultKind) -> usize {
        self.steps.iter().filter(|s| s.result == result).count()
    }
}

/// How a step ended in a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResultKind {
    Cached,
    Ran,
    Failed,
    WouldRun,
    /// The build stopped before it (another step failed).
    NotReached,
}

impl StepResultKind {
    pub fn word(self) -> &'static str {
        match self {
            StepResultKind::Cached => "CACHED",
            StepResultKind::Ran => "RAN",
            StepResultKind::Failed => "FAILED",
            StepResultKind::WouldRun => "WOULD RUN",
            StepResultKind::NotReached => "NOT REACHED",
        }
    }
}

/// One step of a build and everything its cache key was made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its progress label (`[build 3/5] RUN make`).
    pub name: String,
    pub stage: String,
    /// Its place in the stage (2 = first after FROM; 0 = an ONBUILD trigger).
    pub position: usize,
    pub line: usize,
    /// The instruction as written.
    pub text: String,
    pub platform: Option<String>,
    /// Cache key (hex).
    pub key: String,
    /// The operation after expansion (command, environment, working directory, user,
    /// mounts, COPY sources and options …), as the build graph holds it.
    pub op: serde_json::Value,
    /// The build args in scope (the names of `op`'s environment that came from ARG).
    pub args: Vec<String>,
    pub inputs: Vec<InputRecord>,
    /// The content key of the files it selected from a local context (hex), whose list
    /// is stored apart.
    pub files: Option<String>,
    pub result: StepResultKind,
    pub duration_ms: u64,
    /// Why it missed the cache: (kind, text).
    pub reason: Option<(String, String)>,
}

/// An input of a step: the step before it, a stage it copies from, a base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub key: String,
    pub name: String,
    /// The Dockerfile line of the step it is (none for images and contexts).
    pub line: Option<usize>,
    /// A base image: its reference and manifest digest.
    pub image: Option<(String, String)>,
}

/// The history directory of a store.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
}

impl History {
    pub fn at(store_root: &Path) -> History {
        History { dir: store_root.join("history") }
    }

    fn builds_dir(&self) -> PathBuf {
        self.dir.join("builds")
    }

    fn files_path(&self, content: &str) -> Option<PathBuf> {
        (content.len() == 64 && content.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join("files").join(format!("{content}.zst")))
    }

    /// Every record's file, oldest first.
    fn record_files(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.builds_dir()) else { return Vec::new() };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    }

    fn read(path: &Path) -> Option<BuildRecord> {
        let file = std::fs::File::open(path).ok()?;
        if file.metadata().ok()?.len() > MAX_RECORD_BYTES {
            return None;
        }
        serde_json::from_reader(std::io::BufReader::new(file)).ok()
    }

    /// Every readable record, newest first.
    pub fn list(&self) -> Vec<BuildRecord> {
        self.record_files().iter().rev().filter_map(|p| Self::read(p)).collect()
    }

    /// The newest record of the same build.
    pub fn latest(&self, context: &str, dockerfile: &str, target: Option<&str>) -> Option<BuildRecord> {
        self.record_files()
            .iter()
            .rev()
            .filter_map(|p| Self::read(p))
            .find(|r| r.same_build(context, dockerfile, target))
    }

    /// A record by id (a unique prefix of it), or `latest` / `latest~N` (the Nth
    /// before the newest).
    pub fn find(&self, wanted: &str) -> Result<BuildRecord, String> {
        let all = self.list();
        if let Some(back) = wanted.strip_prefix("latest") {
            let n: usize = match back.strip_prefix('~') {
                Some(n) => n.parse().map_err(|_| format!("{wanted:?}: expected latest or latest~N"))?,
                None if back.is_empty() => 0,
                None => return Err(format!("{wanted:?}: expected latest or latest~N")),
            };
            return all.into_iter().nth(n).ok_or_else(|| format!("no build {wanted} in the history"));
        }
        let mut found = all.into_iter().filter(|r| r.id.starts_with(wanted));
        match (found.next(), found.next()) {
            (Some(r), None) => Ok(r),
            (Some(_), Some(_)) => Err(format!("{wanted:?} names more than one build: give more of its id")),
            (None, _) => Err(format!("no build {wanted:?} in the history (strata history ls lists them)")),
        }
    }

    /// The entries a step selected, by their content key.
    pub fn files(&self, content: &str) -> Option<Vec<SelectedFile>> {
        let path = self.files_path(content)?;
        let file = std::fs::File::open(path).ok()?;
        if file.metadata().ok()?.len() > MAX_FILES_BYTES {
            return None;
        }
        let reader = zstd::Decoder::new(file).ok()?;
        serde_json::from_reader(std::io::BufReader::new(reader)).ok()
    }

    /// Are the entries of a content key stored?
    pub fn has_files(&self, content: &str) -> bool {
        self.files_path(content).is_some_and(|p| p.exists())
    }

    /// Store the entries of a content key, unless they are stored already.
    pub fn put_files(&self, content: &str, files: &[SelectedFile]) -> std::io::Result<()> {
        let Some(path) = self.files_path(content) else { return Ok(()) };
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
        let json = serde_json::to_vec(files).map_err(std::io::Error::other)?;
        let bytes = zstd::encode_all(json.as_slice(), 3)?;
        strata_oci::store::write_atomic_unsynced(&path, &bytes)
    }

    /// Store a build's record; the oldest records beyond [`MAX_BUILDS`] go.
    pub fn write(&self, record: &BuildRecord) -> std::io::Result<()> {
        let dir = self.builds_dir();
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let name = format!("{:015}-{}.json", record.started_ms, record.id);
        strata_oci::store::write_atomic_unsynced(&dir.join(name), &bytes)?;
        let files = self.record_files();
        if files.len() > MAX_BUILDS {
            for old in &files[..files.len() - MAX_BUILDS] {
                let _ = std::fs::remove_file(old);
            }
            self.sweep_files();
        }
        Ok(())
    }

    /// Remove the records older than `older_than` (all of them when `None`), and the
    /// file lists no record uses. Returns how many records went.
    pub fn prune(&self, older_than: Option<std::time::Duration>) -> usize {
        let now_ms = crate::history::recorder::now_ms();
        let limit = older_than.map(|d| now_ms.saturating_sub(d.as_millis() as u64));
        let mut removed = 0;
        for path in self.record_files() {
            let started = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if limit.is_none_or(|l| started < l) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        self.sweep_files();
        removed
    }

    /// Remove the file lists no record names.
    fn sweep_files(&self) {
        let used: std::collections::HashSet<String> =
            self.list().into_iter().flat_map(|r| r.steps.into_iter().filter_map(|s| s.files)).collect();
        let Ok(rd) = std::fs::read_dir(self.dir.join("files")) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let content = name.strip_suffix(".zst").unwrap_or(&name);
            if !used.contains(content) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
