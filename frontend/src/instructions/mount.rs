//! `RUN --mount=…` values: the CSV key/value syntax, its validation rules and the
//! defaults BuildKit derives from them (secret ids and destinations, ssh ids, cache
//! ids), following `instructions/commands_runmount.go` and the secret/ssh dispatch.
//!
//! BuildKit reads a mount twice. When the Dockerfile is parsed it only checks the CSV
//! syntax and that `from=` uses no variable; every other key is read when the RUN is
//! dispatched, after its value went through variable expansion. [`parse_mount`] does
//! either, depending on whether it is given an expander.

use std::fmt;

use serde::Serialize;

use super::csv::{csv_fields, CsvError};
use super::suggest::{did_you_mean, suggest};
use super::units::{parse_go_bool, parse_go_uint32, parse_ram_in_bytes};
use crate::ast::go_quote;
use crate::shell::WordError;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub const ALL: [MountType; 5] =
        [MountType::Bind, MountType::Cache, MountType::Tmpfs, MountType::Secret, MountType::Ssh];

    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    pub const ALL: [CacheSharing; 3] = [CacheSharing::Shared, CacheSharing::Private, CacheSharing::Locked];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// One `RUN --mount`. Empty string values are stored as `None`, as BuildKit treats an
/// empty value like an absent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub mount_type: MountType,
    /// `from=`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// `ro` / `rw` given explicitly, else read-only for bind/secret/ssh, writable for
    /// cache/tmpfs.
    pub read_only: bool,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// `id=`: the cache id, secret id or ssh id.
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    /// `required`: for secret and ssh mounts, fail when the client does not provide it.
    pub required: bool,
    /// `env=`: expose a secret as this environment variable. `Some("")` is allowed.
    pub env: Option<String>,
    /// `mode=` (octal), `uid=`, `gid=`: for cache, secret and ssh mounts.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Default for MountSpec {
    fn default() -> Self {
        MountSpec {
            mount_type: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            size: None,
            id: None,
            sharing: None,
            required: false,
            env: None,
            mode: None,
            uid: None,
            gid: None,
        }
    }
}

/// Why a `--mount` value was rejected. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("failed to parse csv mounts: {0}")]
    Csv(CsvError),
    #[error("invalid field '{0}' must be a key=value pair")]
    NeedsValue(String),
    #[error("unexpected key '{key}' for mount type '{mount_type}'")]
    KeyNotForType { key: String, mount_type: MountType },
    #[error("'{0}' doesn't support variable expansion, define alias stage instead")]
    VariableInFrom(String),
    #[error("unsupported mount type {}{}", go_quote(value), did_you_mean(suggestion))]
    UnsupportedType { value: String, suggestion: Option<String> },
    #[error("unsupported sharing value {}{}", go_quote(value), did_you_mean(suggestion))]
    UnsupportedSharing { value: String, suggestion: Option<String> },
    #[error("invalid value for {key}: {value}")]
    InvalidValue { key: String, value: String },
    #[error("invalid value {value} for {key}")]
    InvalidNumber { key: &'static str, value: String },
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(suggestion))]
    UnknownKey { key: String, field: String, suggestion: Option<String> },
    #[error("{what} not allowed for {} type mounts", go_quote(mount_type.as_str()))]
    FileInfoNotAllowed { what: &'static str, mount_type: MountType },
    #[error("secret mount should not have a from")]
    SecretWithFrom,
    #[error("secret mount should not define sharing")]
    SecretWithSharing,
    #[error("invalid secret mount. one of source, target required")]
    SecretWithoutName,
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(MountType),
    /// A secret mount with neither source, id nor target (at dispatch).
    #[error("one of source, target required")]
    SecretIdUnknown,
    #[error("ssh does not support source")]
    SshWithSource,
    #[error(transparent)]
    Word(#[from] WordError),
}

/// Every key `--mount` knows, for suggestions.
const ALL_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Expands one value of a mount (BuildKit's `SingleWordExpander`).
pub type MountExpander<'a> = dyn FnMut(&str) -> Result<String, WordError> + 'a;

/// Parse one `--mount` value.
///
/// Without an expander this is BuildKit's parse-time check: only the CSV syntax and
/// `from` are read (a `from` that uses a variable is an error), every other key is
/// left for later and the result holds only `from`. With an expander every value is
/// expanded first and every rule applies.
pub fn parse_mount(spec: &str, mut expander: Option<&mut MountExpander<'_>>) -> Result<MountSpec, MountError> {
    let fields = csv_fields(spec).map_err(MountError::Csv)?;
    let mut m = MountSpec { mount_type: MountType::Bind, ..MountSpec::default() };
    let mut ro_auto = true;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v.to_string())),
            None => (field.to_lowercase(), None),
        };
        let Some(mut value) = value else {
            if expander.is_none() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.mount_type, MountType::Secret | MountType::Ssh) {
                        return Err(MountError::KeyNotForType { key, mount_type: m.mount_type });
                    }
                    m.required = true;
                }
                _ => return Err(MountError::NeedsValue(field)),
            }
            continue;
        };
        match expander.as_mut() {
            Some(expand) => value = expand(&value)?,
            None if key == "from" => {
                if let Some(i) = value.find('$') {
                    if i != value.len() - 1 {
                        return Err(MountError::VariableInFrom(key));
                    }
                }
            }
            None => continue,
        }
        let bool_value = |key: &str, value: &str| {
            parse_go_bool(value)
                .ok_or_else(|| MountError::InvalidValue { key: key.to_string(), value: value.to_string() })
        };
        let non_empty = |v: String| if v.is_empty() { None } else { Some(v) };
        match key.as_str() {
            "type" => {
                let lower = value.to_lowercase();
                let Some(t) = MountType::ALL.into_iter().find(|t| t.as_str() == lower) else {
                    let suggestion = suggest(&value, MountType::ALL.iter().map(|t| t.as_str()), true);
                    return Err(MountError::UnsupportedType { value, suggestion });
                };
                m.mount_type = t;
            }
            "from" => m.from = non_empty(value),
            "source" | "src" => m.source = non_empty(value),
            "target" | "dst" | "destination" => m.target = non_empty(value),
            "readonly" | "ro" => {
                m.read_only = bool_value(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !bool_value(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.mount_type, MountType::Secret | MountType::Ssh) {
                    return Err(MountError::KeyNotForType { key, mount_type: m.mount_type });
                }
                m.required = bool_value(&key, &value)?;
            }
            "size" => {
                if m.mount_type != MountType::Tmpfs {
                    return Err(MountError::KeyNotForType { key, mount_type: m.mount_type });
                }
                let size = parse_ram_in_bytes(&value).ok_or(MountError::InvalidValue { key, value })?;
                m.size = Some(size.max(0) as u64);
            }
            "id" => m.id = non_empty(value),
            "sharing" => {
                let lower = value.to_lowercase();
                let Some(s) = CacheSharing::ALL.into_iter().find(|s| s.as_str() == lower) else {
                    let suggestion = suggest(&value, CacheSharing::ALL.iter().map(|s| s.as_str()), true);
                    return Err(MountError::UnsupportedSharing { value, suggestion });
                };
                m.sharing = Some(s);
            }
            "mode" => {
                m.mode = Some(parse_go_uint32(&value, 8).ok_or(MountError::InvalidNumber { key: "mode", value })?);
            }
            "uid" => {
                m.uid = Some(parse_go_uint32(&value, 10).ok_or(MountError::InvalidNumber { key: "uid", value })?);
            }
            "gid" => {
                m.gid = Some(parse_go_uint32(&value, 10).ok_or(MountError::InvalidNumber { key: "gid", value })?);
            }
            "env" => m.env = Some(value),
            _ => {
                let suggestion = suggest(&key, ALL_KEYS, true);
                return Err(MountError::UnknownKey { key, field, suggestion });
            }
        }
    }

    let file_info_allowed = matches!(m.mount_type, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info_allowed {
        for (what, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
            if set {
                return Err(MountError::FileInfoNotAllowed { what, mount_type: m.mount_type });
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.mount_type, MountType::Cache | MountType::Tmpfs);
    }
    if m.mount_type == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::SecretWithFrom);
        }
        if m.sharing.is_some() {
            return Err(MountError::SecretWithSharing);
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(MountError::SecretWithoutName);
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.sharing.is_some() && m.mount_type != MountType::Cache {
        return Err(MountError::SharingNotCache(m.mount_type));
    }
    Ok(m)
}

/// Parse a mount from its literal text, as if every value were already expanded.
pub fn parse_mount_literal(spec: &str) -> Result<MountSpec, MountError> {
    parse_mount(spec, Some(&mut |w: &str| Ok(w.to_string())))
}

impl MountSpec {
    /// The secret id: `source`, else `id`, else the last element of `target`.
    pub fn secret_id(&self) -> Result<String, MountError> {
        if let Some(s) = &self.source {
            return Ok(s.clone());
        }
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        match &self.target {
            Some(t) => Ok(go_path_base(t)),
            None => Err(MountError::SecretIdUnknown),
        }
    }

    /// Where a secret is mounted as a file: `target`, else `/run/secrets/<id>`. `None`
    /// for a secret exposed only as an environment variable (`env=` without target).
    pub fn secret_destination(&self) -> Result<Option<String>, MountError> {
        if let Some(t) = &self.target {
            return Ok(Some(t.clone()));
        }
        if self.env.is_some() {
            return Ok(None);
        }
        Ok(Some(format!("/run/secrets/{}", go_path_base(&self.secret_id()?))))
    }

    /// The ssh agent id: `id`, else `default`.
    pub fn ssh_id(&self) -> Result<String, MountError> {
        if self.source.is_some() {
            return Err(MountError::SshWithSource);
        }
        Ok(self.id.clone().unwrap_or_else(|| "default".to_string()))
    }

    /// The cache id: `id`, else the cleaned `target`.
    pub fn cache_id(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => go_path_clean(self.target.as_deref().unwrap_or("")),
        }
    }
}

/// Go's `path.Base`.
fn go_path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Clean`.
fn go_path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        parse_mount_literal(spec).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_keys() {
        let m = parse_mount_literal("target=/src").unwrap();
        assert_eq!((m.mount_type, m.read_only, m.target.as_deref()), (MountType::Bind, true, Some("/src")));
        let m = parse_mount_literal("type=cache,target=/root/.cache,sharing=locked,mode=0755,uid=1000").unwrap();
        assert_eq!(
            (m.read_only, m.sharing, m.mode, m.uid),
            (false, Some(CacheSharing::Locked), Some(0o755), Some(1000))
        );
        assert_eq!(m.cache_id(), "/root/.cache");
        let m = parse_mount_literal("type=tmpfs,dst=/t,size=64m,rw=false").unwrap();
        assert_eq!((m.size, m.read_only), (Some(64 << 20), true));
        let m = parse_mount_literal("type=secret,id=aws,required").unwrap();
        assert!(m.required);
        assert_eq!(m.secret_id().unwrap(), "aws");
        assert_eq!(m.secret_destination().unwrap().as_deref(), Some("/run/secrets/aws"));
        let m = parse_mount_literal("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(m.secret_destination().unwrap(), None);
        let m = parse_mount_literal("type=secret,target=/etc/foo/cred").unwrap();
        assert_eq!(m.secret_id().unwrap(), "cred");
        let m = parse_mount_literal("type=ssh").unwrap();
        assert_eq!(m.ssh_id().unwrap(), "default");
        assert!(!m.required);
    }

    #[test]
    fn buildkit_errors() {
        assert_eq!(err("type=cache,target=/x,qqqqq=bar"), "unexpected key 'qqqqq' in 'qqqqq=bar'");
        assert_eq!(
            err("type=cache,target=/x,shring=locked"),
            "unexpected key 'shring' in 'shring=locked' (did you mean sharing?)"
        );
        assert_eq!(err("type=cahce"), "unsupported mount type \"cahce\" (did you mean cache?)");
        assert_eq!(err("type=bind,target=/x,mode=0644"), "mode not allowed for \"bind\" type mounts");
        assert_eq!(err("type=cache,target=/x,mode=9"), "invalid value 9 for mode");
        assert_eq!(err("target=/x,required"), "unexpected key 'required' for mount type 'bind'");
        assert_eq!(err("type=secret"), "invalid secret mount. one of source, target required");
        assert_eq!(err("type=secret,id=a,src=b"), "both source and id can't be set");
        assert_eq!(err("type=bind,target=/x,sharing=shared"), "invalid cache sharing set for bind mount");
        assert_eq!(err("type=cache,target=/x,sharing=nope"), "unsupported sharing value \"nope\"");
        assert_eq!(err("type=cache,target=/x,ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(err("type=cache,target"), "invalid field 'target' must be a key=value pair");
        assert_eq!(err(""), "failed to parse csv mounts: EOF");
        // Parse time: only `from` is read.
        assert_eq!(parse_mount("type=$T,uid=$U", None).unwrap(), MountSpec { read_only: true, ..MountSpec::default() });
        assert_eq!(
            parse_mount("from=${STAGE}", None).unwrap_err().to_string(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert_eq!(parse_mount("from=stage$", None).unwrap().from.as_deref(), Some("stage$"));
    }

    #[test]
    fn go_paths() {
        assert_eq!(go_path_base("/a/b/"), "b");
        assert_eq!(go_path_base("/"), "/");
        assert_eq!(go_path_clean("/a/./b/../c/"), "/a/c");
        assert_eq!(go_path_clean("../a"), "../a");
    }
}
