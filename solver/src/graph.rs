//! The build graph: a small op vocabulary, nodes addressed by content.
//!
//! A node's [`NodeId`] is the blake3 hash of its op's canonical JSON and its inputs'
//! ids, so identical steps (even across stages) are one node. Display names are
//! labels for progress only and never enter the id.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use strata_oci::image::Platform;

/// The content address of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl NodeId {
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// Owner of created files, numeric (names are resolved by the frontend/executor first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    /// A user name or number, resolved in the destination's /etc/passwd.
    pub user: String,
    pub group: Option<String>,
}

/// Where a file op or mount reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An empty file system.
    Scratch,
    /// A base image (already resolved to a manifest digest by the frontend).
    Image { reference: String, manifest_digest: String, platform: Platform },
    /// A local directory (the build context or a named context); `name` identifies it.
    /// Its content enters cache keys only through the files an op selects from it.
    Local { name: String },
    /// RUN: inputs[0] is the root file system; mounts refer to further inputs.
    Exec(ExecOp),
    /// COPY/ADD: inputs[0] is the destination root, inputs[1] the source.
    Copy(CopyOp),
    /// A file with literal contents (heredoc COPY sources), on inputs[0].
    MkFile { path: String, data: Vec<u8>, mode: u32, chown: Option<Chown> },
    /// A directory on inputs[0] (WORKDIR), parents created.
    Mkdir { path: String, mode: u32, chown: Option<Chown> },
    /// COPY --link: the layers of all inputs, stacked in order.
    Merge,
}

/// How a RUN sees the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NetworkMode {
    #[default]
    Host,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: NetworkMode,
    pub insecure: bool,
    pub platform: Platform,
    pub mounts: Vec<Mount>,
    /// Extra /etc/hosts lines (`--add-host`).
    pub extra_hosts: Vec<String>,
    /// Size of /dev/shm in bytes (`--shm-size`); the runtime's 64 MB when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// Resource limits (`--ulimit`); BuildKit's nofile=1048576 when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
}

/// One `--ulimit`: a resource with its soft and hard limit (`u64::MAX`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub kind: UlimitKind,
    pub soft: u64,
    pub hard: u64,
}

/// The resources `--ulimit` names, as docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UlimitKind {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl UlimitKind {
    pub const ALL: [UlimitKind; 15] = [
        UlimitKind::Core,
        UlimitKind::Cpu,
        UlimitKind::Data,
        UlimitKind::Fsize,
        UlimitKind::Locks,
        UlimitKind::Memlock,
        UlimitKind::Msgqueue,
        UlimitKind::Nice,
        UlimitKind::Nofile,
        UlimitKind::Nproc,
        UlimitKind::Rss,
        UlimitKind::Rtprio,
        UlimitKind::Rttime,
        UlimitKind::Sigpending,
        UlimitKind::Stack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UlimitKind::Core => "core",
            UlimitKind::Cpu => "cpu",
            UlimitKind::Data => "data",
            UlimitKind::Fsize => "fsize",
            UlimitKind::Locks => "locks",
            UlimitKind::Memlock => "memlock",
            UlimitKind::Msgqueue => "msgqueue",
            UlimitKind::Nice => "nice",
            UlimitKind::Nofile => "nofile",
            UlimitKind::Nproc => "nproc",
            UlimitKind::Rss => "rss",
            UlimitKind::Rtprio => "rtprio",
            UlimitKind::Rttime => "rttime",
            UlimitKind::Sigpending => "sigpending",
            UlimitKind::Stack => "stack",
        }
    }

    pub fn from_name(name: &str) -> Option<UlimitKind> {
        UlimitKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A directory of input `input` (an index into the node's inputs) at `source`.
    Bind {
        input: usize,
        source: String,
        target: String,
        readwrite: bool,
    },
    /// A persistent cache directory.
    Cache {
        id: String,
        target: String,
        sharing: CacheSharing,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Seed from (input index, source path).
        from: Option<(usize, String)>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A secret: only its id enters the definition, never its value.
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOp {
    /// Source paths (may hold globs), relative to the source root.
    pub sources: Vec<String>,
    /// Destination, absolute (already joined with WORKDIR).
    pub dest: String,
    /// The destination was written with a trailing slash (a directory).
    pub dest_is_dir: bool,
    pub chown: Option<Chown>,
    /// Octal or symbolic mode as written (`--chmod`).
    pub chmod: Option<String>,
    /// Exclude patterns (`--exclude`) and, for the context, .dockerignore patterns.
    pub exclude: Vec<String>,
    /// ADD: unpack local archives.
    pub unpack_archives: bool,
    /// COPY --parents.
    pub parents: bool,
    /// Follow a symlink named as a source (BuildKit follows the top-level one).
    pub follow_symlinks: bool,
    /// Create the destination's parent directories.
    pub create_dest_path: bool,
    /// Match globs only (no error when nothing matches).
    pub allow_empty_wildcard: bool,
}

/// One node of the graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// Progress labels of every place this node came from (`[stage 2/5] RUN make`).
    pub names: Vec<String>,
    /// The stages it belongs to (for `--no-cache-filter`).
    pub stages: Vec<String>,
}

/// A build graph.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: BTreeMap<NodeId, Node>,
}

/// The digest of a definition: blake3 over the op's JSON and the input ids.
pub fn node_id(op: &Op, inputs: &[NodeId]) -> NodeId {
    let mut h = blake3::Hasher::new();
    h.update(b"strata-node-v1\0");
    h.update(&serde_json::to_vec(op).expect("ops serialise"));
    for i in inputs {
        h.update(&i.0);
    }
    NodeId(*h.finalize().as_bytes())
}

impl Graph {
    /// Add a node (or find the identical one); returns its id.
    pub fn add(&mut self, op: Op, inputs: Vec<NodeId>, name: impl Into<String>) -> NodeId {
        self.add_in_stage(op, inputs, name, None)
    }

    pub fn add_in_stage(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        name: impl Into<String>,
        stage: Option<&str>,
    ) -> NodeId {
        let id = node_id(&op, &inputs);
        let name = name.into();
        let node = self.nodes.entry(id).or_insert_with(|| Node { op, inputs, names: Vec::new(), stages: Vec::new() });
        if !node.names.contains(&name) {
            node.names.push(name);
        }
        if let Some(s) = stage {
            if !node.stages.iter().any(|x| x == s) {
                node.stages.push(s.to_string());
            }
        }
        id
    }

    /// Add every node of `other` (a graph lowered for another platform, say): nodes
    /// with the same id are the same step and are kept once, with both labels.
    pub fn merge(&mut self, other: Graph) {
        for (id, n) in other.nodes {
            match self.nodes.entry(id) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(n);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let mine = o.get_mut();
                    for name in n.names {
                        if !mine.names.contains(&name) {
                            mine.names.push(name);
                        }
                    }
                    for stage in n.stages {
                        if !mine.stages.contains(&stage) {
                            mine.stages.push(stage);
                        }
                    }
                }
            }
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// The nodes whose own layer is part of `target`'s file system: the steps of its
    /// stage, down its root file system input, through every input of a merge
    /// (`COPY --link`), not the stages it only copies from or mounts.
    pub fn layer_chain(&self, target: &NodeId) -> Vec<NodeId> {
        self.file_system_chain(target)
            .into_iter()
            .filter(|id| {
                self.get(id)
                    .is_some_and(|n| matches!(n.op, Op::Exec(_) | Op::Copy(_) | Op::MkFile { .. } | Op::Mkdir { .. }))
            })
            .collect()
    }

    /// The nodes whose outputs make up `target`'s file system: [`Graph::layer_chain`]
    /// with the merges it goes through and the base image it ends at.
    pub fn file_system_chain(&self, target: &NodeId) -> Vec<NodeId> {
        let mut chain = Vec::new();
        let mut stack = vec![*target];
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(node) = self.get(&id) else { continue };
            match node.op {
                Op::Exec(_) | Op::Copy(_) | Op::MkFile { .. } | Op::Mkdir { .. } => {
                    chain.push(id);
                    stack.extend(node.inputs.first().copied());
                }
                Op::Merge => {
                    chain.push(id);
                    stack.extend(node.inputs.iter().copied());
                }
                Op::Image { .. } => chain.push(id),
                _ => {}
            }
        }
        chain
    }

    /// The nodes `target` depends on (itself included), dependencies first.
    pub fn closure(&self, target: NodeId) -> Vec<NodeId> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(target, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                order.push(id);
                continue;
            }
            if !seen.insert(id) {
                continue;
            }
            stack.push((id, true));
            if let Some(n) = self.nodes.get(&id) {
                for i in n.inputs.iter().rev() {
                    if !seen.contains(i) {
                        stack.push((*i, false));
                    }
                }
            }
        }
        order
    }

    /// The graph in Graphviz dot format.
    pub fn to_dot(&self, targets: &[NodeId]) -> String {
        let mut s = String::from("digraph strata {\n  rankdir=BT;\n");
        for (id, n) in &self.nodes {
            let label = n.names.first().cloned().unwrap_or_default().replace('"', "\\\"");
            let shape = match n.op {
                Op::Image { .. } | Op::Local { .. } | Op::Scratch => "box",
                Op::Exec(_) => "ellipse",
                _ => "note",
            };
            let pen = if targets.contains(id) { ",penwidth=2" } else { "" };
            s.push_str(&format!("  \"{}\" [label=\"{}\",shape={}{}];\n", id.short(), label, shape, pen));
            for i in &n.inputs {
                s.push_str(&format!("  \"{}\" -> \"{}\";\n", id.short(), i.short()));
            }
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_shared_nodes_once_with_both_labels() {
        let mut amd = Graph::default();
        let ctx = amd.add(Op::Local { name: "context".into() }, vec![], "[internal] load build context");
        let mk = amd.add(Op::Mkdir { path: "/app".into(), mode: 0o755, chown: None }, vec![ctx], "[linux/amd64 2/3]");
        let mut arm = Graph::default();
        let ctx2 = arm.add(Op::Local { name: "context".into() }, vec![], "[internal] load build context");
        let mk2 = arm.add(Op::Mkdir { path: "/app".into(), mode: 0o755, chown: None }, vec![ctx2], "[linux/arm64 2/3]");
        let only_arm = arm.add(Op::Scratch, vec![], "scratch");
        assert_eq!(mk, mk2);
        amd.merge(arm);
        assert_eq!(amd.nodes.len(), 3);
        assert_eq!(
            amd.get(&mk).map(|n| n.names.clone()),
            Some(vec!["[linux/amd64 2/3]".into(), "[linux/arm64 2/3]".into()])
        );
        assert!(amd.get(&only_arm).is_some());
    }
}
