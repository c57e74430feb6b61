//! `lb node uninstall`: takes away what a node leaves on its host when it
//! stops (its replicas keep running while the daemon is down, so nothing
//! goes on a plain stop): lb's iptables chains with their jumps, and lb's
//! project networks that no container uses. Containers are left alone.
//! Idempotent: a second run removes nothing and succeeds.

use crate::firewall;
use crate::runtime::network;

/// Which node's leftovers to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One node's, by id (the one whose credential a data dir holds).
    Node(String),
    /// Every node's on this host.
    All,
}

/// What an uninstall removed and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The iptables chains removed, with their jumps.
    pub chains: Vec<String>,
    /// The Docker networks removed.
    pub networks: Vec<String>,
    /// What could not be removed (empty: all went).
    pub problems: Vec<String>,
}

/// Removes the chains and unused networks of `scope`.
pub async fn run(scope: &Scope) -> Report {
    let fw = match scope {
        Scope::Node(node) => firewall::uninstall_node(node).await,
        Scope::All => firewall::uninstall_all().await,
    };
    let mut report = Report {
        chains: fw.chains,
        networks: Vec::new(),
        problems: fw.problems,
    };
    let node = match scope {
        Scope::Node(node) => Some(node.as_str()),
        Scope::All => None,
    };
    match bollard::Docker::connect_with_local_defaults() {
        Ok(docker) => match network::remove_unused(&docker, node).await {
            Ok(removed) => report.networks = removed,
            Err(err) => report.problems.push(format!(
                "networks: cannot remove unused project networks: {err}"
            )),
        },
        Err(err) => report
            .problems
            .push(format!("networks: cannot reach Docker: {err}")),
    }
    report
}

/// The node id in a node's data dir (`<dir>/node.json`), or `None` when it
/// holds no credential.
pub fn node_in(data_dir: &std::path::Path) -> Option<String> {
    crate::credential::stored_id(data_dir)
}
