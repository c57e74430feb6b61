//! Replicas: the scheduler's placements and the node's reports on them.

use serde::{Deserialize, Serialize};

use super::{Health, Protocol, Timestamp};

/// Where a replica is, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Not placed yet, or placed and not yet seen by its node.
    #[default]
    Pending,
    /// The node is creating or starting its container.
    Starting,
    /// The container runs.
    Running,
    /// It cannot start (image, resources); retried.
    Failed,
    /// The container exited; restarted with backoff.
    Exited,
    /// Being stopped.
    Stopping,
}

/// A placement, at `/lb/projects/<pid>/services/<sid>/replicas/<rid>`,
/// written by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The replica id.
    pub id: String,
    /// The project id.
    pub project: String,
    /// The service id.
    pub service: String,
    /// The node it is placed on; `None` while pending.
    #[serde(default)]
    pub node: Option<String>,
    /// The image it runs.
    pub image: String,
    /// The service generation it runs.
    pub generation: u64,
    /// Why it is not placed, while pending.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it was created.
    pub created: Timestamp,
}

/// A published port as the node bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// The container port.
    pub container: u16,
    /// The host port.
    pub host: u16,
    /// tcp or udp.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A node's report on a replica, at `.../replicas/<rid>/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReplicaStatus {
    /// The state.
    pub state: ReplicaState,
    /// The Docker container id.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Bound host ports.
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// Last exit code.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Whether the last exit was an out-of-memory kill.
    #[serde(default)]
    pub oom_killed: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// A human-readable reason (e.g. the registry's pull error, or
    /// "restarted: unhealthy (GET /healthz: 503)").
    #[serde(default)]
    pub message: String,
    /// The health check's verdict while the container runs; `None` when it
    /// has no check (neither the spec's `health` nor the image's
    /// `HEALTHCHECK`) or does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Why the last check failed (e.g. "GET /healthz: 503"); empty while
    /// checks pass.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_message: String,
    /// When `health` last changed, by the node's clock: a `starting` one
    /// since then has not passed a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_since: Option<Timestamp>,
    /// When it was reported.
    pub updated: Timestamp,
}

impl ReplicaStatus {
    /// Whether the replica should get traffic: it runs, and it is healthy
    /// or has no check. What the ingress's route table reads.
    pub fn takes_traffic(&self) -> bool {
        super::health::takes_traffic(self.state, self.health)
    }
}
