//! Golden tests for `strata_frontend::dockerignore` against the cases transcribed
//! from moby/patternmatcher (`patternmatcher_test.go`, `ignorefile/ignorefile_test.go`).
//!
//! The corpus lives outside the repository (`../shared/corpus`); when it is absent
//! the test says so loudly and passes. Cases that cannot pass can be listed in
//! `tests/dockerignore_corpus.skip` as `<case id>\t<reason>` lines.

use std::collections::BTreeMap;

use serde_json::Value;
use strata_frontend::dockerignore::{
    matches_or_parent_matches_patterns, matches_patterns, read_ignore_file, MatchInfo, PatternMatcher,
};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/buildkit-parser/patternmatcher/patternmatcher_cases.json"
);
const SKIP_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dockerignore_corpus.skip");

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("string array").iter().map(|s| s.as_str().expect("string").to_string()).collect()
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key].as_str().unwrap_or_else(|| panic!("missing string field {key:?} in {case}"))
}

fn cases<'a>(root: &'a Value, section: &str, list: &str) -> &'a [Value] {
    root[section][list].as_array().unwrap_or_else(|| panic!("missing {section}.{list}"))
}

/// Every modern-matcher entry point upstream runs these cases through; returns a
/// description of each disagreement.
fn check_modern(pm: &PatternMatcher, text: &str, expected: bool) -> Vec<String> {
    let mut problems = Vec::new();
    match pm.matches_or_parent_matches(text) {
        Ok(got) if got == expected => {}
        other => problems.push(format!("matches_or_parent_matches -> {other:?}")),
    }
    // Walk the parent directories first, feeding each result to the next level.
    let parent = parent_dir(text);
    let mut info = MatchInfo::default();
    if parent != "." {
        let comps: Vec<&str> = parent.split('/').collect();
        for i in 0..comps.len() {
            match pm.matches_using_parent_results(&comps[..=i].join("/"), &info) {
                Ok((_, next)) => info = next,
                Err(e) => problems.push(format!("matches_using_parent_results(parent) -> {e}")),
            }
        }
    }
    match pm.matches_using_parent_results(text, &info) {
        Ok((got, _)) if got == expected => {}
        other => problems.push(format!("matches_using_parent_results -> {other:?}")),
    }
    match pm.matches_using_parent_results(text, &MatchInfo::default()) {
        Ok((got, _)) if got == expected => {}
        other => problems.push(format!("matches_using_parent_results(no context) -> {other:?}")),
    }
    problems
}

/// Go's `filepath.Dir` for the harness (walk of parent directories).
fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => strata_frontend::dockerignore::clean(&path[..=i]),
        None => ".".to_string(),
    }
}

fn expect_result(
    what: &str,
    got: Result<bool, strata_frontend::dockerignore::IgnoreError>,
    expected: bool,
    error: Option<&str>,
) -> Option<String> {
    match (got, error) {
        (Ok(g), None) if g == expected => None,
        (Err(e), Some(msg)) if e.to_string() == msg => None,
        (Err(_), Some("")) => None,
        (other, _) => Some(format!(
            "{what}: got {other:?}, want {}",
            match error {
                Some(m) => format!("error {m:?}"),
                None => format!("{expected}"),
            }
        )),
    }
}

#[test]
fn dockerignore_corpus() {
    let text = match std::fs::read_to_string(CORPUS) {
        Ok(t) => t,
        Err(e) => {
            let _ = e;
            strata_testsupport::skip::shared_missing(std::path::Path::new(CORPUS), "the dockerignore golden tests");
            return;
        }
    };
    let root: Value = serde_json::from_str(&text).expect("corpus is valid JSON");

    let mut skips: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(list) = std::fs::read_to_string(SKIP_FILE) {
        for line in list.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, reason) = line.split_once('\t').unwrap_or((line, ""));
            skips.insert(id.to_string(), reason.to_string());
        }
    }

    // (case id, problems); an empty problem list is a pass.
    let mut results: Vec<(String, Vec<String>)> = Vec::new();

    // matches_or_parent_matches: single patterns (incl. Unix-only) and lists.
    for list in ["single_pattern", "single_pattern_unix_only"] {
        for (i, case) in cases(&root, "matches_or_parent_matches", list).iter().enumerate() {
            let id = format!("matches_or_parent_matches.{list}[{i}]");
            let pattern = str_field(case, "pattern");
            let text = str_field(case, "text");
            let expected = case["expected"].as_bool().expect("expected");
            let problems = match PatternMatcher::new(&[pattern.to_string()]) {
                Ok(pm) => check_modern(&pm, text, expected),
                Err(e) => vec![format!("new failed: {e}")],
            };
            let problems = problems.into_iter().map(|p| format!("pattern={pattern:?} text={text:?}: {p}")).collect();
            results.push((id, problems));
        }
    }
    for (i, case) in cases(&root, "matches_or_parent_matches", "multi_pattern").iter().enumerate() {
        let id = format!("matches_or_parent_matches.multi_pattern[{i}]");
        let patterns = strings(&case["patterns"]);
        let text = str_field(case, "text");
        let expected = case["expected"].as_bool().expect("expected");
        let problems = match PatternMatcher::new(&patterns) {
            Ok(pm) => check_modern(&pm, text, expected),
            Err(e) => vec![format!("new failed: {e}")],
        };
        let problems = problems.into_iter().map(|p| format!("patterns={patterns:?} text={text:?}: {p}")).collect();
        results.push((id, problems));
    }

    // legacy_matches: package-level Matches(text, [pattern]); the modern
    // package-level function must agree (checked upstream-side by the corpus).
    for (i, case) in cases(&root, "legacy_matches", "cases").iter().enumerate() {
        let id = format!("legacy_matches[{i}]");
        let pattern = str_field(case, "pattern");
        let text = str_field(case, "text");
        let expected = case["expected"].as_bool().expect("expected");
        let error = case["error"].as_str();
        let patterns = vec![pattern.to_string()];
        let problems = [
            expect_result("matches", matches_patterns(text, &patterns), expected, error),
            expect_result(
                "matches_or_parent_matches",
                matches_or_parent_matches_patterns(text, &patterns),
                expected,
                error,
            ),
        ]
        .into_iter()
        .flatten()
        .map(|p| format!("pattern={pattern:?} text={text:?}: {p}"))
        .collect();
        results.push((id, problems));
    }

    // simple_matches: package-level Matches(file, patterns).
    for (i, case) in cases(&root, "simple_matches", "cases").iter().enumerate() {
        let name = str_field(case, "name");
        let id = format!("simple_matches[{i}]");
        let file = str_field(case, "file");
        let patterns = strings(&case["patterns"]);
        let expected = case["expected"].as_bool().unwrap_or(false);
        let error = case["error"].as_bool().unwrap_or(false).then_some("");
        let problems = expect_result("matches", matches_patterns(file, &patterns), expected, error)
            .map(|p| format!("{name}: file={file:?} patterns={patterns:?}: {p}"))
            .into_iter()
            .collect();
        results.push((id, problems));
    }

    // new_matcher: trimming, empty patterns, exclusion flag, lone `!`.
    for (i, case) in cases(&root, "new_matcher", "cases").iter().enumerate() {
        let id = format!("new_matcher[{i}]");
        let patterns = strings(&case["patterns"]);
        let mut problems = Vec::new();
        match PatternMatcher::new(&patterns) {
            Ok(pm) => {
                if case["error"].as_bool() == Some(true) {
                    problems.push("expected an error, got Ok".to_string());
                }
                if let Some(n) = case["expected_count"].as_u64() {
                    if pm.len() as u64 != n {
                        problems.push(format!("count {} != {n}", pm.len()));
                    }
                }
                if let Some(x) = case["expected_exclusions"].as_bool() {
                    if pm.exclusions() != x {
                        problems.push(format!("exclusions {} != {x}", pm.exclusions()));
                    }
                }
            }
            Err(e) => {
                if case["error"].as_bool() != Some(true) {
                    problems.push(format!("unexpected error {e}"));
                }
            }
        }
        let problems = problems.into_iter().map(|p| format!("patterns={patterns:?}: {p}")).collect();
        results.push((id, problems));
    }

    // malformed_pattern_repeated: valid for New, bad when evaluated, every time.
    {
        let section = &root["malformed_pattern_repeated"];
        let patterns = strings(&section["patterns"]);
        let text = str_field(section, "text");
        let want = str_field(section, "expected_error");
        let calls = section["calls"].as_u64().unwrap_or(2);
        let mut problems = Vec::new();
        match PatternMatcher::new(&patterns) {
            Ok(pm) => {
                for call in 1..=calls {
                    match pm.matches_or_parent_matches(text) {
                        Err(e) if e.to_string() == want => {}
                        other => problems.push(format!("call {call}: got {other:?}, want {want:?}")),
                    }
                }
            }
            Err(e) => problems.push(format!("new failed: {e}")),
        }
        results.push(("malformed_pattern_repeated".to_string(), problems));
    }

    // ignorefile_read_all.
    for (i, case) in cases(&root, "ignorefile_read_all", "cases").iter().enumerate() {
        let id = format!("ignorefile_read_all[{i}]");
        let content = str_field(case, "content");
        let expected = strings(&case["expected"]);
        let got = read_ignore_file(content);
        let problems = if got == expected {
            Vec::new()
        } else {
            vec![format!("content={content:?}: got {got:?}, want {expected:?}")]
        };
        results.push((id, problems));
    }

    // `compile` is upstream-internal (Go regexp strings): reference only.

    let mut passed = 0;
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for (id, problems) in &results {
        if let Some(reason) = skips.get(id) {
            skipped.push(format!("{id}: {reason}"));
        } else if problems.is_empty() {
            passed += 1;
        } else {
            for p in problems {
                failures.push(format!("{id}: {p}"));
            }
        }
    }
    let unknown: Vec<&String> = skips.keys().filter(|k| !results.iter().any(|(id, _)| id == *k)).collect();
    assert!(unknown.is_empty(), "skip file names unknown cases: {unknown:?}");

    for s in &skipped {
        eprintln!("skipped {s}");
    }
    println!("dockerignore corpus: {passed} cases passed");
    eprintln!("dockerignore corpus: {passed} cases passed, {} skipped, {} failing", skipped.len(), failures.len());
    assert!(failures.is_empty(), "failing dockerignore cases:\n{}", failures.join("\n"));
    // A corpus that shrank or was misread would pass with nothing checked.
    assert!(passed >= 140, "only {passed} dockerignore cases ran (145 expected)");
}
