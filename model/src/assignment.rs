//! Assignments: what a node must run for one replica, at
//! `/lb/nodes/<node id>/replicas/<replica id>`. Written by whoever places the
//! replica (the scheduler) with a snapshot of the service spec of the
//! replica's generation, so a spec change never alters a running replica
//! behind the rollout's back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HealthCheck, Port, Volume};

/// One replica as its node runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The replica id.
    pub replica: String,
    /// Project id.
    pub project: String,
    /// Service id.
    pub service: String,
    /// Service name (for container names and labels).
    pub service_name: String,
    /// The service generation this replica runs.
    pub generation: u64,
    /// Bumped to restart the replica's container.
    #[serde(default)]
    pub restart_generation: u64,
    /// Image reference.
    pub image: String,
    /// Memory limit in MiB (swap equal to it).
    pub memory: u64,
    /// CPUs.
    pub cpu: f64,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Command overriding the image's.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Whether the replica should run (false while its service is paused).
    #[serde(default = "yes")]
    pub running: bool,
    /// Seconds between SIGTERM and SIGKILL when the container is stopped
    /// (the service's `stop_timeout`; absent in records older than it).
    #[serde(default = "super::service::default_stop_timeout")]
    pub stop_timeout: u32,
    /// The container's confinement (capabilities, pids, read-only root);
    /// the defaults in records older than it.
    #[serde(default)]
    pub hardening: super::Hardening,
    /// The spec's health check, its port resolved (`None`: the image's
    /// `HEALTHCHECK`, if any, is used). Part of the generation, not of the
    /// container: the node runs the check itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Set for a one-off job (`replica` is then the job id): its container
    /// runs once, is never restarted, is killed at the time limit, and its
    /// end is reported with [`crate::protocol::FromNode::JobEnded`]. Absent
    /// in replicas' assignments and in records older than jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<super::JobRun>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_older_than_stop_timeout_still_decode() {
        let old = serde_json::json!({
            "replica": "R", "project": "P", "service": "S", "service_name": "web",
            "generation": 1, "image": "x", "memory": 64, "cpu": 0.5
        });
        let a: Assignment = serde_json::from_value(old).unwrap();
        assert_eq!(a.stop_timeout, super::super::DEFAULT_STOP_TIMEOUT);
        assert!(a.running);
        assert_eq!(a.health, None);
        assert_eq!(a.job, None);
        assert_eq!(a.hardening, super::super::Hardening::default());
    }
}
