//! A pass: what to do, decided from the desired set and the containers the
//! runtime lists. Each replica with no operation in flight keeps at most one
//! container, made from its current spec: containers of another spec are
//! removed, a missing one is created (with host ports picked and reserved),
//! a paused replica's is stopped, an exited one is restarted under backoff.
//! Containers of replicas no longer assigned are stopped, each with its own
//! grace period, and removed.

use std::collections::{HashMap, HashSet};

use lb_model::protocol::FromNode;
use lb_model::{Assignment, Health, NodeStatus, ReplicaState, DEFAULT_STOP_TIMEOUT};
use tokio::time::Instant;
use tracing::Instrument;

use super::crashes::{backoff_message, unhealthy_message};
use super::ops::Op;
use super::spec::{made_from, spec_hash};
use super::Reconciler;
use crate::runtime::{Check, Container, Runtime};

impl<R: Runtime> Reconciler<R> {
    /// One pass over every replica of the node: decides, reports, and starts
    /// operations on the replicas that have none in flight.
    pub(super) async fn pass(&mut self) {
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
            .chain(self.reserved.values().flatten().copied())
            .collect();
        let desired = &self.desired;
        self.crashes.retain(|r, _| desired.contains_key(r));
        self.reported.retain(|r, _| desired.contains_key(r));
        self.jobs.retain(|j| desired.contains_key(j));
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
        let desired = &self.desired;
        self.checks.sweep(|r| desired.contains_key(r));
        // Containers of replicas no longer assigned: stop each with its own
        // grace period, and remove.
        for (replica, containers) in by_replica {
            if self.busy.contains(&replica) {
                continue;
            }
            // Fenced, the replica may already run elsewhere: no grace.
            let fenced = self.fenced.load(std::sync::atomic::Ordering::SeqCst);
            let victims = containers
                .iter()
                .map(|c| match fenced {
                    true => (c.id.clone(), 0),
                    false => (c.id.clone(), c.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)),
                })
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
        if a.job.is_some() {
            return self.reconcile_job(a, found, used, now).await;
        }
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
                self.checks.ensure(&self.runtime, a, &c);
                let message = self.running_message(&a.replica);
                self.report(a, ReplicaState::Running, Some(&c), &message, None)
                    .await;
                if self.checks.health(a, &c) == Some(Health::Unhealthy) {
                    // Out of the routes first (the report above), then a
                    // graceful stop; the pass after restarts it as a crash.
                    let why = match self.checks.failure(&a.replica) {
                        why if why.is_empty() => self.image_check_failure(&c).await,
                        why => why,
                    };
                    tracing::warn!(%why, "unhealthy: restarting");
                    self.checks.end(&a.replica);
                    let crashes = self.crashes.entry(a.replica.clone()).or_default();
                    crashes.stopping_unhealthy = Some(why);
                    let op = Op::Stop {
                        id: c.id.clone(),
                        grace: a.stop_timeout,
                    };
                    self.spawn(&a.replica, op);
                }
            }
            Some(c) => {
                // Exited, dead or never started: start again, with
                // exponential backoff between crashes.
                let crashed = c.state != "created";
                let crashes = self.crashes.entry(a.replica.clone()).or_default();
                if crashes.backing_off(now) {
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
                crashes.hold_off(now);
                if crashed {
                    crashes.restarts += 1;
                }
                crashes.unhealthy = crashes.stopping_unhealthy.take();
                let op = Op::Restart {
                    container: c,
                    start: true,
                    crashed,
                };
                self.spawn(&a.replica, op);
            }
        }
    }

    /// Why the image's own `HEALTHCHECK` failed, as Docker recorded it.
    async fn image_check_failure(&self, c: &Container) -> String {
        let check = Check::Image {
            container: c.id.clone(),
        };
        match self.runtime.check(&check).await {
            Err(why) => format!("HEALTHCHECK: {why}"),
            Ok(()) => "the image's HEALTHCHECK failed".to_owned(),
        }
    }

    /// The message of a running replica: why it was last restarted, when
    /// that was for failing its checks.
    pub(super) fn running_message(&self, replica: &str) -> String {
        self.crashes
            .get(replica)
            .and_then(|c| c.unhealthy.as_deref())
            .map(unhealthy_message)
            .unwrap_or_default()
    }

    /// Picks host ports (reserved until the container is listed) and starts
    /// a create, unless the replica is backing off.
    pub(super) async fn create(
        &mut self,
        a: &Assignment,
        hash: String,
        used: &mut HashSet<u16>,
        now: Instant,
    ) {
        if self
            .crashes
            .get(&a.replica)
            .is_some_and(|c| c.backing_off(now))
        {
            return;
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
}
