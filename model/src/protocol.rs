//! The node channel's wire protocol: JSON `{"command": ..., "data": ...}`
//! messages over the websocket at `/api/v1/nodes/connect`, both ways.

use serde::{Deserialize, Serialize};

use crate::ingress::RouteTable;
use crate::{Assignment, Capacity, NodeStatus, ReplicaStatus};

/// From the API to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "data", rename_all = "snake_case")]
pub enum ToNode {
    /// The node's whole desired set; sent first on every connection.
    Desired {
        /// Every assignment of this node.
        replicas: Vec<Assignment>,
        /// lb's registry (host:port): images from it are pulled with the
        /// node's credential, images from anywhere else without.
        #[serde(default)]
        registry: Option<String>,
        /// The scheduler's node grace in milliseconds: after this long
        /// without hearing from the API the node assumes its replicas were
        /// placed elsewhere and kills them (absent: the node never does).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_ms: Option<u64>,
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
        /// Each line starts with its RFC 3339 time, as Docker recorded it.
        #[serde(default)]
        timestamps: bool,
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
    /// Open a long-lived stream to a replica (logs that follow, an
    /// interactive exec); its output comes back as [`FromNode::Output`] and
    /// ends with one [`FromNode::End`].
    Open {
        /// Names the stream in every later message.
        stream: String,
        /// The replica id.
        replica: String,
        /// What to stream.
        kind: StreamKind,
    },
    /// Input to an open stream.
    Input {
        /// The stream.
        stream: String,
        /// What the user sent.
        input: StreamInput,
    },
    /// The user went away: stop the stream and free what it holds.
    Close {
        /// The stream.
        stream: String,
    },
    /// What an ingress node serves, whole; sent to nodes started with
    /// `--ingress` on connect and on every change.
    Routes(Box<RouteTable>),
}

/// What a stream carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamKind {
    /// A replica's output: the last `tail` lines, then new ones if `follow`.
    Logs {
        /// Lines from the end (at most 10,000).
        tail: u32,
        /// Keep streaming new output until the container stops.
        follow: bool,
        /// Each line starts with its RFC 3339 time, as Docker recorded it.
        #[serde(default)]
        timestamps: bool,
    },
    /// A command run in the replica's container, with stdin attached.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
        /// Allocate a pseudo-terminal.
        tty: bool,
        /// Attach stdin.
        stdin: bool,
        /// Terminal width.
        cols: u16,
        /// Terminal height.
        rows: u16,
        /// `NAME=value` variables the command gets beside the container's
        /// own (a stored script's env and run id). A node from before this
        /// field ignores it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    },
}

/// Input a user sends into a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamInput {
    /// Bytes for the command's stdin.
    Stdin {
        /// The bytes (base64 on the wire).
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// The terminal was resized.
    Resize {
        /// Width.
        cols: u16,
        /// Height.
        rows: u16,
    },
    /// No more stdin (end of file).
    CloseStdin,
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
        /// It serves ingress traffic: send it the route table.
        #[serde(default)]
        ingress: bool,
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
    /// Output of an open stream.
    Output {
        /// The stream.
        stream: String,
        /// 1 for stdout, 2 for stderr.
        channel: u8,
        /// The bytes (base64 on the wire).
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// A job's container ended (or could not start): sent once per
    /// connection until its assignment is removed, so the API records it
    /// even when a connection was lost with the message.
    JobEnded {
        /// The job id (its assignment's `replica`).
        job: String,
        /// How it ended.
        end: crate::JobEnd,
    },
    /// A stream ended: the last message about it.
    End {
        /// The stream.
        stream: String,
        /// The command's exit code (exec streams that ran).
        exit_code: Option<i64>,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// Bytes as one base64 string in JSON.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
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
        let out = FromNode::Output {
            stream: "S".into(),
            channel: 1,
            data: vec![0, 159, 146, 150],
        };
        let text = serde_json::to_string(&out).unwrap();
        assert!(text.contains(r#""data":"AJ+Slg==""#), "{text}");
        assert_eq!(serde_json::from_str::<FromNode>(&text).unwrap(), out);
        let input: ToNode = serde_json::from_str(
            r#"{"command": "input", "data": {"stream": "S", "input": {"type": "resize", "cols": 80, "rows": 24}}}"#,
        )
        .unwrap();
        assert_eq!(
            input,
            ToNode::Input {
                stream: "S".into(),
                input: StreamInput::Resize { cols: 80, rows: 24 }
            }
        );
        let hb = FromNode::Heartbeat(NodeStatus::default());
        assert_eq!(serde_json::to_value(&hb).unwrap()["command"], "heartbeat");
    }
}
