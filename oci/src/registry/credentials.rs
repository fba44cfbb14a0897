//! Registry credentials from docker's `config.json`, read and written the way the docker
//! CLI does, so `docker login` and `strata login` share one file.
//!
//! This module owns: finding the config directory (`$DOCKER_CONFIG`, else `~/.docker`),
//! looking up a registry's credentials (`credHelpers`, `credsStore`, `auths` with a
//! base64 `auth` or `username`/`password`, `identitytoken`), running
//! `docker-credential-<name> get|store|erase`, and [`login`]/[`logout`] (atomic writes,
//! mode 0600, unknown fields preserved). It does no HTTP.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

/// The key docker uses for Docker Hub in `auths` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// What to present to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a personal access token as password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token server.
    IdentityToken { username: Option<String>, token: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic {{ username: {username:?}, password: <redacted> }}"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken {{ username: {username:?}, token: <redacted> }}")
            }
        }
    }
}

impl Credential {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credential::Basic { username: username.into(), password: password.into() }
    }
}

/// Failures reading or writing credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid docker config file: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: the \"auth\" entry for {registry} is not base64 of user:password")]
    InvalidAuth { path: PathBuf, registry: String },
    #[error(
        "credential helper docker-credential-{helper} (configured for {registry}) is not installed: \
         install it or remove it from config.json"
    )]
    HelperMissing { helper: String, registry: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper { helper: String, registry: String, message: String },
    #[error("no home directory to find .docker/config.json in: set DOCKER_CONFIG")]
    NoConfigDir,
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn default_config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".docker"))
}

/// The host a config key or a user's registry argument names: schemes and paths are
/// dropped and Docker Hub's aliases fold to `docker.io`
/// (`https://index.docker.io/v1/` → `docker.io`, `https://127.0.0.1:5001/` → `127.0.0.1:5001`).
pub fn normalize_registry(name: &str) -> String {
    let s = name.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// The key docker writes for a registry (`https://index.docker.io/v1/` for Docker Hub).
pub fn config_key(registry: &str) -> String {
    let host = normalize_registry(registry);
    if host == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        host
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// A docker config directory and where to find credential helpers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    dir: PathBuf,
    helper_dirs: Option<Vec<PathBuf>>,
}

impl DockerConfig {
    /// The config in `dir` (which need not exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DockerConfig { dir: dir.into(), helper_dirs: None }
    }

    /// `dir`, or the default directory.
    pub fn at(dir: Option<&Path>) -> Result<Self, CredentialError> {
        match dir {
            Some(d) => Ok(DockerConfig::new(d)),
            None => default_config_dir().map(DockerConfig::new).ok_or(CredentialError::NoConfigDir),
        }
    }

    /// Look for `docker-credential-*` in these directories instead of `$PATH`.
    pub fn with_helper_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.helper_dirs = if dirs.is_empty() { None } else { Some(dirs) };
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/config.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn read(&self) -> Result<Option<ConfigFile>, CredentialError> {
        let path = self.path();
        let Some(text) = read_config_text(&path)? else { return Ok(None) };
        if text.trim().is_empty() {
            return Ok(Some(ConfigFile::default()));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CredentialError::Parse { path: path.clone(), reason: e.to_string() })
    }

    /// The credentials stored for `registry` (a host such as `127.0.0.1:5001` or
    /// `docker.io`), or `None` to go anonymous. Blocking: may run a helper process.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        let Some(cfg) = self.read()? else { return Ok(None) };
        let host = normalize_registry(registry);
        let key = config_key(&host);

        // A helper named for this registry is authoritative.
        if let Some((_, helper)) = cfg.cred_helpers.iter().find(|(k, _)| normalize_registry(k) == host) {
            return self.helper_get(helper, &key, &host);
        }
        if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
            match self.helper_get(store, &key, &host) {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(CredentialError::HelperMissing { helper, .. }) => {
                    tracing::warn!(
                        "credsStore docker-credential-{helper} is not installed; using the auths section of {}",
                        self.path().display()
                    );
                }
                Err(e) => return Err(e),
            }
        }
        // Exact key first, then any key naming the same host.
        let entry = cfg
            .auths
            .get(&key)
            .or_else(|| cfg.auths.get(&host))
            .or_else(|| cfg.auths.iter().find(|(k, _)| normalize_registry(k) == host).map(|(_, v)| v));
        match entry {
            Some(e) => self.decode_entry(e, &host),
            None => Ok(None),
        }
    }

    fn decode_entry(&self, e: &AuthEntry, host: &str) -> Result<Option<Credential>, CredentialError> {
        let mut username = e.username.clone().filter(|u| !u.is_empty());
        let mut password = e.password.clone().filter(|p| !p.is_empty());
        if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
            let invalid = || CredentialError::InvalidAuth { path: self.path(), registry: host.to_string() };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
                .map_err(|_| invalid())?;
            let text = String::from_utf8(raw).map_err(|_| invalid())?;
            let (u, p) = text.split_once(':').ok_or_else(invalid)?;
            username = Some(u.to_string());
            password = Some(p.to_string());
        }
        if let Some(token) = e.identitytoken.clone().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken { username, token }));
        }
        match (username, password) {
            (Some(username), Some(password)) => Ok(Some(Credential::Basic { username, password })),
            _ => Ok(None),
        }
    }

    fn helper_command(&self, helper: &str) -> PathBuf {
        let name = format!("docker-credential-{helper}");
        if let Some(dirs) = &self.helper_dirs {
            for d in dirs {
                let p = d.join(&name);
                if p.is_file() {
                    return p;
                }
            }
            // Not found there: a path that fails to spawn with NotFound.
            return dirs.first().map(|d| d.join(&name)).unwrap_or_else(|| PathBuf::from(name));
        }
        PathBuf::from(name)
    }

    /// Run `docker-credential-<helper> <verb>` with `input` on stdin.
    fn run_helper(
        &self,
        helper: &str,
        verb: &str,
        input: &[u8],
        host: &str,
    ) -> Result<(bool, String), CredentialError> {
        let cmd = self.helper_command(helper);
        let mut child = match Command::new(&cmd)
            .arg(verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CredentialError::HelperMissing { helper: helper.to_string(), registry: host.to_string() })
            }
            Err(e) => {
                return Err(CredentialError::Helper {
                    helper: helper.to_string(),
                    registry: host.to_string(),
                    message: format!("cannot run {}: {e}", cmd.display()),
                })
            }
        };
        let helper_err = |message: String| CredentialError::Helper {
            helper: helper.to_string(),
            registry: host.to_string(),
            message,
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading; a broken pipe is then not our error.
            let _ = stdin.write_all(input);
        }
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(HELPER_TIMEOUT) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(helper_err(e.to_string())),
            Err(_) => {
                // Our own child, by its id: it did not answer in time.
                if let Ok(pid) = i32::try_from(pid) {
                    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                return Err(helper_err(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() {
            return Ok((true, stdout));
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let message = if stdout.is_empty() { stderr } else { stdout };
        Ok((false, message))
    }

    fn helper_get(&self, helper: &str, key: &str, host: &str) -> Result<Option<Credential>, CredentialError> {
        let (ok, out) = self.run_helper(helper, "get", key.as_bytes(), host)?;
        if !ok {
            if out.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(CredentialError::Helper {
                helper: helper.to_string(),
                registry: host.to_string(),
                message: out,
            });
        }
        let parsed: HelperOutput = serde_json::from_str(&out).map_err(|e| CredentialError::Helper {
            helper: helper.to_string(),
            registry: host.to_string(),
            message: format!("unreadable answer: {e}"),
        })?;
        if parsed.secret.is_empty() {
            return Ok(None);
        }
        if parsed.username == "<token>" {
            return Ok(Some(Credential::IdentityToken { username: None, token: parsed.secret }));
        }
        Ok(Some(Credential::Basic { username: parsed.username, password: parsed.secret }))
    }
}

fn read_config_text(path: &Path) -> Result<Option<String>, CredentialError> {
    let io_err = |source| CredentialError::Io { path: path.to_path_buf(), source };
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES).read_to_string(&mut text).map_err(io_err)?;
    Ok(Some(text))
}

/// The config file as a JSON object, keeping every field we do not know about.
fn read_config_value(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, CredentialError> {
    let Some(text) = read_config_text(path)? else { return Ok(serde_json::Map::new()) };
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(CredentialError::Parse { path: path.to_path_buf(), reason: "not a JSON object".into() }),
        Err(e) => Err(CredentialError::Parse { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// The helper that handles `host`, if config.json names one.
fn helper_for(map: &serde_json::Map<String, serde_json::Value>, host: &str) -> Option<String> {
    if let Some(helpers) = map.get("credHelpers").and_then(|v| v.as_object()) {
        if let Some(h) = helpers.iter().find(|(k, _)| normalize_registry(k) == host).and_then(|(_, v)| v.as_str()) {
            return Some(h.to_string());
        }
    }
    map.get("credsStore").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Write config.json atomically with mode 0600 (directory 0700 when created).
fn write_config(path: &Path, map: &serde_json::Map<String, serde_json::Value>) -> Result<(), CredentialError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CredentialError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
    }
    let mut bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(map.clone()))
        .map_err(|e| CredentialError::Parse { path: path.to_path_buf(), reason: e.to_string() })?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(".config.json.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

/// Save credentials for `registry` as `docker login` does: through the credential helper
/// config.json names for it, else base64 in `auths`. Returns the config file written.
/// `config_dir` `None` means `$DOCKER_CONFIG` or `~/.docker`.
pub fn login(
    config_dir: Option<&Path>,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<PathBuf, CredentialError> {
    let cfg = DockerConfig::at(config_dir)?;
    login_with(&cfg, registry, username, password)
}

/// [`login`] with an explicit [`DockerConfig`] (for its helper directories).
pub fn login_with(
    cfg: &DockerConfig,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<PathBuf, CredentialError> {
    let path = cfg.path();
    let host = normalize_registry(registry);
    let key = config_key(&host);
    let mut map = read_config_value(&path)?;
    let helper = helper_for(&map, &host);
    let entry = match &helper {
        Some(helper) => {
            let input = serde_json::json!({ "ServerURL": key, "Username": username, "Secret": password }).to_string();
            let (ok, out) = cfg.run_helper(helper, "store", input.as_bytes(), &host)?;
            if !ok {
                return Err(CredentialError::Helper { helper: helper.clone(), registry: host, message: out });
            }
            serde_json::json!({})
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            serde_json::json!({ "auth": auth })
        }
    };
    let auths = map.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(obj) = auths.as_object_mut() {
        obj.insert(key, entry);
    }
    write_config(&path, &map)?;
    Ok(path)
}

/// Remove the credentials for `registry` (from its helper too). Returns whether any were
/// stored.
pub fn logout(config_dir: Option<&Path>, registry: &str) -> Result<bool, CredentialError> {
    let cfg = DockerConfig::at(config_dir)?;
    logout_with(&cfg, registry)
}

/// [`logout`] with an explicit [`DockerConfig`].
pub fn logout_with(cfg: &DockerConfig, registry: &str) -> Result<bool, CredentialError> {
    let path = cfg.path();
    let host = normalize_registry(registry);
    let key = config_key(&host);
    let mut map = read_config_value(&path)?;
    let mut removed = false;
    if let Some(helper) = helper_for(&map, &host) {
        match cfg.run_helper(&helper, "erase", key.as_bytes(), &host) {
            Ok((true, _)) => removed = true,
            Ok((false, out)) if out.to_ascii_lowercase().contains("not found") => {}
            Ok((false, out)) => return Err(CredentialError::Helper { helper, registry: host, message: out }),
            Err(CredentialError::HelperMissing { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(auths) = map.get_mut("auths").and_then(|v| v.as_object_mut()) {
        let keys: Vec<String> = auths.keys().filter(|k| normalize_registry(k) == host).cloned().collect();
        for k in keys {
            if auths.remove(&k).is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
                removed = true;
            }
        }
        if path.exists() {
            write_config(&path, &map)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) {
        fs::write(dir.join("config.json"), json).unwrap();
    }

    #[test]
    fn auths_lookup() {
        let d = tempfile::tempdir().unwrap();
        let cfg = DockerConfig::new(d.path());
        assert_eq!(cfg.lookup("127.0.0.1:5001").unwrap(), None, "no file: anonymous");
        let auth = base64::engine::general_purpose::STANDARD.encode("rig:rig:pass");
        write(
            d.path(),
            &format!(
                r#"{{"auths":{{
                    "https://127.0.0.1:5001/v2/":{{"auth":"{auth}"}},
                    "https://index.docker.io/v1/":{{"username":"hub","password":"pw"}},
                    "ghcr.io":{{"identitytoken":"tok","username":"me"}},
                    "quay.io":{{}},
                    "bad.io":{{"auth":"!!!"}}
                }}, "psFormat":"x"}}"#
            ),
        );
        assert_eq!(cfg.lookup("127.0.0.1:5001").unwrap(), Some(Credential::basic("rig", "rig:pass")));
        assert_eq!(cfg.lookup("docker.io").unwrap(), Some(Credential::basic("hub", "pw")));
        assert_eq!(cfg.lookup("registry-1.docker.io").unwrap(), Some(Credential::basic("hub", "pw")));
        assert_eq!(
            cfg.lookup("ghcr.io").unwrap(),
            Some(Credential::IdentityToken { username: Some("me".into()), token: "tok".into() })
        );
        assert_eq!(cfg.lookup("quay.io").unwrap(), None);
        assert_eq!(cfg.lookup("other.io").unwrap(), None);
        assert!(matches!(cfg.lookup("bad.io"), Err(CredentialError::InvalidAuth { .. })));
        let dbg = format!("{:?}", cfg.lookup("docker.io").unwrap());
        assert!(!dbg.contains("pw"), "{dbg}");

        write(d.path(), "{not json");
        assert!(matches!(cfg.lookup("x"), Err(CredentialError::Parse { .. })));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("localhost:5000/v2/"), "localhost:5000");
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("https://ghcr.io/"), "ghcr.io");
    }

    fn helper_script(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(format!("docker-credential-{name}"));
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credential_helpers() {
        let d = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        helper_script(
            bin.path(),
            "fake",
            r#"read server
case "$1" in
get) if [ "$server" = "127.0.0.1:5002" ]; then echo '{"ServerURL":"x","Username":"rig","Secret":"s3"}';
     elif [ "$server" = "tok.io" ]; then echo '{"ServerURL":"x","Username":"<token>","Secret":"rt"}';
     else echo "credentials not found in native keychain"; exit 1; fi;;
*) exit 3;;
esac"#,
        );
        helper_script(bin.path(), "broken", "echo boom >&2; exit 2");
        let cfg = DockerConfig::new(d.path()).with_helper_dirs(vec![bin.path().to_path_buf()]);
        write(
            d.path(),
            r#"{"credHelpers":{"127.0.0.1:5002":"fake","tok.io":"fake","b.io":"broken","gone.io":"nothere"},
                "auths":{"127.0.0.1:5002":{"auth":"eDp5"}}}"#,
        );
        assert_eq!(cfg.lookup("127.0.0.1:5002").unwrap(), Some(Credential::basic("rig", "s3")));
        assert_eq!(
            cfg.lookup("tok.io").unwrap(),
            Some(Credential::IdentityToken { username: None, token: "rt".into() })
        );
        let e = cfg.lookup("b.io").unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(matches!(cfg.lookup("gone.io"), Err(CredentialError::HelperMissing { .. })));

        // credsStore: not found there → fall back to auths; a missing store binary too.
        write(d.path(), r#"{"credsStore":"fake","auths":{"x.io":{"auth":"eDp5"}}}"#);
        assert_eq!(cfg.lookup("x.io").unwrap(), Some(Credential::basic("x", "y")));
        assert_eq!(cfg.lookup("127.0.0.1:5002").unwrap(), Some(Credential::basic("rig", "s3")));
        write(d.path(), r#"{"credsStore":"desktop","auths":{"x.io":{"auth":"eDp5"}}}"#);
        assert_eq!(cfg.lookup("x.io").unwrap(), Some(Credential::basic("x", "y")));
    }

    #[test]
    fn login_and_logout_keep_other_fields() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("docker");
        let path = login(Some(&dir), "https://127.0.0.1:5001/", "rig", "rigpass").unwrap();
        assert_eq!(path, dir.join("config.json"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let cfg = DockerConfig::new(&dir);
        assert_eq!(cfg.lookup("127.0.0.1:5001").unwrap(), Some(Credential::basic("rig", "rigpass")));

        // Unknown fields and other registries survive.
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["psFormat"] = "table".into();
        v["auths"]["ghcr.io"] = serde_json::json!({"auth": "eDp5"});
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        login(Some(&dir), "docker.io", "u", "p").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert!(v["auths"][DOCKER_HUB_KEY]["auth"].is_string());
        assert_eq!(cfg.lookup("ghcr.io").unwrap(), Some(Credential::basic("x", "y")));

        assert!(logout(Some(&dir), "127.0.0.1:5001").unwrap());
        assert!(!logout(Some(&dir), "127.0.0.1:5001").unwrap());
        assert_eq!(cfg.lookup("127.0.0.1:5001").unwrap(), None);
        assert_eq!(cfg.lookup("docker.io").unwrap(), Some(Credential::basic("u", "p")));
        assert!(fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    }

    #[test]
    fn login_through_helper() {
        let d = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let log = d.path().join("stored");
        helper_script(bin.path(), "rec", &format!("cat > {}; echo \"$1\" >> {}", log.display(), log.display()));
        fs::write(d.path().join("config.json"), r#"{"credsStore":"rec"}"#).unwrap();
        let cfg = DockerConfig::new(d.path()).with_helper_dirs(vec![bin.path().to_path_buf()]);
        login_with(&cfg, "h.io", "u", "p").unwrap();
        let stored = fs::read_to_string(&log).unwrap();
        assert!(stored.contains(r#""Secret":"p""#) && stored.contains("store"), "{stored}");
        let v: serde_json::Value = serde_json::from_slice(&fs::read(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["auths"]["h.io"], serde_json::json!({}), "no secret in the file");
    }
}
