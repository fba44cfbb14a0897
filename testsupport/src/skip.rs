//! The one way a test says it cannot do (all of) its work on this machine.
//!
//! [`skipped`] prints one marker, `*** SKIPPED: <what> ***`, that `tests/run-all`
//! lists at the end. Under `STRATA_TEST_STRICT=1` — set by `tests/run-all` and so by
//! CI, where the whole test environment is installed and started — a skip is a
//! failure, unless what is missing is in [`ALLOWED`] (a short list, each with its
//! reason). So a stopped registry or a missing tool fails CI instead of turning tests
//! into nothing.

/// Skips that strict mode tolerates: (what it starts with, why it is allowed).
pub const ALLOWED: &[(&str, &str)] = &[
    (
        "no Docker daemon",
        "docker load/run are an extra reader of strata's docker archives; CI machines may have no daemon, and \
         --load is checked to fail clearly without one",
    ),
    (
        "../shared is absent",
        "the shared corpus is not part of the repository: a fresh clone has none, CI has it beside the clone \
         (and then a missing part of it is not allowed)",
    ),
];

/// Whether skips fail (`STRATA_TEST_STRICT=1`).
pub fn strict() -> bool {
    std::env::var("STRATA_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Say that `what` (a missing prerequisite, and what is not tested because of it) is
/// skipped; in strict mode, panic unless it is allowed.
pub fn skipped(what: &str) {
    eprintln!("\n*** SKIPPED: {what} ***\n");
    if strict() && !ALLOWED.iter().any(|(prefix, _)| what.starts_with(prefix)) {
        panic!(
            "SKIPPED under STRATA_TEST_STRICT=1: {what}\n\
             (tests/run-all and CI need every prerequisite: run tests/setup --debian, keep ../shared beside the clone)"
        );
    }
}

/// `../shared` beside the workspace.
fn shared() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Say that `path` (in `../shared`) is missing, so `what_is_not_run` is skipped: allowed
/// when all of `../shared` is absent (a fresh clone), a failure in strict mode when
/// only a part of it is.
pub fn shared_missing(path: &std::path::Path, what_is_not_run: &str) {
    if shared().is_dir() {
        skipped(&format!("{} absent although ../shared is there: {what_is_not_run} NOT run", path.display()));
    } else {
        skipped(&format!("../shared is absent (a fresh clone; {}): {what_is_not_run} NOT run", path.display()));
    }
}

/// `../shared/corpus`, or `None` after saying why it is skipped.
pub fn shared_corpus(what_is_not_run: &str) -> Option<std::path::PathBuf> {
    let p = shared().join("corpus");
    if p.is_dir() {
        return Some(p);
    }
    shared_missing(&p, what_is_not_run);
    None
}

/// `../shared`, or `None` after saying why it is skipped.
pub fn shared_dir(what_is_not_run: &str) -> Option<std::path::PathBuf> {
    let p = shared();
    if p.is_dir() {
        return Some(p);
    }
    shared_missing(&p, what_is_not_run);
    None
}
