//! The frontend through the binary: `--call=outline` on the real-world Dockerfiles of
//! the shared corpus, rejection of BuildKit's negative parser cases, `--print-graph`.

mod common;

use common::*;

#[test]
fn real_dockerfiles_outline_exit_0() {
    let Some(corpus) = corpus() else { return };
    let root = tempfile::tempdir().unwrap();
    let dir = corpus.join("real-dockerfiles");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    entries.sort();
    for case in entries {
        let df = case.join("Dockerfile");
        let o = strata(root.path(), &["build", "--call=outline", "-f", df.to_str().unwrap(), case.to_str().unwrap()]);
        assert!(o.status.success(), "{}: {}", case.display(), text(&o));
        let parsed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("parsed.json")).unwrap()).unwrap();
        // The last stage is the default target: the outline names it when it has a name.
        let stages = parsed["stages"].as_array().unwrap();
        if let Some(name) = stages.last().and_then(|s| s["name"].as_str()).filter(|n| !n.is_empty()) {
            assert!(text(&o).contains(name), "{}: outline does not name target {name}: {}", case.display(), text(&o));
        }
        let t = strata(root.path(), &["build", "--call=targets", "-f", df.to_str().unwrap(), case.to_str().unwrap()]);
        assert!(t.status.success(), "{}: {}", case.display(), text(&t));
        for s in stages {
            if let Some(name) = s["name"].as_str().filter(|n| !n.is_empty()) {
                assert!(text(&t).contains(name), "{}: targets lacks {name}", case.display());
            }
        }
        n += 1;
    }
    eprintln!("real-dockerfiles: {n} outlined");
    assert_eq!(n, 24, "expected the 24 real Dockerfiles");
}

#[test]
fn negative_parser_cases_exit_1_naming_the_line() {
    let Some(corpus) = corpus() else { return };
    let root = tempfile::tempdir().unwrap();
    let dir = corpus.join("buildkit-parser/testfiles-negative");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let case = e.unwrap().path();
        let df = case.join("Dockerfile");
        let o = strata(root.path(), &["build", "--call=outline", "-f", df.to_str().unwrap(), case.to_str().unwrap()]);
        // A Dockerfile error fails the build: 1, as buildx.
        assert_eq!(o.status.code(), Some(1), "{}: {}", case.display(), text(&o));
        let t = text(&o);
        assert!(t.contains("Dockerfile:"), "{}: names the file: {t}", case.display());
        assert!(
            t.lines().next().map(|l| l.split(':').count() >= 3).unwrap_or(false),
            "{}: names a line: {t}",
            case.display()
        );
        assert!(!t.contains("panicked"), "{t}");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn print_graph_dot_without_building() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch AS a\nCOPY x /x\nFROM a\nCOPY --from=a /x /y\n")
        .unwrap();
    std::fs::write(ctx.path().join("x"), "x").unwrap();
    let o = strata(root.path(), &["build", "--print-graph=dot", ctx.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let dot = String::from_utf8_lossy(&o.stdout);
    assert!(dot.starts_with("digraph strata"), "{dot}");
    assert!(dot.contains("COPY --from=a /x /y"), "{dot}");
}

#[test]
fn unknown_stage_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch AS a\nCOPY x /x\n").unwrap();
    let o = strata(root.path(), &["build", "--target", "nope", ctx.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nope"), "{}", text(&o));
}

/// Found by the `lower` fuzz target: a Dockerfile of ARGs alone made lowering subtract
/// one from zero stages (a panic). It is a Dockerfile error, exit 1.
#[test]
fn a_dockerfile_without_stages_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "ARG A=1\nARG B=2\n").unwrap();
    for call in ["--call=build", "--dry-run"] {
        let o = strata(root.path(), &["build", "--progress=plain", call, ctx.path().to_str().unwrap()]);
        let log = text(&o);
        assert_no_panic(&log);
        assert_eq!(o.status.code(), Some(1), "{log}");
        assert!(log.contains("dockerfile contains no stages to build"), "{log}");
        assert!(log.contains("Dockerfile"), "the error does not name the file: {log}");
    }
}
