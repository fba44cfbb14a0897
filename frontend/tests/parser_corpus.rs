//! BuildKit's parser corpus (`../shared/corpus/buildkit-parser`): testfiles with their
//! AST dumps, negative cases, the line-number case and the transcribed parser cases.
//! Cases that cannot pass are listed in `tests/parser_corpus.skip` with the reason.

mod common;

use common::{eq, Tally};

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_frontend::ast::{self, parse};
use strata_frontend::scanner::detect_directive;

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/buildkit-parser");
    if p.is_dir() {
        Some(p)
    } else {
        strata_testsupport::skip::shared_missing(&p, "the parser corpus");
        None
    }
}

#[test]
fn buildkit_parser_corpus() {
    let Some(root) = corpus() else { return };
    let mut t = Tally::new("parser_corpus.skip");

    // testfiles: dump must equal `result`.
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("testfiles")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let src = std::fs::read(dir.join("Dockerfile")).unwrap();
        let want = std::fs::read_to_string(dir.join("result")).unwrap();
        let r = match parse(&src) {
            Ok(p) => eq(p.dump(), want),
            Err(e) => Err(format!("parse error: {e}")),
        };
        t.check(format!("testfiles/{name}"), r);
    }

    // testfiles-negative: parsing must fail.
    for e in std::fs::read_dir(root.join("testfiles-negative")).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let src = std::fs::read(dir.join("Dockerfile")).unwrap();
        let r = match parse(&src) {
            Ok(p) => Err(format!("parsed, but must fail: {}", p.dump())),
            Err(_) => Ok(()),
        };
        t.check(format!("testfiles-negative/{name}"), r);
    }

    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("transcribed/parser_cases.json")).unwrap()).unwrap();

    // line numbers
    {
        let ln = &cases["line_numbers"];
        let src = std::fs::read(root.join(ln["dockerfile_path"].as_str().unwrap())).unwrap();
        let r = parse(&src).map_err(|e| e.to_string()).and_then(|p| {
            let got: Vec<[u64; 2]> = p.children.iter().map(|c| [c.start_line as u64, c.end_line as u64]).collect();
            let want: Vec<[u64; 2]> = ln["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| [c[0].as_u64().unwrap(), c[1].as_u64().unwrap()])
                .collect();
            eq(
                (p.start_line as u64, p.end_line as u64, got),
                (ln["root_start_line"].as_u64().unwrap(), ln["root_end_line"].as_u64().unwrap(), want),
            )
        });
        t.check("line_numbers".into(), r);
    }

    // parse_words
    for (i, c) in cases["parse_words"]["cases"].as_array().unwrap().iter().enumerate() {
        let got = strata_frontend::words::parse_words(c["input"].as_str().unwrap(), '\\');
        let want: Vec<String> = serde_json::from_value(c["expected"].clone()).unwrap();
        t.check(format!("parse_words/{i}"), eq(got, want));
    }

    // empty continuation warnings
    {
        let c = &cases["empty_continuation_warnings"];
        let r = parse(c["dockerfile"].as_str().unwrap().as_bytes()).map_err(|e| e.to_string()).and_then(|p| {
            eq(p.warnings.len() as u64, c["expect_warning_count"].as_u64().unwrap())?;
            for (w, want) in p.warnings.iter().zip(c["warnings"].as_array().unwrap()) {
                for frag in want["short_contains"].as_array().unwrap() {
                    let frag = frag.as_str().unwrap();
                    if !w.short.contains(frag) {
                        return Err(format!("warning {:?} lacks {frag:?}", w.short));
                    }
                }
                if let Some(d) = want["detail0_contains"].as_str() {
                    if !w.detail[0].contains(d) {
                        return Err(format!("detail {:?} lacks {d:?}", w.detail[0]));
                    }
                }
            }
            Ok(())
        });
        t.check("empty_continuation_warnings".into(), r);
    }

    // line too long
    {
        let c = &cases["line_too_long"];
        let src = format!(
            "{}{}{}",
            c["prefix"].as_str().unwrap(),
            c["repeat_char"].as_str().unwrap().repeat(c["repeat_count"].as_u64().unwrap() as usize),
            c["suffix"].as_str().unwrap()
        );
        let r = match parse(src.as_bytes()) {
            Ok(_) => Err("parsed a too-long line".to_string()),
            Err(e) => eq(e.message, c["expected_error"].as_str().unwrap().to_string()),
        };
        t.check("line_too_long".into(), r);
    }

    // heredoc extraction
    {
        let c = &cases["heredoc_extract"];
        let p = parse(c["dockerfile"].as_str().unwrap().as_bytes());
        for (i, want) in c["expected_heredocs"].as_array().unwrap().iter().enumerate() {
            let r = match &p {
                Err(e) => Err(format!("parse error {e}")),
                Ok(p) => {
                    let got: Vec<Value> = p.children[i + 1]
                        .heredocs
                        .iter()
                        .map(|h| {
                            serde_json::json!({"name": h.name, "content": h.content, "expand": h.expand,
                                               "chomp": h.chomp, "file_descriptor": h.file_descriptor})
                        })
                        .collect();
                    let want: Vec<Value> = if want.is_null() { Vec::new() } else { want.as_array().unwrap().clone() };
                    eq(got, want)
                }
            };
            t.check(format!("heredoc_extract/{i}"), r);
        }
    }
    {
        let c = &cases["heredoc_json_form"];
        let p = parse(c["dockerfile"].as_str().unwrap().as_bytes()).unwrap();
        for i in c["children_without_heredocs"].as_array().unwrap() {
            let i = i.as_u64().unwrap() as usize;
            t.check(format!("heredoc_json_form/{i}"), eq(p.children[i].heredocs.len(), 0));
        }
    }
    for (i, c) in cases["heredoc_chomp"].as_array().unwrap().iter().enumerate() {
        t.check(
            format!("heredoc_chomp/{i}"),
            eq(ast::chomp_tabs(c["input"].as_str().unwrap()), c["expected"].as_str().unwrap().to_string()),
        );
    }
    {
        let c = &cases["heredoc_word"];
        let name = c["valid_expected_name"].as_str().unwrap();
        for w in c["valid"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            let r = match ast::parse_heredoc(w) {
                Ok(Some(h)) => eq(h.name.as_str(), name),
                other => Err(format!("{other:?}")),
            };
            t.check(format!("heredoc_word/valid/{w}"), r);
        }
        for w in c["invalid"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            let r = match ast::parse_heredoc(w) {
                Err(_) => Ok(()),
                other => Err(format!("must fail, got {other:?}")),
            };
            t.check(format!("heredoc_word/invalid/{w}"), r);
        }
        for w in c["not_heredoc"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            let r = match ast::parse_heredoc(w) {
                Ok(None) => Ok(()),
                other => Err(format!("must be no heredoc, got {other:?}")),
            };
            t.check(format!("heredoc_word/not/{w}"), r);
        }
    }
    for c in cases["heredocs_from_line"]["cases"].as_array().unwrap() {
        let line = c["line"].as_str().unwrap();
        let want: Vec<String> = serde_json::from_value(c["names"].clone()).unwrap();
        let r = ast::heredocs_from_line(line).map(|v| v.into_iter().map(|h| h.name).collect::<Vec<_>>());
        t.check(format!("heredocs_from_line/{line}"), r.and_then(|got| eq(got, want)));
    }

    // directives
    for (i, c) in cases["directives_parse_all"]["cases"].as_array().unwrap().iter().enumerate() {
        let src = format!("{}FROM x\n", c["input"].as_str().unwrap());
        let r = parse(src.as_bytes()).map_err(|e| e.to_string()).and_then(|p| {
            let got: Vec<Value> =
                p.directives.seen.iter().map(|(n, v, _)| serde_json::json!({"name": n, "value": v})).collect();
            eq(got, c["expected"].as_array().unwrap().clone())
        });
        t.check(format!("directives_parse_all/{i}"), r);
    }
    for (section, default_name) in [("detect_syntax", "syntax"), ("parse_directive", "")] {
        for (i, c) in cases[section]["cases"].as_array().unwrap().iter().enumerate() {
            let name = c["directive"].as_str().unwrap_or(default_name);
            let found = detect_directive(name, c["input"].as_str().unwrap());
            let r = (|| {
                eq(found.is_some(), c["found"].as_bool().unwrap())?;
                let f = found.clone().unwrap_or(strata_frontend::scanner::FoundDirective {
                    value: String::new(),
                    cmdline: String::new(),
                    start_line: 0,
                    end_line: 0,
                });
                for (key, got) in [("ref", &f.value), ("value", &f.value), ("cmdline", &f.cmdline)] {
                    if let Some(w) = c[key].as_str() {
                        eq(got.as_str(), w)?;
                    }
                }
                for (key, got) in [("start_line", f.start_line), ("end_line", f.end_line)] {
                    if let Some(w) = c[key].as_u64() {
                        eq(got as u64, w)?;
                    }
                }
                Ok(())
            })();
            t.check(format!("{section}/{i}"), r);
        }
    }

    // JSON arrays
    for c in cases["json_arrays"]["valid"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        let want: Vec<String> = serde_json::from_value(c["expected"].clone()).unwrap();
        t.check(
            format!("json_arrays/valid/{input}"),
            eq(strata_frontend::grammar::parse_json_array(input), strata_frontend::grammar::JsonArgs::Strings(want)),
        );
    }
    for c in cases["json_arrays"]["invalid"].as_array().unwrap() {
        let input = c.as_str().unwrap();
        t.check(
            format!("json_arrays/invalid/{input}"),
            eq(strata_frontend::grammar::parse_json_array(input), strata_frontend::grammar::JsonArgs::NotStringArray),
        );
    }
    // name_val
    for (i, c) in cases["name_val"]["cases"].as_array().unwrap().iter().enumerate() {
        let inst = c["instruction"].as_str().unwrap();
        let line = format!("{inst} {}", c["input"].as_str().unwrap());
        let r = ast::node_from_line(&line, '\\', Vec::new());
        let r = if c["error"].as_bool() == Some(true) {
            match r {
                Err(_) => Ok(()),
                Ok(n) => Err(format!("must fail, got {:?}", n.values())),
            }
        } else {
            let want: Vec<String> = serde_json::from_value(c["expected_values"].clone()).unwrap();
            r.and_then(|n| eq(n.values().into_iter().map(String::from).collect::<Vec<_>>(), want))
        };
        t.check(format!("name_val/{i}"), r);
    }

    for s in &t.skipped {
        eprintln!("skipped {s}");
    }
    eprintln!("parser corpus: {} passed, {} skipped, {} failed", t.passed, t.skipped.len(), t.failed.len());
    assert!(t.failed.is_empty(), "failing parser corpus cases:\n{}", t.failed.join("\n"));
    assert!(t.passed >= 140, "only {} parser corpus cases ran (145 expected)", t.passed);
}
