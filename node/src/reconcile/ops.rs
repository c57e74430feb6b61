//! Operations: the Docker work a pass decides on (create and start, restart,
//! stop, remove), each run in a task of its own. Many run at once, but at
//! most [`CREATES`] creates and restarts and [`STOPS`] stops and removals,
//! so a 10 s `docker stop` holds up neither the other removals nor new
//! assignments; and never two on one replica: a replica with an operation
//! in flight is busy, passes skip it, and the operation's end asks for
//! another pass.

use std::sync::Arc;

use lb_model::Assignment;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::Reconciler;
use crate::runtime::{self, Container, Runtime};

/// Creates and restarts at once: each keeps the engine busy.
pub const CREATES: usize = 8;
/// Stops and removals at once: they mostly wait out a grace period.
pub const STOPS: usize = 64;

/// Docker work on one replica, run in a task of its own.
#[derive(Debug)]
pub(super) enum Op {
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
    /// Read how a job's container ended and its last `lines` of output.
    JobEnd {
        container: String,
        replica: String,
        lines: u32,
    },
}

/// How an [`Op`] ended.
#[derive(Debug)]
pub(super) enum Outcome {
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
    JobEnded {
        exit: runtime::Exit,
        logs: String,
    },
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
            Outcome::JobEnded { .. } => true,
        }
    }
}

/// The two bounds on operations at once.
#[derive(Clone)]
pub(super) struct Limits {
    creates: Arc<Semaphore>,
    stops: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            creates: Arc::new(Semaphore::new(CREATES)),
            stops: Arc::new(Semaphore::new(STOPS)),
        }
    }
}

impl<R: Runtime> Reconciler<R> {
    /// Starts an operation on a replica, which is busy until it ends.
    pub(super) fn spawn(&mut self, replica: &str, op: Op) {
        self.busy.insert(replica.to_owned());
        let (runtime, limits) = (self.runtime.clone(), self.limits.clone());
        let span = tracing::info_span!("operation", replica = %replica);
        let owned = replica.to_owned();
        let task = self
            .ops
            .spawn(async move { (owned, execute(&runtime, &limits, op).await) }.instrument(span));
        self.tasks.insert(task.id(), replica.to_owned());
    }

    /// Takes in an ended operation; whether it asks for a pass.
    pub(super) async fn finished(
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
}

/// Runs an operation within its bound.
async fn execute<R: Runtime>(runtime: &R, limits: &Limits, op: Op) -> Outcome {
    match op {
        Op::Create {
            a,
            hash,
            host_ports,
            pull,
        } => {
            let _permit = limits.creates.acquire().await;
            let pull = pull.as_ref().map(|(r, c)| (r.as_str(), c.as_str()));
            // The container is made from what the pull resolved: a full
            // reference, or lb's image pinned by digest.
            let a = match runtime.ensure_image(&a.image, pull).await {
                Ok(image) => Box::new(Assignment { image, ..*a }),
                Err(err) => return Outcome::Created(Err(err.to_string())),
            };
            let id = match runtime.create(&a, &hash, &host_ports).await {
                Ok(id) => id,
                Err(err) => return Outcome::Created(Err(err.to_string())),
            };
            if let Err(err) = runtime.start(&id).await {
                // Leave nothing half made: the next pass creates it again.
                let _ = runtime.remove(&id, 0).await;
                return Outcome::Created(Err(err.to_string()));
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
                health: None,
                address: None,
            }))
        }
        Op::Restart {
            container,
            start,
            crashed,
        } => {
            let _permit = limits.creates.acquire().await;
            let exit = runtime.exit(&container.id).await.unwrap_or_default();
            let started = if start {
                Some(
                    runtime
                        .start(&container.id)
                        .await
                        .map_err(|e| e.to_string()),
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
            Outcome::Stopped(runtime.stop(&id, grace).await.map_err(|e| e.to_string()))
        }
        Op::Remove(containers) => {
            let _permit = limits.stops.acquire().await;
            for (id, grace) in containers {
                if let Err(err) = runtime.remove(&id, grace).await {
                    return Outcome::Removed(Err(err.to_string()));
                }
            }
            Outcome::Removed(Ok(()))
        }
        Op::JobEnd {
            container,
            replica,
            lines,
        } => {
            let _permit = limits.stops.acquire().await;
            let exit = runtime.exit(&container).await.unwrap_or_default();
            let logs = runtime
                .logs(&replica, lines, false)
                .await
                .unwrap_or_else(|e| format!("(its output could not be read: {e})\n"));
            Outcome::JobEnded { exit, logs }
        }
    }
}
