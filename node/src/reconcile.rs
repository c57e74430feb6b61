//! The reconcile loop: makes this node's containers match its assignments.
//! Level-triggered — every pass compares the whole desired set with the
//! containers Docker lists under this node's label — and run one pass at a
//! time, so no replica is ever reconciled twice at once. Passes are
//! triggered by assignment changes, Docker events (a `docker kill` or `rm` by
//! hand is noticed at once) and a periodic resync.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lb_pkg::model::{Assignment, NodeStatus, PortBinding, ReplicaState, ReplicaStatus};
use lb_pkg::protocol::{FromNode, ToNode};
use tokio::sync::mpsc;

use crate::runtime::{self, Container, Runtime};

const RESYNC: Duration = Duration::from_secs(10);
/// A second look after Docker events.
const SETTLE: Duration = Duration::from_millis(500);
const GRACE_SECS: i64 = 10;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Crash bookkeeping of one replica.
#[derive(Debug, Default)]
struct Crashes {
    restarts: u32,
    last_exit: Option<runtime::Exit>,
    delay: Option<Duration>,
    retry_at: Option<Instant>,
}

/// The reconciler of one node.
pub struct Reconciler {
    runtime: Runtime,
    ports: RangeInclusive<u16>,
    out: mpsc::Sender<FromNode>,
    desired: HashMap<String, Assignment>,
    crashes: HashMap<String, Crashes>,
    reported: HashMap<String, ReplicaStatus>,
    /// lb's registry, and the node's credential to pull from it.
    registry: Option<String>,
    credential: String,
}

/// A hash of everything a container is made from: a change means a new one.
pub fn spec_hash(a: &Assignment) -> String {
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Reconciler {
    /// A reconciler sending statuses to `out`.
    pub fn new(
        runtime: Runtime,
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
        }
    }

    /// Runs until the channel side goes away. Nothing is done before the
    /// first desired set arrives, so a restarted daemon never removes
    /// containers it has not yet heard about.
    pub async fn run(mut self, mut assignments: mpsc::Receiver<ToNode>) {
        let mut events = Box::pin(self.runtime.events());
        let mut resync = tokio::time::interval(RESYNC);
        let mut synced = false;
        let mut settle: Option<Instant> = None;
        loop {
            let retry = self.crashes.values().filter_map(|c| c.retry_at).min();
            let retry_sleep = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let settle_sleep = async {
                match settle {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
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
                }
                _ = events.next() => {
                    // Let a burst settle a moment, and look again a little
                    // later: Docker may report the state an event announces
                    // (a kill, then the exit) after the event.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    settle = Some(Instant::now() + SETTLE);
                }
                _ = settle_sleep => settle = None,
                _ = resync.tick() => {}
                _ = retry_sleep => {}
            }
            if synced {
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

    /// One pass over every replica of the node.
    async fn pass(&mut self) {
        let containers = match self.runtime.list().await {
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
            .collect();
        let desired: Vec<Assignment> = self.desired.values().cloned().collect();
        for a in &desired {
            let found = by_replica.remove(&a.replica).unwrap_or_default();
            let span = tracing::info_span!("reconcile", replica = %a.replica);
            let _enter = span.enter();
            self.reconcile(a, found, &mut used).await;
        }
        // Containers of replicas no longer assigned: stop with grace, remove.
        for (replica, containers) in by_replica {
            for c in containers {
                tracing::info!(%replica, container = %c.id, "removing a container no longer assigned");
                if let Err(err) = self.runtime.remove(&c.id, GRACE_SECS).await {
                    tracing::warn!(%replica, error = %err, "cannot remove container");
                }
            }
            self.crashes.remove(&replica);
            self.reported.remove(&replica);
        }
        let running = self.desired.len() as u32;
        let _ = self.out.try_send(FromNode::Heartbeat(NodeStatus {
            containers: running,
            ..Default::default()
        }));
    }

    async fn reconcile(
        &mut self,
        a: &Assignment,
        mut found: Vec<Container>,
        used: &mut HashSet<u16>,
    ) {
        let hash = spec_hash(a);
        // Keep at most one container, and only one made from this spec.
        found.sort_by_key(|c| c.state != "running");
        let mut current = None;
        for c in found {
            if current.is_none() && c.spec == hash {
                current = Some(c);
            } else {
                tracing::info!(container = %c.id, "replacing a container of another spec");
                if let Err(err) = self.runtime.remove(&c.id, GRACE_SECS).await {
                    tracing::warn!(error = %err, "cannot remove container");
                }
            }
        }
        if !a.running {
            if let Some(c) = &current {
                if c.state == "running" {
                    let _ = self.runtime.stop(&c.id, GRACE_SECS).await;
                }
            }
            self.report(a, ReplicaState::Exited, current.as_ref(), "paused", None)
                .await;
            return;
        }
        match current {
            None => self.create(a, &hash, used).await,
            Some(c) if c.state == "running" => {
                self.report(a, ReplicaState::Running, Some(&c), "", None)
                    .await
            }
            Some(c) => {
                // Exited, dead or never started: start again, with
                // exponential backoff between crashes.
                let exit = self.runtime.exit(&c.id).await.unwrap_or_default();
                let crashes = self.crashes.entry(a.replica.clone()).or_default();
                if c.state != "created" {
                    crashes.last_exit = Some(exit.clone());
                }
                let now = Instant::now();
                if crashes.retry_at.is_some_and(|at| at > now) {
                    let message = if exit.oom_killed {
                        "killed: out of memory"
                    } else {
                        "exited; restarting with backoff"
                    };
                    self.report(a, ReplicaState::Exited, Some(&c), message, Some(exit))
                        .await;
                    return;
                }
                let delay = crashes
                    .delay
                    .map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
                crashes.delay = Some(delay);
                crashes.retry_at = Some(now + delay);
                if c.state != "created" {
                    crashes.restarts += 1;
                }
                let (state, message) = match self.runtime.start(&c.id).await {
                    Ok(()) => (
                        ReplicaState::Running,
                        if exit.oom_killed {
                            "restarted after an out-of-memory kill".to_owned()
                        } else {
                            "restarted".to_owned()
                        },
                    ),
                    Err(err) => (ReplicaState::Failed, runtime::message(&err)),
                };
                self.report(a, state, Some(&c), &message, Some(exit)).await;
            }
        }
    }

    async fn create(&mut self, a: &Assignment, hash: &str, used: &mut HashSet<u16>) {
        if let Some(at) = self.crashes.get(&a.replica).and_then(|c| c.retry_at) {
            if at > Instant::now() {
                return;
            }
        }
        // Only lb's own registry gets the node's credential.
        let pull = self
            .registry
            .as_deref()
            .filter(|r| a.image.starts_with(&format!("{r}/")))
            .map(|r| (r, self.credential.as_str()));
        if let Err(message) = self.runtime.ensure_image(&a.image, pull).await {
            self.fail(a, &message).await;
            return;
        }
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
        let id = match self.runtime.create(a, hash, &host_ports).await {
            Ok(id) => id,
            Err(err) => {
                self.fail(a, &runtime::message(&err)).await;
                return;
            }
        };
        if let Err(err) = self.runtime.start(&id).await {
            let message = runtime::message(&err);
            // Leave nothing half made: the next pass creates it again.
            let _ = self.runtime.remove(&id, 0).await;
            self.fail(a, &message).await;
            return;
        }
        tracing::info!(container = %id, "started");
        let ports = a
            .ports
            .iter()
            .zip(&host_ports)
            .map(|(p, h)| (p.container, *h))
            .collect();
        let container = Container {
            id,
            replica: a.replica.clone(),
            state: "running".into(),
            spec: hash.into(),
            ports,
        };
        self.report(a, ReplicaState::Running, Some(&container), "", None)
            .await;
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

    /// A host port in the range that no container of ours holds and that
    /// can be bound right now.
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
