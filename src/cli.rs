//! Command-line flags of `lb` (each with its environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_store::Backend;

/// lb: a container cluster platform.
#[derive(Parser, Debug)]
#[command(name = "lb", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole platform on this machine: store, API and UI, scheduler,
    /// builder with registry, and a local node.
    Up(UpArgs),
    /// Run the API server (REST, websockets, UI) against a shared store.
    Api(ApiArgs),
    /// Run the scheduler, which places replicas on nodes.
    Scheduler(SchedulerArgs),
    /// Run the builder and the private registry.
    Builder(BuilderArgs),
    /// Run a node daemon that runs replicas as Docker containers.
    Node(NodeArgs),
    /// Write a backup of the store and the registry's blobs (online).
    Backup(BackupArgs),
    /// Make a new data dir from a backup.
    Restore(RestoreArgs),
    /// Benchmarks (`lb bench api | node | scheduler ...`): runs `lb-bench`
    /// from beside this binary (`cargo build --release -p lb-bench`).
    Bench {
        /// Arguments for lb-bench, e.g. `scheduler --nodes 5000 --replicas 100000`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Where the store is.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// etcd endpoints, comma-separated; without it the embedded store in
    /// --data-dir is used.
    #[arg(long, env = "LB_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Data directory (embedded store, registry blobs, node credential).
    #[arg(long, env = "LB_DATA_DIR", default_value = "./lb-data")]
    data_dir: PathBuf,
    /// The etcd cluster's `--max-txn-ops` (lb splits its transactions to
    /// fit); etcd's default.
    #[arg(long, env = "LB_ETCD_MAX_TXN_OPS", default_value_t = lb_store::DEFAULT_MAX_TXN_OPS as u32, value_parser = clap::value_parser!(u32).range(16..))]
    etcd_max_txn_ops: u32,
    /// The etcd cluster's `--max-request-bytes`; etcd's default (1.5 MiB).
    #[arg(long, env = "LB_ETCD_MAX_REQUEST_BYTES", default_value_t = lb_store::DEFAULT_MAX_REQUEST_BYTES as u32, value_parser = clap::value_parser!(u32).range(262_144..))]
    etcd_max_request_bytes: u32,
    /// CA certificate (PEM) etcd's server certificate must chain to; use
    /// https:// endpoints.
    #[arg(long, env = "LB_ETCD_CACERT")]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, env = "LB_ETCD_CERT", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "LB_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user; the password is read from LB_ETCD_PASSWORD.
    #[arg(long, env = "LB_ETCD_USER")]
    etcd_user: Option<String>,
}

impl StoreArgs {
    fn backend(&self) -> Backend {
        if self.etcd.is_empty() {
            return Backend::Embedded(self.data_dir.clone());
        }
        if self.etcd_cacert.is_none() && self.etcd_cert.is_none() && self.etcd_user.is_none() {
            return Backend::Etcd(self.etcd.clone());
        }
        // The password only from the environment: a flag would show in ps.
        let password = self
            .etcd_user
            .as_ref()
            .and_then(|_| std::env::var("LB_ETCD_PASSWORD").ok());
        Backend::EtcdWith(
            self.etcd.clone(),
            lb_store::etcd::EtcdAccess {
                ca_cert: self.etcd_cacert.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
                user: self.etcd_user.clone(),
                password,
            },
        )
    }

    fn limits(&self) -> lb_store::Limits {
        lb_store::Limits {
            max_ops: self.etcd_max_txn_ops as usize,
            max_bytes: self.etcd_max_request_bytes as usize,
        }
    }
}

/// `lb backup`.
#[derive(Args, Debug)]
struct BackupArgs {
    /// The archive to write (0600: it holds every secret).
    #[arg(long)]
    to: PathBuf,
    /// A running lb's base URL: the backup is taken by it, while it serves.
    #[arg(long, env = "LB_API", default_value = "http://127.0.0.1:2967")]
    api: String,
    /// An admin's token; or LB_PASSWORD with --user.
    #[arg(long, env = "LB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The admin to log in as, with the password from LB_PASSWORD.
    #[arg(long, env = "LB_USER", default_value = "admin")]
    user: String,
    /// Read the store and --data-dir here instead of asking an API: etcd at
    /// any time, the embedded store only while lb is stopped.
    #[arg(long)]
    direct: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `lb restore`.
#[derive(Args, Debug)]
struct RestoreArgs {
    /// The archive `lb backup` wrote.
    #[arg(long)]
    from: PathBuf,
    /// The new data dir (absent or empty) to create.
    #[arg(long)]
    data_dir: PathBuf,
}

/// Who may sign up.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum SignupArg {
    Open,
    Closed,
}

#[derive(Args, Debug)]
struct ApiArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the API and web UI.
    #[arg(long, env = "LB_LISTEN", default_value = "127.0.0.1:2967")]
    listen: SocketAddr,
    /// Whether anyone may sign up.
    #[arg(long, env = "LB_SIGNUP", value_enum, default_value = "closed")]
    signup: SignupArg,
    /// A reverse proxy whose X-Forwarded-For names the client for the
    /// failed-login limits (an address or CIDR; repeat, or separate with
    /// commas). Loopback is always trusted.
    #[arg(
        long = "trusted-proxy",
        env = "LB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<lb_api::config::Cidr>,
    /// Where the web UI's browser libraries are (term.js, Chart.js).
    #[arg(long, env = "LB_UI_VENDOR_DIR", default_value = lb_api::ui::DEFAULT_VENDOR_DIR)]
    ui_vendor_dir: std::path::PathBuf,
    #[command(flatten)]
    vendors: crate::vendors::VendorArgs,
    /// The URL other API instances reach this one at (they forward log and
    /// exec requests for the nodes whose channels this one holds); default
    /// http://<listen address>.
    #[arg(long, env = "LB_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Every service with an ingress port also answers at
    /// <service>-<project>-<owner>.<base domain>.
    #[arg(long, env = "LB_BASE_DOMAIN", value_parser = parse_base_domain)]
    base_domain: Option<String>,
    #[command(flatten)]
    acme: crate::ingress::AcmeArgs,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the API and web UI.
    #[arg(long, env = "LB_LISTEN", default_value = "127.0.0.1:2967")]
    listen: SocketAddr,
    #[command(flatten)]
    build: BuildArgs,
    /// Whether anyone may sign up.
    #[arg(long, env = "LB_SIGNUP", value_enum, default_value = "open")]
    signup: SignupArg,
    /// A reverse proxy whose X-Forwarded-For names the client for the
    /// failed-login limits (an address or CIDR; repeat, or separate with
    /// commas). Loopback is always trusted.
    #[arg(
        long = "trusted-proxy",
        env = "LB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<lb_api::config::Cidr>,
    /// Where the web UI's browser libraries are (term.js, Chart.js).
    #[arg(long, env = "LB_UI_VENDOR_DIR", default_value = lb_api::ui::DEFAULT_VENDOR_DIR)]
    ui_vendor_dir: std::path::PathBuf,
    #[command(flatten)]
    vendors: crate::vendors::VendorArgs,
    /// Do not run a local node (no containers on this machine).
    #[arg(long, env = "LB_NO_NODE")]
    no_node: bool,
    /// The local node takes no new replicas while its disk (Docker's data
    /// root) has less free than this: a percentage (10%) or a size (5GiB).
    #[arg(long, env = "LB_MIN_FREE_DISK")]
    min_free_disk: Option<lb_model::DiskLimit>,
    /// Unused lb images the local node keeps per service (rollback targets).
    #[arg(long, env = "LB_NODE_KEEP_IMAGES", default_value_t = 3)]
    node_keep_images: usize,
    /// Do not run the scheduler here (one runs elsewhere).
    #[arg(long, env = "LB_NO_SCHEDULER")]
    no_scheduler: bool,
    /// How long a node may be gone before its replicas move (e.g. 10s).
    #[arg(long, env = "LB_NODE_GRACE", default_value = "10s", value_parser = parse_duration)]
    node_grace: std::time::Duration,
    #[command(flatten)]
    ingress: crate::ingress::IngressArgs,
    #[command(flatten)]
    acme: crate::ingress::AcmeArgs,
    /// Do not run the ingress here.
    #[arg(long, env = "LB_NO_INGRESS")]
    no_ingress: bool,
    /// Every service with an ingress port also answers at
    /// <service>-<project>-<owner>.<base domain> (point a wildcard DNS
    /// record at the ingress).
    #[arg(long, env = "LB_BASE_DOMAIN", value_parser = parse_base_domain)]
    base_domain: Option<String>,
}

fn parse_base_domain(s: &str) -> Result<String, String> {
    lb_model::ingress::check_domain(s)?;
    if s.starts_with("*.") {
        return Err(format!("{s:?}: give the base domain without \"*.\""));
    }
    Ok(s.to_owned())
}

/// The builder's and registry's settings (`lb up` and `lb builder`).
#[derive(Args, Debug)]
struct BuildArgs {
    /// Address of the private registry.
    #[arg(long, env = "LB_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    registry_listen: SocketAddr,
    /// host:port nodes and the builder reach the registry at (default: the
    /// listen address, 127.0.0.1 for an unspecified one).
    #[arg(long, env = "LB_REGISTRY_ADDRESS")]
    registry_address: Option<String>,
    /// Builds run at once by this builder.
    #[arg(long, env = "LB_BUILD_CONCURRENCY", default_value_t = 2)]
    build_concurrency: usize,
    /// Memory limit of one build, MiB.
    #[arg(long, env = "LB_BUILD_MEMORY", default_value_t = 2048)]
    build_memory: u64,
    /// Time limit of one build (e.g. 30m).
    #[arg(long, env = "LB_BUILD_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    build_timeout: std::time::Duration,
    /// The largest build context, MiB.
    #[arg(long, env = "LB_BUILD_MAX_CONTEXT", default_value_t = 512)]
    build_max_context: u64,
    /// Images kept per service (older builds' tags are removed).
    #[arg(long, env = "LB_KEEP_IMAGES", default_value_t = 10)]
    keep_images: usize,
    /// Time between the registry's garbage collections (blobs no manifest
    /// references, older than an hour).
    #[arg(long, env = "LB_REGISTRY_GC_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    registry_gc_interval: std::time::Duration,
    /// The Docker build cache is pruned to this size after each build.
    #[arg(long, env = "LB_BUILD_CACHE_MAX", default_value = "10GiB", value_parser = lb_model::parse_bytes)]
    build_cache_max: u64,
    /// Base image of a template language, e.g. python=python:3.12-slim
    /// (repeatable; the defaults are the official images).
    #[arg(long = "base-image", env = "LB_BASE_IMAGES", value_delimiter = ',')]
    base_images: Vec<String>,
}

impl BuildArgs {
    fn config(&self, store: &StoreArgs, api: String) -> anyhow::Result<lb_builder::Config> {
        let mut base_images = std::collections::BTreeMap::new();
        for pair in &self.base_images {
            let (lang, image) = pair
                .split_once('=')
                .with_context(|| format!("--base-image {pair:?}: expected LANG=IMAGE"))?;
            base_images.insert(lang.to_owned(), image.to_owned());
        }
        let address = self.registry_address.clone().unwrap_or_else(|| {
            let mut addr = self.registry_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip([127, 0, 0, 1].into());
            }
            addr.to_string()
        });
        Ok(lb_builder::Config {
            keys: Default::default(),
            registry_listen: self.registry_listen,
            registry_address: address,
            data_dir: store.data_dir.clone(),
            api,
            concurrency: self.build_concurrency.max(1),
            build_memory: self.build_memory,
            build_timeout: self.build_timeout,
            keep_images: self.keep_images.max(1),
            max_context: self.build_max_context << 20,
            base_images,
            housekeeping: lb_builder::Housekeeping {
                registry_gc_interval: self.registry_gc_interval,
                build_cache_max: self.build_cache_max,
                ..Default::default()
            },
        })
    }
}

#[derive(Args, Debug)]
struct BuilderArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    build: BuildArgs,
    /// The API's URL (registry clients get their tokens there).
    #[arg(long, env = "LB_API", default_value = "http://127.0.0.1:2967")]
    api: String,
}

#[derive(Args, Debug)]
struct SchedulerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How long a node may be gone before its replicas move (e.g. 10s).
    #[arg(long, env = "LB_NODE_GRACE", default_value = "10s", value_parser = parse_duration)]
    node_grace: std::time::Duration,
}

pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" | "" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        "h" => Ok(std::time::Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 10s or 500ms")),
    }
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeArgs {
    /// What else to do than run the node.
    #[command(subcommand)]
    action: Option<NodeAction>,
    /// The API's URL; or the URLs of several API instances, separated by
    /// commas: the node connects to one and moves to the next when it fails.
    #[arg(long, env = "LB_API", default_value = "", hide_default_value = true)]
    api: String,
    /// A join token (first start only).
    #[arg(long, env = "LB_JOIN_TOKEN")]
    join_token: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// A label `key=value`; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Where the node keeps its credential.
    #[arg(long, env = "LB_DATA_DIR", default_value = "./lb-node")]
    data_dir: PathBuf,
    /// The address other hosts reach this node at.
    #[arg(long, env = "LB_NODE_ADDRESS")]
    address: Option<String>,
    /// Host ports picked for ports without a fixed host port, `FROM-TO`.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    port_range: std::ops::RangeInclusive<u16>,
    /// Serve ingress traffic (every service's domains) on this node, with
    /// the routes the API sends.
    #[arg(long, env = "LB_INGRESS")]
    ingress: bool,
    #[command(flatten)]
    ingress_args: crate::ingress::IngressArgs,
    /// Take no new replicas while the disk (Docker's data root) has less
    /// free than this: a percentage (10%) or a size (5GiB).
    #[arg(long, env = "LB_MIN_FREE_DISK")]
    min_free_disk: Option<lb_model::DiskLimit>,
    /// Unused lb images kept per service (rollback targets); older ones
    /// are removed.
    #[arg(long, env = "LB_NODE_KEEP_IMAGES", default_value_t = 3)]
    keep_images: usize,
    /// Time between sweeps of unused images.
    #[arg(long, env = "LB_IMAGE_GC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    image_gc_interval: std::time::Duration,
}

/// `lb node <action>`.
#[derive(Subcommand, Debug)]
enum NodeAction {
    /// Remove what a node leaves on this host when stopped: its iptables
    /// chains (with their jumps) and its project networks no container
    /// uses. Containers are left alone; a second run removes nothing.
    Uninstall(UninstallArgs),
}

#[derive(Args, Debug)]
struct UninstallArgs {
    /// The node's data dir (`lb node`'s, or `lb up`'s, whose node is in
    /// `<dir>/node`): the node whose leftovers go.
    #[arg(long, env = "LB_DATA_DIR", default_value = "./lb-node")]
    data_dir: PathBuf,
    /// Every lb node's chains and unused networks on this host, whatever
    /// the data dir.
    #[arg(long)]
    all: bool,
}

/// Runs `lb node uninstall`: says what went, fails when something stayed.
async fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    use lb_node::uninstall::{node_in, run, Scope};
    let scope = if args.all {
        Scope::All
    } else {
        let node = node_in(&args.data_dir)
            .or_else(|| node_in(&args.data_dir.join("node")))
            .with_context(|| {
                format!(
                    "no node credential in {} (nor in its node/): name the node's --data-dir, or use --all",
                    args.data_dir.display()
                )
            })?;
        Scope::Node(node)
    };
    let report = run(&scope).await;
    for chain in &report.chains {
        println!("removed iptables chain {chain}");
    }
    for network in &report.networks {
        println!("removed network {network}");
    }
    if report.chains.is_empty() && report.networks.is_empty() {
        println!("nothing to remove");
    }
    if !report.problems.is_empty() {
        bail!("not removed: {}", report.problems.join("; "));
    }
    Ok(())
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (from, to) = s
        .split_once('-')
        .ok_or_else(|| format!("port range {s:?} is not FROM-TO"))?;
    let from: u16 = from
        .parse()
        .map_err(|_| format!("{from:?} is not a port"))?;
    let to: u16 = to.parse().map_err(|_| format!("{to:?} is not a port"))?;
    if from == 0 || from > to {
        return Err(format!("port range {s:?} is empty or starts at 0"));
    }
    Ok(from..=to)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not key=value"))?;
    lb_model::validate_label(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

fn signup(arg: SignupArg) -> lb_api::server::Signup {
    match arg {
        SignupArg::Open => lb_api::server::Signup::Open,
        SignupArg::Closed => lb_api::server::Signup::Closed,
    }
}

/// Loopback and the `--trusted-proxy` blocks.
fn trusted_proxies(extra: Vec<lb_api::config::Cidr>) -> Vec<lb_api::config::Cidr> {
    let mut all = lb_api::config::Cidr::loopback().to_vec();
    all.extend(extra);
    all
}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            crate::up::run(crate::up::Options {
                backend: args.store.backend(),
                limits: args.store.limits(),
                api: lb_api::Config {
                    ui_vendor_dir: args.ui_vendor_dir,
                    vendors: args.vendors.settings()?,
                    ingress: lb_api::ingress::IngressSettings {
                        base_domain: args.base_domain,
                        http_port: (!args.no_ingress).then_some(args.ingress.http_listen.port()),
                        https_port: args
                            .ingress
                            .https_listen
                            .filter(|_| !args.no_ingress)
                            .map(|a| a.port()),
                    },
                    // Certificates only where this ingress serves HTTPS.
                    acme: Some(
                        args.acme
                            .config(!args.no_ingress && args.ingress.https_listen.is_some())?,
                    ),
                    backup_dir: Some(args.store.data_dir.clone()),
                    trusted_proxies: trusted_proxies(args.trusted_proxies),
                    ..lb_api::Config::new(args.listen, signup(args.signup))
                },
                ingress: (!args.no_ingress).then(|| args.ingress.config()),
                builder: args
                    .build
                    .config(&args.store, format!("http://{}", args.listen))?,
                data_dir: args.store.data_dir.clone(),
                local_node: !args.no_node,
                node_disk: lb_node::DiskSettings {
                    min_free_disk: args.min_free_disk,
                    keep_images: args.node_keep_images,
                    ..Default::default()
                },
                scheduler: !args.no_scheduler,
                node_grace: args.node_grace,
            })
            .await
        }
        Command::Backup(args) => {
            let source = if args.direct {
                crate::backup::Source::Direct {
                    backend: args.store.backend(),
                    limits: args.store.limits(),
                    data_dir: args.store.data_dir.clone(),
                }
            } else {
                crate::backup::Source::Api {
                    url: args.api,
                    token: args.token,
                    login: std::env::var("LB_PASSWORD")
                        .ok()
                        .map(|password| (args.user, password)),
                }
            };
            crate::backup::backup(source, &args.to).await
        }
        Command::Restore(args) => crate::backup::restore(&args.from, &args.data_dir).await,
        Command::Api(args) => {
            crate::up::run_api(
                args.store.backend(),
                args.store.limits(),
                lb_api::Config {
                    advertise_url: args.advertise_url,
                    ui_vendor_dir: args.ui_vendor_dir,
                    vendors: args.vendors.settings()?,
                    ingress: lb_api::ingress::IngressSettings {
                        base_domain: args.base_domain,
                        ..Default::default()
                    },
                    acme: Some(args.acme.config(true)?),
                    trusted_proxies: trusted_proxies(args.trusted_proxies),
                    ..lb_api::Config::new(args.listen, signup(args.signup))
                },
            )
            .await
        }
        Command::Scheduler(args) => {
            let shutdown =
                crate::shutdown::on_signals().context("cannot install signal handlers")?;
            let store = crate::up::open_store(&args.store.backend(), args.store.limits()).await?;
            let config = lb_scheduler::Config {
                node_grace: args.node_grace,
                ..Default::default()
            };
            lb_scheduler::run(store, config, shutdown.wait())
                .await
                .context("lb scheduler")
        }
        Command::Builder(args) => {
            let shutdown =
                crate::shutdown::on_signals().context("cannot install signal handlers")?;
            let config = args.build.config(&args.store, args.api.clone())?;
            let store = crate::up::open_store(&args.store.backend(), args.store.limits()).await?;
            let bound = lb_builder::bind(store, &config).await?;
            println!("lb builder: registry on {}", bound.addr());
            lb_builder::run(bound, shutdown.wait())
                .await
                .context("lb builder")
        }
        Command::Bench { args } => {
            let exe = std::env::current_exe().context("cannot find this binary")?;
            let bench = exe.with_file_name("lb-bench");
            if !bench.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p lb-bench`",
                    bench.display()
                );
            }
            let status = std::process::Command::new(&bench)
                .args(&args)
                .status()
                .with_context(|| format!("cannot run {}", bench.display()))?;
            if !status.success() {
                bail!("lb-bench failed ({status})");
            }
            Ok(())
        }
        Command::Node(NodeArgs {
            action: Some(NodeAction::Uninstall(args)),
            ..
        }) => uninstall(args).await,
        Command::Node(args) => {
            if args.api.split(',').all(|url| url.trim().is_empty()) {
                bail!("--api must name the API's URL (or several, separated by commas)");
            }
            let shutdown =
                crate::shutdown::on_signals().context("cannot install signal handlers")?;
            let routes = args.ingress.then(crate::ingress::routes);
            if let Some(routes) = &routes {
                // The node has no HTTP server of its own: the ingress's
                // metrics are kept but not exported yet.
                let registry = prometheus::Registry::new();
                crate::ingress::start(
                    args.ingress_args.config(),
                    routes.subscribe(),
                    &registry,
                    shutdown.clone().wait(),
                )
                .await?;
            }
            let config = lb_node::Config {
                api: args.api,
                join_token: args.join_token,
                name: args.name,
                labels: args.labels,
                data_dir: args.data_dir,
                address: args.address,
                port_range: args.port_range,
                routes,
                disk: lb_node::DiskSettings {
                    min_free_disk: args.min_free_disk,
                    keep_images: args.keep_images,
                    image_gc_interval: args.image_gc_interval,
                    root: None,
                },
            };
            lb_node::run(config, shutdown.wait())
                .await
                .context("lb node")
        }
    }
}
