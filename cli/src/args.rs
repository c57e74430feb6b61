//! The command line: every command and flag of lbc, as clap derives. The
//! habits are kubectl's (`ls`, `get`, `rm`, `-o json`, contexts), docker's
//! (`-e`, `-p`, `exec -it`, `logs -f --tail`) and heroku's (`login`, `deploy`).

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// lbc: the lb command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "lbc",
    version,
    about = "lbc: the lb command-line client",
    after_help = "A service is named SERVICE (in the default project: `lbc project use NAME`) \
                  or PROJECT/SERVICE.\nExit codes: 0 ok, 1 failed operation, 2 usage, \
                  3 not found, 4 conflict, 5 auth, 6 server; `lbc exec` passes on the \
                  remote exit code."
)]
pub struct Cli {
    /// Use this context instead of the current one.
    #[arg(
        long,
        global = true,
        env = "LB_CONTEXT",
        value_name = "NAME",
        help_heading = "Global options"
    )]
    pub context: Option<String>,
    /// The project of bare SERVICE names (instead of the context's default).
    #[arg(
        long,
        global = true,
        env = "LB_PROJECT",
        value_name = "NAME",
        help_heading = "Global options"
    )]
    pub project: Option<String>,
    /// Output format.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value = "table",
        help_heading = "Global options"
    )]
    pub output: Format,
    /// Print only ids (or nothing for actions).
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// No colour even on a terminal (NO_COLOR works too).
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Named contexts: API URL and token.
    #[command(subcommand)]
    Context(ContextCmd),
    /// Create an account and log in.
    Signup(Login),
    /// Log in: keeps an access token in the current context.
    Login(Login),
    /// Forget the current context's token.
    Logout,
    /// Show who the current token belongs to.
    Whoami,
    /// Long-lived API tokens (for CI and scripts).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Projects.
    #[command(subcommand, alias = "projects")]
    Project(ProjectCmd),
    /// Services.
    #[command(subcommand, alias = "services", alias = "svc")]
    Service(ServiceCmd),
    /// Set a service's replica count.
    Scale {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The new count.
        replicas: u32,
    },
    /// Restart every replica of a service, one at a time.
    Restart {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Stop a service's replicas, keeping its replica count.
    Pause {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Run a paused service's replicas again.
    Resume {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// List a service's replicas: node, state, ports.
    Replicas {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Nodes of the cluster.
    #[command(subcommand, alias = "nodes")]
    Node(NodeCmd),
    /// A user's limits and what the user holds (admin): `lbc quota [USER]`,
    /// `lbc quota set USER --max-...`.
    #[command(alias = "quotas")]
    Quota(QuotaArgs),
    /// Builds of a service.
    #[command(subcommand, alias = "builds")]
    Build(BuildCmd),
    /// Build a service from its source and follow it until the new version runs.
    Deploy {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// Build this commit instead of the branch head.
        #[arg(long)]
        commit: Option<String>,
        /// Return once the build is queued.
        #[arg(long)]
        detach: bool,
        /// Give up after this many seconds (the build and the rollout
        /// together); the build goes on.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        timeout: u64,
    },
    /// A service's deploys, newest first: each new generation (a build's,
    /// a rollback, a spec change), what caused it and who, when it started
    /// and settled, and how (`rolled_out`, `halted` with why, `superseded`,
    /// `in_progress`); the live one and the one coming are marked.
    Deploys {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Run the image of an earlier successful build again.
    Rollback {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The build number.
        build: u64,
    },
    /// Show a service's output (every replica, or one).
    Logs {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// Keep streaming new output.
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end of each replica's output.
        #[arg(long, default_value_t = 100, value_name = "N")]
        tail: u32,
        /// Only this replica (its id, a unique prefix of it, or of the short id lbc prints).
        #[arg(long, value_name = "ID")]
        replica: Option<String>,
        /// Start each line with its time (RFC 3339).
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// Run a command in a replica of a service.
    Exec(Exec),
    /// A project's stored scripts, run inside a service's running replicas.
    #[command(subcommand, alias = "scripts")]
    Script(ScriptCmd),
    /// A service's domains and their certificates.
    #[command(subcommand, alias = "domain")]
    Domains(DomainsCmd),
    /// Print a service's first URL and open it in the browser (xdg-open).
    Open {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Print a shell completion script (project and service names are
    /// completed from the API: the script runs `lbc __complete`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// What runs: a service's live version, rollout, replicas, URLs and why
    /// anything is pending (every service of the project without SERVICE).
    Status {
        /// SERVICE or PROJECT/SERVICE.
        service: Option<String>,
    },
    /// A service's environment variables (values are shown: they are yours).
    #[command(subcommand)]
    Env(EnvCmd),
    /// Make a project match a file: lb's format or a docker-compose file
    /// (services created, updated, and with --prune deleted).
    Apply(ApplyArgs),
    /// Show what `lbc apply` would change, field by field, writing nothing.
    Diff(ApplyArgs),
    /// Run a command to completion in a new container of a service (its
    /// image, env, volumes and network), print its output and exit with its
    /// exit code.
    Run(RunArgs),
    /// One-off jobs of a service.
    #[command(subcommand, alias = "jobs")]
    Job(JobCmd),
    /// A service's cron schedules (set them in its spec's `schedules`).
    #[command(subcommand)]
    Cron(CronCmd),
    /// Names for shell completion, one a line (used by the completion scripts).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// `projects` or `services`.
        what: String,
    },
}

/// `lbc env ...`: each change is a new generation of the service (its
/// replicas are replaced one at a time).
#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// List a service's environment variables with their values (the values
    /// are printed as they are, secrets too).
    #[command(alias = "list")]
    Ls {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Set variables: `lbc env set web KEY=VALUE...`.
    Set {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// KEY=VALUE (one or more).
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove variables: `lbc env unset web KEY...`.
    #[command(alias = "rm")]
    Unset {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// KEY (one or more).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

/// `lbc context ...`.
#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// List contexts (the current one is marked).
    #[command(alias = "list")]
    Ls,
    /// Make a context the current one.
    Use {
        /// The context.
        name: String,
    },
    /// Add or change a context.
    Add {
        /// The context's name.
        name: String,
        /// The API's base URL, e.g. http://127.0.0.1:2967.
        #[arg(long)]
        api: String,
        /// Read an API token from stdin.
        #[arg(long)]
        token_stdin: bool,
        /// Make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Remove a context.
    #[command(alias = "delete")]
    Rm {
        /// The context.
        name: String,
    },
}

/// `lbc login`, `lbc signup`.
#[derive(Debug, Args)]
pub struct Login {
    /// The user name (asked for when not given).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// The API's base URL: creates or changes the context (default: the
    /// current one, or one named "default").
    #[arg(long, env = "LB_API")]
    pub api: Option<String>,
}

/// `lbc token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token; it is shown once.
    Create {
        /// A name to recognise it by.
        name: String,
    },
    /// List API tokens (without their secrets).
    #[command(alias = "list")]
    Ls,
    /// Revoke an API token (asks first; `--yes` skips).
    #[command(alias = "rm", alias = "delete")]
    Revoke {
        /// The token's id.
        id: String,
        /// Do not ask (needed without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// `lbc project ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project.
    Create {
        /// Its name, a DNS label.
        name: String,
        /// Free text.
        #[arg(short, long)]
        description: Option<String>,
    },
    /// List projects.
    #[command(alias = "list")]
    Ls,
    /// Show a project.
    #[command(alias = "show")]
    Get {
        /// Name or id.
        name: String,
    },
    /// Change a project's name or description.
    Update {
        /// Name or id.
        name: String,
        /// A new name.
        #[arg(long)]
        rename: Option<String>,
        /// A new description.
        #[arg(short, long)]
        description: Option<String>,
    },
    /// Delete a project with all its services (asks first; `--yes` skips).
    #[command(alias = "delete")]
    Rm {
        /// Name or id.
        name: String,
        /// Do not ask (needed without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Make a project the default of the current context.
    Use {
        /// Name or id.
        name: String,
    },
}

/// `lbc service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a service from an image or a git repository.
    Create(ServiceFlags),
    /// List services of a project.
    #[command(alias = "list")]
    Ls,
    /// Show a service.
    #[command(alias = "show")]
    Get {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Change a service: only the flags given change (ports, volumes and
    /// the command are replaced as a whole; `-e KEY-` removes KEY).
    Update(ServiceFlags),
    /// Delete a service with its replicas and builds (asks first; `--yes`
    /// skips).
    #[command(alias = "delete")]
    Rm {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// Do not ask (needed without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// The spec flags of `service create` and `service update`.
#[derive(Debug, Args)]
pub struct ServiceFlags {
    /// SERVICE or PROJECT/SERVICE.
    pub service: String,
    /// The image to run.
    #[arg(long)]
    pub image: Option<String>,
    /// A git repository to build from.
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch to build.
    #[arg(long)]
    pub branch: Option<String>,
    /// The Dockerfile's path in the repository.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<String>,
    /// Build with lb's Dockerfile template for a language and framework.
    #[arg(long, value_name = "LANG/FRAMEWORK")]
    pub template: Option<String>,
    /// A stack: the path of a compose file (or lb.yaml) in the repository,
    /// applied to the project after each build (the service itself runs
    /// nothing: replicas default to 0).
    #[arg(long, value_name = "PATH")]
    pub compose: Option<String>,
    /// Replica count.
    #[arg(short, long)]
    pub replicas: Option<u32>,
    /// Memory per replica in MiB (a hard limit); `256`, `256M` or `1G`.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPUs per replica.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Publish a port: CONTAINER or HOST:CONTAINER, optionally /udp (repeatable).
    #[arg(short, long = "port", value_name = "[HOST:]CONTAINER")]
    pub ports: Vec<String>,
    /// An environment variable KEY=VALUE (repeatable; `KEY-` removes it on update).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A named volume NAME:/PATH (repeatable).
    #[arg(long = "volume", value_name = "NAME:/PATH")]
    pub volumes: Vec<String>,
    /// A node label the replicas need, k=v (repeatable).
    #[arg(long = "node-selector", value_name = "K=V")]
    pub node_selector: Vec<String>,
    /// A host name routed to the service (repeatable).
    #[arg(long = "domain", value_name = "HOST")]
    pub domains: Vec<String>,
    /// The container port that receives the ingress's traffic (default:
    /// the only TCP port).
    #[arg(long, value_name = "PORT")]
    pub ingress_port: Option<u16>,
    /// Free text.
    #[arg(short, long)]
    pub description: Option<String>,
    /// Redeploy on pushes to the branch.
    #[arg(long, value_name = "BOOL")]
    pub autodeploy: Option<bool>,
    /// Seconds a replica gets to exit after SIGTERM before it is killed (0–300).
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u32>,
    /// How many replicas a rollout replacing in place may take down at
    /// once, and how many new ones it starts at once (1–1000; default 1).
    #[arg(long, value_name = "N")]
    pub max_unavailable: Option<u32>,
    /// The command to run instead of the image's.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `lbc domains ...`.
#[derive(Debug, Subcommand)]
pub enum DomainsCmd {
    /// List a service's domains with their certificates' status.
    #[command(alias = "list")]
    Ls {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Route a domain to a service (claimed cluster-wide; a certificate is
    /// ordered when the cluster issues them).
    Add {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The domain, e.g. app.example.com or *.example.com.
        domain: String,
    },
    /// Stop routing a domain to a service (its certificate goes too; asks
    /// first, `--yes` skips).
    #[command(alias = "delete")]
    Rm {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The domain.
        domain: String,
        /// Do not ask (needed without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Upload your own certificate for a domain, or remove it (`--remove`).
    Cert {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The domain.
        domain: String,
        /// The certificate chain, PEM, leaf first.
        #[arg(
            long,
            value_name = "FILE",
            requires = "key",
            required_unless_present = "remove"
        )]
        chain: Option<std::path::PathBuf>,
        /// The private key, PEM (never shown again).
        #[arg(long, value_name = "FILE", requires = "chain")]
        key: Option<std::path::PathBuf>,
        /// Remove the domain's certificate instead.
        #[arg(long, conflicts_with_all = ["chain", "key"])]
        remove: bool,
    },
}

/// `lbc node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    #[command(alias = "list")]
    Ls,
    /// Show a node.
    #[command(alias = "show")]
    Get {
        /// Name or id.
        name: String,
    },
}

/// `lbc quota [USER]` or `lbc quota set USER ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotaArgs {
    /// Change the limits.
    #[command(subcommand)]
    pub set: Option<QuotaCmd>,
    /// The user, by name or id (default: you).
    pub user: Option<String>,
}

/// `lbc quota set ...`.
#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Change a user's limits: only the limits given change; `unlimited`
    /// lifts one.
    Set(QuotaSet),
}

/// The limits `lbc quota set` changes.
#[derive(Debug, clap::Args)]
pub struct QuotaSet {
    /// The user, by name or id.
    pub user: String,
    /// Projects the user may own.
    #[arg(long, value_name = "N|unlimited", value_parser = crate::commands::quota::parse_count)]
    pub max_projects: Option<crate::commands::quota::Max>,
    /// Services in all of the user's projects.
    #[arg(long, value_name = "N|unlimited", value_parser = crate::commands::quota::parse_count)]
    pub max_services: Option<crate::commands::quota::Max>,
    /// Replicas all of the user's services ask for (paused ones too).
    #[arg(long, value_name = "N|unlimited", value_parser = crate::commands::quota::parse_count)]
    pub max_replicas: Option<crate::commands::quota::Max>,
    /// Memory of all the user's replicas: MiB (512) or a size (2GiB).
    #[arg(long, value_name = "MIB|SIZE|unlimited", value_parser = crate::commands::quota::parse_mib)]
    pub max_memory: Option<crate::commands::quota::Max>,
    /// Builds of the user's services waiting in the queue.
    #[arg(long, value_name = "N|unlimited", value_parser = crate::commands::quota::parse_count)]
    pub max_queued_builds: Option<crate::commands::quota::Max>,
    /// Registry storage of the user's projects: a size (10GiB) or bytes.
    #[arg(long, value_name = "SIZE|unlimited", value_parser = crate::commands::quota::parse_size)]
    pub max_registry_bytes: Option<crate::commands::quota::Max>,
}

/// `lbc build ...`.
#[derive(Debug, Subcommand)]
pub enum BuildCmd {
    /// List a service's builds.
    #[command(alias = "list")]
    Ls {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Show a build with its steps.
    #[command(alias = "show")]
    Get {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The build number.
        number: u64,
    },
    /// Show a build's log.
    Logs {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The build number.
        number: u64,
        /// Keep streaming until the build ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a build.
    Cancel {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The build number.
        number: u64,
    },
}

/// `lbc exec`.
#[derive(Debug, Args)]
pub struct Exec {
    /// SERVICE or PROJECT/SERVICE.
    pub service: String,
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal (raw mode here, window size follows).
    #[arg(short, long)]
    pub tty: bool,
    /// The replica (default: the first running one); its id, a unique
    /// prefix of it, or of the short id lbc prints.
    #[arg(long, value_name = "ID")]
    pub replica: Option<String>,
    /// Seconds before a one-off command is given up (1–300).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `lbc run SERVICE [--timeout S] -- CMD...`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// SERVICE or PROJECT/SERVICE.
    pub service: String,
    /// Seconds before the job is killed (1–86400; default one hour).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Return once the job is started (print its id).
    #[arg(long)]
    pub detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `lbc job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List a service's jobs, newest first.
    #[command(alias = "list")]
    Ls {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
    /// Show a job with the tail of its output.
    #[command(alias = "get")]
    Show {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The job id.
        id: String,
    },
    /// Cancel a job that is not over (its container is stopped).
    Cancel {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
        /// The job id.
        id: String,
    },
}

/// `lbc cron ...`.
#[derive(Debug, Subcommand)]
pub enum CronCmd {
    /// A service's schedules: expression, next run, last result.
    #[command(alias = "list")]
    Ls {
        /// SERVICE or PROJECT/SERVICE.
        service: String,
    },
}

/// `lbc script ...`: scripts belong to a project (NAME or PROJECT/NAME).
#[derive(Debug, Subcommand)]
pub enum ScriptCmd {
    /// List the project's scripts.
    #[command(alias = "list")]
    Ls,
    /// Show a script with its body.
    Show {
        /// NAME or PROJECT/NAME.
        name: String,
    },
    /// Store a script (created, or replaced as a whole).
    Put {
        /// NAME or PROJECT/NAME.
        name: String,
        /// sh, bash, python3, or a command reading the program from stdin
        /// ("/bin/busybox sh -s --").
        #[arg(long, default_value = "sh", value_name = "INTERPRETER")]
        interpreter: String,
        /// The body: a file, or - for stdin.
        #[arg(short, long, value_name = "FILE")]
        file: String,
        /// A default argument (repeat for more).
        #[arg(long = "arg", value_name = "ARG")]
        args: Vec<String>,
        /// An environment variable of its runs (repeat for more).
        #[arg(short, long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Seconds a run may take before it is killed (1–3600, default 60).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Delete a script and its recorded runs.
    #[command(alias = "delete")]
    Rm {
        /// NAME or PROJECT/NAME.
        name: String,
    },
    /// Run a script in a service's running replicas (not restarted); exits
    /// with the run's exit code (the first non-zero across replicas).
    Run {
        /// The script's name.
        name: String,
        /// SERVICE or PROJECT/SERVICE (the script is that project's).
        #[arg(short, long)]
        service: String,
        /// This replica (its id) instead of the first running one.
        #[arg(long, value_name = "ID")]
        replica: Option<String>,
        /// Every running replica, in parallel.
        #[arg(long)]
        all: bool,
        /// Arguments (default: the script's).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// A script's last runs, newest first.
    Runs {
        /// NAME or PROJECT/NAME.
        name: String,
    },
}

/// `lbc apply`, `lbc diff`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The file: lb's format (project, services) or a docker-compose file
    /// (compose.yaml, docker-compose.yml, or compose keys inside).
    #[arg(short, long, value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Delete the project's services the file does not name.
    #[arg(long)]
    pub prune: bool,
}
