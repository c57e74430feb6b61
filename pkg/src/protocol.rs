//! The node channel's wire protocol: JSON `{"command": ..., "data": ...}`
//! messages over the websocket at `/api/v1/nodes/connect`, both ways.

use serde::{Deserialize, Serialize};

use crate::model::{Assignment, Capacity, NodeStatus, ReplicaStatus};

/// From the API to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "data", rename_all = "snake_case")]
pub enum ToNode {
    /// The node's whole desired set; sent first on every connection.
    Desired {
        /// Every assignment of this node.
        replicas: Vec<Assignment>,
    },
    /// An assignment was added or changed.
    Put(Box<Assignment>),
    /// An assignment was removed: stop and remove its container.
    Delete {
        /// The replica id.
        replica: String,
    },
    /// Read a replica's recent logs; answered by [`FromNode::Logs`].
    Logs {
        /// Matches the answer to the request.
        request: String,
        /// The replica id.
        replica: String,
        /// Lines from the end (at most 10,000).
        tail: u32,
    },
    /// Run a command in a replica's container; answered by [`FromNode::Exec`].
    Exec {
        /// Matches the answer to the request.
        request: String,
        /// The replica id.
        replica: String,
        /// The command and its arguments.
        command: Vec<String>,
        /// Seconds before it is given up.
        timeout: u64,
    },
}

/// From a node to the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "data", rename_all = "snake_case")]
pub enum FromNode {
    /// Sent first: what the node is and offers.
    Hello {
        /// Its address, as other hosts reach it.
        address: String,
        /// What it offers.
        capacity: Capacity,
    },
    /// A periodic heartbeat.
    Heartbeat(NodeStatus),
    /// A replica's status changed.
    Status {
        /// The replica id.
        replica: String,
        /// Its status.
        status: ReplicaStatus,
    },
    /// The answer to [`ToNode::Logs`].
    Logs {
        /// The request answered.
        request: String,
        /// The log text, or why there is none.
        result: Result<String, String>,
    },
    /// The answer to [`ToNode::Exec`].
    Exec {
        /// The request answered.
        request: String,
        /// The outcome, or why the command could not run.
        result: Result<ExecOutput, String>,
    },
}

/// What a one-off command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Its exit code.
    pub exit_code: i64,
    /// What it wrote to stdout (at most 1 MiB kept).
    pub stdout: String,
    /// What it wrote to stderr (at most 1 MiB kept).
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_command_and_data() {
        let msg = ToNode::Delete {
            replica: "R".into(),
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            serde_json::json!({"command": "delete", "data": {"replica": "R"}})
        );
        let back: ToNode =
            serde_json::from_str(r#"{"command": "delete", "data": {"replica": "R"}}"#).unwrap();
        assert_eq!(back, msg);
        let hb = FromNode::Heartbeat(NodeStatus::default());
        assert_eq!(serde_json::to_value(&hb).unwrap()["command"], "heartbeat");
    }
}
