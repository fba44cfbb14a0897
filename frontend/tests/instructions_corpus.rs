//! BuildKit's instruction-conversion cases, transcribed in
//! `../shared/corpus/buildkit-parser/transcribed/instructions_cases.json`: exact and
//! partial error messages, hand-built nodes, HEALTHCHECK durations, doc comments, RUN
//! flags, COPY / RUN heredocs, exec vs shell form, and inputs that must not panic.
//! Cases that cannot pass are listed in `tests/instructions_corpus.skip` with the reason.

mod common;

use common::{eq, Tally};

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_frontend::ast::{parse, Arg, Node};
use strata_frontend::instructions::{
    parse_dockerfile, parse_healthcheck_duration, parse_instruction, Command, Instruction, ShellOrExec,
};

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/buildkit-parser/transcribed");
    if p.join("instructions_cases.json").is_file() {
        Some(p.join("instructions_cases.json"))
    } else {
        strata_testsupport::skip::shared_missing(&p, "the instructions corpus");
        None
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default()
}

fn cases(section: &Value) -> Vec<Value> {
    section["cases"].as_array().cloned().unwrap_or_default()
}

/// Parse a one-instruction Dockerfile and convert its first instruction.
fn first_instruction(dockerfile: &str) -> Result<Result<Command, String>, String> {
    let parsed = parse(dockerfile.as_bytes()).map_err(|e| format!("parse error: {e}"))?;
    let node = parsed.children.first().ok_or("no instruction")?;
    Ok(parse_instruction(node).map_err(|e| e.message()))
}

fn expect_error(dockerfile: &str, check: impl Fn(&str) -> bool, want: &str) -> Result<(), String> {
    match first_instruction(dockerfile)? {
        Ok(c) => Err(format!("converted without error: {:?}", c.instruction)),
        Err(msg) if check(&msg) => Ok(()),
        Err(msg) => Err(format!("\n  got error:  {msg:?}\n  want: {want:?}")),
    }
}

fn node_from_values(instruction: &str, values: &[String]) -> Node {
    Node {
        value: instruction.to_lowercase(),
        keyword: instruction.to_string(),
        original: format!("{instruction} {}", values.join(" ")),
        flags: Vec::new(),
        args: values.iter().cloned().map(Arg::Value).collect(),
        json: false,
        heredocs: Vec::new(),
        start_line: 1,
        end_line: 1,
        comments: Vec::new(),
    }
}

#[test]
fn buildkit_instructions_corpus() {
    let Some(path) = corpus() else { return };
    let root: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut t = Tally::new("instructions_corpus.skip");

    for (i, c) in cases(&root["errors_exact"]).iter().enumerate() {
        let want = s(&c["expected_error"]);
        let r = expect_error(&s(&c["dockerfile"]), |m| m == want, &want);
        t.check(format!("errors_exact/{i}"), r);
    }

    for (i, c) in cases(&root["errors_contains"]).iter().enumerate() {
        let want = s(&c["expected_error_contains"]);
        let r = expect_error(&s(&c["dockerfile"]), |m| m.contains(&want), &want);
        t.check(format!("errors_contains/{i}"), r);
    }

    for (i, c) in cases(&root["ast_level"]).iter().enumerate() {
        let node = node_from_values(&s(&c["instruction"]), &strings(&c["node_values"]));
        let got = parse_instruction(&node);
        let r = if let Some(want) = c["expected_error"].as_str() {
            match got {
                Ok(cmd) => Err(format!("converted without error: {:?}", cmd.instruction)),
                Err(e) => eq(e.message().as_str(), want),
            }
        } else {
            match got {
                Ok(Command { instruction: Instruction::Healthcheck(hc), .. }) => {
                    eq(hc.test, strings(&c["expected_healthcheck_test"]))
                }
                other => Err(format!("not a healthcheck: {other:?}")),
            }
        };
        t.check(format!("ast_level/{i}"), r);
    }

    for (i, c) in cases(&root["healthcheck_interval"]).iter().enumerate() {
        let value = s(&c["value"]);
        let direct = parse_healthcheck_duration("interval", &value);
        // The same value through a whole HEALTHCHECK instruction.
        let via_dockerfile = first_instruction(&format!("HEALTHCHECK {}={value} CMD true", s(&c["flag"])));
        let r = match c["error_contains"].as_str() {
            Some(want) => match (direct, via_dockerfile) {
                (Err(e), Ok(Err(msg))) if e.to_string().contains(want) && msg.contains(want) => Ok(()),
                other => Err(format!("want an error containing {want:?}, got {other:?}")),
            },
            None => match (direct, via_dockerfile) {
                (Ok(_), Ok(Ok(_))) => Ok(()),
                other => Err(format!("want success, got {other:?}")),
            },
        };
        t.check(format!("healthcheck_interval/{i}"), r);
    }

    {
        let case = &root["doc_comments"]["case"];
        let r = (|| -> Result<(), String> {
            let parsed = parse(s(&case["dockerfile"]).as_bytes()).map_err(|e| e.to_string())?;
            let df = parse_dockerfile(&parsed).map_err(|e| e.to_string())?;
            let want = &case["expected"];
            let doc = |d: &Option<String>| d.clone().unwrap_or_default();
            let got_meta: Vec<(String, String)> =
                df.meta_args.iter().flat_map(|m| m.instruction.iter().map(|a| (a.key.clone(), doc(&a.doc)))).collect();
            let want_meta: Vec<(String, String)> =
                want["meta_args"].as_array().unwrap().iter().map(|a| (s(&a["key"]), s(&a["doc"]))).collect();
            eq(got_meta, want_meta)?;
            let want_stages = want["stages"].as_array().unwrap();
            eq(df.stages.len(), want_stages.len())?;
            for (stage, ws) in df.stages.iter().zip(want_stages) {
                eq(doc(&stage.doc), s(&ws["doc"]))?;
                let want_cmds = ws["commands"].as_array().unwrap();
                eq(stage.commands.len(), want_cmds.len())?;
                for (cmd, wc) in stage.commands.iter().zip(want_cmds) {
                    eq(cmd.instruction.name().to_string(), s(&wc["instruction"]))?;
                    let Instruction::Arg(args) = &cmd.instruction else { return Err("not an ARG".into()) };
                    let got: Vec<(String, String)> = args.iter().map(|a| (a.key.clone(), doc(&a.doc))).collect();
                    let want: Vec<(String, String)> =
                        wc["args"].as_array().unwrap().iter().map(|a| (s(&a["key"]), s(&a["doc"]))).collect();
                    eq(got, want)?;
                }
            }
            Ok(())
        })();
        t.check("doc_comments".to_string(), r);
    }

    for (i, c) in cases(&root["run_flags_used"]).iter().enumerate() {
        let r = match first_instruction(&s(&c["dockerfile"])) {
            Ok(Ok(cmd)) => eq(cmd.flags_used, strings(&c["expected_flags_used"])),
            other => Err(format!("{other:?}")),
        };
        t.check(format!("run_flags_used/{i}"), r);
    }

    for (i, c) in cases(&root["copy_heredoc"]).iter().enumerate() {
        let r = match first_instruction(&s(&c["dockerfile"])) {
            Ok(Ok(Command { instruction: Instruction::Copy(copy), .. })) => (|| {
                eq(copy.dest.clone(), s(&c["dest"]))?;
                eq(copy.sources.clone(), strings(&c["source_paths"]))?;
                let got: Vec<(String, String, bool)> =
                    copy.heredocs.iter().map(|h| (h.path.clone(), h.data.clone(), h.expand)).collect();
                let want: Vec<(String, String, bool)> = c["source_contents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| (s(&h["path"]), s(&h["data"]), h["expand"].as_bool().unwrap_or(false)))
                    .collect();
                eq(got, want)
            })(),
            other => Err(format!("not a COPY: {other:?}")),
        };
        t.check(format!("copy_heredoc/{i}"), r);
    }

    for (i, c) in cases(&root["run_heredoc"]).iter().enumerate() {
        let r = match first_instruction(&s(&c["dockerfile"])) {
            Ok(Ok(Command { instruction: Instruction::Run(run), .. })) => (|| {
                eq(run.cmd.is_shell_form(), c["prepend_shell"].as_bool().unwrap_or(false))?;
                eq(run.cmd.to_args(), strings(&c["cmd_line"]))?;
                let got: Vec<(String, String, bool)> =
                    run.heredocs.iter().map(|h| (h.name.clone(), h.data.clone(), h.chomp)).collect();
                let want: Vec<(String, String, bool)> = c["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| (s(&f["name"]), s(&f["data"]), f["chomp"].as_bool().unwrap_or(false)))
                    .collect();
                eq(got, want)
            })(),
            other => Err(format!("not a RUN: {other:?}")),
        };
        t.check(format!("run_heredoc/{i}"), r);
    }

    for (i, c) in cases(&root["handle_json_args"]).iter().enumerate() {
        let got = ShellOrExec::from_args(strings(&c["args"]), c["json"].as_bool().unwrap_or(false)).to_args();
        t.check(format!("handle_json_args/{i}"), eq(got, strings(&c["expected"])));
    }

    let robustness = &root["robustness"];
    for instruction in strings(&robustness["instructions"]) {
        for arg in strings(&robustness["arg_strings"]) {
            let src = format!("FROM busybox\n{instruction} {arg}");
            let r = std::panic::catch_unwind(|| {
                if let Ok(parsed) = parse(src.as_bytes()) {
                    let _ = parse_dockerfile(&parsed);
                }
            })
            .map_err(|_| "panicked".to_string());
            t.check(format!("robustness/{instruction} {arg}"), r);
        }
    }

    eprintln!("instructions corpus: {} passed, {} skipped, {} failed", t.passed, t.skipped.len(), t.failed.len());
    for s in &t.skipped {
        eprintln!("  skipped {s}");
    }
    for f in &t.failed {
        eprintln!("  FAILED {f}");
    }
    assert!(t.failed.is_empty(), "{} instructions corpus case(s) failed", t.failed.len());
    // Every section read as JSON defaults to no cases: make sure they were there.
    assert!(t.passed >= 130, "only {} instructions corpus cases ran (137 expected)", t.passed);
}
