//! The command line: clap definitions only; the logic lives in the other modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "A daemonless, Dockerfile-compatible container image builder",
    long_about = "strata builds container images from Dockerfiles, like `docker buildx build`, without a daemon: \
                  same Dockerfile, same flags, an OCI image any tool runs — reproducible by default.",
    after_help = "Exit status: 0 success; 1 the command failed (for a build: a Dockerfile error, a failed step, \
                  a missing file, an unreachable registry, as buildx); 2 the command line is wrong (checked \
                  before anything is read or run).",
    propagate_version = true
)]
pub struct Cli {
    /// Store directory (default /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise)
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Steps run at the same time (default: number of CPUs)
    #[arg(long, global = true, value_name = "N")]
    pub jobs: Option<usize>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Configuration file (default /etc/strata/strata.toml, then ~/.config/strata/strata.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The OCI runtime to run RUN steps with (default: runc on PATH)
    #[arg(long, global = true, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for registries (repeatable)
    #[arg(long = "tls-ca", global = true, value_name = "FILE")]
    pub tls_ca: Vec<PathBuf>,
    /// Registry allowed over plain HTTP / unverified TLS (repeatable)
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
    /// The configuration file's settings (filled in after parsing; see `config`).
    #[arg(skip)]
    pub settings: crate::config::Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<BuildArgs>),
    /// Check a build is reproducible: two fresh builds, or one against a published image
    Verify(VerifyArgs),
    /// List images in the store
    Images,
    /// Give an image in the store another name
    Tag { source: String, target: String },
    /// Remove image names from the store
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print an image's manifest and config as JSON; with --attestations, the in-toto
    /// statements a published image (REF or oci-layout://DIR[:TAG]) carries
    Inspect {
        name: String,
        /// Print the attestations (provenance, SBOM) of a registry image or OCI layout
        #[arg(long)]
        attestations: bool,
        /// With --attestations: only this predicate type (provenance, sbom, or a URI)
        #[arg(long, requires = "attestations", value_name = "TYPE")]
        predicate_type: Option<String>,
    },
    /// Push an image from the store to a registry
    Push(PushArgs),
    /// Write an image from the store to a file (OCI layout tar or docker archive)
    Save {
        name: String,
        /// Output file
        #[arg(short, long)]
        output: PathBuf,
        /// oci or docker
        #[arg(long, default_value = "oci")]
        format: String,
    },
    /// Load an OCI layout (dir or tar) or docker archive into the store
    Load {
        /// File or directory
        input: PathBuf,
        /// Name to give the image (default: the layout's tag)
        #[arg(short, long)]
        tag: Option<String>,
    },
    /// Log in to a registry (docker-compatible ~/.docker/config.json)
    Login {
        registry: String,
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out from a registry
    Logout { registry: String },
    /// Show store and cache usage
    Du,
    /// Remove unreferenced blobs, snapshots and cache entries
    Prune {
        /// Also remove the build cache of images still named
        #[arg(long)]
        all: bool,
        /// Keep at most this much (e.g. 10MB, 2GB)
        #[arg(long, value_name = "SIZE")]
        keep_storage: Option<String>,
        /// until=DURATION: only what is older
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Create and inspect multi-platform images in a registry (as buildx imagetools)
    Imagetools {
        #[command(subcommand)]
        command: ImagetoolsCommand,
    },
    /// The builds strata recorded: list them, show one step by step, compare two
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Print shell completions
    Completion { shell: clap_complete::Shell },
}

/// `strata history ...`. A BUILD is an id (or a unique prefix), `latest` or `latest~N`.
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// The recent builds, newest first: time, target, result, steps run and cached
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// One build, step by step: result, cache key, duration, and why each step ran
    Show {
        #[arg(value_name = "BUILD")]
        build: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// What differs between two builds, step by step
    Diff {
        #[arg(value_name = "BUILD")]
        from: String,
        #[arg(value_name = "BUILD")]
        to: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

/// How `strata history` prints.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

/// `strata imagetools ...`.
#[derive(Debug, Subcommand)]
pub enum ImagetoolsCommand {
    /// Merge images (REPO@DIGEST, tags or indexes) into one index, pushed under each -t
    Create(ImagetoolsCreateArgs),
    /// Show an image or index in a registry: its platforms, digests and attestations
    Inspect {
        /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
        name: String,
        /// Print the manifest or index exactly as the registry serves it
        #[arg(long)]
        raw: bool,
        /// text (default) or json
        #[arg(long, default_value = "text", value_name = "FORMAT")]
        format: String,
    },
}

#[derive(Debug, Args)]
pub struct ImagetoolsCreateArgs {
    /// Name of the new index (repeatable)
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// Print the index instead of pushing it
    #[arg(long)]
    pub dry_run: bool,
    /// Annotation of the index: [index|manifest-descriptor[PLATFORMS]|index-descriptor:]KEY=VALUE
    #[arg(long = "annotation", value_name = "ANNOTATION")]
    pub annotations: Vec<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// The images to merge: REPO@sha256:..., a tag, or an index (all its manifests)
    #[arg(value_name = "SOURCE", required = true)]
    pub sources: Vec<String>,
}

/// `strata verify [--against REF] [--output text|json] [--keep] [BUILD OPTIONS] PATH`.
#[derive(Debug, Args)]
#[command(
    after_help = "The build options are `strata build`'s, except those choosing outputs (-o, --push, --load, -t, \
                  --iidfile, --metadata-file): verify writes each build to an OCI layout in a temporary root. \
                  Set SOURCE_DATE_EPOCH (--source-date-epoch, --build-arg or the environment) for a reproducible \
                  build. Exit status: 0 identical, 1 different (or a build failed), 2 bad usage."
)]
pub struct VerifyArgs {
    /// Build once and compare with a published image: REGISTRY/REPOSITORY[:TAG|@DIGEST] or oci-layout://DIR[:TAG]
    #[arg(long, value_name = "REF")]
    pub against: Option<String>,
    /// Report format
    #[arg(short = 'o', long = "output", value_enum, default_value = "text", value_name = "FORMAT")]
    pub output: ReportFormat,
    /// Keep the temporary build roots and layouts (their directory is printed)
    #[arg(long)]
    pub keep: bool,
    /// `strata build` options, then the build context PATH
    #[arg(value_name = "BUILD OPTIONS... PATH", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub build: Vec<String>,
}

/// How `strata verify` prints its report.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    /// One line per platform and per difference
    #[value(alias = "human")]
    Text,
    /// One JSON document with every difference
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    pub name: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Blobs uploaded at the same time
    #[arg(long, default_value_t = 4)]
    pub push_jobs: usize,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` for a tarball or a Dockerfile on stdin
    #[arg(value_name = "PATH | URL | -")]
    pub context: String,
    /// Name of the Dockerfile (default: PATH/Dockerfile; `-` reads stdin)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,
    /// Name and optionally a tag (name:tag)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Additional build contexts (name=path|docker-image://ref|oci-layout://path)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Target build stage
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform(s), comma separated
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Do not use cache when building
    #[arg(long)]
    pub no_cache: bool,
    /// Do not cache the given stages
    #[arg(long, value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Pull policy: always (re-resolve and re-download), missing, never; `--pull` alone means always
    #[arg(long, num_args = 0..=1, default_missing_value = "always", value_name = "POLICY")]
    pub pull: Option<String>,
    /// Shorthand for --output=type=registry
    #[arg(long)]
    pub push: bool,
    /// Shorthand for --output=type=docker (needs a reachable Docker daemon)
    #[arg(long)]
    pub load: bool,
    /// Output destination (type=image|oci|docker|local|tar|registry,dest=...)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Import a build cache: REF, type=registry,ref=REF or type=local,src=DIR[,tag=T]
    /// (repeatable; only manifests are read, layers are fetched when needed)
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export the build cache: type=registry,ref=REF | type=local,dest=DIR[,reset=true] |
    /// type=inline, with mode=min|max, mounts=true (cache mounts too), ignore-error=true
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Secret to expose to the build (id=mysecret[,src=/local/secret|env=VAR])
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent socket or keys to expose (default|<id>[=<socket>|<key>[,<key>]])
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Network mode for RUN instructions (default, host, none)
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Set metadata for an image
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add annotation to the image
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Write the image ID to a file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata to a file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Type of progress output
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Suppress the build output and print the image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// What to do: build, outline, targets, check
    #[arg(long, default_value = "build")]
    pub call: String,
    /// Print the lowered build graph (dot or json) instead of building
    #[arg(long, value_name = "FORMAT")]
    pub print_graph: Option<String>,
    /// Compute every cache key and say which steps would run, and why; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Allow extra privileged entitlements (security.insecure, network.host)
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Size of /dev/shm of RUN steps (e.g. 128MB, 1GiB; default 64MB)
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Resource limit of RUN steps, as docker's (nofile=1024:2048; repeatable)
    #[arg(long, value_name = "TYPE=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Timestamp for reproducible output (seconds, or `git` for the last commit's time)
    #[arg(long, value_name = "SECONDS|git")]
    pub source_date_epoch: Option<String>,
    /// SLSA v1 provenance: true, false, mode=min|max[,builder-id=URI] (default mode=min
    /// when pushing or writing an OCI layout)
    #[arg(long, value_name = "VALUE")]
    pub provenance: Option<String>,
    /// An SPDX 2.3 SBOM of the image's packages: true or false
    #[arg(long, value_name = "VALUE")]
    pub sbom: Option<String>,
    /// Attestation: type=provenance[,mode=min|max] or type=sbom (repeatable)
    #[arg(long, value_name = "SPEC")]
    pub attest: Vec<String>,
}

impl Cli {
    /// Read the configuration file(s) and fill in what the command line left unsaid
    /// (flags win).
    pub fn apply_config(&mut self) -> crate::Result<()> {
        let settings = crate::config::load(self.config.as_deref())?;
        if self.root.is_none() {
            self.root = settings.root.clone();
        }
        if self.jobs.is_none() {
            self.jobs = settings.jobs;
        }
        if self.runtime.is_none() {
            self.runtime = settings.runtime.clone();
        }
        self.tls_ca.extend(settings.registry.ca_files.iter().cloned());
        self.insecure_registries.extend(settings.registry.insecure.iter().cloned());
        self.settings = settings;
        Ok(())
    }
}
