//! Builder flags (`COPY --from=build`, `RUN --mount=…`) with BuildKit's `BFlags` rules.
//!
//! Each instruction declares the flags it accepts and their kind; [`parse_flags`] then
//! reads the node's flag words:
//!
//! * a word that names no declared flag is `unknown flag: --name` (with a
//!   "did you mean" suggestion when a declared flag is close);
//! * a bool flag accepts `--link`, `--link=true` and `--link=false` (any case), but
//!   not `--link=`;
//! * a string flag needs `=value` (the value may be empty) and may appear once;
//! * a list flag (`--mount`, `--exclude`) needs `=value` and may repeat;
//! * a bare `--` ends the flags.

use std::collections::BTreeMap;

use super::suggest::{did_you_mean, suggest};

/// What a flag holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name` or `--name=true|false`.
    Bool,
    /// `--name=value`, at most once.
    String,
    /// `--name=value`, any number of times.
    List,
}

/// Why an instruction's flags were rejected. Messages are BuildKit's, but a suggested
/// flag is written as a flag (`did you mean --from?`; BuildKit says `from`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("arg should start with -- : {0}")]
    NotAFlag(String),
    #[error("unknown flag: {flag}{}", did_you_mean(&suggestion.as_ref().map(|s| format!("--{s}"))))]
    Unknown { flag: String, suggestion: Option<String> },
    #[error("duplicate flag specified: {0}")]
    Duplicate(String),
    #[error("missing a value on flag: {0}")]
    MissingValue(String),
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotABool { flag: String, value: String },
}

/// The value a flag was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    Bool(bool),
    String(String),
    List(Vec<String>),
}

/// The flags an instruction was given, by name (without `--`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFlags {
    values: BTreeMap<String, FlagValue>,
    /// Names of the flags present, in order of first appearance.
    used: Vec<String>,
}

impl ParsedFlags {
    /// The names of the flags present, in order of first appearance.
    pub fn used(&self) -> &[String] {
        &self.used
    }

    /// Whether the flag was given at all.
    pub fn is_used(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A bool flag: `None` when absent.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(FlagValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A string flag: `None` when absent (`Some("")` for `--name=`).
    pub fn string(&self, name: &str) -> Option<String> {
        match self.values.get(name) {
            Some(FlagValue::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// A string flag, `None` when absent or empty (BuildKit treats both alike).
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name).filter(|s| !s.is_empty())
    }

    /// A list flag's values, in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(FlagValue::List(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// Read `words` (as written, e.g. `--from=build`) against the declared flags.
pub fn parse_flags(words: &[String], declared: &[(&str, FlagKind)]) -> Result<ParsedFlags, FlagError> {
    let mut out = ParsedFlags::default();
    for word in words {
        if word == "--" {
            break;
        }
        let Some(body) = word.strip_prefix("--") else {
            return Err(FlagError::NotAFlag(word.clone()));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = format!("--{name}");
        let Some(&(_, kind)) = declared.iter().find(|(n, _)| *n == name) else {
            let suggestion = suggest(name, declared.iter().map(|(n, _)| *n), true);
            return Err(FlagError::Unknown { flag, suggestion });
        };
        if kind != FlagKind::List && out.values.contains_key(name) {
            return Err(FlagError::Duplicate(flag));
        }
        if !out.used.iter().any(|u| u == name) {
            out.used.push(name.to_string());
        }
        let parsed = match kind {
            FlagKind::Bool => match value {
                Some("") => return Err(FlagError::MissingValue(flag)),
                None => FlagValue::Bool(true),
                Some(v) => match v.to_lowercase().as_str() {
                    "true" => FlagValue::Bool(true),
                    "false" => FlagValue::Bool(false),
                    _ => return Err(FlagError::NotABool { flag, value: v.to_string() }),
                },
            },
            FlagKind::String => match value {
                None => return Err(FlagError::MissingValue(flag)),
                Some(v) => FlagValue::String(v.to_string()),
            },
            FlagKind::List => match value {
                None => return Err(FlagError::MissingValue(flag)),
                Some(v) => {
                    if let Some(FlagValue::List(list)) = out.values.get_mut(name) {
                        list.push(v.to_string());
                        continue;
                    }
                    FlagValue::List(vec![v.to_string()])
                }
            },
        };
        out.values.insert(name.to_string(), parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    const DECLARED: &[(&str, FlagKind)] =
        &[("str1", FlagKind::String), ("bool1", FlagKind::Bool), ("many", FlagKind::List)];

    #[test]
    fn bflags_rules() {
        let f = parse_flags(&words(&["--bool1", "--str1=BYE", "--many=a", "--many=b"]), DECLARED).unwrap();
        assert_eq!(f.bool("bool1"), Some(true));
        assert_eq!(f.string("str1").as_deref(), Some("BYE"));
        assert_eq!(f.list("many"), vec!["a", "b"]);
        assert_eq!(f.used(), ["bool1", "str1", "many"]);
        assert_eq!(parse_flags(&words(&["--bool1=FALSE"]), DECLARED).unwrap().bool("bool1"), Some(false));
        assert_eq!(parse_flags(&words(&["--str1="]), DECLARED).unwrap().string("str1").as_deref(), Some(""));
        assert_eq!(parse_flags(&words(&["--", "--nope"]), DECLARED).unwrap(), ParsedFlags::default());

        let err = |w: &[&str]| parse_flags(&words(w), DECLARED).unwrap_err().to_string();
        assert_eq!(err(&["--str1"]), "missing a value on flag: --str1");
        assert_eq!(err(&["--bool1="]), "missing a value on flag: --bool1");
        assert_eq!(err(&["--bool1=false1"]), "expecting boolean value for flag --bool1, not: false1");
        assert_eq!(err(&["--bool2"]), "unknown flag: --bool2 (did you mean --bool1?)");
        assert_eq!(err(&["--zzzzz"]), "unknown flag: --zzzzz");
        assert_eq!(err(&["--str1=a", "--str1=b"]), "duplicate flag specified: --str1");
        assert_eq!(err(&["--many"]), "missing a value on flag: --many");
    }
}
