//! Command-line flags of `lb` (each with its environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_pkg::store::Backend;

/// lb: a container cluster platform.
#[derive(Parser, Debug)]
#[command(name = "lb", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole platform on this machine: store, API and UI, scheduler,
    /// builder with registry, and a local node.
    Up(UpArgs),
    /// Run the API server (REST, websockets, UI) against a shared store.
    Api(ApiArgs),
    /// Run the scheduler, which places replicas on nodes (not built yet).
    Scheduler(StoreArgs),
    /// Run the builder and the private registry (not built yet).
    Builder(StoreArgs),
    /// Run a node daemon that runs replicas as Docker containers (not built yet).
    Node(NodeArgs),
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
}

impl StoreArgs {
    fn backend(&self) -> Backend {
        if self.etcd.is_empty() {
            Backend::Embedded(self.data_dir.clone())
        } else {
            Backend::Etcd(self.etcd.clone())
        }
    }
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
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the API and web UI.
    #[arg(long, env = "LB_LISTEN", default_value = "127.0.0.1:2967")]
    listen: SocketAddr,
    /// Address of the private registry.
    #[arg(long, env = "LB_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    registry_listen: SocketAddr,
    /// Whether anyone may sign up.
    #[arg(long, env = "LB_SIGNUP", value_enum, default_value = "open")]
    signup: SignupArg,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// The API's URL.
    #[arg(long, env = "LB_API")]
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
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not key=value"))?;
    lb_pkg::model::validate_label(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

fn signup(arg: SignupArg) -> lb_api::server::Signup {
    match arg {
        SignupArg::Open => lb_api::server::Signup::Open,
        SignupArg::Closed => lb_api::server::Signup::Closed,
    }
}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            crate::up::run(crate::up::Options {
                backend: args.store.backend(),
                api: lb_api::Config::new(args.listen, signup(args.signup)),
                registry_listen: args.registry_listen,
            })
            .await
        }
        Command::Api(args) => {
            crate::up::run_api(
                args.store.backend(),
                lb_api::Config::new(args.listen, signup(args.signup)),
            )
            .await
        }
        Command::Scheduler(args) => {
            let store = crate::up::open_store(&args.backend()).await?;
            lb_scheduler::run(store).await.context("lb scheduler")
        }
        Command::Builder(args) => {
            let store = crate::up::open_store(&args.backend()).await?;
            lb_builder::run(store).await.context("lb builder")
        }
        Command::Node(args) => {
            if args.api.is_empty() {
                bail!("--api must name the API's URL");
            }
            lb_node::run(lb_node::Config {
                api: args.api,
                join_token: args.join_token,
                name: args.name,
                labels: args.labels,
                data_dir: args.data_dir,
            })
            .await
            .context("lb node")
        }
    }
}
