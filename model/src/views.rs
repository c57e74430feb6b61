//! The REST API's wire shapes: request bodies and the views it answers
//! with (projects, services, replicas, nodes, accounts, tokens, list pages,
//! the error body, the end of a stream). The API serializes them; `lbc`
//! deserializes them, so both sides share one definition.
//!
//! Builds are answered as the stored [`Build`](crate::Build) itself, and a
//! one-off exec as [`ExecOutput`](crate::protocol::ExecOutput).
//!
//! Views decode tolerantly: a field an older server does not send takes its
//! default (`#[serde(default)]`) and fields lbc does not know are ignored.
//! Request bodies deny unknown fields, so a typo is an error on the server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Capacity, Node, NodeStatus, ReplicaState, Role, ServiceSpec, Timestamp, User};

/// `POST /auth/signup`, `POST /auth/login`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// Answer of `POST /auth/login`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The access token (JWT).
    pub token: String,
    /// When it expires (Unix seconds).
    #[serde(default)]
    pub expires: i64,
}

/// A user as shown (never the password hash).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Name.
    pub username: String,
    /// admin or user.
    pub role: Role,
    /// Creation time.
    pub created: Timestamp,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role,
            created: user.created,
        }
    }
}

/// `POST /tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name to recognise the token by.
    pub name: String,
}

/// An API token as listed (without its secret).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: Timestamp,
    /// The token itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A list answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct List<T> {
    /// This page.
    #[serde(default)]
    pub items: Vec<T>,
    /// How many there are in all.
    #[serde(default)]
    pub total: usize,
}

/// `?limit=&offset=` of list routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Items to skip.
    pub offset: Option<u64>,
}

/// `POST /projects`, `PUT /projects/{p}`: the fields a user sets.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    /// Name, a DNS label unique among the owner's projects.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A project as shown.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The owner's user id.
    pub owner: String,
    /// Store revision (also the ETag).
    pub revision: i64,
    /// Creation time.
    pub created: Timestamp,
    /// Last update.
    pub updated: Timestamp,
}

/// Replica counts of a service.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaCounts {
    /// Wanted now (0 when paused).
    pub desired: u32,
    /// Placed replicas.
    pub total: u32,
    /// Running.
    pub running: u32,
    /// Pending or starting.
    pub pending: u32,
    /// Failed or exited.
    pub failed: u32,
    /// Of the current generation and serving (running, healthy or
    /// unchecked): the `n` of `deploying n/m`.
    pub ready: u32,
}

/// A service's observed state.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceStatus {
    /// What the service is doing, computed from its replicas and its
    /// rollout ([`crate::status::summarize`]): `running`, `deploying`,
    /// `degraded`, `crash_looping`, `pending`, `paused`, `stopped` or
    /// `no_image`.
    pub state: crate::status::State,
    /// The state as shown: its word, `deploying n/m`, `no image yet`.
    pub label: String,
    /// Why, in a sentence ("" when running as asked).
    pub detail: String,
    /// The last exit code of a crashing replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Whether that exit was an out-of-memory kill.
    pub oom_killed: bool,
    /// The generation replicas should run.
    pub generation: u64,
    /// Restart generation.
    pub restart_generation: u64,
    /// Replica counts.
    pub replicas: ReplicaCounts,
    /// Why the service's rollout halted ("rollout halted: replica R never
    /// became healthy (GET /healthz: 503)"); the old replicas keep serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The newest deploy that rolled out: the version live now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::Deploy>,
    /// A newer deploy not rolled out: in progress, or halted (the old
    /// version keeps serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coming: Option<crate::Deploy>,
}

/// A service as shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Project id.
    #[serde(default)]
    pub project: String,
    /// Store revision (also the ETag).
    #[serde(default)]
    pub revision: i64,
    /// Creation time.
    #[serde(default)]
    pub created: Timestamp,
    /// Last update.
    #[serde(default)]
    pub updated: Timestamp,
    /// The desired spec.
    pub spec: ServiceSpec,
    /// The observed state.
    #[serde(default)]
    pub status: ServiceStatus,
    /// Where the service answers through the ingress: its domains (https
    /// once a certificate is issued) and its generated name.
    #[serde(default)]
    pub urls: Vec<String>,
}

/// `POST .../scale`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The new replica count, 0–1000.
    pub replicas: u32,
}

/// `POST .../rollback`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The build whose image to run again.
    pub build: u64,
}

/// A port of a replica as bound.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaPort {
    /// Container port.
    pub container: u16,
    /// Host port, once bound.
    pub host: Option<u16>,
}

/// A replica as shown by `GET .../replicas`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaView {
    /// Id.
    pub id: String,
    /// Node id, once placed.
    pub node: Option<String>,
    /// State.
    pub state: ReplicaState,
    /// Image.
    pub image: String,
    /// Generation.
    pub generation: u64,
    /// Ports.
    pub ports: Vec<ReplicaPort>,
    /// Restarts.
    pub restarts: u32,
    /// Why it is where it is.
    pub message: String,
    /// `starting`, `healthy` or `unhealthy`; absent without a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::Health>,
    /// Why the last health check failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub health_message: String,
    /// How its container last ended (absent while it never has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Whether that end was an out-of-memory kill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

/// A node as shown by `GET /nodes` and `GET /nodes/{n}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels matched by node selectors.
    pub labels: BTreeMap<String, String>,
    /// Address other hosts reach it at.
    pub address: String,
    /// Whether its heartbeat lease is held.
    pub alive: bool,
    /// Alive, isolating its tenants and with disk to spare (`state` is
    /// `ready`).
    pub ready: bool,
    /// `ready`, `lost` (no heartbeat lease), `isolation not enforced` (its
    /// last heartbeat lists `problems`) or `low disk`.
    pub state: String,
    /// What it offers.
    pub capacity: Capacity,
    /// Its last heartbeat, if any.
    pub status: Option<NodeStatus>,
    /// When it joined.
    pub created: Timestamp,
}

impl NodeView {
    /// The view of a node's record, its last heartbeat and whether it is
    /// alive.
    pub fn new(node: Node, status: Option<NodeStatus>, alive: bool) -> Self {
        let state = match &status {
            _ if !alive => "lost",
            Some(s) if !s.problems.is_empty() => "isolation not enforced",
            Some(s) if s.low_disk.is_some() => "low disk",
            _ => "ready",
        };
        Self {
            id: node.id,
            name: node.name,
            labels: node.labels,
            address: node.address,
            alive,
            ready: state == "ready",
            state: state.to_owned(),
            capacity: node.capacity,
            status,
            created: node.created,
        }
    }
}

/// The error body of every failed request: `{"error": {...}}`; also the
/// last text frame of a stream that failed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    /// Machine-readable code (`not_found`, `invalid`, `conflict`, ...).
    pub code: String,
    /// Human-readable message, naming the input.
    pub message: String,
    /// The field at fault, when there is one.
    pub field: Option<String>,
}

/// The last text frame of an exec websocket: `{"exit_code": n}`, or
/// `{"error": {...}}` when it failed.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamEnd {
    /// The command's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why the stream failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_of_older_servers_decode_with_defaults() {
        let project: ProjectView =
            serde_json::from_value(json!({"id": "p1", "name": "demo"})).unwrap();
        assert_eq!((project.name.as_str(), project.created), ("demo", 0));
        let replica: ReplicaView = serde_json::from_value(json!({"id": "r1", "extra": 1})).unwrap();
        assert_eq!((replica.state, replica.node), (ReplicaState::Pending, None));
        let list: List<NodeView> = serde_json::from_value(json!({})).unwrap();
        assert!(list.items.is_empty());
        let service: ServiceView =
            serde_json::from_value(json!({"id": "s1", "spec": {"name": "web", "image": "a:1"}}))
                .unwrap();
        assert_eq!(service.status.replicas.desired, 0);
    }

    #[test]
    fn a_node_is_ready_only_alive_isolating_and_with_disk() {
        let node = || Node {
            id: "n1".into(),
            name: "n".into(),
            labels: BTreeMap::new(),
            address: String::new(),
            capacity: Capacity::default(),
            created: 0,
        };
        let check = |status: Option<NodeStatus>, alive: bool, expect: &str| {
            let view = NodeView::new(node(), status, alive);
            assert_eq!(view.state, expect);
            assert_eq!(view.ready, expect == "ready");
        };
        let firewall = NodeStatus {
            problems: vec!["firewall: iptables-restore not found".into()],
            ..Default::default()
        };
        let low = NodeStatus {
            low_disk: Some("3% disk free".into()),
            ..Default::default()
        };
        check(Some(NodeStatus::default()), true, "ready");
        check(None, true, "ready");
        check(Some(NodeStatus::default()), false, "lost");
        check(Some(firewall.clone()), false, "lost");
        check(Some(firewall), true, "isolation not enforced");
        check(Some(low), true, "low disk");
    }

    #[test]
    fn error_bodies_and_stream_ends() {
        let body: ErrorBody = serde_json::from_value(
            json!({"error": {"code": "invalid", "message": "bad", "field": "memory"}}),
        )
        .unwrap();
        assert_eq!(body.error.field.as_deref(), Some("memory"));
        let end: StreamEnd = serde_json::from_value(json!({"exit_code": 3})).unwrap();
        assert_eq!((end.exit_code, end.error.is_none()), (Some(3), true));
        assert_eq!(
            serde_json::to_value(StreamEnd {
                exit_code: Some(0),
                error: None
            })
            .unwrap(),
            json!({"exit_code": 0})
        );
    }

    #[test]
    fn token_secret_only_when_present() {
        let view = TokenView {
            id: "t".into(),
            name: "ci".into(),
            created: 1,
            token: None,
        };
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json!({"id": "t", "name": "ci", "created": 1})
        );
    }
}
