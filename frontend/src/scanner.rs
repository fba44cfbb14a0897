//! The line scanner: physical lines → logical instructions, in BuildKit's manner.
//!
//! It reads parser directives from the leading comment block (`# escape=`, `# syntax=`,
//! `# check=`), strips a byte-order mark, joins continuation lines (the escape
//! character at the end of a line, optionally followed by blanks), drops comment lines
//! and empty lines inside a continuation (warning about the latter), and hands out
//! heredoc bodies when the instruction layer asks for them, in the order the openers
//! appear. These are the stateful parts a static grammar cannot express.

use std::fmt;

/// Longest accepted physical line (Go's `bufio.MaxScanTokenSize` - 1).
pub const MAX_LINE: usize = 65535;

/// A parse error with its 1-based location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub start_line: usize,
    pub end_line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl ParseError {
    pub fn new(message: String, start_line: usize, end_line: usize) -> Self {
        ParseError { message, start_line, end_line, column: None }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.start_line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub short: String,
    pub detail: Vec<String>,
    pub line: usize,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
    /// (name, value, 1-based line) in file order.
    pub seen: Vec<(String, String, usize)>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { escape: '\\', syntax: None, check: None, seen: Vec::new() }
    }
}

/// Known directive names.
pub const DIRECTIVE_NAMES: [&str; 3] = ["escape", "syntax", "check"];

/// Match `# name = value` (BuildKit's `reDirective`): returns (name lower-cased, value).
pub fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_go_space);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if name_len == 0 {
        return None;
    }
    let name = &rest[..name_len];
    let after = rest[name_len..].trim_start_matches(is_go_space);
    let value = after.strip_prefix('=')?.trim_matches(is_go_space);
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

fn is_go_space(c: char) -> bool {
    // RE2's \s: [\t\n\f\r ]
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// One logical line handed to the instruction layer.
#[derive(Debug, Clone)]
pub struct LogicalLine {
    pub text: String,
    pub start_line: usize,
    pub comments: Vec<String>,
}

/// The file ended before a heredoc's terminator line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnterminatedHeredoc;

/// The stateful line scanner.
pub struct Scanner<'a> {
    lines: std::iter::Peekable<std::str::SplitInclusive<'a, char>>,
    current_line: usize,
    directives: Directives,
    directives_done: bool,
    warnings: Vec<Warning>,
    comments: Vec<String>,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        Scanner {
            lines: text.split_inclusive('\n').peekable(),
            current_line: 0,
            directives: Directives::default(),
            directives_done: false,
            warnings: Vec::new(),
            comments: Vec::new(),
        }
    }

    pub fn directives(&self) -> &Directives {
        &self.directives
    }

    /// The 1-based number of the last physical line read.
    pub fn current_line(&self) -> usize {
        self.current_line
    }

    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    fn read_physical(&mut self) -> Result<Option<&'a str>, ParseError> {
        let Some(raw) = self.lines.next() else { return Ok(None) };
        self.current_line += 1;
        let line = trim_newline(raw);
        if line.len() > MAX_LINE {
            return Err(ParseError::new(
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
                self.current_line,
                self.current_line,
            ));
        }
        Ok(Some(raw))
    }

    fn parse_directive_line(&mut self, line: &str) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        if !DIRECTIVE_NAMES.contains(&name.as_str()) {
            self.directives_done = true;
            return Ok(());
        }
        if self.directives.seen.iter().any(|(n, _, _)| *n == name) {
            return Err(ParseError::new(
                format!("only one {name} parser directive can be used"),
                self.current_line,
                self.current_line,
            ));
        }
        match name.as_str() {
            "escape" => {
                if value != "`" && value != "\\" {
                    return Err(ParseError::new(
                        format!("invalid escape token '{value}' does not match ` or \\"),
                        self.current_line,
                        self.current_line,
                    ));
                }
                self.directives.escape = value.chars().next().unwrap_or('\\');
            }
            "syntax" => self.directives.syntax = Some(value.clone()),
            "check" => self.directives.check = Some(value.clone()),
            _ => {}
        }
        self.directives.seen.push((name, value, self.current_line));
        Ok(())
    }

    /// BuildKit's `processLine`: newline trimmed, optionally leading blanks, comments dropped.
    fn process_line(&mut self, raw: &'a str, strip_left: bool) -> Result<&'a str, ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start_matches([' ', '\t']);
        }
        self.parse_directive_line(token)?;
        if is_comment(token) {
            return Ok("");
        }
        Ok(token)
    }

    /// Remove a trailing escape character (plus blanks): (line, is_end_of_line).
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        // BuildKit: `([^E])?E[ \t]*$` where E is the escape character, so an escaped
        // escape character at the end of a line does not continue it.
        let escape = self.directives.escape;
        let trimmed = line.trim_end_matches([' ', '\t']);
        match trimmed.strip_suffix(escape) {
            Some(rest) if !rest.ends_with(escape) => (rest, false),
            _ => (line, true),
        }
    }

    /// The next logical instruction line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        loop {
            let Some(raw) = self.read_physical()? else { return Ok(None) };
            let trimmed_nl = trim_newline(raw);
            if is_comment(trimmed_nl) {
                let comment = trimmed_nl.trim_start_matches([' ', '\t'])[1..].trim();
                if comment.is_empty() {
                    self.comments.clear();
                } else {
                    self.comments.push(comment.to_string());
                }
            }
            let directives_before = self.directives.seen.len();
            let token = self.process_line(raw, true)?;
            if self.directives.seen.len() > directives_before {
                // A parser directive is not a comment of the first instruction.
                self.comments.pop();
            }
            let start_line = self.current_line;
            let (first, mut end) = self.trim_continuation(token);
            if end && first.is_empty() {
                continue;
            }
            let mut line = first.to_string();
            let mut empty_continuation = false;
            while !end {
                let Some(raw) = self.read_physical()? else { break };
                let token = self.process_line(raw, false)?;
                if is_comment(trim_newline(raw)) {
                    continue;
                }
                if token.trim_start_matches([' ', '\t']).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (cont, e) = self.trim_continuation(token);
                end = e;
                line.push_str(cont);
            }
            if empty_continuation {
                self.warnings.push(Warning {
                    short: format!("Empty continuation line found in: {line}"),
                    detail: vec!["Empty continuation lines will become errors in a future release".to_string()],
                    line: start_line,
                });
            }
            let comments = std::mem::take(&mut self.comments);
            return Ok(Some(LogicalLine { text: line, start_line, comments }));
        }
    }

    /// Collect a heredoc body up to its terminator line; an error when the file ends first.
    pub fn read_heredoc_body(&mut self, name: &str, chomp: bool) -> Result<String, UnterminatedHeredoc> {
        let mut content = String::new();
        loop {
            let raw = match self.read_physical() {
                Ok(Some(raw)) => raw,
                _ => return Err(UnterminatedHeredoc),
            };
            let mut candidate = trim_newline(raw);
            if chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == name {
                return Ok(content);
            }
            content.push_str(raw);
        }
    }
}

fn trim_newline(s: &str) -> &str {
    s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s)
}

/// A comment line: `#` as the first non-blank character.
pub fn is_comment(line: &str) -> bool {
    line.trim_start_matches([' ', '\t']).starts_with('#')
}

/// A directive found by [`detect_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDirective {
    pub value: String,
    pub cmdline: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// BuildKit's `DetectSyntax` / `ParseDirective`: find a named directive in the leading
/// comment block (a `#!` line may precede it). For `syntax`, `//` comments and a
/// one-line JSON object `{"syntax": ...}` are also accepted.
pub fn detect_directive(name: &str, source: &str) -> Option<FoundDirective> {
    let source = source.strip_prefix('\u{FEFF}').unwrap_or(source);
    let is_syntax = name == "syntax";
    for (i, raw) in source.split_inclusive('\n').enumerate() {
        let line = trim_newline(raw);
        let lineno = i + 1;
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        let candidate = if let Some(rest) = line.strip_prefix("//").filter(|_| is_syntax) {
            Some(format!("#{rest}"))
        } else if line.starts_with('#') {
            Some(line.to_string())
        } else {
            None
        };
        if let Some(c) = candidate {
            if let Some((n, v)) = match_directive(&c) {
                if n == name {
                    let value = v.split_whitespace().next().unwrap_or("").to_string();
                    return Some(FoundDirective { value, cmdline: v, start_line: lineno, end_line: lineno });
                }
            }
            continue;
        }
        if is_syntax && i == 0 && line.trim_start().starts_with('{') {
            // The JSON header form: the whole file is one JSON object.
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(source) {
                if let Some(serde_json::Value::String(v)) = m.get("syntax") {
                    let value = v.split_whitespace().next().unwrap_or("").to_string();
                    return Some(FoundDirective { value, cmdline: v.clone(), start_line: 1, end_line: 1 });
                }
            }
        }
        return None;
    }
    None
}
