//! 24 real-world Dockerfiles (`../shared/corpus/real-dockerfiles`), each with the
//! AST dump and a stage summary BuildKit produced for it: our dump must equal
//! `result`, and our stages, global ARGs, instruction count and heredocs must equal
//! `parsed.json`. Every stage must also give a `--call=targets` / `--call=outline`
//! answer without error.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use strata_frontend::ast::parse;
use strata_frontend::instructions::{parse_dockerfile, Dockerfile, Instruction};
use strata_frontend::outline::{outline, targets, OutlineOptions};

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/real-dockerfiles");
    if p.is_dir() {
        Some(p)
    } else {
        strata_testsupport::skip::shared_missing(&p, "the real Dockerfiles");
        None
    }
}

/// Our view of a file in `parsed.json`'s shape.
fn summary(parsed: &strata_frontend::Parsed, df: &Dockerfile) -> Value {
    let heredocs: Vec<Value> = parsed
        .children
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.heredocs.is_empty())
        .map(|(i, c)| {
            json!({
                "index": i,
                "start_line": c.start_line,
                "end_line": c.end_line,
                "heredocs": c.heredocs.iter().map(|h| json!({
                    "name": h.name,
                    "file_descriptor": h.file_descriptor,
                    "expand": h.expand,
                    "chomp": h.chomp,
                    "content": h.content,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let meta_args: Vec<Value> = df
        .meta_args
        .iter()
        .flat_map(|m| m.instruction.iter().map(|a| json!({"key": a.key, "value": a.value})))
        .collect();
    let stages: Vec<Value> = df
        .stages
        .iter()
        .map(|s| {
            let commands: Vec<Value> = s
                .commands
                .iter()
                .map(|c| {
                    let mut v = json!({"name": c.keyword, "start_line": c.location.start_line});
                    if let Instruction::Copy(copy) = &c.instruction {
                        if let Some(from) = &copy.from {
                            v["copy_from"] = json!(from);
                        }
                    }
                    v
                })
                .collect();
            json!({
                "name": s.name.clone().unwrap_or_default(),
                "base_name": s.base_name,
                "platform": s.platform.clone().unwrap_or_default(),
                "commands": commands,
            })
        })
        .collect();
    json!({
        "warnings": parsed.warnings.iter().map(|w| w.short.clone()).collect::<Vec<_>>(),
        "instruction_count": parsed.children.len(),
        "children_with_heredocs": heredocs,
        "meta_args": meta_args,
        "stages": stages,
    })
}

/// The first difference between two JSON values, as a path.
fn first_difference(path: &str, got: &Value, want: &Value) -> Option<String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => {
                        if let Some(d) = first_difference(&p, gv, wv) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{p}: missing, want {wv}")),
                }
            }
            g.keys().find(|k| !w.contains_key(*k)).map(|k| format!("{path}.{k}: unexpected"))
        }
        (Value::Array(g), Value::Array(w)) => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                if let Some(d) = first_difference(&format!("{path}[{i}]"), gv, wv) {
                    return Some(d);
                }
            }
            (g.len() != w.len()).then(|| format!("{path}: {} items, want {}", g.len(), w.len()))
        }
        _ => (got != want).then(|| format!("{path}: got {got}, want {want}")),
    }
}

fn check_case(dir: &Path) -> Result<(), String> {
    let src = std::fs::read(dir.join("Dockerfile")).map_err(|e| e.to_string())?;
    let want_dump = std::fs::read_to_string(dir.join("result")).map_err(|e| e.to_string())?;
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("parsed.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let parsed = parse(&src).map_err(|e| format!("parse error: {e}"))?;
    if parsed.dump() != want_dump {
        let line = parsed.dump().lines().zip(want_dump.lines()).position(|(a, b)| a != b);
        return Err(format!("AST dump differs from `result` (first differing line: {line:?})"));
    }
    let df = parse_dockerfile(&parsed).map_err(|e| format!("conversion error: {e}"))?;
    let got = summary(&parsed, &df);
    if let Some(d) = first_difference("", &got, &want) {
        return Err(format!("parsed.json differs at {d}"));
    }
    // No reference output for these, but every stage must be describable.
    let listed = targets(&df);
    if listed.targets.len() != df.stages.len() || !listed.targets.last().is_some_and(|t| t.default) {
        return Err("targets do not list every stage with the last as default".to_string());
    }
    for (i, stage) in df.stages.iter().enumerate() {
        let target = stage.name.clone().unwrap_or_else(|| i.to_string());
        let opts = OutlineOptions::for_platforms("linux/amd64", "linux/amd64", Some(&target));
        outline(&df, &opts).map_err(|e| format!("outline of target {target}: {e}"))?;
    }
    Ok(())
}

#[test]
fn real_dockerfiles_match_buildkit() {
    let Some(root) = corpus() else { return };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    let mut failed = Vec::new();
    for dir in &dirs {
        if let Err(e) = check_case(dir) {
            failed.push(format!("{}: {e}", dir.file_name().unwrap().to_string_lossy()));
        }
    }
    eprintln!("real dockerfiles: {} passed, 0 skipped, {} failed", dirs.len() - failed.len(), failed.len());
    for f in &failed {
        eprintln!("  FAILED {f}");
    }
    assert_eq!(dirs.len(), 24, "expected 24 real Dockerfiles");
    assert!(failed.is_empty(), "{} real Dockerfile(s) differ from BuildKit", failed.len());
}
