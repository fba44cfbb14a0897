//! The typed Dockerfile instructions (BuildKit's `instructions/commands.go`).
//!
//! Values are kept as written, unexpanded: `COPY $SRC /app` holds `$SRC`. The
//! lowering expands them with [`Instruction::expand`] once it knows the environment
//! of the stage, exactly where BuildKit's dispatcher does.

use std::time::Duration;

use serde::Serialize;

use super::mount::MountSpec;
use super::run_options::{DeviceSpec, NetworkMode, Security};
use crate::ast::chomp_tabs;

/// Lines of the Dockerfile an instruction spans, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
pub struct Location {
    pub start_line: usize,
    pub end_line: usize,
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located<T> {
    /// The keyword as written (`RUN`, `run`, `Run`).
    pub keyword: String,
    /// The logical line as written (continuations joined, heredoc bodies not
    /// included), trimmed: BuildKit's `String()` of a command.
    pub code: String,
    pub location: Location,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
    /// Names of the builder flags given (`["mount", "network"]`), in order.
    pub flags_used: Vec<String>,
    pub instruction: T,
}

/// Any instruction of a stage (FROM starts a stage and is kept in [`super::Stage`]).
pub type Command = Located<Instruction>;

/// A typed instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Instruction {
    From(FromCommand),
    Run(RunCommand),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    /// `SHELL ["executable", "parameters"]` (JSON form only).
    Shell(Vec<String>),
    Healthcheck(HealthcheckCommand),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    /// Ports as written (sorted, as BuildKit sorts them), e.g. `80/tcp`, `$PORT`.
    Expose(Vec<String>),
    Add(AddCommand),
    Copy(CopyCommand),
    /// Paths, trimmed.
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDef>),
    /// The trigger expression stored in the image (`RUN make`), heredoc bodies
    /// appended as written.
    Onbuild(String),
    StopSignal(String),
}

impl Instruction {
    /// The instruction's name in upper case (`COPY`).
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
        }
    }
}

/// `FROM [--platform=…] base [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FromCommand {
    /// The image or stage to start from, unexpanded.
    pub base_name: String,
    /// The `AS` name, lower-cased.
    pub stage_name: Option<String>,
    /// `--platform`, unexpanded; `None` when absent or empty.
    pub platform: Option<String>,
    /// The doc comment: a comment line above `FROM` that starts with the stage name.
    pub doc: Option<String>,
}

/// A command line in shell form (run through the stage's `SHELL`) or exec form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "args", rename_all = "lowercase")]
pub enum ShellOrExec {
    /// The command as one string for the shell. Empty when the instruction had no
    /// arguments at all.
    Shell(String),
    /// A JSON array, run as is.
    Exec(Vec<String>),
}

impl ShellOrExec {
    /// BuildKit's `handleJSONArgs`: exec form keeps the arguments, shell form joins
    /// them with one space.
    pub fn from_args(args: Vec<String>, json: bool) -> ShellOrExec {
        if json {
            ShellOrExec::Exec(args)
        } else {
            ShellOrExec::Shell(args.join(" "))
        }
    }

    /// The arguments as BuildKit's `CmdLine` holds them: the shell string alone (none
    /// when empty) or the exec array.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            ShellOrExec::Shell(s) if s.is_empty() => Vec::new(),
            ShellOrExec::Shell(s) => vec![s.clone()],
            ShellOrExec::Exec(v) => v.clone(),
        }
    }

    /// Whether the stage's shell is prepended (`PrependShell`).
    pub fn is_shell_form(&self) -> bool {
        matches!(self, ShellOrExec::Shell(_))
    }
}

/// A heredoc body attached to a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc name (`EOF`).
    pub name: String,
    /// The body as written, each line with its `\n`; tabs not yet stripped for `<<-`.
    pub data: String,
    /// `<<-`: leading tabs are stripped when the body is used.
    pub chomp: bool,
    /// False when the delimiter was quoted (`<<'EOF'`).
    pub expand: bool,
}

impl InlineFile {
    /// The body with `<<-` tab stripping applied.
    pub fn content(&self) -> String {
        if self.chomp {
            chomp_tabs(&self.data)
        } else {
            self.data.clone()
        }
    }
}

/// `RUN [--mount=…] [--network=…] [--security=…] [--device=…] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCommand {
    pub cmd: ShellOrExec,
    /// Heredoc bodies, in the order of their openers.
    pub heredocs: Vec<InlineFile>,
    /// The `--mount` values as written.
    pub mount_specs: Vec<String>,
    /// The mounts. Before [`Instruction::expand`] they are read from the literal text;
    /// a mount whose literal text is not valid on its own (it uses variables in typed
    /// fields such as `uid=$UID`) holds only its `from` until expansion, as in BuildKit.
    pub mounts: Vec<MountSpec>,
    /// `--network`; `None` when not given (the builder's default).
    pub network: Option<NetworkMode>,
    /// `--security`; `None` when not given (sandbox).
    pub security: Option<Security>,
    /// `--device` values.
    pub devices: Vec<DeviceSpec>,
}

/// `HEALTHCHECK`, as Docker stores it in the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthcheckCommand {
    /// `["NONE"]`, `["CMD", exec…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Zero means "not set" (inherit), as in the image config.
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

/// One `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written in the legacy `ENV key value` form (no `=`).
    pub no_delim: bool,
}

/// One name of an `ARG`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDef {
    pub key: String,
    /// The default, unexpanded; `None` for `ARG name`.
    pub value: Option<String>,
    /// The doc comment: a comment line above the ARG that starts with the name.
    pub doc: Option<String>,
}

/// An inline file given as a heredoc source of ADD or COPY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceContent {
    /// The heredoc name, used as the file name.
    pub path: String,
    /// The body, with `<<-` tab stripping applied.
    pub data: String,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// `ADD [flags] src… dest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AddCommand {
    /// Source paths and URLs, unexpanded.
    pub sources: Vec<String>,
    pub dest: String,
    /// Heredoc sources (`ADD <<EOF /dest`).
    pub heredocs: Vec<SourceContent>,
    /// `--chown`, `None` when absent or empty.
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub checksum: Option<String>,
    /// `--keep-git-dir`, `None` when not given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack`, `None` when not given.
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

/// `COPY [flags] src… dest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CopyCommand {
    /// Source paths, unexpanded.
    pub sources: Vec<String>,
    pub dest: String,
    /// Heredoc sources (`COPY <<EOF /dest`).
    pub heredocs: Vec<SourceContent>,
    /// `--from`: a stage name or index, or an image; `None` when absent or empty.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}
