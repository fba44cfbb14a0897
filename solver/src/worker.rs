//! The contract between the scheduler and whatever runs ops (strata-executor).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::graph::{Node, NodeId};
use crate::progress::ProgressSink;

/// One layer of a file-system result: a snapshot directory the worker can find by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerId(pub String);

/// What a node produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A file system: its layers, bottom first.
    Layers(Vec<LayerId>),
    /// A local directory (build context or named context), by name.
    Local(String),
}

impl Output {
    pub fn layers(&self) -> &[LayerId] {
        match self {
            Output::Layers(l) => l,
            Output::Local(_) => &[],
        }
    }
}

/// A solved node: its output and the cache key it was found or stored under.
#[derive(Debug, Clone)]
pub struct Solved {
    pub output: Output,
    pub cache_key: [u8; 32],
    pub cached: bool,
    /// Found in an imported cache (`--cache-from`): its layers may exist only as blobs
    /// until [`Worker::materialize`] brings them in.
    pub imported: Option<String>,
}

/// What a step may need besides its inputs.
#[derive(Clone)]
pub struct StepContext {
    /// The progress label of the step.
    pub name: String,
    pub progress: ProgressSink,
    pub vertex: NodeId,
    /// Set when the build is cancelled (another step failed, or Ctrl-C).
    pub cancel: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The step's own command failed.
    #[error("{message}")]
    StepFailed { message: String, exit_code: Option<i32>, last_lines: Vec<String> },
    #[error("cancelled")]
    Cancelled,
    /// An imported cache record could not be trusted (a blob that does not match its
    /// digest or diff_id): the step runs instead.
    #[error("{0}")]
    UntrustedCache(String),
    #[error("{0}")]
    Other(String),
}

impl WorkerError {
    pub fn other(e: impl std::fmt::Display) -> Self {
        WorkerError::Other(e.to_string())
    }
}

/// Runs ops. Implemented by the executor.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// The part of a node's cache key that depends on content the graph does not
    /// name: e.g. the selected files of the build context for a COPY. `None` when the
    /// definition and the inputs' keys are enough.
    async fn content_key(&self, node: &Node, inputs: &[Arc<Solved>]) -> Result<Option<[u8; 32]>, WorkerError>;

    /// Run the node.
    async fn run(
        &self,
        id: NodeId,
        node: &Node,
        inputs: &[Arc<Solved>],
        ctx: StepContext,
    ) -> Result<Output, WorkerError>;

    /// Is a cached output still usable (its snapshots present, or, for an imported
    /// record, its blobs known)?
    fn output_valid(&self, output: &Output) -> bool;

    /// Make an imported output's layers local snapshots (download, verify, unpack), for
    /// a step that runs on them. [`WorkerError::UntrustedCache`] refuses the record.
    async fn materialize(&self, _output: &Output, _ctx: &StepContext) -> Result<(), WorkerError> {
        Ok(())
    }
}
