//! Request and response bodies of the REST API. Stored models live in
//! `lb_model`; these are the shapes on the wire around them.

use lb_model::{ReplicaState, ServiceSpec, ServiceState, User};
use serde::{Deserialize, Serialize};

/// `POST /auth/signup`, `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// Answer of `POST /auth/login`.
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    /// The access token (JWT).
    pub token: String,
    /// When it expires (Unix seconds).
    pub expires: i64,
}

/// A user as shown (never the password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Name.
    pub username: String,
    /// admin or user.
    pub role: lb_model::Role,
    /// Creation time.
    pub created: i64,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name to recognise the token by.
    pub name: String,
}

/// An API token as listed (without its secret).
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: i64,
    /// The token itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A list answer.
#[derive(Debug, Serialize)]
pub struct List<T> {
    /// This page.
    pub items: Vec<T>,
    /// How many there are in all.
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
#[derive(Debug, Serialize)]
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
    pub created: i64,
    /// Last update.
    pub updated: i64,
}

/// Replica counts of a service.
#[derive(Debug, Serialize, Default)]
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
}

/// A service's observed state.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// running or paused (the spec's).
    pub state: ServiceState,
    /// The generation replicas should run.
    pub generation: u64,
    /// Restart generation.
    pub restart_generation: u64,
    /// Replica counts.
    pub replicas: ReplicaCounts,
}

/// A service as shown.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Project id.
    pub project: String,
    /// Store revision (also the ETag).
    pub revision: i64,
    /// Creation time.
    pub created: i64,
    /// Last update.
    pub updated: i64,
    /// The desired spec.
    pub spec: ServiceSpec,
    /// The observed state.
    pub status: ServiceStatus,
}

/// `POST .../scale`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The new replica count, 0–1000.
    pub replicas: u32,
}

/// `POST .../rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The build whose image to run again.
    pub build: u64,
}

/// A port of a replica as bound.
#[derive(Debug, Serialize)]
pub struct ReplicaPort {
    /// Container port.
    pub container: u16,
    /// Host port, once bound.
    pub host: Option<u16>,
}

/// A replica as shown by `GET .../replicas`.
#[derive(Debug, Serialize)]
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
}
