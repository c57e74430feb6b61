//! The reconcile loop: makes this node's containers match its assignments.
//!
//! Level-triggered: every pass compares the whole desired set with the
//! containers the [`Runtime`] lists under this node's label. A pass only
//! decides (`plan.rs`); the Docker work it decides on (create and start,
//! restart, stop, remove) runs as an operation in a task of its own
//! (`ops.rs`), many at once but never two on one replica. Containers are
//! known by a stable hash of their spec (`spec.rs`); crashes are restarted
//! under exponential backoff (`crashes.rs`); health checks run in tasks of
//! their own and report changes to the loop (`health.rs`); statuses go up
//! the channel only when they change (`report.rs`).
//!
//! This file holds the loop itself: passes are triggered by assignment
//! changes, Docker events (a `docker kill` or `rm` by hand is noticed at
//! once), finished operations, crash-backoff timers, a replica turning
//! unhealthy and a periodic resync; whatever arrived together makes one
//! pass. Other health changes are reported without a pass.
//!
//! A node out of touch with the API for the scheduler's grace is fenced:
//! the channel sets the shared [`Fenced`] flag and sends an empty desired
//! set. Its replicas are being placed elsewhere, so while the flag is set
//! containers are killed and removed at once (no graceful stop: the
//! replacement may already run); the API's next desired set clears it.

mod crashes;
mod health;
mod jobs;
mod ops;
mod plan;
mod report;
mod spec;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_health;
#[cfg(test)]
mod tests_jobs;

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use futures::StreamExt;
use lb_model::protocol::{FromNode, ToNode};
use lb_model::{Assignment, ReplicaStatus};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::runtime::{DockerRuntime, Runtime};
use crashes::Crashes;
use ops::{Limits, Outcome};
pub use ops::{CREATES, STOPS};
pub use spec::spec_hash;

const RESYNC: Duration = Duration::from_secs(10);
/// A pass this long after the first of a burst of Docker events.
const BURST: Duration = Duration::from_millis(50);
/// A second look after Docker events.
const SETTLE: Duration = Duration::from_millis(500);
/// How long to wait before watching Docker events again after the stream ended.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// Set while the node is fenced (out of touch with the API for the grace):
/// containers no longer assigned are killed rather than stopped gracefully.
pub type Fenced = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// The reconciler of one node, over a container [`Runtime`].
pub struct Reconciler<R = DockerRuntime> {
    runtime: R,
    ports: RangeInclusive<u16>,
    out: mpsc::Sender<FromNode>,
    /// The assignments of this node, by replica.
    desired: HashMap<String, Assignment>,
    crashes: HashMap<String, Crashes>,
    /// The last status sent for each replica.
    reported: HashMap<String, ReplicaStatus>,
    /// lb's registry, and the node's credential to pull from it.
    registry: Option<String>,
    credential: String,
    /// Operations in flight, and the replica of each task.
    ops: JoinSet<(String, Outcome)>,
    tasks: HashMap<tokio::task::Id, String>,
    /// Replicas with an operation in flight.
    busy: HashSet<String>,
    /// Host ports picked for creates in flight, by replica.
    reserved: HashMap<String, Vec<u16>>,
    limits: Limits,
    /// Health checkers and their verdicts.
    checks: health::Checks,
    /// Fenced: containers are killed, not stopped.
    fenced: Fenced,
    /// One-off jobs: when they started, why they were stopped.
    jobs: jobs::Jobs,
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<R: Runtime> Reconciler<R> {
    /// A reconciler sending statuses to `out`.
    pub fn new(
        runtime: R,
        ports: RangeInclusive<u16>,
        out: mpsc::Sender<FromNode>,
        credential: String,
    ) -> Self {
        Self {
            registry: None,
            credential,
            runtime,
            ports,
            out,
            desired: HashMap::new(),
            crashes: HashMap::new(),
            reported: HashMap::new(),
            ops: JoinSet::new(),
            tasks: HashMap::new(),
            busy: HashSet::new(),
            reserved: HashMap::new(),
            limits: Limits::default(),
            checks: health::Checks::default(),
            fenced: Fenced::default(),
            jobs: jobs::Jobs::default(),
        }
    }

    /// Shares the channel's [`Fenced`] flag.
    pub fn with_fence(mut self, fenced: Fenced) -> Self {
        self.fenced = fenced;
        self
    }

    /// Runs until the channel side goes away; dropping it aborts the
    /// operations in flight. Nothing is done before the first desired set
    /// arrives, so a restarted daemon never removes containers it has not yet
    /// heard about.
    pub async fn run(mut self, mut assignments: mpsc::Receiver<ToNode>) {
        let mut events = self.runtime.events();
        let mut events_retry: Option<Instant> = None;
        let mut resync = tokio::time::interval(RESYNC);
        let mut synced = false;
        let mut burst: Option<Instant> = None;
        let mut settle: Option<Instant> = None;
        loop {
            let retry = self.next_retry(Instant::now());
            let mut pass = false;
            tokio::select! {
                message = assignments.recv() => {
                    let Some(message) = message else { return };
                    synced |= matches!(message, ToNode::Desired { .. });
                    self.apply(message);
                    // Take whatever else is queued before one pass.
                    while let Ok(message) = assignments.try_recv() {
                        synced |= matches!(message, ToNode::Desired { .. });
                        self.apply(message);
                    }
                    pass = true;
                }
                event = events.next(), if events_retry.is_none() => {
                    if event.is_none() {
                        tracing::warn!("Docker events ended; watching again shortly");
                        events_retry = Some(Instant::now() + EVENTS_RETRY);
                        continue;
                    }
                    // Let a burst settle a moment, and look again a little
                    // later: Docker may report the state an event announces
                    // (a kill, then the exit) after the event.
                    burst.get_or_insert(Instant::now() + BURST);
                    settle = Some(Instant::now() + SETTLE);
                }
                _ = sleep_until(events_retry) => {
                    events_retry = None;
                    events = self.runtime.events();
                    pass = true;
                }
                _ = sleep_until(burst) => {
                    burst = None;
                    pass = true;
                }
                _ = sleep_until(settle) => {
                    settle = None;
                    pass = true;
                }
                _ = resync.tick() => pass = true,
                _ = sleep_until(retry) => pass = true,
                Some(verdict) = self.checks.next() => {
                    pass |= self.verdict(verdict).await;
                }
                Some(done) = self.ops.join_next_with_id(), if !self.ops.is_empty() => {
                    pass |= self.finished(done).await;
                    while let Some(done) = self.ops.try_join_next_with_id() {
                        pass |= self.finished(done).await;
                    }
                }
            }
            if synced && pass {
                self.pass().await;
            }
        }
    }

    /// The earliest crash backoff still ahead of `now`: one already past has
    /// had its pass.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        let crash = self
            .crashes
            .values()
            .filter_map(|c| c.retry_at)
            .filter(|at| *at > now)
            .min();
        // A job's time limit wakes a pass too.
        let job = self.jobs.next_deadline(self.desired.values(), now);
        crash.into_iter().chain(job).min()
    }

    /// Takes a message from the API into the desired state.
    fn apply(&mut self, message: ToNode) {
        match message {
            ToNode::Desired {
                replicas, registry, ..
            } => {
                self.registry = registry;
                self.desired = replicas
                    .into_iter()
                    .map(|a| (a.replica.clone(), a))
                    .collect();
                // A new connection: report every status again.
                self.reported.clear();
                self.jobs.reconnected();
            }
            ToNode::Put(a) => {
                self.desired.insert(a.replica.clone(), *a);
            }
            ToNode::Delete { replica } => {
                self.desired.remove(&replica);
            }
            // Streams and routes are served by the channel, not here.
            ToNode::Routes(_)
            | ToNode::Logs { .. }
            | ToNode::Exec { .. }
            | ToNode::Open { .. }
            | ToNode::Input { .. }
            | ToNode::Close { .. } => {}
        }
    }
}
