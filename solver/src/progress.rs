//! Progress events from the scheduler and workers, consumed by the CLI's printers.

use std::time::Duration;

use serde::Serialize;

use crate::graph::NodeId;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A step starts running.
    Started { vertex: String, name: String },
    /// A step was found in the cache.
    Cached { vertex: String, name: String },
    /// A step's cached result cannot be used, and why (sent before it runs; in a dry
    /// run, instead of running). `kind` names the reason for programs: `files`,
    /// `mode`, `build_arg`, `env`, `base_image`, `parent`, `input`, `instruction`,
    /// `option`, `evicted`, `no_cache`, `no_cache_filter`, `no_record`.
    CacheMiss { vertex: String, name: String, kind: String, reason: String, dry_run: bool },
    /// A line of a step's output (stream 1 = stdout, 2 = stderr).
    Log { vertex: String, stream: u8, line: String },
    /// A step finished.
    Done {
        vertex: String,
        name: String,
        #[serde(with = "secs")]
        elapsed: Duration,
    },
    /// A step failed.
    Failed { vertex: String, name: String, error: String },
    /// Byte progress of a transfer (pull, push, export).
    Transfer { vertex: String, name: String, current: u64, total: Option<u64> },
    /// A free-form status line for a step (e.g. "exporting layers").
    Status { vertex: String, name: String, message: String },
    /// A warning about the build as a whole (a lint, an unused build arg): printers keep
    /// it readable while a live view is on screen.
    Warning { message: String },
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Where events go. Cheap to clone; sending never blocks (unbounded: the printer is
/// always faster than builds produce lines).
#[derive(Clone)]
pub struct ProgressSink {
    tx: Option<tokio::sync::mpsc::UnboundedSender<ProgressEvent>>,
}

impl ProgressSink {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<ProgressEvent>) -> Self {
        ProgressSink { tx: Some(tx) }
    }
    /// A sink that drops everything.
    pub fn discard() -> Self {
        ProgressSink { tx: None }
    }
    pub fn send(&self, e: ProgressEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(e);
        }
    }
    pub fn log(&self, vertex: &NodeId, stream: u8, line: String) {
        self.send(ProgressEvent::Log { vertex: vertex.to_string(), stream, line });
    }
}
