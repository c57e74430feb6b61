//! Project networks: each project gets a Docker bridge network of its own
//! on each node, `lb-<project>-<node tag>`, labelled with the node and the
//! project, its bridge interface named `lbp` + 12 hex digits (what the
//! node's firewall matches, see `crate::firewall`). A replica joins its
//! project's network with its service's name as DNS alias, so replicas of
//! one project reach each other by service name (Docker's embedded DNS),
//! and Docker keeps different networks apart. A network goes when the last
//! container of its project on this node does, and at node start when it
//! has none.
//!
//! A container's create holds the network shared, its removal exclusively,
//! so a network is never removed between its check and a container joining
//! it. Containers made before project networks (on Docker's default
//! bridge) keep running there until their next new container.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bollard::container::{Config as ContainerConfig, ListContainersOptions, NetworkingConfig};
use bollard::models::EndpointSettings;
use bollard::network::{CreateNetworkOptions, ListNetworksOptions};
use bollard::Docker;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OwnedRwLockReadGuard, RwLock};

use super::{labels, Error, Result};

/// Every project bridge's interface name starts with this.
pub const BRIDGE_PREFIX: &str = "lbp";
/// Docker's option naming a bridge network's interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The network of a project on a node.
pub fn network_name(node: &str, project: &str) -> String {
    format!(
        "lb-{}-{}",
        project.to_lowercase(),
        crate::firewall::node_tag(node)
    )
}

/// The bridge interface of a network: `lbp` + 12 hex digits of its name's
/// SHA-256 (15 characters, the most an interface name takes).
pub fn bridge_name(network: &str) -> String {
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{BRIDGE_PREFIX}{hex}")
}

/// Puts a container on `network` with `alias` (its service's name) as DNS
/// name, and on no other network.
pub fn attach(config: &mut ContainerConfig<String>, network: &str, alias: &str) {
    if let Some(host) = config.host_config.as_mut() {
        host.network_mode = Some(network.to_owned());
    }
    config.networking_config = Some(NetworkingConfig {
        endpoints_config: HashMap::from([(
            network.to_owned(),
            EndpointSettings {
                aliases: Some(vec![alias.to_owned()]),
                ..Default::default()
            },
        )]),
    });
}

/// The project networks of one node.
#[derive(Clone)]
pub struct Networks {
    docker: Docker,
    node: String,
    /// Shared by creates, exclusive for removals.
    removal: Arc<RwLock<()>>,
    /// One network created at a time (Docker's duplicate-name check is not
    /// atomic).
    creating: Arc<Mutex<()>>,
}

/// Whether Docker answered with one of `codes`.
fn is_status(err: &bollard::errors::Error, codes: &[u16]) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

impl Networks {
    /// The networks of `node` on this engine.
    pub fn new(docker: Docker, node: &str) -> Self {
        Self {
            docker,
            node: node.to_owned(),
            removal: Arc::default(),
            creating: Arc::default(),
        }
    }

    /// Makes sure the project's network exists; answers its name and a
    /// guard that keeps it from being removed until dropped (hold it until
    /// the container is created).
    pub async fn ensure(&self, project: &str) -> Result<(OwnedRwLockReadGuard<()>, String)> {
        let held = self.removal.clone().read_owned().await;
        let name = network_name(&self.node, project);
        if self.exists(&name).await? {
            return Ok((held, name));
        }
        let _one = self.creating.lock().await;
        if self.exists(&name).await? {
            return Ok((held, name));
        }
        // Docker's default address pools hold about 30 bridge networks per
        // engine: project networks take /24s of lb's own range instead, the
        // first one no network of the engine uses (another engine's user
        // may take one meanwhile: then the next).
        let taken = self.subnets_in_use().await?;
        let mut free = free_subnets(&taken);
        loop {
            let Some(subnet) = free.next() else {
                return Err(Error::Engine(format!(
                    "cannot create the project network {name}: every /24 of {PROJECT_RANGE} is in use"
                )));
            };
            let options = CreateNetworkOptions {
                name: name.clone(),
                check_duplicate: true,
                driver: "bridge".to_owned(),
                options: HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), bridge_name(&name))]),
                labels: HashMap::from([
                    (labels::NODE.to_owned(), self.node.clone()),
                    (labels::PROJECT.to_owned(), project.to_owned()),
                ]),
                ipam: bollard::models::Ipam {
                    config: Some(vec![bollard::models::IpamConfig {
                        gateway: Some(subnet.replace(".0/24", ".1")),
                        subnet: Some(subnet.clone()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                ..Default::default()
            };
            match self.docker.create_network(options).await {
                Ok(_) => {
                    tracing::info!(network = %name, %subnet, "project network created");
                    return Ok((held, name));
                }
                // Made meanwhile by someone else.
                Err(e) if is_status(&e, &[409]) => return Ok((held, name)),
                // The subnet was taken meanwhile ("Pool overlaps").
                Err(e) if e.to_string().contains("overlap") => continue,
                Err(e) => {
                    return Err(Error::Engine(format!(
                        "cannot create the project network {name}: {}",
                        Error::from(e)
                    )))
                }
            }
        }
    }

    /// The IPv4 subnets of every network of the engine.
    async fn subnets_in_use(&self) -> Result<HashSet<String>> {
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions<String>>)
            .await?;
        Ok(networks
            .into_iter()
            .filter_map(|n| n.ipam?.config)
            .flatten()
            .filter_map(|c| c.subnet)
            .collect())
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_network::<String>(name, None).await {
            Ok(network) => {
                let owner = network
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::NODE))
                    .map(String::as_str);
                if owner != Some(self.node.as_str()) {
                    return Err(Error::Engine(format!(
                        "a Docker network named {name} exists that is not this node's"
                    )));
                }
                Ok(true)
            }
            Err(e) if is_status(&e, &[404]) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The projects with a container of this node, running or not.
    async fn projects_in_use(&self, project: Option<&str>) -> Result<HashSet<String>> {
        let mut label = vec![format!("{}={}", labels::NODE, self.node)];
        if let Some(project) = project {
            label.push(format!("{}={project}", labels::PROJECT));
        }
        let options = ListContainersOptions {
            all: true,
            filters: HashMap::from([("label".to_owned(), label)]),
            ..Default::default()
        };
        Ok(self
            .docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter_map(|c| c.labels?.get(labels::PROJECT).cloned())
            .collect())
    }

    /// Removes a network (gone is fine; one Docker still sees in use stays).
    async fn remove(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => {
                tracing::info!(network = %name, "project network removed");
                Ok(())
            }
            Err(e) if is_status(&e, &[404]) => Ok(()),
            // "has active endpoints": a container not of this node joined it.
            Err(e) if is_status(&e, &[403, 409]) => {
                tracing::debug!(network = %name, error = %e, "project network still in use");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the project's network when no container of this node is
    /// left in the project.
    pub async fn release(&self, project: &str) -> Result<()> {
        let _alone = self.removal.write().await;
        if self.projects_in_use(Some(project)).await?.is_empty() {
            self.remove(&network_name(&self.node, project)).await?;
        }
        Ok(())
    }

    /// Removes every network of this node without a container (projects
    /// deleted while the node was down).
    pub async fn prune(&self) -> Result<()> {
        let _alone = self.removal.write().await;
        let options = ListNetworksOptions {
            filters: HashMap::from([(
                "label".to_owned(),
                vec![format!("{}={}", labels::NODE, self.node)],
            )]),
        };
        let networks = self.docker.list_networks(Some(options)).await?;
        let in_use = self.projects_in_use(None).await?;
        for network in networks {
            let project = network.labels.as_ref().and_then(|l| l.get(labels::PROJECT));
            let (Some(name), Some(project)) = (network.name.as_deref(), project) else {
                continue;
            };
            if !in_use.contains(project) {
                self.remove(name).await?;
            }
        }
        Ok(())
    }
}

/// Removes the project networks of `node` (of every node when `None`)
/// that no container is attached to, running or not (`lb node
/// uninstall`); answers the names removed. Gone meanwhile is fine; one
/// Docker still sees in use stays.
pub async fn remove_unused(docker: &Docker, node: Option<&str>) -> Result<Vec<String>> {
    let label = match node {
        Some(node) => format!("{}={node}", labels::NODE),
        None => labels::NODE.to_owned(),
    };
    let options = ListNetworksOptions {
        filters: HashMap::from([("label".to_owned(), vec![label])]),
    };
    let mut removed = Vec::new();
    for network in docker.list_networks(Some(options)).await? {
        let Some(name) = network.name else { continue };
        // The list leaves containers out: ask for the network itself.
        let attached = match docker.inspect_network::<String>(&name, None).await {
            Ok(n) => n.containers.is_some_and(|c| !c.is_empty()),
            Err(e) if is_status(&e, &[404]) => continue,
            Err(e) => return Err(e.into()),
        };
        // A stopped container holds no endpoint but still names the network.
        let options = ListContainersOptions::<String> {
            all: true,
            filters: HashMap::from([("network".to_owned(), vec![name.clone()])]),
            ..Default::default()
        };
        if attached || !docker.list_containers(Some(options)).await?.is_empty() {
            continue;
        }
        match docker.remove_network(&name).await {
            Ok(()) => removed.push(name),
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) if is_status(&e, &[403, 409]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// The range project networks take their /24s from.
pub const PROJECT_RANGE: &str = "10.213.0.0/16";

/// The /24s of [`PROJECT_RANGE`] not in `taken`, in order.
fn free_subnets(taken: &HashSet<String>) -> impl Iterator<Item = String> + '_ {
    (0..=255u32)
        .map(|n| format!("10.213.{n}.0/24"))
        .filter(move |s| !taken.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_docker_and_the_kernel() {
        let name = network_name("01JNODEAAAAAAAAAAAAAAAAAAA", "01JPROJECTAAAAAAAAAAAAAAAA");
        assert!(name.starts_with("lb-01jproject"), "{name}");
        let bridge = bridge_name(&name);
        // IFNAMSIZ: 15 characters and the NUL.
        assert_eq!(bridge.len(), 15, "{bridge}");
        assert!(bridge.starts_with(BRIDGE_PREFIX));
        // The firewall's wildcard matches it.
        assert_eq!(
            crate::firewall::BRIDGES.trim_end_matches('+'),
            BRIDGE_PREFIX
        );
        // Another node on the same engine has its own network of the project.
        assert_ne!(name, network_name("01JOTHER", "01JPROJECTAAAAAAAAAAAAAAAA"));
        assert_ne!(bridge, bridge_name(&network_name("01JOTHER", "p")));
    }

    #[test]
    fn a_replica_joins_its_project_network_by_service_name() {
        let mut config = ContainerConfig {
            host_config: Some(Default::default()),
            ..Default::default()
        };
        attach(&mut config, "lb-p-n", "web");
        let host = config.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("lb-p-n"));
        let endpoints = config.networking_config.unwrap().endpoints_config;
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints["lb-p-n"].aliases, Some(vec!["web".to_owned()]));
    }

    #[test]
    fn project_networks_take_the_first_free_24_of_lbs_range() {
        let taken = HashSet::from(["10.213.0.0/24".to_owned(), "10.213.2.0/24".to_owned()]);
        let free: Vec<String> = free_subnets(&taken).take(3).collect();
        assert_eq!(free, ["10.213.1.0/24", "10.213.3.0/24", "10.213.4.0/24"]);
        assert_eq!(free_subnets(&HashSet::new()).count(), 256);
    }
}
