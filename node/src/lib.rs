//! The node daemon: joins the cluster through the API, holds a websocket to
//! it, and reconciles the replicas assigned to this node with Docker
//! containers. The only crate that talks to Docker, and only through its
//! [`runtime::Runtime`] trait.
//!
//! `credential` joins and keeps the node credential; `channel` is the
//! websocket to the API (reconnecting with backoff and jitter); `reconcile`
//! makes containers match assignments, level-triggered, fed by assignments,
//! Docker events and a periodic resync; `runtime` is every Docker call, as
//! the `Runtime` trait, its bollard implementation and a test fake;
//! `host` reads capacity and load from the machine; `streams` runs the logs
//! and interactive exec streams the API opens; `firewall` keeps the node's
//! iptables rules (replicas kept from lb's ports on the host, from other
//! projects and from link-local addresses); `uninstall` takes them and
//! the unused project networks away (`lb node uninstall`).
//!
//! Stopping the daemon never stops containers: a restarted daemon adopts them
//! by their labels.

pub mod channel;
pub mod credential;
pub mod firewall;
pub mod host;
pub mod reconcile;
pub mod runtime;
pub mod streams;
pub mod uninstall;

use std::future::Future;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use tokio::sync::mpsc;

/// Errors of the node daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Joining failed (bad or used token, API unreachable).
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// The channel to the API failed or fell silent (the node reconnects).
    #[error("the channel to the API failed: {0}")]
    Channel(String),
    /// The data dir holds no credential and no join token was given.
    #[error("no node credential in {0} and no --join-token given: ask an admin for one (POST /api/v1/nodes/join-tokens)")]
    NoCredential(String),
    /// The credential file cannot be read or written.
    #[error("node credential file {path}: {source}")]
    CredentialFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API refused the credential (revoked, node removed).
    #[error("the API refused this node's credential (revoked or node removed): join again with a new token")]
    Refused,
    /// Docker cannot be reached.
    #[error("cannot reach Docker: {0}")]
    Docker(String),
}

/// Result with the node [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Node settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API's base URL, e.g. `http://127.0.0.1:2967`, or the URLs of
    /// several instances of one cluster separated by commas: the node joins
    /// and connects through one, and moves to the next when it fails
    /// ([`Config::api_urls`]).
    pub api: String,
    /// A join token for the first start.
    pub join_token: Option<String>,
    /// The node's name (default: the host name).
    pub name: Option<String>,
    /// Labels `key=value`.
    pub labels: Vec<(String, String)>,
    /// Where the node keeps its credential.
    pub data_dir: PathBuf,
    /// The address other hosts reach this node at.
    pub address: Option<String>,
    /// Host ports the node picks from for ports without a fixed host port.
    pub port_range: RangeInclusive<u16>,
    /// Set on an ingress node: the route table the API sends is published
    /// here (the binary runs the ingress that follows it).
    pub routes: Option<tokio::sync::watch::Sender<std::sync::Arc<lb_model::ingress::RouteTable>>>,
    /// Keeping the disk from filling.
    pub disk: DiskSettings,
}

impl Config {
    /// The API URLs [`Config::api`] names, in order (empty entries and
    /// spaces around commas ignored).
    pub fn api_urls(&self) -> Vec<&str> {
        self.api
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }
}

/// How a node keeps its disk from filling.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// Below this much free disk (of Docker's data root) the node says so
    /// in its heartbeat and the scheduler gives it no new replicas.
    pub min_free_disk: Option<lb_model::DiskLimit>,
    /// lb images kept per service beyond those in use (rollback targets).
    pub keep_images: usize,
    /// Time between image sweeps (`runtime/images.rs`).
    pub image_gc_interval: std::time::Duration,
    /// Docker's data root: found at the start (the data dir's disk is
    /// measured when the engine does not say).
    pub root: Option<PathBuf>,
}

impl Default for DiskSettings {
    fn default() -> Self {
        Self {
            min_free_disk: None,
            keep_images: 3,
            image_gc_interval: std::time::Duration::from_secs(300),
            root: None,
        }
    }
}

/// Runs the node daemon until `shutdown` resolves. Containers keep running.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let credential = credential::load_or_join(&config).await?;
    let docker = runtime::DockerRuntime::connect(&credential.id).await?;
    // The firewall first, recreated on every start: the API's ports (of
    // every instance named, here and on their hosts) and the registry's
    // last learnt now, a new registry's when an assignment set names it;
    // then checked every UPKEEP until the node stops.
    let api_urls = config.api_urls();
    let api_ports = api_urls.iter().copied().filter_map(firewall::port_of);
    let firewall = firewall::Firewall::new(&credential.id, api_ports)
        .guarding_apis(api_urls.iter().copied())
        .remembering(&config.data_dir);
    firewall.apply().await;
    let (stop_upkeep, upkeep_stopped) = tokio::sync::oneshot::channel::<()>();
    let upkeep = tokio::spawn(firewall.clone().upkeep(firewall::UPKEEP, async move {
        let _ = upkeep_stopped.await;
    }));
    if let Err(err) = docker.prune_networks().await {
        tracing::warn!(error = %err, "cannot remove unused project networks");
    }
    // Disk: measured on Docker's data root; lb's unused images swept.
    if config.disk.root.is_none() {
        config.disk.root = runtime::images::data_root()
            .await
            .filter(|dir| dir.exists());
    }
    let image_gc = match runtime::images::Sweeper::connect(&credential.id, config.disk.keep_images)
    {
        Ok(sweeper) => Some(tokio::spawn(runtime::images::run(
            sweeper,
            config.disk.image_gc_interval,
            std::future::pending(),
        ))),
        Err(e) => {
            tracing::warn!("no image sweeps: {e}");
            None
        }
    };
    // What the channel sends the reconciler passes the firewall on its way.
    let (to_reconciler, sent) = mpsc::channel(1024);
    let (passed, from_channel) = mpsc::channel(1024);
    let tap = tokio::spawn(firewall.clone().watch(sent, passed));
    let (to_channel, from_reconciler) = mpsc::channel(4096);
    // Streams (logs, exec) get their own Docker client: the reconciler's
    // holds its long-lived events request.
    let streams = runtime::DockerRuntime::connect(&credential.id).await?;
    let fenced = reconcile::Fenced::default();
    let reconciler = reconcile::Reconciler::new(
        docker,
        config.port_range.clone(),
        to_channel.clone(),
        credential.credential.clone(),
    )
    .with_fence(fenced.clone());
    let reconcile_task = tokio::spawn(reconciler.run(from_channel));
    let result = tokio::select! {
        r = channel::run(&config, &credential, &streams, to_reconciler, to_channel, from_reconciler, fenced, &firewall) => r,
        _ = shutdown => Ok(()),
    };
    reconcile_task.abort();
    tap.abort();
    drop(stop_upkeep);
    let _ = upkeep.await;
    if let Some(task) = image_gc {
        task.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_api_urls_are_read_from_one_flag() {
        let config = |api: &str| Config {
            api: api.into(),
            join_token: None,
            name: None,
            labels: Vec::new(),
            data_dir: PathBuf::new(),
            address: None,
            port_range: 30000..=32767,
            routes: None,
            disk: DiskSettings::default(),
        };
        for (input, expect) in [
            ("http://a:2967", vec!["http://a:2967"]),
            (
                "http://a:2967, http://b:8080/,",
                vec!["http://a:2967", "http://b:8080/"],
            ),
            (" , ", vec![]),
        ] {
            assert_eq!(config(input).api_urls(), expect, "{input:?}");
        }
    }
}
