//! Downloading one blob into the [`BlobStore`], streamed and verified.
//!
//! This module owns the download loop: the body goes chunk by chunk through a bounded
//! channel to a blocking writer task (a store temp file that hashes as it writes), so
//! memory stays bounded whatever the blob size. When the connection drops mid-blob the
//! download resumes with `Range: bytes=N-`; a server that ignores the range (200 instead
//! of 206, or a wrong `Content-Range`) makes it start over in a fresh temp file. The blob
//! is committed (fsync, digest and size check, rename) only when complete.

use std::io::Write;

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use tokio::sync::mpsc;

use super::auth::Scope;
use super::error::{NetFailure, Operation, RegistryError};
use super::transport::{registry_error_detail, status_text, RegistryRequest, Transport};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::store::{BlobStore, StoreError, TempBlob};

/// What the writer task is told.
enum Piece {
    Data(Bytes),
    /// Discard what was written and start a new temp file.
    Restart,
}

/// How many chunks may wait for the writer (each at most a few tens of KiB).
const CHANNEL_DEPTH: usize = 16;

/// `bytes START-END/TOTAL` → START.
fn content_range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// Download `desc` from the repository of `r` into `store` unless it is there already.
pub(crate) async fn download_blob(
    transport: &Transport,
    op: &Operation,
    r: &Reference,
    desc: &Descriptor,
    store: &BlobStore,
    refetch: bool,
) -> Result<(), RegistryError> {
    if !refetch && store.contains(&desc.digest) {
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel::<Piece>(CHANNEL_DEPTH);
    let writer_store = store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<TempBlob, StoreError> {
        let mut temp = writer_store.temp_file()?;
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(b) => {
                    temp.write_all(&b).map_err(|source| StoreError::Io { path: temp.path().to_path_buf(), source })?
                }
                // The old temp file is removed when dropped.
                Piece::Restart => temp = writer_store.temp_file()?,
            }
        }
        Ok(temp)
    });

    let fed = feed(transport, op, r, desc, &tx).await;
    drop(tx);
    let written = writer.await.map_err(|e| RegistryError::Internal { op: op.clone(), reason: e.to_string() })?;
    match fed {
        Err(e) => Err(e),
        Ok(()) => {
            let temp = written.map_err(|source| RegistryError::Store { op: op.clone(), source })?;
            let commit_store = store.clone();
            let (digest, size) = (desc.digest.clone(), desc.size);
            let committed = tokio::task::spawn_blocking(move || temp.commit(&commit_store, Some(&digest), Some(size)))
                .await
                .map_err(|e| RegistryError::Internal { op: op.clone(), reason: e.to_string() })?;
            match committed {
                Ok(_) => Ok(()),
                Err(StoreError::DigestMismatch { expected, actual, .. }) => Err(RegistryError::DigestMismatch {
                    op: op.clone(),
                    registry: r.registry.clone(),
                    what: format!("blob {}", desc.digest),
                    expected,
                    actual,
                }),
                Err(StoreError::SizeMismatch { expected, actual, .. }) => Err(RegistryError::SizeMismatch {
                    op: op.clone(),
                    registry: r.registry.clone(),
                    what: format!("blob {}", desc.digest),
                    expected,
                    actual,
                }),
                Err(source) => Err(RegistryError::Store { op: op.clone(), source }),
            }
        }
    }
}

/// Stream the blob into `tx`, resuming after interruptions. `Ok` means every byte was
/// sent, or the writer stopped (its own error then tells why).
async fn feed(
    transport: &Transport,
    op: &Operation,
    r: &Reference,
    desc: &Descriptor,
    tx: &mpsc::Sender<Piece>,
) -> Result<(), RegistryError> {
    let path = format!("/v2/{}/blobs/{}", r.repository, desc.digest);
    let scope = Scope::pull(&r.repository);
    let max = transport.max_attempts();
    let mut received: u64 = 0;
    let mut interruptions: u32 = 0;
    let mut without_progress: u32 = 0;

    loop {
        let mut req = RegistryRequest::get(path.clone());
        if received > 0 {
            req = req.header(RANGE, &format!("bytes={received}-"));
        }
        let resp = transport.send(op, &r.registry, &scope, &req).await?;
        let status = resp.status();
        match status {
            StatusCode::OK => {
                if received > 0 {
                    tracing::debug!(digest = %desc.digest, "server ignored Range: starting over");
                    if tx.send(Piece::Restart).await.is_err() {
                        return Ok(());
                    }
                    received = 0;
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                if content_range_start(resp.headers()) != Some(received) {
                    tracing::debug!(digest = %desc.digest, "unusable Content-Range: starting over");
                    if received > 0 && tx.send(Piece::Restart).await.is_err() {
                        return Ok(());
                    }
                    received = 0;
                    interruptions += 1;
                    if interruptions >= max * 4 {
                        return Err(interrupted(op, r, desc, interruptions, received, "unusable partial answers"));
                    }
                    // Ask again without a range.
                    continue;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if received > 0 => {
                return Err(RegistryError::SizeMismatch {
                    op: op.clone(),
                    registry: r.registry.clone(),
                    what: format!("blob {}", desc.digest),
                    expected: desc.size,
                    actual: received,
                });
            }
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::BlobUnknown {
                    op: op.clone(),
                    digest: desc.digest.clone(),
                    repository: r.name(),
                })
            }
            _ => {
                let detail = registry_error_detail(resp).await;
                return Err(RegistryError::UnexpectedStatus {
                    op: op.clone(),
                    registry: r.registry.clone(),
                    method: "GET".into(),
                    path,
                    status: status_text(status),
                    detail: if detail.is_empty() { detail } else { format!(": {detail}") },
                });
            }
        }

        let before = received;
        let mut resp = resp;
        let failure = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let after = received + chunk.len() as u64;
                    if after > desc.size {
                        return Err(RegistryError::SizeMismatch {
                            op: op.clone(),
                            registry: r.registry.clone(),
                            what: format!("blob {}", desc.digest),
                            expected: desc.size,
                            actual: after,
                        });
                    }
                    received = after;
                    if tx.send(Piece::Data(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) if received == desc.size => return Ok(()),
                Ok(None) => break format!("the stream ended after {received} of {} bytes", desc.size),
                Err(e) => break describe(&NetFailure::classify(&e)),
            }
        };
        // Resume on a connection made after the failure, never one from before it.
        transport.fresh_connections_to(&r.registry);
        interruptions += 1;
        without_progress = if received > before { 0 } else { without_progress + 1 };
        if without_progress >= max || interruptions >= max * 4 {
            return Err(interrupted(op, r, desc, interruptions, received, &failure));
        }
        tracing::info!(
            digest = %desc.digest,
            received,
            size = desc.size,
            "download interrupted ({failure}); resuming"
        );
        transport.backoff(without_progress, None).await;
    }
}

fn describe(f: &NetFailure) -> String {
    match f {
        NetFailure::Connect(s)
        | NetFailure::Certificate(s)
        | NetFailure::Tls(s)
        | NetFailure::Broken(s)
        | NetFailure::Other(s) => s.clone(),
    }
}

fn interrupted(
    op: &Operation,
    r: &Reference,
    desc: &Descriptor,
    attempts: u32,
    received: u64,
    reason: &str,
) -> RegistryError {
    RegistryError::Interrupted {
        op: op.clone(),
        registry: r.registry.clone(),
        digest: desc.digest.clone(),
        attempts,
        received,
        size: desc.size,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(content_range_start(&h), None);
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(CONTENT_RANGE, "bytes */200".parse().unwrap());
        assert_eq!(content_range_start(&h), None);
    }
}
