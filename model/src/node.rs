//! Nodes: machines running replicas under a node daemon.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// What a node offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// CPUs.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory: u64,
    /// Disk in MiB.
    #[serde(default)]
    pub disk: u64,
}

/// A node's record, at `/lb/nodes/<id>/meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The node id.
    pub id: String,
    /// Its name, a DNS label.
    pub name: String,
    /// Labels matched by node selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Address other hosts reach it at.
    #[serde(default)]
    pub address: String,
    /// What it offers.
    pub capacity: Capacity,
    /// When it joined.
    pub created: Timestamp,
}

/// A node's heartbeat, at `/lb/nodes/<id>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    /// Free memory in MiB.
    pub free_memory: u64,
    /// Free disk in MiB.
    pub free_disk: u64,
    /// 1, 5 and 15 minute load averages.
    pub load_average: [f64; 3],
    /// Containers lb runs there.
    pub containers: u32,
    /// When it was reported.
    pub time: Timestamp,
}
