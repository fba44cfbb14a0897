//! The solver's observer that fills a build's record while it runs, and gives each step
//! that misses its reason (against the latest earlier build of the same context,
//! Dockerfile and target).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_executor::context::SelectedFile;
use strata_executor::worker::LocalWorker;
use strata_frontend::lower::StepSource;
use strata_solver::graph::{Graph, NodeId, Op};
use strata_solver::scheduler::{MissCause, StepObserver, StepResult};

use super::explain;
use super::record::{BuildRecord, History, InputRecord, StepRecord, StepResultKind};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What identifies a build for comparison, and what the record shows of it.
#[derive(Debug, Clone)]
pub struct BuildIdentity {
    pub context: String,
    pub dockerfile: String,
    pub target: Option<String>,
    pub platforms: Vec<String>,
}

pub struct Recorder {
    /// The graph being solved, the worker solving it and how many records were
    /// imported with --cache-from (a miss says it was not among them): set by the
    /// solve ([`Recorder::attach`]).
    solving: std::sync::OnceLock<(Arc<Graph>, Arc<LocalWorker>, usize)>,
    sources: BTreeMap<String, StepSource>,
    step_lines: BTreeMap<String, usize>,
    history: History,
    earlier: Option<BuildRecord>,
    /// The stages --no-cache-filter names.
    no_cache_filter: Vec<String>,
    steps: Mutex<BTreeMap<NodeId, StepRecord>>,
    started_ms: u64,
}

impl Recorder {
    pub fn new(
        sources: BTreeMap<String, StepSource>,
        step_lines: BTreeMap<String, usize>,
        history: History,
        identity: &BuildIdentity,
        no_cache_filter: Vec<String>,
    ) -> Recorder {
        let earlier = history.latest(&identity.context, &identity.dockerfile, identity.target.as_deref());
        Recorder {
            solving: std::sync::OnceLock::new(),
            sources,
            step_lines,
            history,
            earlier,
            no_cache_filter,
            steps: Mutex::new(BTreeMap::new()),
            started_ms: now_ms(),
        }
    }

    /// The solve this records.
    pub fn attach(&self, graph: Arc<Graph>, worker: Arc<LocalWorker>, imported: usize) {
        let _ = self.solving.set((graph, worker, imported));
    }

    fn graph(&self) -> Option<&Graph> {
        self.solving.get().map(|(g, _, _)| g.as_ref())
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, StepRecord>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn line_of(&self, name: &str) -> Option<usize> {
        self.step_lines
            .get(name)
            .or_else(|| name.split_once(" (").and_then(|(step, _)| self.step_lines.get(step)))
            .copied()
    }

    /// The entries of a content key: this build's (from the worker), else stored ones.
    fn files(&self, content: &str) -> Option<Vec<SelectedFile>> {
        if let Some(key) = hex::decode(content).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            if let Some(files) = self.solving.get().and_then(|(_, w, _)| w.selected_files(&key)) {
                return Some(files.as_ref().clone());
            }
        }
        self.history.files(content)
    }

    /// The build's record, its file lists stored; `None` for a step the solve never
    /// reached is kept as not reached.
    pub fn finish(&self, identity: &BuildIdentity, built: bool) -> BuildRecord {
        let steps: Vec<StepRecord> = {
            let mut v: Vec<StepRecord> = self.steps().values().cloned().collect();
            v.sort_by(|a, b| (&a.platform, a.line, &a.name).cmp(&(&b.platform, b.line, &b.name)));
            v
        };
        for s in &steps {
            if let Some(content) = s.files.as_ref().filter(|c| !self.history.has_files(c)) {
                if let Some(files) = self.files(content) {
                    if let Err(e) = self.history.put_files(content, &files) {
                        tracing::warn!("history: storing the files of {}: {e}", s.name);
                    }
                }
            }
        }
        let id = {
            let mut h = blake3::Hasher::new();
            h.update(&self.started_ms.to_le_bytes());
            h.update(&std::process::id().to_le_bytes());
            h.update(identity.context.as_bytes());
            h.finalize().to_hex()[..12].to_string()
        };
        BuildRecord {
            id,
            started_ms: self.started_ms,
            duration_ms: now_ms().saturating_sub(self.started_ms),
            context: identity.context.clone(),
            dockerfile: identity.dockerfile.clone(),
            target: identity.target.clone(),
            platforms: identity.platforms.clone(),
            result: if built { "built" } else { "failed" }.into(),
            steps,
        }
    }

    pub fn history(&self) -> &History {
        &self.history
    }
}

impl StepObserver for Recorder {
    fn keyed(&self, id: &NodeId, key: &[u8; 32], input_keys: &[[u8; 32]], content: Option<&[u8; 32]>) {
        let Some(graph) = self.graph() else { return };
        let Some(node) = graph.get(id) else { return };
        let Some(name) = node.names.first() else { return };
        let Some(source) = self.sources.get(name) else { return };
        let inputs = node
            .inputs
            .iter()
            .zip(input_keys)
            .map(|(input, key)| {
                let n = graph.get(input);
                let name = n.and_then(|n| n.names.first().cloned()).unwrap_or_default();
                let image = match n.map(|n| &n.op) {
                    Some(Op::Image { reference, manifest_digest, .. }) => {
                        Some((reference.clone(), manifest_digest.clone()))
                    }
                    _ => None,
                };
                InputRecord { key: hex::encode(key), line: self.line_of(&name), name, image }
            })
            .collect();
        let mut op = serde_json::to_value(&node.op).unwrap_or_default();
        // A heredoc's bytes are kept as their hash.
        if let Op::MkFile { data, .. } = &node.op {
            if let Some(d) = op.pointer_mut("/MkFile/data") {
                *d = serde_json::Value::String(blake3::hash(data).to_hex().to_string());
            }
        }
        let record = StepRecord {
            name: name.clone(),
            stage: source.stage.clone(),
            position: source.position,
            line: source.line,
            text: source.text.clone(),
            platform: source.platform.clone(),
            key: hex::encode(key),
            op,
            args: source.args.clone(),
            inputs,
            files: content.map(hex::encode),
            result: StepResultKind::NotReached,
            duration_ms: 0,
            reason: None,
        };
        self.steps().insert(*id, record);
    }

    fn explain(&self, id: &NodeId, cause: MissCause) -> Option<(String, String)> {
        let step = self.steps().get(id).cloned();
        let Some(step) = step else {
            // A part of a step (a heredoc's file, a --link merge): its step's reason.
            let name = self.graph()?.get(id)?.names.first()?.clone();
            let (owner, _) = name.split_once(" (")?;
            let steps = self.steps();
            return steps.values().find(|s| s.name == owner).and_then(|s| s.reason.clone());
        };
        let text = |why: &str| format!("{}: {why}", explain::short(&step.text));
        let reason = match cause {
            MissCause::NoCache => ("no_cache".to_string(), text("--no-cache")),
            MissCause::NoCacheFilter => {
                let stage = self
                    .no_cache_filter
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(&step.stage))
                    .cloned()
                    .unwrap_or_default();
                ("no_cache_filter".to_string(), text(&format!("--no-cache-filter {stage}")))
            }
            MissCause::NotFound => {
                let earlier = self.earlier.as_ref().and_then(|e| explain::same_step(&step, &e.steps));
                let (kind, mut why) = explain::reason(&step, earlier, &|c| self.files(c));
                let imported = self.solving.get().map(|(_, _, n)| *n).unwrap_or(0);
                if imported > 0 {
                    why.push_str(&format!(" (not among the {imported} imported cache records either)"));
                }
                (kind, why)
            }
        };
        if let Some(s) = self.steps().get_mut(id) {
            s.reason = Some(reason.clone());
        }
        Some(reason)
    }

    fn ended(&self, id: &NodeId, result: StepResult, elapsed: Duration) {
        if let Some(s) = self.steps().get_mut(id) {
            s.result = match result {
                StepResult::Cached => StepResultKind::Cached,
                StepResult::Ran => StepResultKind::Ran,
                StepResult::Failed => StepResultKind::Failed,
                StepResult::WouldRun => StepResultKind::WouldRun,
            };
            s.duration_ms = elapsed.as_millis() as u64;
        }
    }
}
