//! What the node tells the API about its replicas: a status per replica
//! (state, container, bound ports, last exit, restarts, a message, health),
//! sent up the channel only when it differs from the last one sent; and how
//! each ended operation and health verdict changes it.

use lb_model::protocol::FromNode;
use lb_model::{Assignment, PortBinding, ReplicaState, ReplicaStatus};
use tokio::time::Instant;

use super::crashes::{backoff_message, unhealthy_message};
use super::health::Verdict;
use super::ops::Outcome;
use super::Reconciler;
use crate::runtime::{Container, Exit, Runtime};

impl<R: Runtime> Reconciler<R> {
    /// Records and reports what an operation on an assigned replica did.
    pub(super) async fn absorb(&mut self, a: &Assignment, outcome: Outcome) {
        match outcome {
            Outcome::Created(Ok(container)) => {
                // Reported by the pass that follows at once, from the
                // engine's list: with the image's HEALTHCHECK verdict, so an
                // image with one is never shown running without a check.
                tracing::info!(container = %container.id, "started");
            }
            Outcome::Created(Err(message)) if a.job.is_some() => self.job_failed(a, &message).await,
            Outcome::Created(Err(message)) => self.fail(a, &message).await,
            Outcome::JobEnded { exit, logs } => self.job_ended(a, exit, logs).await,
            Outcome::Restarted {
                mut container,
                crashed,
                exit,
                started,
            } => {
                // The engine starts the image's HEALTHCHECK over.
                container.health = container.health.map(|_| lb_model::Health::Starting);
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
                    Some(Ok(())) => match &crashes.unhealthy {
                        Some(why) => (ReplicaState::Running, unhealthy_message(why)),
                        None => (ReplicaState::Running, "restarted".to_owned()),
                    },
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

    /// Takes in a checker's verdict: reports it, or answers that a pass is
    /// needed (an unhealthy replica is restarted by the pass, which reports
    /// it first).
    pub(super) async fn verdict(&mut self, v: Verdict) -> bool {
        let Some(a) = self.desired.get(&v.replica).cloned() else {
            return false;
        };
        let unhealthy = v.health == lb_model::Health::Unhealthy;
        let Some(container) = self.checks.accept(v) else {
            return false;
        };
        if unhealthy {
            return true;
        }
        if self.busy.contains(&a.replica) {
            return false;
        }
        let message = self.running_message(&a.replica);
        self.report(&a, ReplicaState::Running, Some(&container), &message, None)
            .await;
        false
    }

    /// Records a failure to start, retried with backoff.
    pub(super) async fn fail(&mut self, a: &Assignment, message: &str) {
        tracing::warn!(%message, "replica cannot start");
        self.crashes
            .entry(a.replica.clone())
            .or_default()
            .hold_off(Instant::now());
        self.report(a, ReplicaState::Failed, None, message, None)
            .await;
    }

    /// Sends a replica's status, unless it is the one sent last.
    pub(super) async fn report(
        &mut self,
        a: &Assignment,
        state: ReplicaState,
        container: Option<&Container>,
        message: &str,
        exit: Option<Exit>,
    ) {
        let health = match container {
            Some(c) if state == ReplicaState::Running => self.checks.health(a, c),
            _ => None,
        };
        let health_since = self.checks.since(&a.replica, health);
        let health_message = self.checks.failure(&a.replica);
        let crashes = self.crashes.get(&a.replica);
        let ports = container.map_or_else(Vec::new, |c| bound_ports(a, c));
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
            health,
            health_message,
            health_since,
            updated: 0,
        };
        if self.reported.get(&a.replica) == Some(&status) {
            return;
        }
        self.reported.insert(a.replica.clone(), status.clone());
        let status = ReplicaStatus {
            updated: lb_model::now(),
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

/// The assignment's ports as the container has them bound.
fn bound_ports(a: &Assignment, c: &Container) -> Vec<PortBinding> {
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
}
