//! The node daemon: joins the cluster through the API, keeps a websocket to
//! it, and reconciles the replicas assigned to this node with Docker
//! containers. The only crate that talks to Docker.
//!
//! Not built yet (issue 4): [`run`] refuses to start rather than pretend.

/// Errors of the node daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This role is not implemented yet.
    #[error("the node daemon is not implemented yet")]
    NotImplemented,
}

/// Node settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API's base URL.
    pub api: String,
    /// A join token for the first start.
    pub join_token: Option<String>,
    /// The node's name.
    pub name: Option<String>,
    /// Labels `key=value`.
    pub labels: Vec<(String, String)>,
    /// Where the node keeps its credential.
    pub data_dir: std::path::PathBuf,
}

/// Runs the node daemon until shutdown.
pub async fn run(_config: Config) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
