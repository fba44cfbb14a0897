//! `strata history`: `ls` the recent builds, `show` one step by step, `diff` two.

use std::io::Write;

use serde_json::json;

use super::explain;
use super::record::{BuildRecord, History, StepResultKind};
use crate::cli::{Cli, HistoryCommand, ListFormat};
use crate::{Failure, Result};

pub fn run(cli: &Cli, command: &HistoryCommand) -> Result<()> {
    let store = crate::open_store(cli)?;
    let history = History::at(store.root());
    let out = match command {
        HistoryCommand::Ls { format } => ls(&history.list(), *format),
        HistoryCommand::Show { build, format } => {
            show(&history.find(build).map_err(|e| Failure::usage(format!("error: {e}")))?, *format)
        }
        HistoryCommand::Diff { from, to, format } => {
            let a = history.find(from).map_err(|e| Failure::usage(format!("error: {e}")))?;
            let b = history.find(to).map_err(|e| Failure::usage(format!("error: {e}")))?;
            diff(&history, &a, &b, *format)
        }
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

fn started(r: &BuildRecord) -> String {
    strata_oci::names::rfc3339((r.started_ms / 1000) as i64)
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn target(r: &BuildRecord) -> &str {
    r.target.as_deref().unwrap_or("(last stage)")
}

/// The recent builds, newest first.
pub fn ls(records: &[BuildRecord], format: ListFormat) -> String {
    if format == ListFormat::Json {
        let v: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "started": started(r), "duration_ms": r.duration_ms, "result": r.result,
                    "target": r.target, "context": r.context, "dockerfile": r.dockerfile,
                    "platforms": r.platforms, "ran": r.count(StepResultKind::Ran),
                    "cached": r.count(StepResultKind::Cached), "failed": r.count(StepResultKind::Failed),
                })
            })
            .collect();
        return format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut rows =
        vec![["ID", "STARTED", "DURATION", "RESULT", "RAN", "CACHED", "TARGET", "CONTEXT"].map(String::from)];
    for r in records {
        rows.push([
            r.id.clone(),
            started(r),
            secs(r.duration_ms),
            r.result.clone(),
            r.count(StepResultKind::Ran).to_string(),
            r.count(StepResultKind::Cached).to_string(),
            target(r).to_string(),
            r.context.clone(),
        ]);
    }
    table(&rows)
}

/// One build, step by step: result, key, duration and the reason of each miss.
pub fn show(r: &BuildRecord, format: ListFormat) -> String {
    if format == ListFormat::Json {
        return format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default());
    }
    let mut s = format!(
        "Build {}: {} in {} at {}\nContext:    {}\nDockerfile: {}\nTarget:     {}\nPlatforms:  {}\n\n",
        r.id,
        r.result,
        secs(r.duration_ms),
        started(r),
        r.context,
        r.dockerfile,
        target(r),
        r.platforms.join(", ")
    );
    let mut rows = vec![["LINE", "RESULT", "KEY", "DURATION", "STEP"].map(String::from)];
    for step in &r.steps {
        rows.push([
            step.line.to_string(),
            step.result.word().to_string(),
            step.key[..12.min(step.key.len())].to_string(),
            secs(step.duration_ms),
            step.name.clone(),
        ]);
    }
    s.push_str(&table(&rows));
    let misses: Vec<_> = r.steps.iter().filter_map(|st| st.reason.as_ref().map(|(_, why)| (st.line, why))).collect();
    if !misses.is_empty() {
        s.push_str("\nWhy steps ran:\n");
        for (line, why) in misses {
            s.push_str(&format!("  Dockerfile:{line}: {why}\n"));
        }
    }
    s
}

/// What differs between two builds, step by step: each step of `b` whose key is not
/// the same step's key in `a`, with the input that changed; steps only in one of them.
pub fn diff(history: &History, a: &BuildRecord, b: &BuildRecord, format: ListFormat) -> String {
    let files = |c: &str| history.files(c);
    let mut changes = Vec::new();
    let mut same = 0;
    for step in &b.steps {
        match explain::same_step(step, &a.steps) {
            Some(before) if before.key == step.key => same += 1,
            Some(before) => {
                let (kind, why) = explain::reason(step, Some(before), &files);
                changes.push(json!({"step": step.name, "line": step.line, "kind": kind, "reason": why,
                    "from_key": before.key, "to_key": step.key}));
            }
            None => changes.push(json!({"step": step.name, "line": step.line, "kind": "added",
                "reason": format!("{}: only in {}", step.text, b.id), "from_key": null, "to_key": step.key})),
        }
    }
    for step in &a.steps {
        if explain::same_step(step, &b.steps).is_none() {
            changes.push(json!({"step": step.name, "line": step.line, "kind": "removed",
                "reason": format!("{}: only in {}", step.text, a.id), "from_key": step.key, "to_key": null}));
        }
    }
    if format == ListFormat::Json {
        let v = json!({"from": a.id, "to": b.id, "unchanged": same, "changes": changes});
        return format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut s =
        format!("{} → {}: {} step{} differ, {same} unchanged\n", a.id, b.id, changes.len(), plural(changes.len()));
    for c in &changes {
        s.push_str(&format!("  Dockerfile:{}: {}\n", c["line"], c["reason"].as_str().unwrap_or_default()));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}
