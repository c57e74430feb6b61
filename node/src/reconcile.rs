//! The reconcile loop: makes this node's containers match its assignments.
//!
//! Level-triggered: every pass compares the whole desired set with the
//! containers Docker lists under this node's label. A pass only decides; the
//! Docker work it decides on (create and start, restart, stop, remove) runs
//! as an operation in a task of its own, many at once but never two on one
//! replica: a replica with an operation in flight is busy, passes skip it,
//! and the operation's end asks for another pass. At most [`CREATES`]
//! creates and restarts and [`STOPS`] stops and removals run at a time, so a
//! 10 s `docker stop` holds up neither the other removals nor new
//! assignments. Host ports picked for creates in flight stay reserved until
//! the container shows in Docker's list.
//!
//! Passes are triggered by assignment changes, Docker events (a `docker kill`
//! or `rm` by hand is noticed at once), finished operations, crash-backoff
//! timers and a periodic resync; whatever arrived together makes one pass.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lb_model::protocol::{FromNode, ToNode};
use lb_model::{
    Assignment, NodeStatus, PortBinding, ReplicaState, ReplicaStatus, DEFAULT_STOP_TIMEOUT,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::runtime::{self, Container, Engine, Runtime};

const RESYNC: Duration = Duration::from_secs(10);
/// A pass this long after the first of a burst of Docker events.
const BURST: Duration = Duration::from_millis(50);
/// A second look after Docker events.
const SETTLE: Duration = Duration::from_millis(500);
/// How long to wait before watching Docker events again after the stream ended.
const EVENTS_RETRY: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Creates and restarts at once: each keeps the engine busy.
pub const CREATES: usize = 8;
/// Stops and removals at once: they mostly wait out a grace period.
pub const STOPS: usize = 64;

/// Crash bookkeeping of one replica.
#[derive(Debug, Default)]
struct Crashes {
    restarts: u32,
    last_exit: Option<runtime::Exit>,
    delay: Option<Duration>,
    retry_at: Option<Instant>,
    /// The container whose exit `last_exit` is, read since lb last started
    /// it: while backing off, it is not inspected again.
    inspected: Option<String>,
}

/// Docker work on one replica, run in a task of its own.
#[derive(Debug)]
enum Op {
    /// Pull if missing, create and start the container of an assignment.
    Create {
        a: Box<Assignment>,
        hash: String,
        host_ports: Vec<u16>,
        /// (lb's registry, the node's credential) when the image is there.
        pull: Option<(String, String)>,
    },
    /// Read how a container ended and, with `start`, start it again.
    Restart {
        container: Container,
        start: bool,
        /// It ran before (it is not merely created).
        crashed: bool,
    },
    /// Stop a container: its replica is paused.
    Stop { id: String, grace: u32 },
    /// Stop and remove containers: (id, grace period).
    Remove(Vec<(String, u32)>),
}

/// How an [`Op`] ended.
#[derive(Debug)]
enum Outcome {
    Created(Result<Container, String>),
    Restarted {
        container: Container,
        crashed: bool,
        exit: runtime::Exit,
        /// `None` when it was only inspected.
        started: Option<Result<(), String>>,
    },
    Stopped(Result<(), String>),
    Removed(Result<(), String>),
}

impl Outcome {
    /// Whether the operation did what it set out to do. A failed one does
    /// not ask for a pass at once (that would retry it in a tight loop); it
    /// is retried after its backoff, on a Docker event or at the resync.
    fn succeeded(&self) -> bool {
        match self {
            Outcome::Created(r) => r.is_ok(),
            Outcome::Restarted { started, .. } => !matches!(started, Some(Err(_))),
            Outcome::Stopped(r) | Outcome::Removed(r) => r.is_ok(),
        }
    }
}

/// The two bounds on operations at once.
#[derive(Clone)]
struct Limits {
    creates: Arc<Semaphore>,
    stops: Arc<Semaphore>,
}

/// The reconciler of one node, over a Docker [`Engine`].
pub struct Reconciler<E = Runtime> {
    engine: E,
    ports: RangeInclusive<u16>,
    out: mpsc::Sender<FromNode>,
    desired: HashMap<String, Assignment>,
    crashes: HashMap<String, Crashes>,
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
}

/// A hash of everything a container is made from: a change means a new one.
///
/// SHA-256 over a canonical encoding (JSON of a fixed tuple: maps are
/// ordered, the CPU count is its bit pattern), so it stays the same across
/// Rust releases and lb versions; a test pins it. `stop_timeout` is not in
/// it: a new grace period is no reason to kill a running replica, and the
/// container carries its own in a label.
pub fn spec_hash(a: &Assignment) -> String {
    let encoding = serde_json::to_vec(&(
        "lb-spec-1",
        &a.image,
        a.memory,
        a.cpu.to_bits(),
        &a.env,
        &a.command,
        &a.ports,
        &a.volumes,
        a.generation,
        a.restart_generation,
    ))
    .unwrap_or_default();
    format!("{:x}", Sha256::digest(&encoding))
}

/// The hash lb wrote before [`spec_hash`] (16 hex digits from
/// `DefaultHasher`), only to recognise containers made by an older lb so an
/// upgrade adopts them instead of recreating them. Never written.
fn legacy_spec_hash(a: &Assignment) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&(
        &a.image,
        a.memory,
        a.cpu.to_bits(),
        &a.env,
        &a.command,
        &a.ports,
        &a.volumes,
        a.generation,
        a.restart_generation,
    ))
    .unwrap_or_default()
    .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether a container was made from this assignment's spec.
fn made_from(c: &Container, hash: &str, a: &Assignment) -> bool {
    c.spec == hash || (c.spec.len() == 16 && c.spec == legacy_spec_hash(a))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl<E: Engine> Reconciler<E> {
    /// A reconciler sending statuses to `out`.
    pub fn new(
        engine: E,
        ports: RangeInclusive<u16>,
        out: mpsc::Sender<FromNode>,
        credential: String,
    ) -> Self {
        Self {
            registry: None,
            credential,
            engine,
            ports,
            out,
            desired: HashMap::new(),
            crashes: HashMap::new(),
            reported: HashMap::new(),
            ops: JoinSet::new(),
            tasks: HashMap::new(),
            busy: HashSet::new(),
            reserved: HashMap::new(),
            limits: Limits {
                creates: Arc::new(Semaphore::new(CREATES)),
                stops: Arc::new(Semaphore::new(STOPS)),
            },
        }
    }

    /// Runs until the channel side goes away; dropping it aborts the
    /// operations in flight. Nothing is done before the first desired set
    /// arrives, so a restarted daemon never removes containers it has not yet
    /// heard about.
    pub async fn run(mut self, mut assignments: mpsc::Receiver<ToNode>) {
        let mut events = self.engine.events();
        let mut events_retry: Option<Instant> = None;
        let mut resync = tokio::time::interval(RESYNC);
        let mut synced = false;
        let mut burst: Option<Instant> = None;
        let mut settle: Option<Instant> = None;
        loop {
            // Only backoffs still ahead: one already past has had its pass.
            let now = Instant::now();
            let retry = self
                .crashes
                .values()
                .filter_map(|c| c.retry_at)
                .filter(|at| *at > now)
                .min();
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
                    events = self.engine.events();
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

    fn apply(&mut self, message: ToNode) {
        match message {
            ToNode::Desired { replicas, registry } => {
                self.registry = registry;
                self.desired = replicas
                    .into_iter()
                    .map(|a| (a.replica.clone(), a))
                    .collect();
                // A new connection: report every status again.
                self.reported.clear();
            }
            ToNode::Put(a) => {
                self.desired.insert(a.replica.clone(), *a);
            }
            ToNode::Delete { replica } => {
                self.desired.remove(&replica);
            }
            // Streams are served by the channel, not here.
            ToNode::Logs { .. }
            | ToNode::Exec { .. }
            | ToNode::Open { .. }
            | ToNode::Input { .. }
            | ToNode::Close { .. } => {}
        }
    }

    /// One pass over every replica of the node: decides, reports, and starts
    /// operations on the replicas that have none in flight.
    async fn pass(&mut self) {
        let containers = match self.engine.list().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list containers");
                return;
            }
        };
        let mut by_replica: HashMap<String, Vec<Container>> = HashMap::new();
        for c in containers {
            by_replica.entry(c.replica.clone()).or_default().push(c);
        }
        let mut used: HashSet<u16> = by_replica
            .values()
            .flatten()
            .flat_map(|c| c.ports.iter().map(|p| p.1))
            .chain(self.reserved.values().flatten().copied())
            .collect();
        let desired = &self.desired;
        self.crashes.retain(|r, _| desired.contains_key(r));
        self.reported.retain(|r, _| desired.contains_key(r));
        let desired: Vec<Assignment> = self.desired.values().cloned().collect();
        let now = Instant::now();
        for a in &desired {
            let found = by_replica.remove(&a.replica).unwrap_or_default();
            if self.busy.contains(&a.replica) {
                continue;
            }
            let span = tracing::info_span!("reconcile", replica = %a.replica);
            self.reconcile(a, found, &mut used, now)
                .instrument(span)
                .await;
        }
        // Containers of replicas no longer assigned: stop each with its own
        // grace period, and remove.
        for (replica, containers) in by_replica {
            if self.busy.contains(&replica) {
                continue;
            }
            let victims = containers
                .iter()
                .map(|c| (c.id.clone(), c.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)))
                .collect();
            tracing::info!(%replica, "removing the containers of a replica no longer assigned");
            self.spawn(&replica, Op::Remove(victims));
        }
        let running = self.desired.len() as u32;
        let _ = self.out.try_send(FromNode::Heartbeat(NodeStatus {
            containers: running,
            ..Default::default()
        }));
    }

    /// Decides on one replica with no operation in flight.
    async fn reconcile(
        &mut self,
        a: &Assignment,
        mut found: Vec<Container>,
        used: &mut HashSet<u16>,
        now: Instant,
    ) {
        let hash = spec_hash(a);
        // Keep at most one container, and only one made from this spec:
        // the others go first, and the pass after that goes on.
        found.sort_by_key(|c| c.state != "running");
        let mut current = None;
        let mut others = Vec::new();
        for c in found {
            if current.is_none() && made_from(&c, &hash, a) {
                current = Some(c);
            } else {
                others.push((c.id, c.stop_timeout.unwrap_or(a.stop_timeout)));
            }
        }
        if !others.is_empty() {
            tracing::info!(
                containers = others.len(),
                "replacing containers of another spec"
            );
            self.spawn(&a.replica, Op::Remove(others));
            return;
        }
        if !a.running {
            match &current {
                Some(c) if c.state == "running" => {
                    let op = Op::Stop {
                        id: c.id.clone(),
                        grace: a.stop_timeout,
                    };
                    self.spawn(&a.replica, op);
                }
                _ => {
                    self.report(a, ReplicaState::Exited, current.as_ref(), "paused", None)
                        .await
                }
            }
            return;
        }
        match current {
            None => self.create(a, hash, used, now).await,
            Some(c) if c.state == "running" => {
                self.report(a, ReplicaState::Running, Some(&c), "", None)
                    .await
            }
            Some(c) => {
                // Exited, dead or never started: start again, with
                // exponential backoff between crashes.
                let crashed = c.state != "created";
                let crashes = self.crashes.entry(a.replica.clone()).or_default();
                if crashes.retry_at.is_some_and(|at| at > now) {
                    if crashes.inspected.as_ref() == Some(&c.id) {
                        let exit = crashes.last_exit.clone().unwrap_or_default();
                        let message = backoff_message(&exit);
                        self.report(a, ReplicaState::Exited, Some(&c), message, Some(exit))
                            .await;
                    } else {
                        let op = Op::Restart {
                            container: c,
                            start: false,
                            crashed,
                        };
                        self.spawn(&a.replica, op);
                    }
                    return;
                }
                let delay = crashes
                    .delay
                    .map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
                crashes.delay = Some(delay);
                crashes.retry_at = Some(now + delay);
                if crashed {
                    crashes.restarts += 1;
                }
                let op = Op::Restart {
                    container: c,
                    start: true,
                    crashed,
                };
                self.spawn(&a.replica, op);
            }
        }
    }

    /// Picks host ports (reserved until the container is listed) and starts
    /// a create, unless the replica is backing off.
    async fn create(
        &mut self,
        a: &Assignment,
        hash: String,
        used: &mut HashSet<u16>,
        now: Instant,
    ) {
        if let Some(at) = self.crashes.get(&a.replica).and_then(|c| c.retry_at) {
            if at > now {
                return;
            }
        }
        // Only lb's own registry gets the node's credential.
        let pull = self
            .registry
            .as_deref()
            .filter(|r| a.image.starts_with(&format!("{r}/")))
            .map(|r| (r.to_owned(), self.credential.clone()));
        let mut host_ports = Vec::new();
        for port in &a.ports {
            let host = match port.host {
                Some(host) => host,
                None => match self.free_port(used) {
                    Some(p) => p,
                    None => {
                        self.fail(a, "no free host port in the node's port range")
                            .await;
                        return;
                    }
                },
            };
            used.insert(host);
            host_ports.push(host);
        }
        self.reserved.insert(a.replica.clone(), host_ports.clone());
        let op = Op::Create {
            a: Box::new(a.clone()),
            hash,
            host_ports,
            pull,
        };
        self.spawn(&a.replica, op);
    }

    /// Starts an operation on a replica, which is busy until it ends.
    fn spawn(&mut self, replica: &str, op: Op) {
        self.busy.insert(replica.to_owned());
        let (engine, limits) = (self.engine.clone(), self.limits.clone());
        let span = tracing::info_span!("operation", replica = %replica);
        let owned = replica.to_owned();
        let task = self
            .ops
            .spawn(async move { (owned, execute(&engine, &limits, op).await) }.instrument(span));
        self.tasks.insert(task.id(), replica.to_owned());
    }

    /// Takes in an ended operation; whether it asks for a pass.
    async fn finished(
        &mut self,
        done: Result<(tokio::task::Id, (String, Outcome)), tokio::task::JoinError>,
    ) -> bool {
        let (replica, outcome) = match done {
            Ok((task, done)) => {
                self.tasks.remove(&task);
                done
            }
            Err(err) => {
                // A panic (or an abort): free the replica and look again.
                tracing::warn!(error = %err, "an operation failed");
                if let Some(replica) = self.tasks.remove(&err.id()) {
                    self.busy.remove(&replica);
                    self.reserved.remove(&replica);
                }
                return true;
            }
        };
        self.busy.remove(&replica);
        self.reserved.remove(&replica);
        let succeeded = outcome.succeeded();
        // Reports only for a replica still assigned; the next pass sees to
        // the rest.
        if let Some(a) = self.desired.get(&replica).cloned() {
            let span = tracing::info_span!("reconcile", replica = %replica);
            self.absorb(&a, outcome).instrument(span).await;
        }
        succeeded
    }

    /// Records and reports what an operation on an assigned replica did.
    async fn absorb(&mut self, a: &Assignment, outcome: Outcome) {
        match outcome {
            Outcome::Created(Ok(container)) => {
                tracing::info!(container = %container.id, "started");
                // Made from an older spec meanwhile: the next pass replaces it.
                if container.spec == spec_hash(a) {
                    self.report(a, ReplicaState::Running, Some(&container), "", None)
                        .await;
                }
            }
            Outcome::Created(Err(message)) => self.fail(a, &message).await,
            Outcome::Restarted {
                container,
                crashed,
                exit,
                started,
            } => {
                let crashes = self.crashes.entry(a.replica.clone()).or_default();
                if crashed {
                    crashes.last_exit = Some(exit.clone());
                }
                crashes.inspected = started.is_none().then(|| container.id.clone());
                let (state, message) = match started {
                    None => (ReplicaState::Exited, backoff_message(&exit).to_owned()),
                    Some(Ok(())) if exit.oom_killed => (
                        ReplicaState::Running,
                        "restarted after an out-of-memory kill".to_owned(),
                    ),
                    Some(Ok(())) => (ReplicaState::Running, "restarted".to_owned()),
                    Some(Err(message)) => (ReplicaState::Failed, message),
                };
                self.report(a, state, Some(&container), &message, Some(exit))
                    .await;
            }
            Outcome::Stopped(Err(message)) => {
                tracing::warn!(%message, "cannot stop container");
            }
            Outcome::Removed(Err(message)) => {
                tracing::warn!(%message, "cannot remove container");
            }
            Outcome::Stopped(Ok(())) | Outcome::Removed(Ok(())) => {}
        }
    }

    /// Records a failure to start, retried with backoff.
    async fn fail(&mut self, a: &Assignment, message: &str) {
        tracing::warn!(%message, "replica cannot start");
        let crashes = self.crashes.entry(a.replica.clone()).or_default();
        let delay = crashes
            .delay
            .map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        crashes.delay = Some(delay);
        crashes.retry_at = Some(Instant::now() + delay);
        self.report(a, ReplicaState::Failed, None, message, None)
            .await;
    }

    /// A host port in the range that no container of ours holds or is
    /// about to, and that can be bound right now.
    fn free_port(&self, used: &HashSet<u16>) -> Option<u16> {
        let (start, end) = (*self.ports.start() as u32, *self.ports.end() as u32);
        let span = end - start + 1;
        let offset = rand::random::<u32>() % span;
        (0..span)
            .map(|i| (start + (offset + i) % span) as u16)
            .filter(|p| !used.contains(p))
            .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
    }

    async fn report(
        &mut self,
        a: &Assignment,
        state: ReplicaState,
        container: Option<&Container>,
        message: &str,
        exit: Option<runtime::Exit>,
    ) {
        let crashes = self.crashes.get(&a.replica);
        let ports = container.map_or_else(Vec::new, |c| {
            a.ports
                .iter()
                .filter_map(|p| {
                    let host = c
                        .ports
                        .iter()
                        .find(|(private, _)| *private == p.container)?
                        .1;
                    Some(PortBinding {
                        container: p.container,
                        host,
                        protocol: p.protocol,
                    })
                })
                .collect()
        });
        let exit = exit
            .or_else(|| crashes.and_then(|c| c.last_exit.clone()))
            .unwrap_or_default();
        let status = ReplicaStatus {
            state,
            container_id: container.map(|c| c.id.clone()),
            ports,
            exit_code: exit.code,
            oom_killed: exit.oom_killed,
            restarts: crashes.map_or(0, |c| c.restarts),
            message: message.to_owned(),
            updated: 0,
        };
        if self.reported.get(&a.replica) == Some(&status) {
            return;
        }
        self.reported.insert(a.replica.clone(), status.clone());
        let status = ReplicaStatus {
            updated: now_secs(),
            ..status
        };
        let _ = self
            .out
            .send(FromNode::Status {
                replica: a.replica.clone(),
                status,
            })
            .await;
    }
}

fn backoff_message(exit: &runtime::Exit) -> &'static str {
    if exit.oom_killed {
        "killed: out of memory"
    } else {
        "exited; restarting with backoff"
    }
}

/// Runs an operation within its bound.
async fn execute<E: Engine>(engine: &E, limits: &Limits, op: Op) -> Outcome {
    match op {
        Op::Create {
            a,
            hash,
            host_ports,
            pull,
        } => {
            let _permit = limits.creates.acquire().await;
            let pull = pull.as_ref().map(|(r, c)| (r.as_str(), c.as_str()));
            if let Err(message) = engine.ensure_image(&a.image, pull).await {
                return Outcome::Created(Err(message));
            }
            let id = match engine.create(&a, &hash, &host_ports).await {
                Ok(id) => id,
                Err(err) => return Outcome::Created(Err(runtime::message(&err))),
            };
            if let Err(err) = engine.start(&id).await {
                let message = runtime::message(&err);
                // Leave nothing half made: the next pass creates it again.
                let _ = engine.remove(&id, 0).await;
                return Outcome::Created(Err(message));
            }
            let ports = a
                .ports
                .iter()
                .zip(&host_ports)
                .map(|(p, h)| (p.container, *h))
                .collect();
            Outcome::Created(Ok(Container {
                id,
                replica: a.replica.clone(),
                state: "running".into(),
                spec: hash,
                ports,
                stop_timeout: Some(a.stop_timeout),
            }))
        }
        Op::Restart {
            container,
            start,
            crashed,
        } => {
            let _permit = limits.creates.acquire().await;
            let exit = engine.exit(&container.id).await.unwrap_or_default();
            let started = if start {
                Some(
                    engine
                        .start(&container.id)
                        .await
                        .map_err(|e| runtime::message(&e)),
                )
            } else {
                None
            };
            Outcome::Restarted {
                container,
                crashed,
                exit,
                started,
            }
        }
        Op::Stop { id, grace } => {
            let _permit = limits.stops.acquire().await;
            Outcome::Stopped(
                engine
                    .stop(&id, grace)
                    .await
                    .map_err(|e| runtime::message(&e)),
            )
        }
        Op::Remove(containers) => {
            let _permit = limits.stops.acquire().await;
            for (id, grace) in containers {
                if let Err(err) = engine.remove(&id, grace).await {
                    return Outcome::Removed(Err(runtime::message(&err)));
                }
            }
            Outcome::Removed(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The concurrency of the loop against an in-memory engine that counts
    //! what runs at once; Docker itself is in `tests/docker.rs`.

    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bollard::errors::Error as DockerError;
    use futures::StreamExt;
    use lb_model::protocol::{FromNode, ToNode};
    use lb_model::{Assignment, Port, Protocol, ReplicaState, ReplicaStatus};
    use tokio::sync::{broadcast, mpsc};

    use super::*;
    use crate::runtime::{Container, Engine, Exit};

    #[derive(Default)]
    struct State {
        containers: BTreeMap<String, Container>,
        exits: HashMap<String, Exit>,
        next: u64,
        /// Operations in flight per replica, and how often one began while
        /// another was in flight.
        in_flight: HashMap<String, usize>,
        overlaps: usize,
        creates_now: usize,
        max_creates: usize,
        stops_now: usize,
        max_stops: usize,
        /// (container id, grace) of every stop.
        stops: Vec<(String, u32)>,
        lists: usize,
        inspects: usize,
    }

    /// An engine whose creates take `create` and whose processes ignore
    /// SIGTERM: a stop takes `stop`, whatever the grace.
    #[derive(Clone)]
    struct Fake {
        state: Arc<Mutex<State>>,
        create: Duration,
        stop: Duration,
        events: broadcast::Sender<()>,
    }

    impl Fake {
        fn new(create: Duration, stop: Duration) -> Self {
            Self {
                state: Arc::default(),
                create,
                stop,
                events: broadcast::channel(1024).0,
            }
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }

        fn begin(&self, replica: &str) {
            let mut s = self.state();
            let n = s.in_flight.entry(replica.to_owned()).or_default();
            *n += 1;
            if *n > 1 {
                s.overlaps += 1;
            }
        }

        fn end(&self, replica: &str) {
            *self
                .state()
                .in_flight
                .entry(replica.to_owned())
                .or_default() -= 1;
        }

        fn replica_of(&self, id: &str) -> String {
            self.state()
                .containers
                .get(id)
                .map(|c| c.replica.clone())
                .unwrap_or_default()
        }

        /// The process of a replica's container exits with `code`.
        fn crash(&self, replica: &str, code: i64) {
            let mut s = self.state();
            let Some(c) = s.containers.values_mut().find(|c| c.replica == replica) else {
                panic!("replica {replica} has no container");
            };
            c.state = "exited".into();
            let id = c.id.clone();
            s.exits.insert(
                id,
                Exit {
                    code: Some(code),
                    oom_killed: false,
                },
            );
            drop(s);
            let _ = self.events.send(());
        }

        fn count(&self) -> usize {
            self.state().containers.len()
        }
    }

    fn not_found() -> DockerError {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message: "no such container".into(),
        }
    }

    impl Engine for Fake {
        async fn list(&self) -> Result<Vec<Container>, DockerError> {
            let mut s = self.state();
            s.lists += 1;
            Ok(s.containers.values().cloned().collect())
        }

        fn events(&self) -> futures::stream::BoxStream<'static, ()> {
            futures::stream::unfold(self.events.subscribe(), |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(()) => return Some(((), rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .boxed()
        }

        async fn ensure_image(&self, _: &str, _: Option<(&str, &str)>) -> Result<(), String> {
            Ok(())
        }

        async fn create(
            &self,
            a: &Assignment,
            spec_hash: &str,
            host_ports: &[u16],
        ) -> Result<String, DockerError> {
            self.begin(&a.replica);
            {
                let mut s = self.state();
                s.creates_now += 1;
                s.max_creates = s.max_creates.max(s.creates_now);
            }
            tokio::time::sleep(self.create).await;
            let id = {
                let mut s = self.state();
                s.creates_now -= 1;
                s.next += 1;
                let id = format!("c{}", s.next);
                let ports = a
                    .ports
                    .iter()
                    .zip(host_ports)
                    .map(|(p, h)| (p.container, *h))
                    .collect();
                s.containers.insert(
                    id.clone(),
                    Container {
                        id: id.clone(),
                        replica: a.replica.clone(),
                        state: "created".into(),
                        spec: spec_hash.into(),
                        ports,
                        stop_timeout: Some(a.stop_timeout),
                    },
                );
                id
            };
            self.end(&a.replica);
            Ok(id)
        }

        async fn start(&self, id: &str) -> Result<(), DockerError> {
            let replica = self.replica_of(id);
            self.begin(&replica);
            let found = match self.state().containers.get_mut(id) {
                Some(c) => {
                    c.state = "running".into();
                    true
                }
                None => false,
            };
            self.end(&replica);
            if found {
                Ok(())
            } else {
                Err(not_found())
            }
        }

        async fn stop(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
            let replica = self.replica_of(id);
            self.begin(&replica);
            let running = {
                let mut s = self.state();
                s.stops.push((id.to_owned(), grace_secs));
                s.containers.get(id).is_some_and(|c| c.state == "running")
            };
            if running {
                {
                    let mut s = self.state();
                    s.stops_now += 1;
                    s.max_stops = s.max_stops.max(s.stops_now);
                }
                tokio::time::sleep(self.stop).await;
                let mut s = self.state();
                s.stops_now -= 1;
                if let Some(c) = s.containers.get_mut(id) {
                    c.state = "exited".into();
                }
            }
            self.end(&replica);
            Ok(())
        }

        async fn remove(&self, id: &str, grace_secs: u32) -> Result<(), DockerError> {
            self.stop(id, grace_secs).await?;
            self.state().containers.remove(id);
            Ok(())
        }

        async fn exit(&self, id: &str) -> Result<Exit, DockerError> {
            let mut s = self.state();
            s.inspects += 1;
            Ok(s.exits.get(id).cloned().unwrap_or_default())
        }
    }

    /// A reconciler running over a fake engine, and the statuses it sent.
    struct Harness {
        fake: Fake,
        to: mpsc::Sender<ToNode>,
        statuses: Arc<Mutex<HashMap<String, ReplicaStatus>>>,
        _tasks: (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
    }

    impl Harness {
        async fn start(fake: Fake, desired: Vec<Assignment>) -> Self {
            let (to, from) = mpsc::channel(1024);
            let (out, mut statuses_rx) = mpsc::channel(4096);
            let reconciler = Reconciler::new(fake.clone(), 45000..=45999, out, "secret".into());
            let run = tokio::spawn(reconciler.run(from));
            let statuses = Arc::new(Mutex::new(HashMap::new()));
            let collected = statuses.clone();
            let collect = tokio::spawn(async move {
                while let Some(message) = statuses_rx.recv().await {
                    if let FromNode::Status { replica, status } = message {
                        collected.lock().unwrap().insert(replica, status);
                    }
                }
            });
            to.send(ToNode::Desired {
                replicas: desired,
                registry: None,
            })
            .await
            .unwrap();
            Self {
                fake,
                to,
                statuses,
                _tasks: (run, collect),
            }
        }

        fn status(&self, replica: &str) -> Option<ReplicaStatus> {
            self.statuses.lock().unwrap().get(replica).cloned()
        }

        /// Waits for `what` to hold, failing with `message` after `within`.
        async fn until(&self, within: Duration, message: &str, what: impl Fn(&Self) -> bool) {
            let deadline = Instant::now() + within;
            while !what(self) {
                assert!(
                    Instant::now() < deadline,
                    "{message} within {within:?} (a hang or a lost pass)"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        async fn all_running(&self, replicas: &[Assignment], within: Duration) {
            self.until(within, "not every replica ran", |h| {
                replicas.iter().all(|a| {
                    h.status(&a.replica)
                        .is_some_and(|s| s.state == ReplicaState::Running)
                })
            })
            .await;
        }
    }

    fn assignment(n: usize) -> Assignment {
        Assignment {
            replica: format!("R{n:04}"),
            project: "P".into(),
            service: "S".into(),
            service_name: "web".into(),
            generation: 1,
            restart_generation: 0,
            image: "busybox".into(),
            memory: 16,
            cpu: 0.1,
            env: BTreeMap::new(),
            command: None,
            ports: Vec::new(),
            volumes: Vec::new(),
            running: true,
            stop_timeout: 7,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removals_run_at_once_each_with_its_own_grace() {
        let fake = Fake::new(MS, 500 * MS);
        let replicas: Vec<Assignment> = (0..20).map(assignment).collect();
        let h = Harness::start(fake, replicas.clone()).await;
        h.all_running(&replicas, Duration::from_secs(10)).await;

        let started = Instant::now();
        h.to.send(ToNode::Desired {
            replicas: Vec::new(),
            registry: None,
        })
        .await
        .unwrap();
        h.until(Duration::from_secs(10), "containers left", |h| {
            h.fake.count() == 0
        })
        .await;
        // One after another would take 20 × 500 ms.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "removed in {:?}",
            started.elapsed()
        );
        let s = h.fake.state();
        assert_eq!(s.max_stops, 20, "all 20 stops at once (bound {STOPS})");
        assert_eq!(s.overlaps, 0, "two operations on one replica");
        // The assignment is gone: the grace is the container's label.
        assert!(
            s.stops.iter().all(|(_, grace)| *grace == 7),
            "{:?}",
            s.stops
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creates_are_bounded_and_never_share_a_host_port() {
        let fake = Fake::new(100 * MS, MS);
        let replicas: Vec<Assignment> = (0..30)
            .map(|n| Assignment {
                ports: vec![Port {
                    container: 80,
                    host: None,
                    protocol: Protocol::Tcp,
                }],
                ..assignment(n)
            })
            .collect();
        let h = Harness::start(fake, replicas.clone()).await;
        h.all_running(&replicas, Duration::from_secs(20)).await;
        let s = h.fake.state();
        assert!(
            (2..=CREATES).contains(&s.max_creates),
            "{} creates at once (bound {CREATES})",
            s.max_creates
        );
        assert_eq!(s.overlaps, 0, "two operations on one replica");
        let mut ports: Vec<u16> = s.containers.values().map(|c| c.ports[0].1).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 30, "a host port given twice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_stop_holds_up_no_new_assignment() {
        let fake = Fake::new(MS, Duration::from_secs(5));
        let old = assignment(1);
        let h = Harness::start(fake, vec![old.clone()]).await;
        h.all_running(std::slice::from_ref(&old), Duration::from_secs(5))
            .await;
        h.to.send(ToNode::Delete {
            replica: old.replica.clone(),
        })
        .await
        .unwrap();
        h.until(Duration::from_secs(2), "the stop did not begin", |h| {
            h.fake.state().stops_now == 1
        })
        .await;
        let new = assignment(2);
        h.to.send(ToNode::Put(Box::new(new.clone()))).await.unwrap();
        // Well before the old container's 5 s stop ends.
        h.all_running(&[new], Duration::from_secs(2)).await;
        assert_eq!(h.fake.state().stops_now, 1, "the stop is still going on");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pause_and_resume_during_a_stop_wait_for_it() {
        let fake = Fake::new(MS, 300 * MS);
        let a = assignment(1);
        let h = Harness::start(fake, vec![a.clone()]).await;
        h.all_running(std::slice::from_ref(&a), Duration::from_secs(5))
            .await;
        let paused = Assignment {
            running: false,
            ..a.clone()
        };
        h.to.send(ToNode::Put(Box::new(paused))).await.unwrap();
        // Resumed while the stop is in flight, and more passes meanwhile.
        tokio::time::sleep(50 * MS).await;
        h.to.send(ToNode::Put(Box::new(a.clone()))).await.unwrap();
        for _ in 0..5 {
            let _ = h.fake.events.send(());
            tokio::time::sleep(20 * MS).await;
        }
        h.until(Duration::from_secs(5), "not running again", |h| {
            h.fake
                .state()
                .containers
                .values()
                .any(|c| c.state == "running")
                && h.fake.state().stops_now == 0
        })
        .await;
        let s = h.fake.state();
        assert_eq!(s.overlaps, 0, "two operations on one replica");
        assert_eq!(s.containers.len(), 1, "one container");
        assert_eq!(
            s.stops,
            vec![("c1".to_owned(), 7)],
            "stopped with the assignment's grace"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crashes_restart_with_backoff_without_spinning() {
        let fake = Fake::new(MS, MS);
        let a = assignment(1);
        let h = Harness::start(fake, vec![a.clone()]).await;
        h.all_running(std::slice::from_ref(&a), Duration::from_secs(5))
            .await;

        h.fake.crash(&a.replica, 3);
        h.until(Duration::from_secs(3), "no restart", |h| {
            h.status(&a.replica)
                .is_some_and(|s| s.restarts == 1 && s.state == ReplicaState::Running)
        })
        .await;
        assert_eq!(h.status(&a.replica).unwrap().exit_code, Some(3));

        // A second crash within the 1 s backoff waits it out.
        h.fake.crash(&a.replica, 4);
        h.until(Duration::from_secs(3), "no backoff reported", |h| {
            h.status(&a.replica)
                .is_some_and(|s| s.state == ReplicaState::Exited && s.exit_code == Some(4))
        })
        .await;
        let (lists, inspects) = {
            let s = h.fake.state();
            (s.lists, s.inspects)
        };
        h.until(
            Duration::from_secs(5),
            "no restart after the backoff",
            |h| {
                h.status(&a.replica)
                    .is_some_and(|s| s.restarts == 2 && s.state == ReplicaState::Running)
            },
        )
        .await;
        let s = h.fake.state();
        assert!(
            s.inspects - inspects <= 2 && s.lists - lists <= 6,
            "the backoff was spun through: {} inspects, {} lists",
            s.inspects - inspects,
            s.lists - lists
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_node_does_not_spin() {
        let fake = Fake::new(MS, MS);
        let a = assignment(1);
        let h = Harness::start(fake, vec![a.clone()]).await;
        h.all_running(std::slice::from_ref(&a), Duration::from_secs(5))
            .await;
        // Even after a crash and its restart (a backoff now in the past).
        h.fake.crash(&a.replica, 1);
        h.until(Duration::from_secs(3), "no restart", |h| {
            h.status(&a.replica).is_some_and(|s| s.restarts == 1)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = h.fake.state().lists;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let passes = h.fake.state().lists - before;
        assert!(passes <= 1, "{passes} passes in 2 idle seconds");
    }

    #[test]
    fn the_spec_hash_is_pinned() {
        let mut a = assignment(1);
        a.env = BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]);
        a.command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
        a.ports = vec![Port {
            container: 8080,
            host: Some(80),
            protocol: Protocol::Tcp,
        }];
        // If this changes, an upgrade recreates every container of every
        // node: change the encoding only on purpose.
        // The same as Python's
        // sha256(b'["lb-spec-1","busybox",16,4591870180066957722,{"A":"1","B":"2"},'
        //        b'["sh","-c","true"],[{"container":8080,"host":80,"protocol":"tcp"}],[],1,0]').
        assert_eq!(
            spec_hash(&a),
            "eb3a607d833e9940d78fd2eab253b191822618fff165d5bb5c0172c61f468cb5"
        );
        // Neither the grace period nor running/paused makes a new container.
        let b = Assignment {
            stop_timeout: 60,
            running: false,
            ..a.clone()
        };
        assert_eq!(spec_hash(&a), spec_hash(&b));
        let c = Assignment {
            restart_generation: 1,
            ..a.clone()
        };
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn containers_of_an_older_lb_are_adopted() {
        let a = assignment(1);
        let container = |spec: String| Container {
            id: "c".into(),
            replica: a.replica.clone(),
            state: "running".into(),
            spec,
            ports: Vec::new(),
            stop_timeout: None,
        };
        let hash = spec_hash(&a);
        assert!(made_from(&container(hash.clone()), &hash, &a));
        assert!(made_from(&container(legacy_spec_hash(&a)), &hash, &a));
        assert!(!made_from(&container("0123456789abcdef".into()), &hash, &a));
        assert!(!made_from(&container(String::new()), &hash, &a));
    }
}
