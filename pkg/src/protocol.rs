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
