//! The route table: computed from the store by every API server and handed
//! to the ingresses — the one in this process through [`Routes`], ingress
//! nodes over their channels (`ToNode::Routes`). Rebuilt when something it
//! is made of changes (specs, replicas and their statuses, node addresses,
//! domain claims, certificates, ACME answers), at most every
//! [`SETTLE`]; heartbeats and build logs do not wake it.
//!
//! A service gets a route when it has an ingress port and a host name: its
//! claimed domains, and its generated name under `--base-domain`. Its
//! upstreams are the replicas whose node reports them running and, when the
//! service has a health check, healthy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_model::ingress::{generated_host, DomainClaim, Route, RouteTable, Upstream};
use lb_model::keys::Parsed;
use lb_model::{Node, Project, ReplicaStatus, ServiceSpec, User};
use lb_store::{Event, StoreExt};
use tokio::sync::watch;

use crate::context::Ctx;
use crate::json::decode;

/// How long a burst of changes settles before the table is rebuilt.
pub const SETTLE: Duration = Duration::from_millis(100);

/// The current table, for ingresses to follow.
pub type Routes = watch::Sender<Arc<RouteTable>>;

/// Ingress settings the API needs (the ingress's own are the server's).
#[derive(Debug, Clone, Default)]
pub struct IngressSettings {
    /// Every service with an ingress port also answers at
    /// `<service>-<project>-<owner>.<base_domain>`.
    pub base_domain: Option<String>,
    /// The port users reach plain HTTP at (shown in URLs when not 80).
    pub http_port: Option<u16>,
    /// The port users reach HTTPS at (shown in URLs when not 443).
    pub https_port: Option<u16>,
}

/// Keeps `ctx.routes` current until the process ends.
pub async fn run(ctx: Ctx) {
    let mut backoff =
        lb_model::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match follow(&ctx).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("route table: {e}; starting over"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn follow(ctx: &Ctx) -> Result<(), String> {
    let revision = ctx.store.revision().await.map_err(|e| e.to_string())?;
    let mut changes = ctx
        .store
        .watch(&ctx.keys.all(), revision + 1)
        .await
        .map_err(|e| e.to_string())?;
    publish(ctx, revision).await?;
    loop {
        let Some(batch) = changes.next().await else {
            return Err("the store's watch ended".into());
        };
        let batch = batch.map_err(|e| e.to_string())?;
        let mut latest = batch.revision;
        if !batch.events.iter().any(|e| matters(ctx, e)) {
            continue;
        }
        // Let the rest of a burst arrive, then build once.
        let settle = tokio::time::sleep(SETTLE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = &mut settle => break,
                more = changes.next() => match more {
                    Some(Ok(more)) => latest = latest.max(more.revision),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the store's watch ended".into()),
                },
            }
        }
        publish(ctx, latest).await?;
    }
}

/// Whether a change can alter the table.
fn matters(ctx: &Ctx, event: &Event) -> bool {
    let key = match event {
        Event::Put(kv) | Event::Delete(kv) => kv.key.as_str(),
    };
    if key.starts_with(&ctx.keys.domains())
        || key.starts_with(&ctx.keys.certs())
        || key.starts_with(&ctx.keys.acme_challenges())
    {
        return true;
    }
    matches!(
        ctx.keys.parse(key),
        Some(
            Parsed::ServiceSpec { .. }
                | Parsed::Project { .. }
                | Parsed::Replica { .. }
                | Parsed::ReplicaStatus { .. }
                | Parsed::NodeMeta { .. }
        )
    )
}

async fn publish(ctx: &Ctx, revision: i64) -> Result<(), String> {
    let mut table = build(ctx).await.map_err(|e| e.message)?;
    table.revision = revision;
    ctx.routes.send_if_modified(|current| {
        let same = current.routes == table.routes
            && current.challenges == table.challenges
            && current.certificates == table.certificates;
        if !same {
            *current = Arc::new(table);
        }
        !same
    });
    Ok(())
}

/// Builds the table from the store as it is now.
pub async fn build(ctx: &Ctx) -> crate::error::Result<RouteTable> {
    let (claims, _) = ctx.store.list(&ctx.keys.domains()).await?;
    let mut hosts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for kv in &claims {
        if let Ok(claim) = decode::<DomainClaim>(kv) {
            hosts
                .entry((claim.project, claim.service))
                .or_default()
                .push(claim.domain);
        }
    }
    let base = ctx.config.ingress.base_domain.as_deref();
    if base.is_some() {
        // Every service may answer at its generated name.
        let (index, _) = ctx.store.list(&ctx.keys.service_index_all()).await?;
        for kv in &index {
            let rest = &kv.key[ctx.keys.service_index_all().len()..];
            if let Some((pid, _)) = rest.split_once('/') {
                let sid = String::from_utf8_lossy(&kv.value).into_owned();
                hosts.entry((pid.to_owned(), sid)).or_default();
            }
        }
    }
    let mut names = Names::default();
    let mut routes = Vec::new();
    for ((pid, sid), mut domains) in hosts {
        let Some(kv) = ctx.store.get(&ctx.keys.service_spec(&pid, &sid)).await? else {
            continue;
        };
        let spec: ServiceSpec = decode(&kv)?;
        let Some(port) = spec.ingress_port() else {
            continue;
        };
        let Some(project) = names.project(ctx, &pid).await? else {
            continue;
        };
        if let Some(base) = base {
            if let Some(owner) = names.username(ctx, &project.owner).await? {
                domains.push(generated_host(&spec.name, &project.name, &owner, base));
            }
        }
        if domains.is_empty() {
            continue;
        }
        domains.sort();
        let upstreams = upstreams(ctx, &mut names, &pid, &sid, port).await?;
        routes.push(Route {
            hosts: domains,
            project: pid.clone(),
            service: sid.clone(),
            name: format!("{}/{}", project.name, spec.name),
            upstreams,
            https_redirect: spec.https_redirect,
            access_log: spec.access_log,
        });
    }
    let (answers, _) = ctx.store.list(&ctx.keys.acme_challenges()).await?;
    let challenges = answers
        .iter()
        .map(|kv| {
            let token = kv.key[ctx.keys.acme_challenges().len()..].to_owned();
            let text = String::from_utf8_lossy(&kv.value);
            // Stored as a JSON string or as the bare text.
            let answer =
                serde_json::from_str::<String>(&text).unwrap_or_else(|_| text.into_owned());
            (token, answer)
        })
        .collect();
    Ok(RouteTable {
        revision: 0,
        routes,
        challenges,
        certificates: certificates(ctx).await?,
    })
}

/// The replicas of a service that take traffic, where their ingress port is
/// published.
async fn upstreams(
    ctx: &Ctx,
    names: &mut Names,
    pid: &str,
    sid: &str,
    port: u16,
) -> crate::error::Result<Vec<Upstream>> {
    let (kvs, _) = ctx.store.list(&ctx.keys.replicas_prefix(pid, sid)).await?;
    let mut placed: HashMap<String, String> = HashMap::new();
    let mut statuses: HashMap<String, ReplicaStatus> = HashMap::new();
    for kv in &kvs {
        match ctx.keys.parse(&kv.key) {
            Some(Parsed::Replica { rid, .. }) => {
                if let Ok(replica) = decode::<lb_model::Replica>(kv) {
                    if let Some(node) = replica.node {
                        placed.insert(rid.to_owned(), node);
                    }
                }
            }
            Some(Parsed::ReplicaStatus { rid, .. }) => {
                if let Ok(status) = decode::<ReplicaStatus>(kv) {
                    statuses.insert(rid.to_owned(), status);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (rid, node) in placed {
        let Some(status) = statuses.get(&rid) else {
            continue;
        };
        if !takes_traffic(status) {
            continue;
        }
        let Some(binding) = status
            .ports
            .iter()
            .find(|b| b.container == port && b.protocol == lb_model::Protocol::Tcp)
        else {
            continue;
        };
        let Some(address) = names.node_address(ctx, &node).await? else {
            continue;
        };
        out.push(Upstream {
            replica: rid,
            address: format!("{}:{}", host_of(&address), binding.host),
        });
    }
    out.sort_by(|a, b| a.replica.cmp(&b.replica));
    Ok(out)
}

/// Whether a replica's node says it can serve: running, and healthy when
/// checked.
pub fn takes_traffic(status: &ReplicaStatus) -> bool {
    lb_model::takes_traffic(status.state, status.health)
}

/// The certificates with their keys, unsealed.
async fn certificates(ctx: &Ctx) -> crate::error::Result<Vec<lb_model::ingress::Certificate>> {
    lb_certs::certificates(ctx.store.as_ref(), &ctx.keys, &ctx.sealer)
        .await
        .map_err(crate::error::ApiError::internal)
}

/// A node's address without a port (`10.0.0.2`, `[::1]`).
fn host_of(address: &str) -> &str {
    if address.starts_with('[') {
        return address
            .split(']')
            .next()
            .map_or(address, |h| &address[..h.len() + 1]);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

/// Names read once per build.
#[derive(Default)]
struct Names {
    projects: HashMap<String, Option<Project>>,
    users: HashMap<String, Option<String>>,
    nodes: HashMap<String, Option<String>>,
}

impl Names {
    async fn project(&mut self, ctx: &Ctx, pid: &str) -> crate::error::Result<Option<Project>> {
        if !self.projects.contains_key(pid) {
            let project = match ctx.store.get(&ctx.keys.project(pid)).await? {
                Some(kv) => decode::<Project>(&kv).ok(),
                None => None,
            };
            self.projects.insert(pid.to_owned(), project);
        }
        Ok(self.projects[pid].clone())
    }

    async fn username(&mut self, ctx: &Ctx, uid: &str) -> crate::error::Result<Option<String>> {
        if !self.users.contains_key(uid) {
            let name = match ctx.store.get(&ctx.keys.user(uid)).await? {
                Some(kv) => decode::<User>(&kv).ok().map(|u| u.username),
                None => None,
            };
            self.users.insert(uid.to_owned(), name);
        }
        Ok(self.users[uid].clone())
    }

    async fn node_address(&mut self, ctx: &Ctx, nid: &str) -> crate::error::Result<Option<String>> {
        if !self.nodes.contains_key(nid) {
            let address = match ctx.store.get(&ctx.keys.node_meta(nid)).await? {
                Some(kv) => decode::<Node>(&kv).ok().map(|n| n.address),
                None => None,
            };
            self.nodes.insert(nid.to_owned(), address);
        }
        Ok(self.nodes[nid].clone())
    }
}

/// The URLs a service answers at: its domains and generated name, https
/// where a certificate is issued.
pub fn urls(
    ctx: &Ctx,
    spec: &ServiceSpec,
    generated: Option<String>,
    secure: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    if spec.ingress_port().is_none() {
        return Vec::new();
    }
    let settings = &ctx.config.ingress;
    let url = |host: &str| {
        if secure(host) {
            match settings.https_port {
                Some(443) | None => format!("https://{host}/"),
                Some(port) => format!("https://{host}:{port}/"),
            }
        } else {
            match settings.http_port {
                Some(80) | None => format!("http://{host}/"),
                Some(port) => format!("http://{host}:{port}/"),
            }
        }
    };
    spec.domains
        .iter()
        .filter(|d| !d.starts_with("*."))
        .map(|d| url(d))
        .chain(generated.as_deref().map(url))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn node_addresses_lose_their_port() {
        assert_eq!(host_of("10.0.0.2"), "10.0.0.2");
        assert_eq!(host_of("10.0.0.2:7000"), "10.0.0.2");
        assert_eq!(host_of("node1"), "node1");
        assert_eq!(host_of("[::1]:7000"), "[::1]");
        assert_eq!(host_of("::1"), "::1");
    }
}
