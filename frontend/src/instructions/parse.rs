//! One syntax-tree node → one typed instruction (BuildKit's `ParseInstruction`):
//! argument counts, builder flags, heredoc sources, stage names, and the
//! instruction-level lint rules.

use std::time::Duration;

use super::commands::{
    AddCommand, ArgDef, Command, CopyCommand, FromCommand, HealthcheckCommand, InlineFile, Instruction, KeyValue,
    Located, Location, RunCommand, ShellOrExec, SourceContent,
};
use super::errors::{InstructionError, InstructionErrorKind as Kind};
use super::flags::{parse_flags, FlagError, FlagKind, ParsedFlags};
use super::lint::{Lint, LintRule};
use super::mount::{parse_mount, parse_mount_literal};
use super::run_options::{parse_device, NetworkMode, RunOptionError, Security};
use super::suggest::suggest;
use super::units::{parse_go_duration, parse_go_int32};
use crate::ast::{parse_heredoc, Arg, Heredoc, Node};

/// Every instruction keyword, lower case.
pub const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Convert one node of the syntax tree into a typed instruction.
pub fn parse_instruction(node: &Node) -> Result<Command, InstructionError> {
    parse_node(node, &mut Vec::new())
}

/// [`parse_instruction`], collecting the instruction-level lint findings.
pub(crate) fn parse_node(node: &Node, lints: &mut Vec<Lint>) -> Result<Command, InstructionError> {
    let req = Request::new(node);
    let location = req.location;
    let fail = |kind: Kind, token: Option<String>| InstructionError {
        kind,
        location,
        column: None,
        token,
        code: node.original.trim().to_string(),
    };
    let (instruction, flags) = req.parse(lints).map_err(|e| {
        let token = match &e {
            Kind::UnknownInstruction { instruction, .. } => Some(instruction.clone()),
            Kind::Flag(FlagError::Unknown { flag, .. } | FlagError::Duplicate(flag)) => Some(flag.clone()),
            _ => None,
        };
        fail(e, token)
    })?;
    Ok(Located {
        keyword: node.keyword.clone(),
        code: node.original.trim().to_string(),
        location,
        comments: node.comments.clone(),
        flags_used: flags.used().to_vec(),
        instruction,
    })
}

/// BuildKit's `parseRequest`: a node flattened into what the parsers need.
struct Request<'a> {
    node: &'a Node,
    /// The keyword as written.
    command: &'a str,
    args: Vec<String>,
    location: Location,
}

/// BuildKit's `nodeArgs`: plain values, and for ONBUILD the nested keyword followed
/// by its arguments.
fn node_args(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for a in &node.args {
        match a {
            Arg::Value(v) => out.push(v.clone()),
            Arg::Nested(child) => {
                out.push(child.keyword.clone());
                out.extend(node_args(child));
            }
        }
    }
    out
}

type Parsed = Result<(Instruction, ParsedFlags), Kind>;

impl<'a> Request<'a> {
    fn new(node: &'a Node) -> Self {
        Request {
            node,
            command: &node.keyword,
            args: node_args(node),
            location: Location { start_line: node.start_line, end_line: node.end_line.max(node.start_line) },
        }
    }

    fn flags(&self, declared: &[(&str, FlagKind)]) -> Result<ParsedFlags, Kind> {
        Ok(parse_flags(&self.node.flags, declared)?)
    }

    fn lint(&self, lints: &mut Vec<Lint>, rule: LintRule, message: String) {
        lints.push(Lint { rule, message, location: self.location, stage: None });
    }

    fn parse(&self, lints: &mut Vec<Lint>) -> Parsed {
        match self.node.value.as_str() {
            "env" => {
                let flags = self.flags(&[])?;
                Ok((Instruction::Env(self.key_values("ENV")?), flags))
            }
            "maintainer" => {
                self.lint(
                    lints,
                    LintRule::MaintainerDeprecated,
                    "Maintainer instruction is deprecated in favor of using label".to_string(),
                );
                let value = self.exactly_one("MAINTAINER")?;
                Ok((Instruction::Maintainer(value), self.flags(&[])?))
            }
            "label" => {
                let flags = self.flags(&[])?;
                Ok((Instruction::Label(self.key_values("LABEL")?), flags))
            }
            "add" => self.parse_add(),
            "copy" => self.parse_copy(),
            "from" => self.parse_from(lints),
            "onbuild" => self.parse_onbuild(),
            "workdir" => {
                let value = self.exactly_one("WORKDIR")?;
                Ok((Instruction::Workdir(value), self.flags(&[])?))
            }
            "run" => self.parse_run(),
            "cmd" => {
                let flags = self.flags(&[])?;
                Ok((Instruction::Cmd(self.command_line()), flags))
            }
            "entrypoint" => {
                let flags = self.flags(&[])?;
                Ok((Instruction::Entrypoint(self.command_line()), flags))
            }
            "healthcheck" => self.parse_healthcheck(),
            "expose" => {
                if self.args.is_empty() {
                    return Err(Kind::AtLeastOneArgument("EXPOSE"));
                }
                let flags = self.flags(&[])?;
                let mut ports = self.args.clone();
                ports.sort();
                Ok((Instruction::Expose(ports), flags))
            }
            "user" => {
                let value = self.exactly_one("USER")?;
                Ok((Instruction::User(value), self.flags(&[])?))
            }
            "volume" => {
                if self.args.is_empty() {
                    return Err(Kind::AtLeastOneArgument("VOLUME"));
                }
                let flags = self.flags(&[])?;
                let mut volumes = Vec::with_capacity(self.args.len());
                for v in &self.args {
                    let v = v.trim_matches(char::is_whitespace);
                    if v.is_empty() {
                        return Err(Kind::EmptyVolume);
                    }
                    volumes.push(v.to_string());
                }
                Ok((Instruction::Volume(volumes), flags))
            }
            // BuildKit reads no flags for STOPSIGNAL and ARG: any given are ignored.
            "stopsignal" => Ok((Instruction::StopSignal(self.exactly_one("STOPSIGNAL")?), ParsedFlags::default())),
            "arg" => Ok((Instruction::Arg(self.arg_defs()?), ParsedFlags::default())),
            "shell" => {
                let flags = self.flags(&[])?;
                match self.command_line() {
                    ShellOrExec::Exec(v) if !v.is_empty() => Ok((Instruction::Shell(v), flags)),
                    ShellOrExec::Shell(s) if !s.is_empty() => Err(Kind::NotJson("SHELL")),
                    _ => Err(Kind::AtLeastOneArgument("SHELL")),
                }
            }
            _ => {
                let names: Vec<String> = INSTRUCTIONS.iter().map(|s| s.to_uppercase()).collect();
                Err(Kind::UnknownInstruction {
                    instruction: self.command.to_string(),
                    suggestion: suggest(self.command, names.iter().map(String::as_str), false),
                })
            }
        }
    }

    fn exactly_one(&self, name: &'static str) -> Result<String, Kind> {
        match self.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Kind::ExactlyOneArgument(name)),
        }
    }

    /// BuildKit's `handleJSONArgs` over the node's arguments.
    fn command_line(&self) -> ShellOrExec {
        ShellOrExec::from_args(self.args.clone(), self.node.json)
    }

    /// ENV / LABEL: the parser's (key, value, delimiter) triples.
    fn key_values(&self, name: &'static str) -> Result<Vec<KeyValue>, Kind> {
        if self.args.is_empty() {
            return Err(Kind::AtLeastOneArgument(name));
        }
        if !self.args.len().is_multiple_of(3) {
            return Err(Kind::TooManyArguments(name));
        }
        let mut out = Vec::with_capacity(self.args.len() / 3);
        for triple in self.args.chunks(3) {
            if triple[0].is_empty() {
                return Err(Kind::BlankName(name));
            }
            out.push(KeyValue { key: triple[0].clone(), value: triple[1].clone(), no_delim: triple[2].is_empty() });
        }
        Ok(out)
    }

    fn arg_defs(&self) -> Result<Vec<ArgDef>, Kind> {
        if self.args.is_empty() {
            return Err(Kind::AtLeastOneArgument("ARG"));
        }
        let mut out = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => {
                    if k.is_empty() {
                        return Err(Kind::BlankName("ARG"));
                    }
                    (k.to_string(), Some(v.to_string()))
                }
                None => (arg.clone(), None),
            };
            let doc = doc_comment(&self.node.comments, &key);
            out.push(ArgDef { key, value, doc });
        }
        Ok(out)
    }

    /// Sources, destination and heredoc sources of ADD / COPY.
    fn sources_and_dest(&self, name: &'static str) -> Result<(Vec<String>, String, Vec<SourceContent>), Kind> {
        let (dest, sources) = match self.args.split_last() {
            Some((d, s)) => (d.clone(), s),
            None => return Err(Kind::NoDestination(name)),
        };
        if heredoc_word(&dest).is_some() {
            return Err(Kind::HeredocNotAllowed(name, "a destination"));
        }
        let mut paths = Vec::new();
        let mut contents = Vec::new();
        for src in sources {
            match heredoc_word(src) {
                Some(h) => {
                    let body = self
                        .node
                        .heredocs
                        .iter()
                        .rev()
                        .find(|d| d.name == h.name)
                        .map(|d| d.content.clone())
                        .unwrap_or_default();
                    let data = if h.chomp { crate::ast::chomp_tabs(&body) } else { body };
                    contents.push(SourceContent { path: h.name, data, expand: h.expand });
                }
                None => paths.push(src.clone()),
            }
        }
        Ok((paths, dest, contents))
    }

    fn parse_add(&self) -> Parsed {
        if self.args.len() < 2 {
            return Err(Kind::NoDestination("ADD"));
        }
        let flags = self.flags(&[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ])?;
        let (sources, dest, heredocs) = self.sources_and_dest("ADD")?;
        let add = AddCommand {
            sources,
            dest,
            heredocs,
            chown: flags.non_empty("chown"),
            chmod: flags.non_empty("chmod"),
            link: flags.bool("link").unwrap_or(false),
            checksum: flags.non_empty("checksum"),
            keep_git_dir: flags.bool("keep-git-dir"),
            unpack: flags.bool("unpack"),
            exclude: flags.list("exclude"),
        };
        Ok((Instruction::Add(add), flags))
    }

    fn parse_copy(&self) -> Parsed {
        if self.args.len() < 2 {
            return Err(Kind::NoDestination("COPY"));
        }
        let flags = self.flags(&[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
            ("parents", FlagKind::Bool),
        ])?;
        let (sources, dest, heredocs) = self.sources_and_dest("COPY")?;
        let copy = CopyCommand {
            sources,
            dest,
            heredocs,
            from: flags.non_empty("from"),
            chown: flags.non_empty("chown"),
            chmod: flags.non_empty("chmod"),
            link: flags.bool("link").unwrap_or(false),
            parents: flags.bool("parents").unwrap_or(false),
            exclude: flags.list("exclude"),
        };
        Ok((Instruction::Copy(copy), flags))
    }

    fn parse_from(&self, lints: &mut Vec<Lint>) -> Parsed {
        if self.args.len() == 3 && self.args[2] != self.args[2].to_lowercase() {
            self.lint(lints, LintRule::StageNameCasing, format!("Stage name '{}' should be lowercase", self.args[2]));
        }
        if !from_case_matches_as_case(self.command, &self.args) {
            self.lint(
                lints,
                LintRule::FromAsCasing,
                format!("'{}' and '{}' keywords' casing do not match", self.args[1], self.command),
            );
        }
        let stage_name = match self.args.as_slice() {
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                let lower = name.to_lowercase();
                if !is_valid_stage_name(&lower) {
                    return Err(Kind::InvalidStageName(name.clone()));
                }
                Some(lower)
            }
            [_] => None,
            _ => return Err(Kind::FromArguments),
        };
        let flags = self.flags(&[("platform", FlagKind::String)])?;
        let doc = stage_name.as_deref().and_then(|n| doc_comment(&self.node.comments, n));
        let from =
            FromCommand { base_name: self.args[0].clone(), stage_name, platform: flags.non_empty("platform"), doc };
        Ok((Instruction::From(from), flags))
    }

    fn parse_onbuild(&self) -> Parsed {
        let Some(trigger) = self.args.first() else {
            return Err(Kind::AtLeastOneArgument("ONBUILD"));
        };
        let flags = self.flags(&[])?;
        let trigger = trigger.trim_matches(char::is_whitespace).to_uppercase();
        match trigger.as_str() {
            "ONBUILD" => return Err(Kind::OnbuildChaining),
            "MAINTAINER" | "FROM" => return Err(Kind::OnbuildTrigger(trigger)),
            _ => {}
        }
        let mut expression = strip_onbuild_prefix(&self.node.original).to_string();
        for h in &self.node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        Ok((Instruction::Onbuild(expression), flags))
    }

    fn parse_run(&self) -> Parsed {
        let flags = self.flags(&[
            ("device", FlagKind::List),
            ("mount", FlagKind::List),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ])?;
        let cmd = self.command_line();
        let heredocs = self
            .node
            .heredocs
            .iter()
            .map(|h: &Heredoc| InlineFile {
                name: h.name.clone(),
                data: h.content.clone(),
                chomp: h.chomp,
                expand: h.expand,
            })
            .collect();
        let mut devices = Vec::new();
        for spec in flags.list("device") {
            devices.push(parse_device(&spec)?);
        }
        let mount_specs = flags.list("mount");
        let mut mounts = Vec::with_capacity(mount_specs.len());
        for spec in &mount_specs {
            let deferred = parse_mount(spec, None)?;
            mounts.push(parse_mount_literal(spec).unwrap_or(deferred));
        }
        let network = match flags.string("network") {
            None => None,
            Some(v) => Some(NetworkMode::parse(&v).ok_or(RunOptionError::Network(v))?),
        };
        let security = match flags.string("security") {
            None => None,
            Some(v) => Some(Security::parse(&v).ok_or(RunOptionError::Security(v))?),
        };
        let run = RunCommand { cmd, heredocs, mount_specs, mounts, network, security, devices };
        Ok((Instruction::Run(run), flags))
    }

    fn parse_healthcheck(&self) -> Parsed {
        let Some(first) = self.args.first() else {
            return Err(Kind::AtLeastOneArgument("HEALTHCHECK"));
        };
        let typ = first.to_uppercase();
        let rest = &self.args[1..];
        let zero = Duration::ZERO;
        if typ == "NONE" {
            if !rest.is_empty() {
                return Err(Kind::HealthcheckNoneArguments);
            }
            let hc = HealthcheckCommand {
                test: vec![typ],
                interval: zero,
                timeout: zero,
                start_period: zero,
                start_interval: zero,
                retries: 0,
            };
            return Ok((Instruction::Healthcheck(hc), ParsedFlags::default()));
        }
        let flags = self.flags(&[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ])?;
        if typ != "CMD" {
            return Err(Kind::HealthcheckType(typ));
        }
        let cmd = ShellOrExec::from_args(rest.to_vec(), self.node.json);
        let test = match cmd {
            ShellOrExec::Exec(v) if !v.is_empty() => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v);
                t
            }
            ShellOrExec::Shell(s) if !s.is_empty() => vec!["CMD-SHELL".to_string(), s],
            _ => return Err(Kind::HealthcheckMissingCommand),
        };
        let interval = parse_opt_interval("interval", &flags)?;
        let timeout = parse_opt_interval("timeout", &flags)?;
        let start_period = parse_opt_interval("start-period", &flags)?;
        let start_interval = parse_opt_interval("start-interval", &flags)?;
        let retries = match flags.string("retries").filter(|s| !s.is_empty()) {
            None => 0,
            Some(v) => {
                let n = parse_go_int32(&v).map_err(Kind::Retries)?;
                if n < 0 {
                    return Err(Kind::NegativeRetries(n));
                }
                n as u32
            }
        };
        let hc = HealthcheckCommand { test, interval, timeout, start_period, start_interval, retries };
        Ok((Instruction::Healthcheck(hc), flags))
    }
}

/// A HEALTHCHECK duration flag: zero when absent or `0`; a non-zero value under 1ms
/// is an error.
fn parse_opt_interval(name: &'static str, flags: &ParsedFlags) -> Result<Duration, Kind> {
    let value = flags.string(name).unwrap_or_default();
    parse_healthcheck_duration(name, &value)
}

/// Parse the value of a HEALTHCHECK duration flag (`--interval` …) as BuildKit does.
pub fn parse_healthcheck_duration(name: &'static str, value: &str) -> Result<Duration, Kind> {
    if value.is_empty() {
        return Ok(Duration::ZERO);
    }
    let nanos = parse_go_duration(value).map_err(Kind::Duration)?;
    if nanos == 0 {
        return Ok(Duration::ZERO);
    }
    if nanos < 1_000_000 {
        return Err(Kind::IntervalTooShort(name));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A word that opens a heredoc (`<<EOF`), as BuildKit's `MustParseHeredoc` sees it.
fn heredoc_word(word: &str) -> Option<Heredoc> {
    parse_heredoc(word).ok().flatten()
}

/// BuildKit's `getDocComment`: the rest of the first comment line that starts with
/// `name `.
pub fn doc_comment(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let prefix = format!("{name} ");
    comments.iter().find_map(|c| c.strip_prefix(&prefix)).map(str::to_string)
}

/// `^[a-z][a-z0-9-_.]*$`.
pub fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// BuildKit's `doesFromCaseMatchAsCase`.
fn from_case_matches_as_case(command: &str, args: &[String]) -> bool {
    if args.len() < 3 {
        return true;
    }
    let lower = command == command.to_lowercase();
    let upper = command == command.to_uppercase();
    if !lower && !upper {
        return true;
    }
    if lower {
        args[1] == args[1].to_lowercase()
    } else {
        args[1] == args[1].to_uppercase()
    }
}

/// Remove `(?i)^\s*ONBUILD\s*` (RE2's `\s` is `[\t\n\f\r ]`).
fn strip_onbuild_prefix(original: &str) -> &str {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = original.trim_start_matches(is_space);
    match rest.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => rest[7..].trim_start_matches(is_space),
        _ => original,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(is_valid_stage_name("build-env_1.x"));
        assert!(!is_valid_stage_name("1build"));
        assert!(!is_valid_stage_name("a$b"));
        assert_eq!(strip_onbuild_prefix("  onbuild   RUN x"), "RUN x");
        assert_eq!(strip_onbuild_prefix("ONBUILDRUN x"), "RUN x");
        assert_eq!(doc_comment(&["foo sets foo".into()], "foo").as_deref(), Some("sets foo"));
        assert_eq!(doc_comment(&["foobar x".into()], "foo"), None);
        assert_eq!(
            parse_healthcheck_duration("interval", "50ns").unwrap_err().to_string(),
            "Interval \"interval\" cannot be less than 1ms"
        );
    }
}
