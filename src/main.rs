//! The `strata` command: a thin binary over the strata libraries.
//!
//! `cli` holds the clap definitions; `build` runs a build from flags to outputs;
//! `resolve` brings base images in; `outputs` writes results; `cache` carries the
//! build cache between machines; `imagetools` merges and shows multi-platform
//! images in registries; `housekeeping` is
//! images/tag/rm/inspect/du; `prune` sweeps the store; `progress` and `tty` print
//! what happens.

mod annotations;
mod attest;
mod build;
mod cache;
mod cli;
mod config;
mod created;
mod diagnostics;
mod docker_load;
mod history;
mod housekeeping;
mod imagetools;
mod outputs;
mod progress;
mod prune;
mod remote_context;
mod resolve;
mod rootless;
mod ssh_keys;
mod tty;
mod units;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// An error with the exit code it deserves: 1 for a failed build, 2 for bad usage.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: 2, message: message.into() }
    }
    pub fn build(message: impl Into<String>) -> Self {
        Failure { code: 1, message: message.into() }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::build(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// glibc gives each thread that allocates an arena of its own, up to 8 per core. The
/// context walk's worker threads allocate paths that the main thread keeps and frees,
/// which leaves every arena fragmented: a rebuild of a 300 000-file context peaked at
/// 346 MB resident with glibc's default (16 arenas on 2 cores), 242 MB with two, no
/// slower. As many arenas as cores (at least two, at most eight), set before any
/// thread starts; a `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let arenas = cores.clamp(2, 8) as libc::c_int;
    // SAFETY: mallopt only sets a parameter of glibc's allocator; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    if let Some(code) = rootless::helper_main() {
        return code;
    }
    let mut cli = cli::Cli::parse();
    if let Err(f) = cli.apply_config() {
        eprintln!("{}", f.message);
        return ExitCode::from(f.code);
    }
    // An ordinary user's strata works in a user namespace of its own (before any
    // thread starts: unshare needs a single-threaded process).
    if !matches!(cli.command, cli::Command::Completion { .. }) {
        if let Err(message) = rootless::enter_if_unprivileged() {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "strata={0},strata_executor={0},strata_solver={0},strata_oci={0}",
        cli.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(&cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: &cli::Cli) -> Result<()> {
    use cli::Command;
    match &cli.command {
        Command::Build(args) => {
            build::run(cli, args).await?;
            if let Some(keep) = &cli.settings.storage.keep {
                prune::after_build(cli, keep);
            }
            Ok(())
        }
        Command::Images => housekeeping::images(cli),
        Command::Tag { source, target } => housekeeping::tag(cli, source, target),
        Command::Rm { names } => housekeeping::rm(cli, names),
        Command::Inspect { name, attestations: false, .. } => housekeeping::inspect(cli, name),
        Command::Inspect { name, attestations: true, predicate_type } => {
            attest::inspect::run(cli, name, predicate_type.as_deref()).await
        }
        Command::Push(p) => outputs::push_command(cli, p).await,
        Command::Save { name, output, format } => outputs::save_command(cli, name, output, format),
        Command::Load { input, tag } => housekeeping::load(cli, input, tag.as_deref()),
        Command::Login { registry, username, password, password_stdin } => {
            housekeeping::login(cli, registry, username.as_deref(), password.as_deref(), *password_stdin).await
        }
        Command::Logout { registry } => housekeeping::logout(registry),
        Command::Du => housekeeping::du(cli),
        Command::Prune { all, keep_storage, filter } => housekeeping::prune(cli, *all, keep_storage.as_deref(), filter),
        Command::Verify(args) => verify::run(cli, args).await,
        Command::Imagetools { command } => match command {
            cli::ImagetoolsCommand::Create(args) => imagetools::create(cli, args).await,
            cli::ImagetoolsCommand::Inspect { name, raw, format } => imagetools::inspect(cli, name, *raw, format).await,
        },
        Command::History { command } => history::command::run(cli, command),
        Command::Completion { shell } => {
            let mut cmd = cli::Cli::command();
            clap_complete::generate(*shell, &mut cmd, "strata", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Registry client options from the global flags.
pub fn registry_options(cli: &cli::Cli) -> strata_oci::registry::RegistryOptions {
    strata_oci::registry::RegistryOptions {
        ca_files: cli.tls_ca.clone(),
        insecure_registries: cli.insecure_registries.clone(),
        ..Default::default()
    }
}

/// The local store, opened: its lock is held for as long as the value (or a clone)
/// lives, so a running `strata prune` is waited for and cannot sweep under the command.
pub fn open_store(cli: &cli::Cli) -> Result<strata_oci::store::BlobStore> {
    let root = store_root(cli);
    strata_oci::store::BlobStore::open(&root)
        .map_err(|e| Failure::build(format!("error: opening the store {}: {e}", root.display())))
}

/// The store directory: `--root`, else /var/lib/strata as root, else $XDG_DATA_HOME/strata.
pub fn store_root(cli: &cli::Cli) -> std::path::PathBuf {
    if let Some(r) = &cli.root {
        // Absolute, so runc bundles and mounts never depend on the working directory.
        return std::path::absolute(r).unwrap_or_else(|_| r.clone());
    }
    if rustix::process::geteuid().is_root() && !rootless::entered() {
        return "/var/lib/strata".into();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| "/tmp".into());
    base.join("strata")
}
