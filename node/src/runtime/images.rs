//! The engine's images and disk: a timer-driven sweep that removes the
//! images lb pulled and no longer needs, and where Docker keeps its data
//! (the disk `--min-free-disk` is measured on).
//!
//! Which images are lb's: every reference of the image (tags and digests)
//! names a repository `<registry>/<project id>/<service id>` of lb's
//! registry, whose host the sweep learns from the images of this node's
//! containers (or is told). An image with any other reference, or none, is
//! never touched: the engine may be shared with other users.
//!
//! What stays: images any container uses (lb's or not, running or not:
//! every assigned replica has its container), the newest `--keep-images`
//! of each service that still has a container in the engine (rollback
//! targets), and images not seen unused by the previous pass (a pull that
//! has not made its container yet survives). A service with no container
//! has no replica here (a replica no longer assigned, as of a deleted
//! service, loses its container), so all its images may go. Which
//! services have one is read from the containers' `lb.project` and
//! `lb.service` labels, whatever node made them: an engine shared by
//! nodes keeps the rollback targets of each. The rest are removed
//! reference by reference; the engine refusing one (a container made
//! meanwhile) is skipped until the next pass.
//!
//! Like `docker.rs`, this file talks to the engine with bollard.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bollard::container::ListContainersOptions;
use bollard::image::{ListImagesOptions, RemoveImageOptions};
use bollard::Docker;

use super::labels;

/// An image as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The engine's id.
    pub id: String,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Tags and digests (`repo:tag`, `repo@digest`).
    pub references: Vec<String>,
    /// Bytes.
    pub size: u64,
}

/// Where Docker keeps its data (`docker info`'s `DockerRootDir`).
pub async fn data_root() -> Option<PathBuf> {
    let docker = Docker::connect_with_local_defaults().ok()?;
    let info = docker.info().await.ok()?;
    info.docker_root_dir.map(PathBuf::from)
}

/// The registry host of a reference (`host[:port]/...`), if it names one.
fn host_of(reference: &str) -> Option<&str> {
    let (first, _) = reference.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// The service repository (`<pid>/<sid>`) of an lb reference under one of
/// `hosts`, or `None`.
fn lb_repository<'a>(reference: &'a str, hosts: &HashSet<String>) -> Option<&'a str> {
    let host = host_of(reference)?;
    if !hosts.contains(host) {
        return None;
    }
    let path = &reference[host.len() + 1..];
    let name = match path.split_once('@') {
        Some((name, _)) => name,
        None => path.rsplit_once(':').map_or(path, |(name, _)| name),
    };
    let (pid, sid) = name.split_once('/')?;
    let is_id = |s: &str| lb_model::ids::is_id(&s.to_uppercase());
    (is_id(pid) && is_id(sid)).then_some(name)
}

/// The images to remove: lb's (see the module doc), used by no container,
/// already unused at the previous pass (`seen`), and not among the newest
/// `keep` of a service in `services` (repositories `<pid>/<sid>` with a
/// container). An image named in two repositories is kept if either keeps
/// it.
pub fn plan<'i>(
    images: &'i [Image],
    in_use: &HashSet<String>,
    hosts: &HashSet<String>,
    keep: usize,
    services: &HashSet<String>,
    seen: &HashSet<String>,
) -> Vec<&'i Image> {
    let mut by_service: BTreeMap<&str, Vec<&Image>> = BTreeMap::new();
    for image in images {
        let repos: Vec<Option<&str>> = image
            .references
            .iter()
            .filter(|r| !r.starts_with("<none>"))
            .map(|r| lb_repository(r, hosts))
            .collect();
        if repos.is_empty() || !repos.iter().all(Option::is_some) {
            continue;
        }
        let repos: std::collections::BTreeSet<&str> = repos.into_iter().flatten().collect();
        for repo in repos {
            by_service.entry(repo).or_default().push(image);
        }
    }
    let mut kept: HashSet<&str> = HashSet::new();
    for (repo, list) in &mut by_service {
        list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        if services.contains(*repo) {
            kept.extend(list.iter().take(keep).map(|i| i.id.as_str()));
        }
    }
    let mut out: Vec<&Image> = Vec::new();
    let mut chosen: HashSet<&str> = HashSet::new();
    for image in by_service.into_values().flatten() {
        let id = image.id.as_str();
        if !kept.contains(id) && !in_use.contains(id) && seen.contains(id) && chosen.insert(id) {
            out.push(image);
        }
    }
    out
}

/// What a pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The images removed (ids).
    pub removed: Vec<String>,
    /// Their sizes summed.
    pub bytes: u64,
}

/// The sweep of one node.
pub struct Sweeper {
    docker: Docker,
    node: String,
    keep: usize,
    hosts: HashSet<String>,
    seen: HashSet<String>,
}

impl Sweeper {
    /// A sweep of the images of node `node` keeping `keep` per service.
    pub fn connect(node: &str, keep: usize) -> Result<Self, String> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?;
        Ok(Self {
            docker,
            node: node.to_owned(),
            keep: keep.max(1),
            hosts: HashSet::new(),
            seen: HashSet::new(),
        })
    }

    /// Also treats `host` as lb's registry.
    pub fn with_registry(mut self, host: &str) -> Self {
        self.hosts.insert(host.to_owned());
        self
    }

    /// One pass.
    pub async fn sweep(&mut self) -> Result<Swept, String> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("cannot list containers: {e}"))?;
        let mut in_use = HashSet::new();
        let mut services = HashSet::new();
        for c in &containers {
            in_use.extend(c.image_id.clone());
            let label = |key: &str| c.labels.as_ref().and_then(|l| l.get(key));
            if let (Some(pid), Some(sid)) = (label(labels::PROJECT), label(labels::SERVICE)) {
                services.insert(format!("{}/{}", pid.to_lowercase(), sid.to_lowercase()));
            }
            let mine = label(labels::NODE).is_some_and(|n| *n == self.node);
            if let (true, Some(host)) = (mine, c.image.as_deref().and_then(host_of)) {
                self.hosts.insert(host.to_owned());
            }
        }
        let images: Vec<Image> = self
            .docker
            .list_images(Some(ListImagesOptions::<String> {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("cannot list images: {e}"))?
            .into_iter()
            .map(|i| Image {
                id: i.id,
                created: i.created,
                references: i.repo_tags.into_iter().chain(i.repo_digests).collect(),
                size: i.size.max(0) as u64,
            })
            .collect();
        let doomed: Vec<Image> = plan(
            &images,
            &in_use,
            &self.hosts,
            self.keep,
            &services,
            &self.seen,
        )
        .into_iter()
        .cloned()
        .collect();
        self.seen = images
            .iter()
            .filter(|i| !in_use.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        let mut swept = Swept::default();
        for image in doomed {
            let mut removed = true;
            for reference in image.references.iter().filter(|r| !r.starts_with("<none>")) {
                let options = RemoveImageOptions {
                    force: false,
                    noprune: false,
                };
                match self
                    .docker
                    .remove_image(reference, Some(options), None)
                    .await
                {
                    Ok(_) => {}
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {}
                    Err(e) => {
                        tracing::debug!(%reference, error = %e, "image gc: not removed");
                        removed = false;
                    }
                }
            }
            if removed {
                tracing::info!(image = %image.id, references = ?image.references, "image gc: removed an unused image");
                swept.bytes += image.size;
                swept.removed.push(image.id);
            }
        }
        Ok(swept)
    }
}

/// Sweeps every `interval` (the first pass a minute after the start)
/// until `shutdown` resolves.
pub async fn run(
    mut sweeper: Sweeper,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next = Duration::from_secs(60).min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = &mut shutdown => return,
        }
        next = interval;
        match sweeper.sweep().await {
            Ok(s) if !s.removed.is_empty() => {
                tracing::info!(images = s.removed.len(), bytes = s.bytes, "image gc: swept")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("image gc: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lb_images_beyond_the_newest_unused_and_seen_go() {
        let pid = lb_model::ids::new_id().to_lowercase();
        let sid = lb_model::ids::new_id().to_lowercase();
        let other = lb_model::ids::new_id().to_lowercase();
        let reg = "10.0.0.1:5000";
        let image = |id: &str, created: i64, refs: &[String]| Image {
            id: id.into(),
            created,
            references: refs.to_vec(),
            size: 1,
        };
        let images = vec![
            image("a", 1, &[format!("{reg}/{pid}/{sid}:1")]),
            image(
                "b",
                2,
                &[format!("{reg}/{pid}/{sid}@sha256:{}", "b".repeat(64))],
            ),
            image("c", 3, &[format!("{reg}/{pid}/{sid}:3")]),
            image("d", 4, &[format!("{reg}/{pid}/{sid}:4")]),
            // Another service: only one image, kept.
            image("e", 1, &[format!("{reg}/{pid}/{other}:1")]),
            // Also tagged outside lb: never touched.
            image(
                "f",
                0,
                &[format!("{reg}/{pid}/{sid}:0"), "mine:latest".into()],
            ),
            // Another registry, a name that is no lb repository, dangling.
            image("g", 0, &[format!("other.io/{pid}/{sid}:1")]),
            image("h", 0, &[format!("{reg}/library/busybox:1")]),
            image("i", 0, &["<none>:<none>".into()]),
        ];
        let hosts = HashSet::from([reg.to_owned()]);
        let all: HashSet<String> = images.iter().map(|i| i.id.clone()).collect();
        let ids = |v: Vec<&Image>| {
            v.iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Both services have a container.
        let both = HashSet::from([format!("{pid}/{sid}"), format!("{pid}/{other}")]);
        let none = HashSet::new();
        // Keep 2: a and b go.
        assert_eq!(ids(plan(&images, &none, &hosts, 2, &both, &all)), "b a");
        // a is used by a container.
        let used = HashSet::from(["a".to_owned()]);
        assert_eq!(ids(plan(&images, &used, &hosts, 2, &both, &all)), "b");
        // Not seen unused before: wait a pass.
        let seen = HashSet::from(["a".to_owned()]);
        assert_eq!(ids(plan(&images, &none, &hosts, 2, &both, &seen)), "a");
        // No host known: nothing is lb's.
        assert_eq!(
            ids(plan(&images, &none, &HashSet::new(), 1, &both, &all)),
            ""
        );
    }

    #[test]
    fn a_service_with_no_container_keeps_no_rollback_targets() {
        let id = || lb_model::ids::new_id().to_lowercase();
        let (pid, live, gone) = (id(), id(), id());
        let reg = "10.0.0.1:5000";
        let image = |id: &str, created: i64, refs: &[String]| Image {
            id: id.into(),
            created,
            references: refs.to_vec(),
            size: 1,
        };
        let images = vec![
            image("l1", 1, &[format!("{reg}/{pid}/{live}:1")]),
            image("l2", 2, &[format!("{reg}/{pid}/{live}:2")]),
            image("l3", 3, &[format!("{reg}/{pid}/{live}:3")]),
            image("g1", 1, &[format!("{reg}/{pid}/{gone}:1")]),
            image(
                "g2",
                2,
                &[format!("{reg}/{pid}/{gone}@sha256:{}", "2".repeat(64))],
            ),
            image("g3", 3, &[format!("{reg}/{pid}/{gone}:3")]),
            // Also in the live service's repository: the live one keeps it.
            image(
                "both",
                4,
                &[
                    format!("{reg}/{pid}/{gone}:4"),
                    format!("{reg}/{pid}/{live}:4"),
                ],
            ),
        ];
        let hosts = HashSet::from([reg.to_owned()]);
        let all: HashSet<String> = images.iter().map(|i| i.id.clone()).collect();
        let ids = |v: Vec<&Image>| {
            let mut v: Vec<&str> = v.iter().map(|i| i.id.as_str()).collect();
            v.sort_unstable();
            v.join(" ")
        };
        let live_only = HashSet::from([format!("{pid}/{live}")]);
        let none = HashSet::new();
        // The live service keeps its newest 2 (both, l3); the other has no
        // container: every image of its own goes, however new.
        assert_eq!(
            ids(plan(&images, &none, &hosts, 2, &live_only, &all)),
            "g1 g2 g3 l1 l2"
        );
        // Still only what no container uses and the last pass saw unused.
        let used = HashSet::from(["g3".to_owned()]);
        let seen: HashSet<String> = ["g1", "g3", "l1"].map(String::from).into();
        assert_eq!(
            ids(plan(&images, &used, &hosts, 2, &live_only, &seen)),
            "g1 l1"
        );
        // With a container again, the service keeps its newest 2 too.
        let both = HashSet::from([format!("{pid}/{live}"), format!("{pid}/{gone}")]);
        assert_eq!(
            ids(plan(&images, &none, &hosts, 2, &both, &all)),
            "g1 g2 l1 l2"
        );
        // Neither has a container: all of them, each once.
        assert_eq!(
            ids(plan(&images, &none, &hosts, 2, &none, &all)),
            "both g1 g2 g3 l1 l2 l3"
        );
    }
}
