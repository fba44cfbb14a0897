//! `.dockerignore` handling with moby/patternmatcher semantics.
//!
//! This module owns everything strata does with ignore files:
//!
//! * finding the ignore file for a build ([`ignore_file_for`]): a
//!   `<Dockerfile name>.dockerignore` next to the Dockerfile wins over
//!   `<context>/.dockerignore`;
//! * reading it ([`read_ignore_file`]) the way `moby/patternmatcher/ignorefile.ReadAll`
//!   does;
//! * compiling the patterns ([`PatternMatcher::new`]) and matching
//!   context-relative, `/`-separated paths against them
//!   ([`PatternMatcher::matches_or_parent_matches`] and friends);
//! * telling a directory walker when a whole directory can be pruned
//!   ([`PatternMatcher::can_skip_dir`]).
//!
//! It is an independent Rust implementation of the behaviour of
//! `github.com/moby/patternmatcher` (what BuildKit uses), Unix flavour (`/` is the
//! only separator and `\` escapes the next character):
//!
//! * Each pattern is trimmed and cleaned like Go's `filepath.Clean`. Empty patterns
//!   are dropped. A leading `!` makes the pattern an exclusion (it re-includes what
//!   earlier patterns excluded); a lone `!` is an error.
//! * `*` matches any run of characters except `/`, `?` any one character except `/`,
//!   `**` any number of directories (`**/` at the start also matches none),
//!   `[a-z]` / `[^a-z]` are character classes and `\` escapes the next character.
//! * A pattern that is malformed for Go's `filepath.Match` (`[`, `[^`, `a\`, `[]a]`,
//!   `[x-]`, …) is rejected by [`PatternMatcher::new`] with
//!   [`IgnoreError::BadPattern`] ("syntax error in pattern").
//! * Upstream turns each glob into a Go regular expression. A few patterns are valid
//!   globs but give an invalid regexp (for example the reversed range in
//!   `[Local-Only]`); like upstream, those are accepted by `new` and report
//!   "syntax error in pattern" each time they are evaluated.
//!
//! Faithfulness notes: the regexp upstream would build is reproduced character for
//! character and then translated from Go RE2 syntax into an equivalent `regex`
//! crate expression, so even the odd corners of upstream (a `*` inside `[...]`,
//! `\d` or `\pL` escapes, POSIX `[:alpha:]` classes) behave the same. The one
//! known divergence: Go's `bufio.Scanner` 64 KiB line limit is not enforced when
//! reading an ignore file.

use std::path::{Path, PathBuf};

use regex::Regex;

/// Errors reported while compiling or evaluating ignore patterns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// The pattern (shown without its `!`) is malformed. The message is the one Go's
    /// `filepath.ErrBadPattern` carries.
    #[error("syntax error in pattern")]
    BadPattern(String),
    /// A pattern consisting of only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// [`PatternMatcher::matches_using_parent_results`] was given a [`MatchInfo`] that
    /// was produced by a different matcher.
    #[error("wrong number of values in parentMatched: expected {expected}, got {got}")]
    WrongMatchInfo {
        /// Number of patterns of this matcher.
        expected: usize,
        /// Number of entries in the given [`MatchInfo`].
        got: usize,
    },
}

impl IgnoreError {
    /// The offending pattern, for [`IgnoreError::BadPattern`].
    pub fn pattern(&self) -> Option<&str> {
        match self {
            IgnoreError::BadPattern(p) => Some(p),
            _ => None,
        }
    }
}

/// How one pattern is tested against a path (the same four kinds upstream uses).
#[derive(Debug, Clone)]
enum Matcher {
    /// Plain string comparison with the cleaned pattern.
    Exact,
    /// `dir/**`: the path starts with these bytes.
    Prefix(Vec<u8>),
    /// `**…` with no other wildcard: the path ends with these bytes (or, for
    /// `**/x`, equals `x`).
    Suffix(Vec<u8>),
    /// Everything else: an anchored regular expression.
    Regex(Regex),
    /// A valid glob whose upstream regexp does not compile: every evaluation is a
    /// bad-pattern error.
    Invalid,
}

/// One compiled ignore pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    /// Number of `/`-separated components of `cleaned` (for the legacy matcher).
    dir_count: usize,
    matcher: Matcher,
}

impl Pattern {
    /// The cleaned pattern, without its leading `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is an exclusion (`!pattern`), which re-includes paths.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn compile(cleaned: String, exclusion: bool) -> Pattern {
        let dir_count = cleaned.split('/').count();
        let matcher = build_matcher(&cleaned);
        Pattern { cleaned, exclusion, dir_count, matcher }
    }

    /// Tests one (already `/`-separated) path against this pattern alone.
    fn is_match(&self, path: &str) -> Result<bool, IgnoreError> {
        Ok(match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix(prefix) => path.as_bytes().starts_with(prefix),
            Matcher::Suffix(suffix) => {
                let p = path.as_bytes();
                p.ends_with(suffix) || (suffix.first() == Some(&b'/') && p == &suffix[1..])
            }
            Matcher::Regex(re) => re.is_match(path),
            Matcher::Invalid => return Err(IgnoreError::BadPattern(self.cleaned.clone())),
        })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.cleaned)
    }
}

/// Per-pattern results for a directory, handed down to its children by a walker
/// (see [`PatternMatcher::matches_using_parent_results`]). The default value means
/// "no information about the parent".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled list of ignore patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns (as returned by [`read_ignore_file`], or given directly).
    ///
    /// Each pattern is trimmed and cleaned; empty ones are dropped. A leading `!`
    /// marks an exclusion, and a lone `!` is [`IgnoreError::IllegalExclusion`]. A
    /// pattern that Go's `filepath.Match` rejects is [`IgnoreError::BadPattern`].
    pub fn new(patterns: &[String]) -> Result<Self, IgnoreError> {
        let mut pm = PatternMatcher { patterns: Vec::with_capacity(patterns.len()), exclusions: false };
        for raw in patterns {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut p = clean(trimmed);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(IgnoreError::IllegalExclusion);
                }
                exclusion = true;
                pm.exclusions = true;
                p = rest.to_string();
            }
            if !glob_syntax_ok(p.as_bytes()) {
                return Err(IgnoreError::BadPattern(p));
            }
            pm.patterns.push(Pattern::compile(p, exclusion));
        }
        Ok(pm)
    }

    /// Whether any pattern is an exclusion (`!pattern`).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Number of (non-empty) patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are no patterns at all (nothing is ever matched).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The matcher BuildKit uses: `path` (context-relative, `/`-separated) is
    /// matched when it or any of its parent directories matches a pattern and no
    /// later exclusion re-includes it. The last pattern that applies wins.
    ///
    /// Errors only when an evaluated pattern turns out to be invalid (see the
    /// module documentation).
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = go_dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already-matched path, nor an exclusion
            // an unmatched one.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.is_match(path)?;
            if !hit && parent != "." {
                hit = parent_prefixes(&parent).any(|dir| pattern.is_match(dir).unwrap_or(false));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Upstream's deprecated `Matches`: like
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches), but a
    /// pattern is only tried against `path` and against the leading components of
    /// its parent directory that have as many components as the pattern.
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = go_dir(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.is_match(path)?;
            if !hit && parent != "." && pattern.dir_count <= parent_dirs.len() {
                let dir = parent_dirs[..pattern.dir_count].join("/");
                hit = pattern.is_match(&dir).unwrap_or(false);
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Walker-friendly form of
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches): pass the
    /// [`MatchInfo`] returned for the parent directory (or `MatchInfo::default()` for
    /// a top-level entry or when unknown) and keep the returned one for the children
    /// of `path` if it is a directory. Gives the same answer without re-testing
    /// every parent directory.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent_info: &MatchInfo,
    ) -> Result<(bool, MatchInfo), IgnoreError> {
        let parent_matched = &parent_info.parent_matched;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(IgnoreError::WrongMatchInfo { expected: self.patterns.len(), got: parent_matched.len() });
        }
        let mut matched = false;
        let mut info = MatchInfo { parent_matched: vec![false; self.patterns.len()] };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.is_match(path)?;
                if !hit && parent_matched.is_empty() {
                    let parent = go_dir(path);
                    if parent != "." {
                        hit = parent_prefixes(&parent).any(|dir| pattern.is_match(dir).unwrap_or(false));
                    }
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// For a directory walk: may the walker skip everything below `dir`?
    ///
    /// True only when `dir` itself is matched (excluded from the context) and no
    /// exclusion pattern could re-include anything below it. As in BuildKit's
    /// walker, exclusions containing wildcards (other than a trailing `/*` or `/**`)
    /// are assumed to possibly re-include anything, so they prevent skipping.
    /// The context root (`.`) is never skipped; an evaluation error means "don't
    /// skip" (the walk will report it when matching the entries).
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let dir = clean(dir);
        if dir == "." || dir == "/" {
            return false;
        }
        if !matches!(self.matches_or_parent_matches(&dir), Ok(true)) {
            return false;
        }
        if !self.exclusions {
            return true;
        }
        let dir_slash = format!("{dir}/");
        for pattern in self.patterns.iter().filter(|p| p.exclusion) {
            let stem = pattern_without_trailing_glob(&pattern.cleaned);
            if stem.contains(['*', '[', ']', '?', '^', '\\']) {
                return false;
            }
            if format!("{stem}/").starts_with(&dir_slash) {
                return false;
            }
        }
        true
    }
}

fn pattern_without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

/// Upstream's deprecated package-level `Matches(file, patterns)`: compiles
/// `patterns`, cleans `file` (`.` is never matched) and applies
/// [`PatternMatcher::matches`].
pub fn matches_patterns(file: &str, patterns: &[String]) -> Result<bool, IgnoreError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches(&file)
}

/// Upstream's package-level `MatchesOrParentMatches(file, patterns)`: compiles
/// `patterns`, cleans `file` (`.` is never matched) and applies
/// [`PatternMatcher::matches_or_parent_matches`].
pub fn matches_or_parent_matches_patterns(file: &str, patterns: &[String]) -> Result<bool, IgnoreError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&file)
}

/// Reads the contents of a `.dockerignore` file into patterns for
/// [`PatternMatcher::new`]:
///
/// * a UTF-8 BOM at the start is stripped;
/// * lines whose first character is `#` are comments (a `#` after leading
///   whitespace is not a comment);
/// * each line is trimmed and blank lines are skipped;
/// * for `!` lines the text after the `!` is trimmed again;
/// * the path is cleaned like `filepath.Clean` and one leading `/` is dropped, so
///   `/a/b` and `a/b` are equivalent;
/// * the `!` is put back (a line of only `!` stays `!`, which `new` rejects).
pub fn read_ignore_file(contents: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in contents.split('\n').enumerate() {
        let mut line = line.strip_suffix('\r').unwrap_or(line);
        if n == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(cleaned);
    }
    out
}

/// The ignore file that applies to a build, if any: `<dockerfile>.dockerignore`
/// (for example `build/app.Dockerfile.dockerignore`) beside the Dockerfile wins
/// over `<context_dir>/.dockerignore`. Only regular files (after following
/// symlinks) count. `dockerfile` is used as given (a relative path is relative to
/// the current directory, like any [`Path`]).
pub fn ignore_file_for(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut ignore_name = name.to_os_string();
        ignore_name.push(".dockerignore");
        let candidate = dockerfile.with_file_name(ignore_name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let candidate = context_dir.join(".dockerignore");
    candidate.is_file().then_some(candidate)
}

// ---------------------------------------------------------------------------
// Path helpers (Go `path/filepath` on Unix)
// ---------------------------------------------------------------------------

/// Go's `filepath.Clean` for `/`-separated paths: collapse repeated slashes, drop
/// `.` elements, resolve `..` against the preceding element (at the root it is
/// dropped, in a relative path a leading `..` stays), no trailing slash; the empty
/// result is `.`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(last) if *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Go's `filepath.Dir`: everything up to the last `/`, cleaned (`.` if none).
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// The joins of the first 1, 2, … `/`-separated components of `parent` (a cleaned
/// path), e.g. `a`, `a/b`, `a/b/c`; for `/a`: ``, `/a`.
fn parent_prefixes(parent: &str) -> impl Iterator<Item = &str> {
    parent.match_indices('/').map(move |(i, _)| &parent[..i]).chain(std::iter::once(parent))
}

// ---------------------------------------------------------------------------
// Glob syntax check (Go `filepath.Match(pattern, ".")` error behaviour)
// ---------------------------------------------------------------------------

/// Whether Go's `filepath.Match` accepts `pattern`: every `*`-separated chunk must
/// be well formed (closed classes with non-empty ranges, no trailing `\`).
fn glob_syntax_ok(pattern: &[u8]) -> bool {
    let mut rest = pattern;
    while !rest.is_empty() {
        while rest.first() == Some(&b'*') {
            rest = &rest[1..];
        }
        let mut in_range = false;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' if i + 1 < rest.len() => {
                    i += 1;
                }
                b'[' => in_range = true,
                b']' => in_range = false,
                b'*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        let (chunk, tail) = rest.split_at(i);
        if !chunk_syntax_ok(chunk) {
            return false;
        }
        rest = tail;
    }
    true
}

fn chunk_syntax_ok(mut chunk: &[u8]) -> bool {
    while let Some(&c) = chunk.first() {
        match c {
            b'[' => {
                chunk = &chunk[1..];
                if chunk.first() == Some(&b'^') {
                    chunk = &chunk[1..];
                }
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    match class_endpoint(chunk) {
                        Some(rest) => chunk = rest,
                        None => return false,
                    }
                    // `class_endpoint` guarantees a non-empty rest.
                    if chunk[0] == b'-' {
                        match class_endpoint(&chunk[1..]) {
                            Some(rest) => chunk = rest,
                            None => return false,
                        }
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                if chunk.len() < 2 {
                    return false;
                }
                chunk = &chunk[2..];
            }
            _ => chunk = &chunk[1..],
        }
    }
    true
}

/// Go's `getEsc`: one (possibly `\`-escaped) class endpoint; `None` on a syntax
/// error, which includes "nothing follows it".
fn class_endpoint(chunk: &[u8]) -> Option<&[u8]> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return None,
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return None;
            }
        }
        Some(_) => {}
    }
    let len = utf8_len(chunk)?;
    let rest = &chunk[len..];
    (!rest.is_empty()).then_some(rest)
}

/// Length of the UTF-8 sequence at the start of `b` (`None` if it is not valid).
fn utf8_len(b: &[u8]) -> Option<usize> {
    let len = match *b.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    let seq = b.get(..len)?;
    std::str::from_utf8(seq).ok().map(|_| len)
}

// ---------------------------------------------------------------------------
// Pattern compilation
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// Characters that are special in a regexp but plain in a glob.
const REGEX_ONLY_META: &str = ".+()|{}$";

/// Builds the matcher for a cleaned pattern exactly the way upstream's `compile`
/// classifies it, translating upstream's Go regexp when one is needed.
fn build_matcher(cleaned: &str) -> Matcher {
    let (kind, go_regex) = upstream_regex(cleaned);
    match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => {
            let b = cleaned.as_bytes();
            Matcher::Prefix(b[..b.len().saturating_sub(2)].to_vec())
        }
        Kind::Suffix => Matcher::Suffix(cleaned.as_bytes().get(2..).unwrap_or(&[]).to_vec()),
        Kind::Regexp => match go_to_rust_regex(&go_regex).and_then(|src| Regex::new(&src).ok()) {
            Some(re) => Matcher::Regex(re),
            None => Matcher::Invalid,
        },
    }
}

/// The match kind and Go regexp source upstream builds for a (cleaned) pattern.
fn upstream_regex(pattern: &str) -> (Kind, String) {
    let mut chars = pattern.chars().peekable();
    // Go's text/scanner silently drops a byte-order mark at the very start.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is treated like `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // A trailing `**` accepts everything below.
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regexp;
                    }
                } else {
                    // Any number of directories, including none.
                    re.push_str("(.*/)?");
                    kind = Kind::Regexp;
                }
                if i == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regexp;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regexp;
            }
            c if REGEX_ONLY_META.contains(c) => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    kind = Kind::Regexp;
                }
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(ch);
                kind = Kind::Regexp;
            }
            c => re.push(c),
        }
        i += 1;
    }
    if kind == Kind::Regexp {
        re.push('$');
    }
    (kind, re)
}

// ---------------------------------------------------------------------------
// Go RE2 (Perl flags) -> `regex` crate translation
// ---------------------------------------------------------------------------

/// What the last emitted item was, for validating repetition operators.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Start of the expression, of a group or of an alternative.
    Nothing,
    /// Something that can be repeated.
    Atom,
    /// A repetition operator; `true` once made non-greedy with `?`.
    Repeat(bool),
}

/// Never matches anything (stands for a Go literal that is a surrogate code point,
/// which valid UTF-8 never contains).
const NEVER: &str = r"[^\x{0}-\x{10FFFF}]";

/// Translates a Go regexp into `regex` crate syntax with the same meaning, or
/// `None` where Go's `regexp.Compile` would fail.
fn go_to_rust_regex(src: &str) -> Option<String> {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut i = 0;
    let mut depth = 0usize;
    let mut last = Last::Nothing;
    while i < s.len() {
        let c = s[i];
        match c {
            '*' | '+' | '?' => {
                match last {
                    Last::Nothing => return None,
                    Last::Atom => last = Last::Repeat(false),
                    Last::Repeat(false) if c == '?' => last = Last::Repeat(true),
                    Last::Repeat(_) => return None,
                }
                out.push(c);
                i += 1;
            }
            '(' => {
                // Flag groups and named captures never come out of a glob.
                if s.get(i + 1) == Some(&'?') {
                    return None;
                }
                out.push_str("(?:");
                depth += 1;
                last = Last::Nothing;
                i += 1;
            }
            ')' => {
                depth = depth.checked_sub(1)?;
                out.push(')');
                last = Last::Atom;
                i += 1;
            }
            '|' => {
                out.push('|');
                last = Last::Nothing;
                i += 1;
            }
            '^' => {
                out.push_str("(?:^)");
                last = Last::Atom;
                i += 1;
            }
            '$' => {
                out.push_str("(?:$)");
                last = Last::Atom;
                i += 1;
            }
            '.' => {
                out.push('.');
                last = Last::Atom;
                i += 1;
            }
            // A counted repetition never comes out of a glob.
            '{' => return None,
            '[' => {
                i = translate_class(&s, i, &mut out)?;
                last = Last::Atom;
            }
            '\\' => {
                i = translate_escape(&s, i, &mut out, &mut last)?;
            }
            other => {
                push_literal(&mut out, other as u32);
                last = Last::Atom;
                i += 1;
            }
        }
    }
    (depth == 0).then_some(out)
}

/// An escape outside a class, starting at `s[i] == '\\'`. Returns the index after it.
fn translate_escape(s: &[char], i: usize, out: &mut String, last: &mut Last) -> Option<usize> {
    let next = *s.get(i + 1)?;
    let simple = match next {
        'A' => Some(r"\A"),
        'z' => Some(r"\z"),
        'b' => Some(r"(?-u:\b)"),
        'B' => Some(r"(?-u:\B)"),
        'C' => return None,
        _ => None,
    };
    if let Some(rust) = simple {
        out.push_str(rust);
        *last = Last::Atom;
        return Some(i + 2);
    }
    if next == 'Q' {
        // Literal text up to `\E` or the end.
        let mut j = i + 2;
        while j < s.len() {
            if s[j] == '\\' && s.get(j + 1) == Some(&'E') {
                return Some(j + 2);
            }
            push_literal(out, s[j] as u32);
            *last = Last::Atom;
            j += 1;
        }
        return Some(j);
    }
    if next == 'p' || next == 'P' {
        let (class, j) = unicode_class(s, i)?;
        out.push_str(&class);
        *last = Last::Atom;
        return Some(j);
    }
    if let Some(class) = perl_class(next) {
        out.push_str(class);
        *last = Last::Atom;
        return Some(i + 2);
    }
    let (value, j) = parse_escape(s, i)?;
    push_literal(out, value);
    *last = Last::Atom;
    Some(j)
}

/// Go's ASCII-only Perl classes.
fn perl_class(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        's' => r"[\t\n\f\r ]",
        'S' => r"[^\t\n\f\r ]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        _ => return None,
    })
}

/// Go's general category names (the `unicode.Categories` table).
const GO_CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No", "P",
    "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
];

/// `\pX`, `\p{Name}`, `\P…`, `\p{^Name}` at `s[i] == '\\'`; returns the `regex`
/// crate class and the index after it.
fn unicode_class(s: &[char], i: usize) -> Option<(String, usize)> {
    let mut negated = s[i + 1] == 'P';
    let (name, end): (String, usize) = match s.get(i + 2) {
        Some('{') => {
            let close = s[i + 3..].iter().position(|&c| c == '}')? + i + 3;
            (s[i + 3..close].iter().collect(), close + 1)
        }
        Some(&c) => (c.to_string(), i + 3),
        None => return None,
    };
    let name = match name.strip_prefix('^') {
        Some(rest) => {
            negated = !negated;
            rest.to_string()
        }
        None => name,
    };
    let body = if name == "Any" {
        r"\x{0}-\x{10FFFF}".to_string()
    } else if name == "Cs" {
        // Surrogates: no scalar value is in this category.
        String::new()
    } else if GO_CATEGORIES.contains(&name.as_str()) {
        format!(r"\p{{gc={name}}}")
    } else {
        // Go also knows script names, but those need braces, and upstream always
        // escapes a `{` coming from a glob, so they cannot occur here.
        return None;
    };
    // Written as a (possibly negated) bracket class so it can be nested too.
    let class = match (body.is_empty(), negated) {
        (true, false) => NEVER.to_string(),
        (true, true) => r"[\x{0}-\x{10FFFF}]".to_string(),
        (false, false) => format!("[{body}]"),
        (false, true) => format!("[^{body}]"),
    };
    Some((class, end))
}

/// Go's `parseEscape` at `s[i] == '\\'`: the character value and the index after it.
fn parse_escape(s: &[char], i: usize) -> Option<(u32, usize)> {
    let c = *s.get(i + 1)?;
    let mut j = i + 2;
    let octal = |c: Option<&char>| c.and_then(|c| c.to_digit(8));
    let value = match c {
        '1'..='7' | '0' => {
            // A lone non-zero digit would be a back-reference: unsupported.
            if c != '0' && octal(s.get(j)).is_none() {
                return None;
            }
            let mut r = c.to_digit(8)?;
            for _ in 1..3 {
                match octal(s.get(j)) {
                    Some(d) => {
                        r = r * 8 + d;
                        j += 1;
                    }
                    None => break,
                }
            }
            r
        }
        'x' => {
            let first = *s.get(j)?;
            j += 1;
            if first == '{' {
                let mut r: u32 = 0;
                let mut digits = 0;
                loop {
                    let d = *s.get(j)?;
                    j += 1;
                    if d == '}' {
                        break;
                    }
                    r = r * 16 + d.to_digit(16)?;
                    if r > 0x10ffff {
                        return None;
                    }
                    digits += 1;
                }
                if digits == 0 {
                    return None;
                }
                r
            } else {
                let hi = first.to_digit(16)?;
                let lo = s.get(j)?.to_digit(16)?;
                j += 1;
                hi * 16 + lo
            }
        }
        'a' => 7,
        'f' => 0x0c,
        'n' => 0x0a,
        'r' => 0x0d,
        't' => 0x09,
        'v' => 0x0b,
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => c as u32,
        _ => return None,
    };
    Some((value, j))
}

fn push_literal(out: &mut String, value: u32) {
    match char::from_u32(value) {
        Some(c) => {
            let mut buf = [0u8; 4];
            out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
        }
        None => out.push_str(NEVER),
    }
}

/// POSIX classes Go knows (all ASCII, same meaning in the `regex` crate).
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper", "word",
    "xdigit",
];

/// A Go bracket class starting at `s[i] == '['`, appended to `out` as a `regex`
/// crate class. Returns the index after the closing `]`.
fn translate_class(s: &[char], i: usize, out: &mut String) -> Option<usize> {
    let mut t = i + 1;
    let mut negated = false;
    if s.get(t) == Some(&'^') {
        negated = true;
        t += 1;
    }
    let mut items = String::new();
    let mut first = true;
    loop {
        match s.get(t) {
            None => return None,
            Some(']') if !first => {
                t += 1;
                break;
            }
            _ => {}
        }
        first = false;
        // POSIX `[:name:]` (Go looks for the closing `:]` anywhere further on).
        if s[t] == '[' && s.get(t + 1) == Some(&':') && t + 2 < s.len() {
            if let Some(k) = s[t + 2..].windows(2).position(|w| w == [':', ']']) {
                let inner: String = s[t + 2..t + 2 + k].iter().collect();
                let name = inner.strip_prefix('^').unwrap_or(&inner);
                if !POSIX_CLASSES.contains(&name) {
                    return None;
                }
                items.push_str(&format!("[:{inner}:]"));
                t += 2 + k + 2;
                continue;
            }
        }
        if s[t] == '\\' {
            match s.get(t + 1) {
                Some('p') | Some('P') => {
                    let (class, next) = unicode_class(s, t)?;
                    items.push_str(&class);
                    t = next;
                    continue;
                }
                Some(&c) => {
                    if let Some(class) = perl_class(c) {
                        items.push_str(class);
                        t += 2;
                        continue;
                    }
                }
                None => {}
            }
        }
        let (lo, next) = class_char(s, t)?;
        t = next;
        let mut hi = lo;
        if s.get(t) == Some(&'-') && matches!(s.get(t + 1), Some(&c) if c != ']') {
            let (h, next) = class_char(s, t + 1)?;
            if h < lo {
                return None;
            }
            hi = h;
            t = next;
        }
        push_class_range(&mut items, lo, hi);
    }
    if items.is_empty() {
        // Only possible when every range was made of surrogates.
        out.push_str(if negated { r"[\x{0}-\x{10FFFF}]" } else { NEVER });
    } else {
        out.push('[');
        if negated {
            out.push('^');
        }
        out.push_str(&items);
        out.push(']');
    }
    Some(t)
}

/// Go's `parseClassChar`: one class character (possibly escaped).
fn class_char(s: &[char], t: usize) -> Option<(u32, usize)> {
    match s.get(t)? {
        '\\' => parse_escape(s, t),
        &c => Some((c as u32, t + 1)),
    }
}

/// Appends `lo-hi` to a class body, leaving out surrogate code points.
fn push_class_range(items: &mut String, lo: u32, hi: u32) {
    let lo = if (0xd800..=0xdfff).contains(&lo) { 0xe000 } else { lo };
    let hi = if (0xd800..=0xdfff).contains(&hi) { 0xd7ff } else { hi };
    if lo > hi {
        return;
    }
    if lo < 0xd800 && hi > 0xdfff {
        items.push_str(&format!(r"\x{{{lo:X}}}-\x{{D7FF}}\x{{E000}}-\x{{{hi:X}}}"));
    } else if lo == hi {
        items.push_str(&format!(r"\x{{{lo:X}}}"));
    } else {
        items.push_str(&format!(r"\x{{{lo:X}}}-\x{{{hi:X}}}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(patterns: &[&str]) -> PatternMatcher {
        let v: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        PatternMatcher::new(&v).unwrap()
    }

    fn one(pattern: &str, path: &str) -> Result<bool, IgnoreError> {
        pm(&[pattern]).matches_or_parent_matches(path)
    }

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//a//b/", "/a/b"),
            ("a/./b/../c", "a/c"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("!a/../b", "b"),
            ("!/x", "!/x"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
        assert_eq!(go_dir("a/b/c"), "a/b");
        assert_eq!(go_dir("abc"), ".");
        assert_eq!(go_dir("/"), "/");
        assert_eq!(go_dir("dir/file/"), "dir/file");
    }

    #[test]
    fn parent_prefixes_join_components() {
        let got: Vec<&str> = parent_prefixes("a/b/c").collect();
        assert_eq!(got, ["a", "a/b", "a/b/c"]);
        let got: Vec<&str> = parent_prefixes("/").collect();
        assert_eq!(got, ["", "/"]);
    }

    #[test]
    fn upstream_regex_strings() {
        // The compile table of upstream's tests (slash separator).
        for (pattern, kind, want) in [
            ("*", Kind::Regexp, "^[^/]*$"),
            ("a*/b", Kind::Regexp, "^a[^/]*/b$"),
            ("**", Kind::Suffix, ""),
            ("**/**", Kind::Regexp, "^(.*/)?.*$"),
            ("dir/**", Kind::Prefix, ""),
            ("**/dir2/*", Kind::Regexp, "^(.*/)?dir2/[^/]*$"),
            ("**/**/*.txt", Kind::Regexp, r"^(.*/)?(.*/)?[^/]*\.txt$"),
            (".*", Kind::Regexp, r"^\.[^/]*$"),
            ("abc.def", Kind::Exact, ""),
            ("a.|)$(}+{bc", Kind::Exact, ""),
        ] {
            let (k, re) = upstream_regex(pattern);
            assert!(k == kind, "{pattern}: kind");
            if kind == Kind::Regexp {
                assert_eq!(re, want, "{pattern}");
            }
        }
    }

    #[test]
    fn go_regex_corners() {
        // `*` inside a class: Go reads `[[^/]*]` as class {'[','^','/'} repeated, then `]`.
        assert_eq!(one("x[*]", "x]"), Ok(true));
        assert_eq!(one("x[*]", "x[^]"), Ok(true));
        assert_eq!(one("x[*]", "x*"), Ok(false));
        // Perl and POSIX classes, escapes.
        assert_eq!(one(r"a\d", "a7"), Ok(true));
        assert_eq!(one(r"a\d", "a٣"), Ok(false));
        assert_eq!(one("[[:digit:]]x", "5x"), Ok(true));
        assert_eq!(one(r"\x41", "A"), Ok(true));
        assert_eq!(one(r"a\pL", "aé"), Ok(true));
        assert_eq!(one(r"a\<", "a<"), Ok(true));
        assert_eq!(one(r"a\_", "a_"), Ok(true));
        assert_eq!(one(r"a\b", "a"), Ok(true));
        assert_eq!(one(r"a\Qb*", "ab[^/]*$"), Ok(true));
        // Go octal escapes take at most three digits: `\010` then `1`.
        assert_eq!(one(r"\0101*", "\u{8}1x"), Ok(true));
        assert_eq!(one(r"\0101*", "A"), Ok(false));
        // The fallback classes used for unrepresentable code points compile.
        assert!(Regex::new(NEVER).unwrap().find("x\n\u{10FFFF}").is_none());
        assert!(Regex::new(r"[\x{0}-\x{10FFFF}]").is_ok());
        // Invalid Go escapes / ranges are lazy bad-pattern errors.
        // (`{` is always escaped by upstream, so `\p{Greek}` cannot work either.)
        for bad in [r"a\y", r"a\1", r"a\C", "[Local-Only]", r"a\p{Greek}", r"\pA", "[[:nope:]]"] {
            assert_eq!(one(bad, "x"), Err(IgnoreError::BadPattern(bad.to_string())), "{bad}");
        }
        // `^` outside a class is an anchor in the regexp kinds, plain in exact ones.
        assert_eq!(one("a^b", "a^b"), Ok(true));
        assert_eq!(one("a^b*", "a^b"), Ok(false));
    }

    #[test]
    fn rejects_malformed_globs() {
        for bad in ["[", "[^", "a\\", "[]a]", "[x-]", "[-x]", "[a-b-c]", "a[", "x*[", "![", "[^]]"] {
            let err = PatternMatcher::new(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.to_string(), "syntax error in pattern", "{bad}");
        }
        assert_eq!(PatternMatcher::new(&[" ! ".to_string()]).unwrap_err(), IgnoreError::IllegalExclusion);
    }

    #[test]
    fn read_ignore_file_rules() {
        let got = read_ignore_file("\u{feff}# c\r\n  # not a comment\r\n/a/./b/\n!  /c\n\n ! \n/\n");
        assert_eq!(got, ["# not a comment", "a/b", "!c", "!", "/"]);
        assert!(read_ignore_file("").is_empty());
    }

    #[test]
    fn using_parent_results_agrees() {
        let m = pm(&["**", "!util/docker/web", "util/docker/web/foo"]);
        let path = "util/docker/web/foo/bar";
        let mut info = MatchInfo::default();
        let mut acc = String::new();
        for comp in path.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(comp);
            let (got, next) = m.matches_using_parent_results(&acc, &info).unwrap();
            assert_eq!(got, m.matches_or_parent_matches(&acc).unwrap(), "{acc}");
            info = next;
        }
        let wrong = MatchInfo { parent_matched: vec![true] };
        assert!(m.matches_using_parent_results("x", &wrong).is_err());
    }

    #[test]
    fn can_skip_dir_rules() {
        let m = pm(&["node_modules", "build/**", "!build/keep"]);
        assert!(m.can_skip_dir("node_modules"));
        assert!(m.can_skip_dir("node_modules/x"));
        assert!(!m.can_skip_dir("build"));
        assert!(m.can_skip_dir("build/other"));
        assert!(!m.can_skip_dir("build/keep"));
        assert!(!m.can_skip_dir("src"));
        assert!(!m.can_skip_dir("."));
        let m = pm(&["**", "!**/*.go"]);
        assert!(!m.can_skip_dir("vendor"));
        let m = pm(&["*"]);
        assert!(m.can_skip_dir("vendor"));
        assert!(!m.can_skip_dir(""));
    }

    #[test]
    fn ignore_file_lookup() {
        let dir = std::env::temp_dir().join(format!("strata-dockerignore-{}", std::process::id()));
        let ctx = dir.join("ctx");
        let df_dir = dir.join("df");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::create_dir_all(&df_dir).unwrap();
        let dockerfile = df_dir.join("app.Dockerfile");
        assert_eq!(ignore_file_for(&ctx, &dockerfile), None);
        std::fs::write(ctx.join(".dockerignore"), "x\n").unwrap();
        assert_eq!(ignore_file_for(&ctx, &dockerfile), Some(ctx.join(".dockerignore")));
        let specific = df_dir.join("app.Dockerfile.dockerignore");
        std::fs::write(&specific, "y\n").unwrap();
        assert_eq!(ignore_file_for(&ctx, &dockerfile), Some(specific));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// No input may panic: feed many generated patterns and paths through every
    /// entry point.
    #[test]
    fn no_panics_on_generated_input() {
        const ALPHABET: &[&str] = &[
            "*", "**", "?", "[", "]", "^", "-", "\\", "/", "!", "a", "b", "é", "{", "}", "(", ")", "$", ".", "|", "+",
            ":", "p", "P", "x", "Q", "E", "0", "7", "d", " ", "\u{feff}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 8) as usize;
            let pattern: String = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            let plen = (next() % 6) as usize;
            let path: String = (0..plen).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            let pats = vec![pattern.clone(), format!("!{pattern}")];
            let _ = matches_patterns(&path, &pats);
            if let Ok(m) = PatternMatcher::new(&pats) {
                let _ = m.matches_or_parent_matches(&path);
                let _ = m.matches(&path);
                let _ = m.matches_using_parent_results(&path, &MatchInfo::default());
                let _ = m.can_skip_dir(&path);
            }
            let _ = read_ignore_file(&format!("{pattern}\n{path}"));
        }
    }
}
