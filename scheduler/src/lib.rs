//! The scheduler: a level-triggered controller that watches services, nodes
//! and replicas in the store and places replicas on nodes by resources.
//!
//! `placement` chooses a node (pure logic); `reconcile` runs one pass over
//! the cluster and writes each service's changes in one fenced transaction;
//! this module holds leadership and drives passes on changes and on a timer.
//!
//! Leadership: one scheduler leads through a leased key. Every write of a
//! pass compares that key's revision, so a leader that lost its lease (and
//! a standby took over) cannot write a stale decision: no replica is placed
//! twice, none is lost.

pub mod placement;
pub mod reconcile;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lb_pkg::keys::Keys;
use lb_pkg::store::cache::CachedStore;
use lb_pkg::store::{Compare, Op, Shared, Txn};

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] lb_pkg::store::Error),
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Key tree.
    pub keys: Keys,
    /// How long a node may be gone before its replicas move.
    pub node_grace: Duration,
    /// Leadership lease TTL.
    pub lease_ttl: Duration,
    /// Passes at least this often.
    pub resync: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            node_grace: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(5),
            resync: Duration::from_secs(2),
        }
    }
}

/// Runs the scheduler until `shutdown` resolves: waits to lead, then
/// schedules while it leads.
pub async fn run(
    store: Shared,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    tokio::select! {
        r = lead_forever(store, config) => r,
        _ = shutdown => Ok(()),
    }
}

async fn lead_forever(store: Shared, config: Config) -> Result<(), Error> {
    let key = config.keys.cluster("scheduler-leader");
    let ttl = config.lease_ttl.as_secs().max(1) as i64;
    loop {
        let lease = store.lease_grant(ttl).await?;
        let claim = Txn::new()
            .when(Compare::ModRevision(key.clone(), 0))
            .then(Op::Put {
                key: key.clone(),
                value: b"scheduler".to_vec(),
                lease,
            });
        let resp = store.txn(claim).await?;
        if !resp.succeeded {
            let _ = store.lease_revoke(lease).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tracing::info!("leading the scheduling");
        let fence = resp.revision;
        let result = lead(&store, &config, &key, fence, lease).await;
        let _ = store.lease_revoke(lease).await;
        match result {
            Ok(()) => tracing::warn!("lost the scheduler lease; standing by"),
            Err(err) => tracing::warn!(error = %err, "scheduling failed; standing by"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Schedules until the lease is lost.
async fn lead(
    store: &Shared,
    config: &Config,
    key: &str,
    fence: i64,
    lease: i64,
) -> Result<(), Error> {
    let cache: Shared =
        std::sync::Arc::new(CachedStore::new(store.clone(), &config.keys.all()).await);
    let mut changes = store.watch(&config.keys.all(), 0).await?;
    let mut keepalive = tokio::time::interval(config.lease_ttl / 3);
    let mut resync = tokio::time::interval(config.resync);
    let mut memory = reconcile::Memory::default();
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if store.lease_keep_alive(lease).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            change = changes.next() => {
                match change {
                    Some(Ok(_)) => {
                        // Let a burst settle into one pass.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Some(Err(_)) | None => changes = store.watch(&config.keys.all(), 0).await?,
                }
            }
            _ = resync.tick() => {}
        }
        let outcome = reconcile::pass(
            &cache,
            &config.keys,
            (key, fence),
            config.node_grace,
            &mut memory,
        )
        .await?;
        if outcome != reconcile::Outcome::default() {
            tracing::debug!(?outcome, "scheduling pass");
        }
    }
}
