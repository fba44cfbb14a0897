//! Why a step missed the cache: its record compared with the same step's in the latest
//! earlier build. Pure functions; the caller loads the records and file lists.
//!
//! The same step is the one of the same platform and stage at the same place with the
//! same text; else the one with the same text (lines moved); else the one at the same
//! place (its instruction was edited). What changed is named in this order: the
//! instruction after expansion (build args and environment by name), the files it
//! selected, its base image, the step before it, any other input.

use std::collections::BTreeMap;

use strata_executor::context::SelectedFile;

use super::record::{InputRecord, StepRecord};

/// Files named in a reason before "and N more".
const NAMED_FILES: usize = 3;
/// An instruction longer than this is cut in a reason.
const TEXT_WIDTH: usize = 60;

/// The step of `earlier` that `step` is.
pub fn same_step<'a>(step: &StepRecord, earlier: &'a [StepRecord]) -> Option<&'a StepRecord> {
    let same_stage = |s: &&StepRecord| s.stage == step.stage && s.platform == step.platform;
    let candidates: Vec<&StepRecord> = earlier.iter().filter(same_stage).collect();
    if let Some(s) = candidates.iter().find(|s| s.position == step.position && s.text == step.text) {
        return Some(s);
    }
    if let Some(s) =
        candidates.iter().filter(|s| s.text == step.text).min_by_key(|s| s.position.abs_diff(step.position))
    {
        return Some(s);
    }
    candidates.into_iter().find(|s| s.position == step.position)
}

/// The reason `step` missed, given the same step of an earlier build (if any) and a
/// way to read stored file lists: (kind, text).
pub fn reason(
    step: &StepRecord,
    earlier: Option<&StepRecord>,
    files: &dyn Fn(&str) -> Option<Vec<SelectedFile>>,
) -> (String, String) {
    let text = |why: String| format!("{}: {why}", short(&step.text));
    let Some(before) = earlier else {
        return ("no_record".into(), text("no earlier build of this step".into()));
    };
    if before.key == step.key {
        return ("evicted".into(), text("its earlier result is no longer in the store".into()));
    }
    if before.text != step.text {
        return (
            "instruction".into(),
            text(format!("instruction changed: {} → {}", short(&before.text), short(&step.text))),
        );
    }
    if let Some(r) = op_change(step, before) {
        return (r.0, text(r.1));
    }
    if step.files != before.files {
        if let (Some(now), Some(then)) = (step.files.as_deref(), before.files.as_deref()) {
            if let (Some(now), Some(then)) = (files(now), files(then)) {
                if let Some((kind, why)) = files_change(&then, &now) {
                    return (kind, text(why));
                }
            }
        }
        return ("files".into(), text("the files it copies changed".into()));
    }
    for (i, (now, then)) in step.inputs.iter().zip(&before.inputs).enumerate() {
        if now.key == then.key {
            continue;
        }
        if let (Some((reference, digest)), Some((old_ref, old_digest))) = (&now.image, &then.image) {
            let why = if reference == old_ref {
                format!("base image {reference} changed: {} → {}", short_digest(old_digest), short_digest(digest))
            } else {
                format!("base image changed: {old_ref} → {reference}")
            };
            return ("base_image".into(), format!("FROM {reference}: {why}"));
        }
        return if i == 0 {
            ("parent".into(), text(format!("the step before it changed{}", at_line(now))))
        } else {
            ("input".into(), text(format!("its input {} changed{}", now.name, at_line(now))))
        };
    }
    ("key".into(), text("its cache key changed".into()))
}

fn at_line(input: &InputRecord) -> String {
    input.line.map(|l| format!(" (Dockerfile:{l})")).unwrap_or_default()
}

/// What differs in the operation itself: a build arg or environment variable by name,
/// else the first option that changed.
fn op_change(step: &StepRecord, before: &StepRecord) -> Option<(String, String)> {
    if step.op == before.op {
        return None;
    }
    let (now, then) = (step.op.as_object(), before.op.as_object());
    // Ops are externally tagged enums: {"Exec": {...}}.
    let inner = |o: Option<&serde_json::Map<String, serde_json::Value>>| {
        o.and_then(|m| m.values().next()).and_then(|v| v.as_object()).cloned()
    };
    let (Some(now), Some(then)) = (inner(now), inner(then)) else {
        return Some(("instruction".into(), "the instruction after expansion changed".into()));
    };
    if let (Some(a), Some(b)) = (now.get("env"), then.get("env")) {
        let (a, b) = (env_map(a), env_map(b));
        let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let (new, old) = (a.get(name), b.get(name));
            if new == old {
                continue;
            }
            let what = if step.args.contains(name) || before.args.contains(name) { "build arg" } else { "environment" };
            let kind = if what == "build arg" { "build_arg" } else { "env" };
            let why = match (old, new) {
                (Some(o), Some(n)) => format!("{what} {name} changed: {o:?} → {n:?}"),
                (None, Some(n)) => format!("{what} {name} set: {n:?}"),
                (Some(o), None) => format!("{what} {name} unset (was {o:?})"),
                (None, None) => continue,
            };
            return Some((kind.into(), why));
        }
    }
    let mut fields: Vec<&String> = now.keys().chain(then.keys()).collect();
    fields.dedup();
    for field in fields {
        if field == "env" {
            continue;
        }
        let (new, old) = (now.get(field), then.get(field));
        if new != old {
            let show =
                |v: Option<&serde_json::Value>| short(&v.map(|v| v.to_string()).unwrap_or_else(|| "none".into()));
            let what = if field == "args" || field == "sources" || field == "dest" {
                "the instruction after expansion changed"
            } else {
                "option changed"
            };
            return Some(("option".into(), format!("{what}: {field} {} → {}", show(old), show(new))));
        }
    }
    None
}

fn env_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str())
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How the selected files differ: (kind, text), none when they do not.
pub fn files_change(before: &[SelectedFile], now: &[SelectedFile]) -> Option<(String, String)> {
    let old: BTreeMap<&str, &SelectedFile> = before.iter().map(|f| (f.path.as_str(), f)).collect();
    let new: BTreeMap<&str, &SelectedFile> = now.iter().map(|f| (f.path.as_str(), f)).collect();
    let (mut changed, mut modes, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (path, f) in &new {
        match old.get(path) {
            None => added.push(*path),
            Some(o) if o.content != f.content => changed.push(*path),
            Some(o) if o.mode != f.mode => modes.push((*path, o.mode, f.mode)),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            removed.push(*path);
        }
    }
    let shown = |p: &str| if p.is_empty() { ".".to_string() } else { p.to_string() };
    if changed.is_empty() && added.is_empty() && removed.is_empty() {
        if modes.is_empty() {
            return None;
        }
        let list: Vec<String> =
            modes.iter().map(|(p, o, n)| format!("{} {:04o} → {:04o}", shown(p), o & 0o7777, n & 0o7777)).collect();
        return Some(("mode".into(), format!("mode only: {}", name_some(&list))));
    }
    let mut counts = Vec::new();
    let mut named: Vec<String> = Vec::new();
    let total_changed = changed.len() + modes.len();
    if total_changed > 0 {
        counts.push(format!("{total_changed} file{} changed", if total_changed == 1 { "" } else { "s" }));
    }
    if !added.is_empty() {
        counts.push(format!("{} added", added.len()));
    }
    if !removed.is_empty() {
        counts.push(format!("{} removed", removed.len()));
    }
    named.extend(changed.iter().map(|p| format!("{} (content)", shown(p))));
    named.extend(added.iter().map(|p| format!("{} (added)", shown(p))));
    named.extend(removed.iter().map(|p| format!("{} (removed)", shown(p))));
    named.extend(modes.iter().map(|(p, o, n)| format!("{} (mode {:04o} → {:04o})", shown(p), o & 0o7777, n & 0o7777)));
    Some(("files".into(), format!("{}: {}", counts.join(", "), name_some(&named))))
}

fn name_some(items: &[String]) -> String {
    let mut s = items.iter().take(NAMED_FILES).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > NAMED_FILES {
        s.push_str(&format!(" and {} more", items.len() - NAMED_FILES));
    }
    s
}

pub fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= TEXT_WIDTH {
        return one_line;
    }
    let mut s: String = one_line.chars().take(TEXT_WIDTH - 1).collect();
    s.push('…');
    s
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.chars().take(19).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::StepResultKind;

    fn file(path: &str, mode: u32, content: u64) -> SelectedFile {
        SelectedFile { path: path.into(), mode, content }
    }

    fn step(text: &str, position: usize, key: &str) -> StepRecord {
        StepRecord {
            name: format!("[{position}/5] {text}"),
            stage: "stage-0".into(),
            position,
            line: position,
            text: text.into(),
            platform: None,
            key: key.into(),
            op: serde_json::json!({"Exec": {"args": ["/bin/sh", "-c", "make"], "env": ["A=1", "PATH=/bin"], "cwd": "/"}}),
            args: vec!["A".into()],
            inputs: vec![InputRecord { key: "p1".into(), name: "[1/5] FROM x".into(), line: Some(1), image: None }],
            files: None,
            result: StepResultKind::Ran,
            duration_ms: 0,
            reason: None,
        }
    }

    fn no_files(_: &str) -> Option<Vec<SelectedFile>> {
        None
    }

    #[test]
    fn content_changes_are_named_with_a_few_files_then_a_count() {
        let before = vec![file("src", 0o40755, 0), file("src/a", 0o100644, 1), file("src/b", 0o100644, 2)];
        let mut now = before.clone();
        now[1].content = 9;
        assert_eq!(files_change(&before, &now).unwrap().1, "1 file changed: src/a (content)");
        let many: Vec<SelectedFile> = (0..6).map(|i| file(&format!("f{i}"), 0o100644, i)).collect();
        let (kind, text) = files_change(&[], &many).unwrap();
        assert_eq!(kind, "files");
        assert_eq!(text, "6 added: f0 (added), f1 (added), f2 (added) and 3 more");
        let (_, text) = files_change(&before, &before[..2]).unwrap();
        assert_eq!(text, "1 removed: src/b (removed)");
        assert!(files_change(&before, &before).is_none());
    }

    #[test]
    fn a_mode_only_change_says_so() {
        let before = vec![file("run.sh", 0o100664, 5)];
        let now = vec![file("run.sh", 0o100644, 5)];
        assert_eq!(files_change(&before, &now).unwrap(), ("mode".into(), "mode only: run.sh 0664 → 0644".into()));
    }

    #[test]
    fn build_args_and_environment_are_told_apart() {
        let before = step("RUN make", 3, "k1");
        let mut now = step("RUN make", 3, "k2");
        now.op =
            serde_json::json!({"Exec": {"args": ["/bin/sh", "-c", "make"], "env": ["A=2", "PATH=/bin"], "cwd": "/"}});
        assert_eq!(reason(&now, Some(&before), &no_files).1, "RUN make: build arg A changed: \"1\" → \"2\"");
        now.op = serde_json::json!({"Exec": {"args": ["/bin/sh", "-c", "make"], "env": ["A=1", "PATH=/usr/bin"], "cwd": "/"}});
        assert_eq!(reason(&now, Some(&before), &no_files).0, "env");
    }

    #[test]
    fn the_parent_then_the_base_image() {
        let before = step("RUN make", 3, "k1");
        let mut now = step("RUN make", 3, "k2");
        now.inputs[0].key = "p2".into();
        assert_eq!(reason(&now, Some(&before), &no_files).1, "RUN make: the step before it changed (Dockerfile:1)");
        let mut before = before;
        before.inputs[0].image = Some(("r/x:1".into(), "sha256:aaaaaaaaaaaaaaaaaaaa".into()));
        now.inputs[0].image = Some(("r/x:1".into(), "sha256:bbbbbbbbbbbbbbbbbbbb".into()));
        assert_eq!(
            reason(&now, Some(&before), &no_files),
            (
                "base_image".into(),
                "FROM r/x:1: base image r/x:1 changed: sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb".into()
            )
        );
    }

    #[test]
    fn steps_are_matched_by_place_and_text_then_text_then_place() {
        let earlier = vec![step("RUN a", 2, "1"), step("RUN b", 3, "2"), step("RUN c", 4, "3")];
        assert_eq!(same_step(&step("RUN b", 3, "x"), &earlier).unwrap().key, "2");
        // A line inserted above: the text is found one place down.
        assert_eq!(same_step(&step("RUN b", 4, "x"), &earlier).unwrap().key, "2");
        // An edited instruction: the same place.
        assert_eq!(same_step(&step("RUN z", 4, "x"), &earlier).unwrap().key, "3");
        let mut other_stage = step("RUN a", 2, "x");
        other_stage.stage = "build".into();
        assert!(same_step(&other_stage, &earlier).is_none());
        assert_eq!(reason(&step("RUN z", 4, "x"), earlier.get(2), &no_files).0, "instruction");
        assert_eq!(reason(&step("RUN z", 4, "x"), None, &no_files).1, "RUN z: no earlier build of this step");
    }
}
