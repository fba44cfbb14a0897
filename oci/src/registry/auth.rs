//! Authentication against a registry: what to put in `Authorization`.
//!
//! This module owns the [`AuthSession`]: the challenge each registry host answered with
//! (learnt from the `/v2/` ping or a 401), the credentials for each host (from
//! [`super::credentials`], resolved once), and Bearer tokens cached per
//! host + [`Scope`] until they expire. Basic challenges get the stored username and
//! password; Bearer challenges get a token from the realm, fetched with basic credentials
//! when there are any (or exchanged from an identity token), anonymously otherwise.
//! A [`Scope`] of `pull` or `pull,push` is all a caller chooses, so push reuses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::HeaderValue;
use reqwest::StatusCode;
use serde::Deserialize;

use super::challenge::Challenge;
use super::credentials::Credential;
use super::error::{NetFailure, Operation, RegistryError};
use super::transport::{read_limited, status_text, Host, Transport};

const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

/// Access asked of a repository: `repository:library/busybox:pull` or `…:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub repository: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Read access.
    pub fn pull(repository: &str) -> Self {
        Scope { repository: repository.to_string(), actions: vec!["pull".into()] }
    }
    /// Read and write access (what a push needs).
    pub fn pull_push(repository: &str) -> Self {
        Scope { repository: repository.to_string(), actions: vec!["pull".into(), "push".into()] }
    }
    /// No repository (login checks, catalog).
    pub fn none() -> Self {
        Scope { repository: String::new(), actions: Vec::new() }
    }
    /// The token-server form, empty for [`Scope::none`].
    pub fn to_token_scope(&self) -> String {
        if self.repository.is_empty() {
            return String::new();
        }
        format!("repository:{}:{}", self.repository, self.actions.join(","))
    }
}

/// What was sent with one request, to judge a 401.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authorization {
    pub header: Option<HeaderValue>,
    /// Were the user's credentials involved (basic header, or a token fetched with them)?
    pub used_credentials: bool,
}

#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    used_credentials: bool,
    expires: Instant,
}

/// Per-client authentication state: cached tokens keyed by host and scope.
#[derive(Default)]
pub struct AuthSession {
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn basic_header(username: &str, password: &str) -> Option<HeaderValue> {
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {raw}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl AuthSession {
    fn cached(&self, key: &(String, String)) -> Option<CachedToken> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(key).filter(|t| t.expires > Instant::now()).cloned()
    }

    fn store(&self, key: (String, String), token: CachedToken) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, t| t.expires > Instant::now());
        tokens.insert(key, token);
    }

    pub(crate) fn forget(&self, host: &Host, scope: &Scope) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(&(host.api_host.clone(), scope.to_token_scope()));
    }

    /// The `Authorization` for a request to `host` needing `scope`, fetching a token if
    /// the host asked for Bearer and none is cached. `extra_scopes` come from a 401's
    /// challenge (e.g. a cross-repository mount).
    pub(crate) async fn authorize(
        &self,
        transport: &Transport,
        op: &Operation,
        host: &Host,
        scope: &Scope,
        extra_scopes: &[String],
    ) -> Result<Authorization, RegistryError> {
        let Some(challenge) = host.challenge() else { return Ok(Authorization::default()) };
        if challenge.is_basic() {
            return match transport.credential(op, host).await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(Authorization { header: basic_header(&username, &password), used_credentials: true })
                }
                _ => Ok(Authorization::default()),
            };
        }
        if !challenge.is_bearer() {
            return Ok(Authorization::default());
        }
        let key = (host.api_host.clone(), scope.to_token_scope());
        if extra_scopes.is_empty() {
            if let Some(t) = self.cached(&key) {
                return Ok(Authorization { header: Some(t.header), used_credentials: t.used_credentials });
            }
        }
        let mut scopes: Vec<String> = Vec::new();
        let own = scope.to_token_scope();
        if !own.is_empty() {
            scopes.push(own);
        }
        for s in extra_scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let token = self.fetch_token(transport, op, host, &challenge, &scopes).await?;
        self.store(key, token.clone());
        Ok(Authorization { header: Some(token.header), used_credentials: token.used_credentials })
    }

    async fn fetch_token(
        &self,
        transport: &Transport,
        op: &Operation,
        host: &Host,
        challenge: &Challenge,
        scopes: &[String],
    ) -> Result<CachedToken, RegistryError> {
        let token_err = |realm: &str, reason: String| RegistryError::Token {
            op: op.clone(),
            registry: host.registry.clone(),
            realm: realm.to_string(),
            reason,
        };
        let realm = challenge
            .realm()
            .ok_or_else(|| token_err("(none)", "the Bearer challenge names no realm".into()))?
            .to_string();
        let mut url = url::Url::parse(&realm).map_err(|e| token_err(&realm, format!("invalid realm URL: {e}")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(token_err(&realm, "the realm is not an http(s) URL".into()));
        }
        let credential = transport.credential(op, host).await?;
        let service = challenge.service().map(str::to_string);
        let client = transport.client_for_url(&url)?;
        let realm_host = url.host_str().unwrap_or("").to_string();
        if credential.is_some() && url.scheme() == "http" && !crate::reference::is_loopback_host(&realm_host) {
            tracing::warn!("sending credentials for {} to {realm} over plain HTTP", host.registry);
        }

        let mut attempt = 0;
        let response = loop {
            let rb = match &credential {
                Some(Credential::IdentityToken { token, .. }) => {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", token);
                    form.append_pair("client_id", "strata");
                    if let Some(s) = &service {
                        form.append_pair("service", s);
                    }
                    if !scopes.is_empty() {
                        form.append_pair("scope", &scopes.join(" "));
                    }
                    client
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.finish())
                }
                other => {
                    {
                        let mut q = url.query_pairs_mut();
                        q.clear();
                        if let Some(s) = &service {
                            q.append_pair("service", s);
                        }
                        for s in scopes {
                            q.append_pair("scope", s);
                        }
                        if let Some(Credential::Basic { username, .. }) = other {
                            q.append_pair("account", username);
                        }
                    }
                    let rb = client.get(url.clone());
                    match other {
                        Some(Credential::Basic { username, password }) => rb.basic_auth(username, Some(password)),
                        _ => rb,
                    }
                }
            };
            match rb.send().await {
                Ok(r) if transport.retryable_status(r.status()) && attempt + 1 < transport.max_attempts() => {
                    transport.backoff(attempt, super::transport::retry_after(r.headers())).await;
                    attempt += 1;
                }
                Ok(r) => break r,
                Err(e) => {
                    let f = NetFailure::classify(&e);
                    if f.retryable() && attempt + 1 < transport.max_attempts() {
                        transport.backoff(attempt, None).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(f.into_error(op, &realm_host));
                }
            }
        };

        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let status = status_text(status);
            return Err(if credential.is_some() {
                RegistryError::AuthFailed { op: op.clone(), registry: host.registry.clone(), status }
            } else {
                RegistryError::AuthRequired { op: op.clone(), registry: host.registry.clone(), status }
            });
        }
        let body = read_limited(response, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| token_err(&realm, format!("reading the answer: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
            return Err(token_err(&realm, format!("answered {}: {text}", status_text(status))));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| token_err(&realm, format!("unreadable token answer: {e}")))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| token_err(&realm, "the answer holds no token".into()))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| token_err(&realm, "the token has characters not allowed in a header".into()))?;
        header.set_sensitive(true);
        let lifetime = parsed.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token does not expire between check and use.
        let margin = (lifetime / 10).clamp(1, 30);
        Ok(CachedToken {
            header,
            used_credentials: credential.is_some(),
            expires: Instant::now() + Duration::from_secs(lifetime.saturating_sub(margin).max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("library/busybox").to_token_scope(), "repository:library/busybox:pull");
        assert_eq!(Scope::pull_push("a/b").to_token_scope(), "repository:a/b:pull,push");
        assert_eq!(Scope::none().to_token_scope(), "");
    }

    #[test]
    fn basic_header_is_base64() {
        let h = basic_header("rig", "rigpass").unwrap();
        assert_eq!(h.to_str().unwrap(), "Basic cmlnOnJpZ3Bhc3M=");
        assert!(h.is_sensitive());
    }
}
