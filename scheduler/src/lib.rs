//! The scheduler: a level-triggered controller that watches services, nodes
//! and replicas in the store and places replicas on nodes by resources.
//!
//! `state` is the scheduler's view of the cluster, kept from a list and the
//! watch that follows it; `capacity` counts what each node holds;
//! `placement` chooses a node and `rollout` the next step of a rolling
//! update (pure logic); `reconcile` plans the services something happened to; `commit` writes
//! the decisions in fenced transactions within the store's limits. This
//! module holds leadership and drives passes: on changes that matter, when
//! a timer is due (a node's grace, a rollout's wait), and on a slow resync.
//! An idle cluster wakes nothing but the lease keep-alive.
//!
//! Leadership: one scheduler leads through a leased key. Every write of a
//! pass compares that key's revision, so a leader that lost its lease (and
//! a standby took over) cannot write a stale decision: no replica is placed
//! twice, none is lost. A scheduler that cannot reach the store (a leader
//! cut off, once its lease is lost, or a standby) waits and tries again; it
//! does not end (`tests/scheduler_partition.rs`).

pub mod capacity;
pub mod commit;
pub mod cron;
pub mod deploys;
pub mod jobs;
pub mod placement;
pub mod reconcile;
pub mod rollout;
pub mod state;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lb_model::backoff::Backoff;
use lb_model::keys::Keys;
use lb_store::{Compare, Op, Shared, StoreExt, Txn, WatchStream};

use crate::state::State;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] lb_store::Error),
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
    /// A full pass over every service at least this often (passes are
    /// otherwise driven by changes and timers; this is the safety net of a
    /// level-triggered controller).
    pub resync: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            node_grace: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(5),
            resync: Duration::from_secs(30),
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
    // A store out of reach is waited out, not a failure: a leader cut off
    // from the store loses its lease and must stay to stand by once the
    // store is back (a standby just the same), like any other standby.
    let mut unreachable = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        let claimed = async {
            let lease = store.lease_grant(ttl).await?;
            let claim = Txn::new()
                .when(Compare::ModRevision(key.clone(), 0))
                .then(Op::Put {
                    key: key.clone(),
                    value: b"scheduler".to_vec(),
                    lease,
                });
            match store.txn(claim).await {
                Ok(resp) => Ok((lease, resp)),
                Err(err) => {
                    // The claim may have been applied (its answer lost):
                    // the lease goes, and the key with it.
                    let _ = store.lease_revoke(lease).await;
                    Err(err)
                }
            }
        }
        .await;
        let (lease, resp) = match claimed {
            Ok(claimed) => claimed,
            Err(err @ lb_store::Error::Unavailable(_)) => {
                let delay = unreachable.next_delay();
                tracing::warn!(error = %err, "cannot reach the store to claim the scheduling; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        unreachable.reset();
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
    // The lease is kept alive beside the passes, so a long pass never lets
    // it lapse; its loss ends the leadership.
    let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<()>();
    let keeper = {
        let store = store.clone();
        let period = config.lease_ttl / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if store.lease_keep_alive(lease).await.is_err() {
                    let _ = lost_tx.send(());
                    return;
                }
            }
        })
    };
    let _keeper = AbortOnDrop(keeper);
    // Nodes learn the grace (through the API, on connect): a node out of
    // touch that long stops its replicas, as they are placed elsewhere.
    let grace = Txn::new()
        .when(Compare::ModRevision(key.to_owned(), fence))
        .then(Op::put(
            config.keys.cluster("node-grace"),
            config.node_grace.as_millis().to_string(),
        ));
    store.txn(grace).await?;
    let (mut state, mut changes) = relist(store, &config.keys).await?;
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    // The next tick of any schedule (see `cron`).
    let mut cron_at: Option<std::time::Instant> = None;
    loop {
        if state.has_work() {
            let outcome = reconcile::pass(
                store,
                &config.keys,
                (key, fence),
                config.node_grace,
                &mut state,
            )
            .await?;
            if outcome != reconcile::Outcome::default() {
                tracing::debug!(?outcome, "scheduling pass");
            }
            if outcome.conflicts > 0 && !holds_fence(store, key, fence).await? {
                // Writes decided as leader, refused: another one leads.
                tracing::warn!(
                    conflicts = outcome.conflicts,
                    "{FENCE_REFUSED}: another scheduler leads"
                );
                return Ok(());
            }
            // Read our own writes before deciding again: the next pass must
            // see what this one placed.
            if outcome.revision > state.revision
                && !catch_up(&mut state, &mut changes, outcome.revision).await
            {
                (state, changes) = relist(store, &config.keys).await?;
            }
            continue;
        }
        // Then schedules and jobs (`cron`, `jobs`).
        let cron_due = cron_at.is_some_and(|at| at <= std::time::Instant::now());
        if state.jobs.cron_dirty || cron_due || state.jobs.dirty {
            let written = if state.jobs.cron_dirty || cron_due {
                let now = lb_model::now();
                let fired = cron::pass(store, &config.keys, (key, fence), &mut state, now).await?;
                cron_at = fired.next.map(cron::instant_of);
                fired.revision
            } else {
                jobs::pass(store, &config.keys, (key, fence), &mut state).await?
            };
            if written > state.revision && !catch_up(&mut state, &mut changes, written).await {
                (state, changes) = relist(store, &config.keys).await?;
            }
            continue;
        }
        let wake = match (state.wake_at, cron_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wake_sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut lost => return Ok(()),
            change = changes.next() => match change {
                Some(Ok(c)) => {
                    state.apply(c);
                    // Take what else is ready, so a burst is one pass.
                    while let Some(Some(Ok(c))) = futures::FutureExt::now_or_never(changes.next()) {
                        state.apply(c);
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "scheduler watch lost; listing again");
                    (state, changes) = relist(store, &config.keys).await?;
                }
                None => (state, changes) = relist(store, &config.keys).await?,
            },
            _ = wake_sleep => state.wake(),
            _ = resync.tick() => state.mark_all(),
        }
    }
}

/// What a scheduler logs when the store refused its writes because its
/// fence (the leader key's revision when it took the lead) no longer holds:
/// it was deposed while it decided (a pause, a partition) and stops leading.
pub const FENCE_REFUSED: &str = "the fence refused this scheduler's writes";

/// Whether the leader key still has the revision this leadership began at.
async fn holds_fence(store: &Shared, key: &str, fence: i64) -> Result<bool, Error> {
    Ok(store
        .get(key)
        .await?
        .is_some_and(|kv| kv.mod_revision == fence))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A fresh view: the whole tree listed, and a watch from just after it.
async fn relist(store: &Shared, keys: &Keys) -> Result<(State, WatchStream), Error> {
    let (kvs, revision) = store.list(&keys.all()).await?;
    let state = State::load(keys.clone(), kvs, revision);
    let changes = store.watch(&keys.all(), revision + 1).await?;
    Ok((state, changes))
}

/// Applies watch events until the view holds `revision`; false when the
/// watch failed or took too long (the caller lists again).
async fn catch_up(state: &mut State, changes: &mut WatchStream, revision: i64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while state.revision < revision {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(Ok(c))) => state.apply(c),
            _ => return false,
        }
    }
    true
}
