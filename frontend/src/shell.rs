//! Shell-word expansion with BuildKit's rules.
//!
//! This module owns everything that happens to a Dockerfile *word* after parsing:
//! quote removal, escape processing and `$VAR` / `${VAR…}` expansion, optionally
//! followed by field splitting. It mirrors the behaviour of BuildKit's
//! `frontend/dockerfile/shell` lexer (the reference implementation for
//! Dockerfile variable substitution); the code is an independent Rust
//! implementation.
//!
//! Supported syntax:
//!
//! * `$NAME`, `${NAME}`; names are Unicode letters, digits and `_`. A name that starts
//!   with a digit takes all following digits (`$001`), and the special parameters
//!   `$@ $* $# $? $- $$ $! $0` are one-character names. None of those are ever set in
//!   a Dockerfile, so they expand to the empty string.
//! * `${V:-w}` / `${V-w}` (default), `${V:+w}` / `${V+w}` (alternative),
//!   `${V:?msg}` / `${V?msg}` (required; the error carries the expanded `msg`).
//!   The colon forms treat an empty value like an unset one.
//! * `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`: remove the shortest / longest
//!   prefix / suffix matching the shell pattern `p`.
//! * `${V/p/r}`, `${V//p/r}`: replace the first / every match of `p` by `r`.
//! * Patterns know `*` (any run of characters), `?` (one character) and `\`-escapes
//!   (`\*`, `\?`, `\\`; `\}` and `\/` stand for `}` and `/`). Like BuildKit, there
//!   are no bracket expressions: `[` and `]` are literal. As in BuildKit, `*` and `?`
//!   do not match a newline.
//! * Words inside modifiers are expanded recursively (`${a:-${b:-c}}`).
//! * Single quotes are fully literal. Inside double quotes the escape character only
//!   escapes `"`, `$` and itself; before anything else it is kept. Outside quotes it
//!   escapes any character, and a lone escape character at the end is dropped.
//! * The escape character is configurable (`\` by default, `` ` `` after
//!   `# escape=``).
//!
//! Deliberate differences from BuildKit (all on inputs where BuildKit misbehaves):
//!
//! * `process_words` keeps the part of a word that precedes a `${V…}` modifier
//!   expansion (BuildKit's shared word buffer drops it: `a${X:-b}c` gives `bc`).
//! * `${V` at end of input reports a missing `}` instead of an odd
//!   "unsupported modifier" message.
//! * With [`Lexer::skip_unset_env`], `${V//p/r}` of an unset `V` is kept as `${V//p/r}`
//!   (BuildKit writes back a single `/`).
//! * Expansions nested deeper than [`MAX_NESTING`] levels are an error rather than
//!   unbounded recursion.
//!
//! Errors carry BuildKit's messages without BuildKit's `failed to process "<word>": `
//! prefix; callers add that context.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::OnceLock;

use regex::Regex;

/// Deepest nesting of `${…}` expansions accepted before [`ShellError::TooDeep`].
pub const MAX_NESTING: usize = 200;

/// Variable lookup used during expansion.
pub trait Env {
    /// The value of `name`: `None` when unset, `Some("")` when set but empty.
    fn get(&self, name: &str) -> Option<String>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// An environment with no variables at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// An environment given as `NAME=value` entries, like a process environment.
///
/// The value is everything after the first `=`. An entry without `=` sets the
/// name to the empty string. When a name repeats, the last entry wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList(pub Vec<String>);

impl EnvList {
    /// Splits one entry into name and value.
    fn split(entry: &str) -> (&str, &str) {
        entry.split_once('=').unwrap_or((entry, ""))
    }

    /// The names in entry order (repeats included).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| Self::split(e).0)
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().rev().map(|e| Self::split(e)).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

impl<S: Into<String>> FromIterator<S> for EnvList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        EnvList(iter.into_iter().map(Into::into).collect())
    }
}

/// The most one word may expand to. A process cannot even be given an argument or an
/// environment variable over 128 KiB (Linux's `MAX_ARG_STRLEN`), so 1 MiB leaves room
/// for labels and paths while a hostile Dockerfile cannot make one word take memory
/// without bound.
pub const MAX_EXPANSION: usize = 1 << 20;

/// A word that could not be expanded: `failed to process "<word>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {source}", crate::ast::go_quote(word))]
pub struct WordError {
    pub word: String,
    #[source]
    pub source: ShellError,
}

/// Why a word could not be expanded. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A `'` without its closing partner.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` without its closing partner.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// `${…` runs to the end of the word.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${V/pattern` runs to the end of the word.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{…}`, `${:…}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator after the name that is not supported (`${V=w}`, `${V:#p}`, `${V.}`…).
    /// Holds the operator as written, with its colon if any.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V?msg}` / `${V:?msg}` with `V` unset. `message` is the expanded `msg`, if not empty.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be unset"))]
    RequiredUnset { name: String, message: Option<String> },
    /// `${V:?msg}` with `V` set to the empty string.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be empty"))]
    RequiredEmpty { name: String, message: Option<String> },
    /// The expansion grew past [`MAX_EXPANSION`] bytes (strata's limit; BuildKit has
    /// none, and a Dockerfile whose ARGs each double the one before takes all memory).
    #[error("the expansion is larger than {0} bytes (a Dockerfile word may expand to at most 1 MiB)")]
    TooLarge(usize),
    /// A `#`, `%` or `/` pattern that cannot be compiled (bad `\` escape).
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// More than [`MAX_NESTING`] nested `${…}`.
    #[error("variable expansions nested deeper than {0} levels")]
    TooDeep(usize),
}

/// The result of [`Lexer::process_word`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// Expands words with BuildKit's shell rules. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character: `\` or `` ` ``.
    pub escape: char,
    /// Keep the quote characters in the output (quoted text is still literal).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (the escaped character stays literal).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written (`$V`, `${V}`, `${V:-w}`…)
    /// instead of expanding them.
    pub skip_unset_env: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape character and every option off.
    pub fn new(escape: char) -> Self {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_unset_env: false, skip_process_quotes: false }
    }

    /// Expand one word: remove quotes, process escapes, expand `$VAR` / `${VAR…}`.
    /// Never splits.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expansion, ShellError> {
        let mut run = Run::new(self, env, word);
        let (result, _) = run.process()?;
        Ok(Expansion { result, matched: run.matched, unmatched: run.unmatched })
    }

    /// Expand like [`Lexer::process_word`], then split into words on unquoted
    /// whitespace, including whitespace produced by unquoted expansions.
    /// Empty words are dropped (`""` alone gives no word).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        let mut run = Run::new(self, env, word);
        let (_, words) = run.process()?;
        Ok(words)
    }
}

/// Field-splitting accumulator.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// A character subject to splitting.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// A character that is part of the word whatever it is.
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// State of one expansion.
struct Run<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> Run<'a> {
    fn new(lexer: &'a Lexer, env: &'a dyn Env, word: &str) -> Self {
        // BuildKit reads words through Go's text/scanner, which skips a leading BOM.
        let word = word.strip_prefix('\u{FEFF}').unwrap_or(word);
        Run {
            lexer,
            env,
            chars: word.chars().collect(),
            pos: 0,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn process(&mut self) -> Result<(String, Vec<String>), ShellError> {
        self.stop_on(None, self.lexer.raw_escapes)
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name);
        let set = if value.is_some() { &mut self.matched } else { &mut self.unmatched };
        if !set.contains(name) {
            set.insert(name.to_string());
        }
        value
    }

    /// Process characters up to `stop` (consumed) or, with `None`, to the end.
    /// Returns the expanded text and its field-split words.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        let escape = self.lexer.escape;
        let quotes = !self.lexer.skip_process_quotes;

        while let Some(ch) = self.next() {
            if result.len() > MAX_EXPANSION {
                return Err(ShellError::TooLarge(MAX_EXPANSION));
            }
            if Some(ch) == stop {
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let text = self.dollar()?;
                    result.push_str(&text);
                    words.add_str(&text);
                }
                '<' => {
                    let text = self.possible_heredoc();
                    result.push_str(&text);
                    words.add_raw_str(&text);
                }
                '\'' if quotes => {
                    let text = self.single_quote()?;
                    result.push_str(&text);
                    words.add_raw_str(&text);
                }
                '"' if quotes => {
                    let text = self.double_quote(raw_escapes)?;
                    result.push_str(&text);
                    words.add_raw_str(&text);
                }
                c if c == escape => {
                    if raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // A lone escape character at the end is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
                c => {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        match stop {
            Some('/') => Err(ShellError::MissingSlash),
            Some(_) => Err(ShellError::MissingBrace),
            None if result.len() > MAX_EXPANSION => Err(ShellError::TooLarge(MAX_EXPANSION)),
            None => Ok((result, words.finish())),
        }
    }

    /// The word of a `${…}` modifier, up to `stop`. Any failure at the end of the
    /// input becomes `at_eof` (BuildKit reports the missing delimiter then).
    fn sub_word(&mut self, stop: char, raw_escapes: bool, at_eof: ShellError) -> Result<String, ShellError> {
        match self.stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(e @ ShellError::TooDeep(_)) => Err(e),
            Err(_) if self.at_eof() => Err(at_eof),
            Err(e) => Err(e),
        }
    }

    /// After `'`: everything up to the next `'` is literal.
    fn single_quote(&mut self) -> Result<String, ShellError> {
        let raw = self.lexer.raw_quotes;
        let mut out = String::new();
        if raw {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if raw {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// After `"`: literal except `$` expansions and escapes of `"`, `$` and the
    /// escape character itself.
    fn double_quote(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        let raw = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        let mut out = String::new();
        if raw {
            out.push('"');
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    if raw {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    out.push_str(&self.dollar()?);
                    if out.len() > MAX_EXPANSION {
                        return Err(ShellError::TooLarge(MAX_EXPANSION));
                    }
                }
                Some(c) if c == escape => {
                    if raw_escapes {
                        out.push(c);
                    }
                    match self.peek() {
                        // The loop reports the unterminated quote.
                        None => {}
                        Some(n) if n == '"' || n == '$' || n == escape => {
                            self.pos += 1;
                            out.push(n);
                        }
                        Some(_) => out.push(c),
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// After `<`: `<<` swallows the blanks that follow it, so that a heredoc
    /// marker with spaces (`<< EOF`) stays one word.
    fn possible_heredoc(&mut self) -> String {
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        let mut out = "<<".to_string();
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// A parameter name: digits, one special parameter, or letters/digits/`_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.pos += 1;
                return c.to_string();
            }
            if !(c == '_' || is_letter(c) || is_digit(c)) {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After `$`.
    fn dollar(&mut self) -> Result<String, ShellError> {
        let out = self.dollar_unchecked()?;
        if out.len() > MAX_EXPANSION {
            return Err(ShellError::TooLarge(MAX_EXPANSION));
        }
        Ok(out)
    }

    fn dollar_unchecked(&mut self) -> Result<String, ShellError> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let out = self.braced();
        self.depth -= 1;
        out
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, ShellError> {
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            '/' => self.substitute(name),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(name, ch),
            other => Err(ShellError::UnsupportedModifier(other.to_string())),
        }
    }

    /// `${name<op>word}`, `first` being the character after the name.
    fn modifier(&mut self, name: String, first: char) -> Result<String, ShellError> {
        let (null_is_unset, op) = if first == ':' {
            match self.next() {
                Some(op) => (true, op),
                None => return Err(ShellError::MissingBrace),
            }
        } else {
            (false, first)
        };
        let op_text = if null_is_unset { format!(":{op}") } else { op.to_string() };
        let pattern_op = op == '#' || op == '%';
        if null_is_unset && pattern_op {
            return Err(ShellError::UnsupportedModifier(op_text));
        }
        let word = self.sub_word('}', pattern_op, ShellError::MissingBrace)?;

        let value = self.lookup(&name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{op_text}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        if !set && op == '?' {
            return Err(ShellError::RequiredUnset { name, message: (!word.is_empty()).then_some(word) });
        }
        let unset_like = !set || (null_is_unset && value.is_empty());
        match op {
            '-' => Ok(if unset_like { word } else { value }),
            '+' => Ok(if unset_like { String::new() } else { word }),
            '?' if unset_like => Err(ShellError::RequiredEmpty { name, message: (!word.is_empty()).then_some(word) }),
            '?' => Ok(value),
            '#' | '%' => {
                // A doubled operator (`##`, `%%`) asks for the longest match.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let trimmed =
                    if op == '#' { trim_prefix(pattern, &value, greedy) } else { trim_suffix(pattern, &value, greedy) };
                trimmed.map_err(|reason| ShellError::InvalidPattern { pattern: pattern.to_string(), reason })
            }
            _ => Err(ShellError::UnsupportedModifier(op_text)),
        }
    }

    /// After `${name/`: `${name/pattern/replacement}` or `${name//pattern/replacement}`.
    fn substitute(&mut self, name: String) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.sub_word('/', true, ShellError::MissingSlash)?;
        let replacement = self.sub_word('}', true, ShellError::MissingBrace)?;

        let value = match self.lookup(&name) {
            Some(v) => v,
            None if self.lexer.skip_unset_env => {
                let slashes = if all { "//" } else { "/" };
                return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
            }
            None => String::new(),
        };
        let re = pattern_regex(&pattern, true, false)
            .map_err(|reason| ShellError::InvalidPattern { pattern: pattern.clone(), reason })?;
        if all {
            // BuildKit hands the replacement to Go's ReplaceAllString, which expands
            // `$0` / `${name}` group references; the regex crate's replacement syntax
            // is the same (and the pattern has no capture groups besides `$0`).
            Ok(re.replace_all(&value, replacement.as_str()).into_owned())
        } else {
            Ok(match re.find(&value) {
                Some(m) => format!("{}{}{}", &value[..m.start()], replacement, &value[m.end()..]),
                None => value,
            })
        }
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter` (general category L).
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    class_match(&RE, r"^\p{L}$", c)
}

/// Go's `unicode.IsDigit` (general category Nd).
fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    class_match(&RE, r"^\p{Nd}$", c)
}

fn class_match(cell: &OnceLock<Option<Regex>>, class: &str, c: char) -> bool {
    let re = cell.get_or_init(|| Regex::new(class).ok());
    let mut buf = [0u8; 4];
    re.as_ref().is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// Compile a shell pattern (`*`, `?`, `\` escapes; no bracket expressions) to a regex.
/// `greedy` chooses how `*` prefers to match; `anchored` pins the match to the start.
/// The error is the reason the pattern is invalid.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let pattern = pattern.strip_prefix('\u{FEFF}').unwrap_or(pattern);
    let mut re = String::with_capacity(pattern.len() + 8);
    if anchored {
        re.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut literal = [0u8; 4];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let lit = match c {
            '*' => {
                re.push_str(star);
                continue;
            }
            '?' => {
                re.push('.');
                continue;
            }
            '\\' => match chars.peek().copied() {
                // `\}` and `\/` only protect the delimiters of `${…}`: the
                // backslash is not part of the pattern.
                Some('}' | '/') => continue,
                Some(n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    n
                }
                Some(n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("invalid escape '\\' at end of pattern".to_string()),
            },
            c => c,
        };
        re.push_str(&regex::escape(lit.encode_utf8(&mut literal)));
    }
    Regex::new(&re).map_err(|e| e.to_string())
}

/// Remove the shortest (or, `greedy`, longest) prefix of `value` matching `pattern`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Remove the shortest (or, `greedy`, longest) suffix of `value` matching `pattern`.
/// Done as a prefix removal on the reversed value with the reversed pattern.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed = trim_prefix(&reverse_pattern(pattern), &reverse(value), greedy)?;
    Ok(reverse(&reversed))
}

fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

/// Reverse a pattern, keeping each `\x` escape pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let mut token = c.to_string();
        if c == '\\' {
            if let Some(n) = chars.next() {
                token.push(n);
            }
        }
        tokens.push(token);
    }
    tokens.iter().rev().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvList {
        EnvList::from_iter(["PWD=/home", "EMPTY=", "SP=a  b"])
    }

    fn word(lexer: &Lexer, input: &str) -> Result<String, ShellError> {
        lexer.process_word(input, &env()).map(|e| e.result)
    }

    #[test]
    fn backtick_escape_outside_quotes() {
        let lx = Lexer::new('`');
        assert_eq!(word(&lx, "he`$PWD").unwrap(), "he$PWD");
        assert_eq!(word(&lx, "he$PWD").unwrap(), "he/home");
        // A backslash is an ordinary character now.
        assert_eq!(word(&lx, r"C:\path\$PWD").unwrap(), r"C:\path\/home");
        assert_eq!(word(&lx, "a``b").unwrap(), "a`b");
        assert_eq!(word(&lx, "a` b").unwrap(), "a b");
        assert_eq!(word(&lx, "trailing`").unwrap(), "trailing");
        assert_eq!(word(&lx, "it`'s").unwrap(), "it's");
    }

    #[test]
    fn backtick_escape_in_quotes() {
        let lx = Lexer::new('`');
        assert_eq!(word(&lx, "\"a`\"b\"").unwrap(), "a\"b");
        assert_eq!(word(&lx, "\"`$PWD\"").unwrap(), "$PWD");
        assert_eq!(word(&lx, "\"a``b\"").unwrap(), "a`b");
        assert_eq!(word(&lx, "\"a`xb\"").unwrap(), "a`xb");
        assert_eq!(word(&lx, r#""a\"#).unwrap_err(), ShellError::UnterminatedDoubleQuote);
        assert_eq!(word(&lx, r#""a\b""#).unwrap(), r"a\b");
        assert_eq!(word(&lx, "'a`b'").unwrap(), "a`b");
        assert_eq!(word(&lx, "${NOPE:-x`}y}").unwrap(), "x}y");
    }

    #[test]
    fn backtick_escape_words_and_raw() {
        let lx = Lexer::new('`');
        assert_eq!(lx.process_words("a` b c", &env()).unwrap(), ["a b", "c"]);
        let raw = Lexer { raw_escapes: true, ..Lexer::new('`') };
        assert_eq!(word(&raw, "a`$PWD").unwrap(), "a`$PWD");
    }

    #[test]
    fn words_split_expansions_but_not_quotes() {
        let lx = Lexer::default();
        assert_eq!(lx.process_words("x$SP y", &env()).unwrap(), ["xa", "b", "y"]);
        assert_eq!(lx.process_words("x\"$SP\" y", &env()).unwrap(), ["xa  b", "y"]);
        assert_eq!(lx.process_words("\"\" a", &env()).unwrap(), ["a"]);
        // Unlike BuildKit, text before a modifier expansion is kept.
        assert_eq!(lx.process_words("a${NOPE:-b c}d", &env()).unwrap(), ["ab", "cd"]);
        assert_eq!(lx.process_words("cat << EOF", &env()).unwrap(), ["cat", "<< EOF"]);
    }

    #[test]
    fn options() {
        let lx = Lexer { raw_quotes: true, skip_unset_env: true, ..Lexer::default() };
        assert_eq!(word(&lx, "'a'\"$PWD\"$X${Y}").unwrap(), "'a'\"/home\"$X${Y}");
        assert_eq!(word(&lx, "${X:-a}${X//a/b}${X:=c}").unwrap(), "${X:-a}${X//a/b}${X:=c}");
        let lx = Lexer { skip_process_quotes: true, ..Lexer::default() };
        assert_eq!(word(&lx, "'$PWD' \"x\"").unwrap(), "'/home' \"x\"");
    }

    #[test]
    fn matches_and_errors() {
        let lx = Lexer::default();
        let e = lx.process_word("$PWD$NOPE${EMPTY:-x}", &env()).unwrap();
        assert_eq!(e.result, "/homex");
        assert_eq!(e.matched, BTreeSet::from(["PWD".to_string(), "EMPTY".to_string()]));
        assert_eq!(e.unmatched, BTreeSet::from(["NOPE".to_string()]));
        assert_eq!(word(&lx, "${NOPE?}").unwrap_err().to_string(), "NOPE: is not allowed to be unset");
        assert_eq!(word(&lx, "${EMPTY:?}").unwrap_err().to_string(), "EMPTY: is not allowed to be empty");
        assert_eq!(word(&lx, "${PWD").unwrap_err(), ShellError::MissingBrace);
        assert_eq!(word(&lx, "${PWD/a").unwrap_err(), ShellError::MissingSlash);
        assert_eq!(word(&lx, "${PWD:=x}").unwrap_err().to_string(), "unsupported modifier (:=) in substitution");
        assert_eq!(
            word(&lx, r"${PWD#\x}").unwrap_err().to_string(),
            r"invalid pattern (\x) in substitution: invalid escape '\x'"
        );
    }

    #[test]
    fn patterns() {
        let lx = Lexer::default();
        let e = EnvList::from_iter(["F=a.b.c", "U=añb✓c", "R=$0", "NL=a\nb"]);
        let w = |s: &str| lx.process_word(s, &e).map(|x| x.result).unwrap();
        assert_eq!(w("${F#*.}"), "b.c");
        assert_eq!(w("${F##*.}"), "c");
        assert_eq!(w("${F%.*}"), "a.b");
        assert_eq!(w("${F%%.*}"), "a");
        assert_eq!(w("${F/./-}"), "a-b.c");
        assert_eq!(w("${F//./-}"), "a-b-c");
        assert_eq!(w("${F#[a]}"), "a.b.c");
        assert_eq!(w("${U#a?}"), "b✓c");
        assert_eq!(w("${U%?c}"), "añb");
        assert_eq!(w("${U//?/x}"), "xxxxx");
        // Empty matches: between every character, but not right after a match.
        assert_eq!(w("${F//$NOPE/-}"), "-a-.-b-.-c-");
        assert_eq!(w("${F//*/x}"), "x");
        assert_eq!(w("${F/*/x}"), "x");
        // Replace-all expands `$0` in the replacement, as Go's ReplaceAllString does.
        assert_eq!(w("${F//b/[$R]}"), "a.[b].c");
        assert_eq!(w("${F/b/[$R]}"), "a.[$0].c");
        // `*` and `?` stop at newlines (Go regexp `.`).
        assert_eq!(w("${NL#*}"), "a\nb");
        assert_eq!(w("${NL##*}"), "\nb");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let lx = Lexer::default();
        let ok = format!("{}x{}", "${A:-".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert_eq!(word(&lx, &ok).unwrap(), "x");
        let deep = format!("{}x{}", "${A:-\"".repeat(5000), "\"}".repeat(5000));
        assert_eq!(word(&lx, &deep).unwrap_err(), ShellError::TooDeep(MAX_NESTING));
    }

    #[test]
    fn env_list_last_wins() {
        let e = EnvList::from_iter(["a=1", "b", "a=2=3"]);
        assert_eq!(e.get("a").as_deref(), Some("2=3"));
        assert_eq!(e.get("b").as_deref(), Some(""));
        assert_eq!(e.get("c"), None);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["a", "b", "a"]);
    }

    #[test]
    fn no_panics_on_generated_input() {
        let alphabet: Vec<char> = "${}:-+?#%/\\`'\"*ab Z_1@!<\n한👽\u{FEFF}".chars().collect();
        let env = EnvList::from_iter(["a=x y", "b=", "Z=*\\", "ab=한"]);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            for escape in ['\\', '`'] {
                for flags in 0..4u8 {
                    let lx = Lexer {
                        raw_quotes: flags & 1 != 0,
                        raw_escapes: flags & 2 != 0,
                        skip_unset_env: flags & 1 != 0,
                        ..Lexer::new(escape)
                    };
                    let _ = lx.process_word(&s, &env);
                    let _ = lx.process_words(&s, &env);
                }
            }
        }
    }
}
