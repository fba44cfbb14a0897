//! Golden tests for `strata_frontend::shell` against BuildKit's shell-lexer corpus
//! (`../shared/corpus/buildkit-parser`, see its README, sections 2 and 3 and
//! `transcribed/shell_lex_cases.json`).
//!
//! Cases that cannot pass may be listed in `tests/shell_corpus.skip`, one per line:
//! `case id<TAB>reason`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_frontend::shell::{Env, EnvList, Lexer};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/buildkit-parser");
const SKIP_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/shell_corpus.skip");

/// Outcome bookkeeping shared by all sections.
struct Report {
    skips: HashMap<String, String>,
    used_skips: BTreeSet<String>,
    passed: usize,
    skipped: usize,
    failures: Vec<String>,
}

impl Report {
    fn new() -> Self {
        let mut skips = HashMap::new();
        if let Ok(text) = fs::read_to_string(SKIP_FILE) {
            for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
                let (id, reason) = line.split_once('\t').unwrap_or((line, "no reason given"));
                skips.insert(id.trim().to_string(), reason.trim().to_string());
            }
        }
        Report { skips, used_skips: BTreeSet::new(), passed: 0, skipped: 0, failures: Vec::new() }
    }

    /// Record one case. `check` returns `Err(description)` on failure.
    fn case(&mut self, id: String, check: impl FnOnce() -> Result<(), String>) {
        if let Some(reason) = self.skips.get(&id) {
            eprintln!("skipping {id}: {reason}");
            self.used_skips.insert(id);
            self.skipped += 1;
            return;
        }
        match check() {
            Ok(()) => self.passed += 1,
            Err(why) => self.failures.push(format!("{id}: {why}")),
        }
    }
}

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(CORPUS);
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        strata_testsupport::skip::shared_missing(dir, "the BuildKit shell corpus");
        None
    }
}

fn read(dir: &Path, rel: &str) -> String {
    let path = dir.join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `shell/envVarTest`: `PLATFORM | input | expected` through `process_word`.
fn env_var_test(dir: &Path, report: &mut Report) {
    let lexer = Lexer::new('\\');
    let env = EnvList::from_iter(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    for (n, line) in read(dir, "shell/envVarTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id = format!("envVarTest:{}", n + 1);
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            report.failures.push(format!("{id}: malformed line {line:?}"));
            continue;
        };
        if platform == "W" {
            continue;
        }
        report.case(id, || {
            let got = lexer.process_word(input, &env).map(|e| e.result);
            match (expected, got) {
                ("error", Err(_)) => Ok(()),
                ("error", Ok(w)) => Err(format!("{input:?}: expected an error, got {w:?}")),
                (_, Err(e)) => Err(format!("{input:?}: expected {expected:?}, got error {e}")),
                (_, Ok(w)) if w == expected => Ok(()),
                (_, Ok(w)) => Err(format!("{input:?}: expected {expected:?}, got {w:?}")),
            }
        });
    }
}

/// `shell/wordsTest`: `ENV` lines and `input | w1,w2…` through `process_words`.
fn words_test(dir: &Path, report: &mut Report) {
    let lexer = Lexer::new('\\');
    let mut envs: Vec<String> = Vec::new();
    for (n, line) in read(dir, "shell/wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            envs.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let id = format!("wordsTest:{}", n + 1);
        let Some((input, expected)) = line.split_once('|').filter(|(_, e)| !e.contains('|')) else {
            report.failures.push(format!("{id}: malformed line {line:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let env = EnvList(envs.clone());
        report.case(id, || match (lexer.process_words(input, &env), &expected[..]) {
            (Err(_), ["error"]) => Ok(()),
            (Err(e), _) => Err(format!("{input:?}: expected {expected:?}, got error {e}")),
            (Ok(words), _) if words == expected => Ok(()),
            (Ok(words), _) => Err(format!("{input:?}: expected {expected:?}, got {words:?}")),
        });
    }
}

fn str_field<'a>(case: &'a Value, key: &str) -> Result<&'a str, String> {
    case[key].as_str().ok_or_else(|| format!("case has no string field {key:?}"))
}

fn env_map(case: &Value) -> Result<BTreeMap<String, String>, String> {
    let map = case["env"].as_object().ok_or("case has no env object")?;
    map.iter()
        .map(|(k, v)| {
            let v = v.as_str().ok_or_else(|| format!("env {k:?} is not a string"))?;
            Ok((k.clone(), v.to_string()))
        })
        .collect()
}

fn env_list(case: &Value) -> Result<EnvList, String> {
    let list = case["env_list"].as_array().ok_or("case has no env_list array")?;
    list.iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("bad env entry {v}")))
        .collect::<Result<Vec<_>, _>>()
        .map(EnvList)
}

fn name_set(case: &Value, key: &str) -> Result<BTreeSet<String>, String> {
    let list = case[key].as_array().ok_or_else(|| format!("case has no {key:?} array"))?;
    list.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("bad name {v}"))).collect()
}

fn cases<'a>(json: &'a Value, section: &str) -> &'a [Value] {
    json[section]["cases"].as_array().unwrap_or_else(|| panic!("shell_lex_cases.json has no {section}.cases"))
}

/// `transcribed/shell_lex_cases.json` (everything but `internal_helpers`).
fn lex_cases(dir: &Path, report: &mut Report) {
    let text = read(dir, "transcribed/shell_lex_cases.json");
    let json: Value = serde_json::from_str(&text).expect("shell_lex_cases.json is not JSON");
    let escape = json["escape_token"].as_str().and_then(|s| s.chars().next()).unwrap_or('\\');
    let lexer = Lexer::new(escape);

    for (i, case) in cases(&json, "process_word_with_matches").iter().enumerate() {
        report.case(format!("process_word_with_matches[{i}]"), || {
            let input = str_field(case, "input")?;
            let env = env_map(case)?;
            let got = lexer.process_word(input, &env);
            if case["error"].as_bool() == Some(true) {
                return match got {
                    Err(_) => Ok(()),
                    Ok(e) => Err(format!("{input:?}: expected an error, got {:?}", e.result)),
                };
            }
            let got = got.map_err(|e| format!("{input:?}: unexpected error {e}"))?;
            let expected = str_field(case, "expected")?;
            let matched = name_set(case, "matched")?;
            let unmatched = name_set(case, "unmatched")?;
            if got.result != expected || got.matched != matched || got.unmatched != unmatched {
                return Err(format!(
                    "{input:?}: expected {expected:?} matched {matched:?} unmatched {unmatched:?}, \
                     got {:?} matched {:?} unmatched {:?}",
                    got.result, got.matched, got.unmatched
                ));
            }
            Ok(())
        });
    }

    for (i, case) in cases(&json, "process_word_platform").iter().enumerate() {
        report.case(format!("process_word_platform[{i}]"), || {
            let input = str_field(case, "input")?;
            let expected = str_field(case, "expected")?;
            match lexer.process_word(input, &env_map(case)?) {
                Ok(e) if e.result == expected => Ok(()),
                Ok(e) => Err(format!("{input:?}: expected {expected:?}, got {:?}", e.result)),
                Err(e) => Err(format!("{input:?}: unexpected error {e}")),
            }
        });
    }

    for (i, case) in cases(&json, "mandatory_env_vars").iter().enumerate() {
        report.case(format!("mandatory_env_vars[{i}]"), || {
            let input = str_field(case, "input")?;
            let got = lexer.process_word(input, &env_list(case)?);
            if let Some(needle) = case["error_contains"].as_str() {
                return match got {
                    Err(e) if e.to_string().contains(needle) => Ok(()),
                    Err(e) => Err(format!("{input:?}: error {e:?} does not contain {needle:?}")),
                    Ok(e) => Err(format!("{input:?}: expected an error, got {:?}", e.result)),
                };
            }
            let expected = str_field(case, "expected")?;
            match got {
                Ok(e) if e.result == expected => Ok(()),
                Ok(e) => Err(format!("{input:?}: expected {expected:?}, got {:?}", e.result)),
                Err(e) => Err(format!("{input:?}: unexpected error {e}")),
            }
        });
    }

    for (i, case) in cases(&json, "env_lookup").iter().enumerate() {
        report.case(format!("env_lookup[{i}]"), || {
            let env = env_list(case)?;
            let name = str_field(case, "name")?;
            let expected = str_field(case, "expected")?;
            let got = env.get(name).unwrap_or_default();
            if got == expected {
                Ok(())
            } else {
                Err(format!("{:?} lookup {name:?}: expected {expected:?}, got {got:?}", env.0))
            }
        });
    }
}

#[test]
fn shell_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let mut report = Report::new();
    env_var_test(&dir, &mut report);
    words_test(&dir, &mut report);
    lex_cases(&dir, &mut report);

    let stale: Vec<&String> = report.skips.keys().filter(|id| !report.used_skips.contains(*id)).collect();
    for id in &stale {
        eprintln!("note: {} lists {id}, which matches no case", SKIP_FILE);
    }
    eprintln!(
        "shell corpus: {} cases passed, {} skipped, {} failed",
        report.passed,
        report.skipped,
        report.failures.len()
    );
    // A corpus that shrank or was misread would pass with nothing checked.
    assert!(report.passed >= 300, "only {} shell corpus cases ran (315 expected)", report.passed);
    assert!(
        report.failures.is_empty(),
        "{} shell corpus case(s) failed:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert!(report.passed > 0, "no shell corpus case ran");
}
