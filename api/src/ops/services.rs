//! Services: create, list, read, change (replace, patch, scale, restart,
//! pause, resume, roll back), delete (cascading to replicas and builds).
//!
//! Every change goes through [`update`]: read both records, apply a
//! [`Change`], validate, bump the generation by the one rule
//! (`ServiceMeta::record_change`), and write both in a transaction that
//! compares both.

use lb_model::ids::new_id;
use lb_model::{
    now, Build, BuildStatus, Deploy, ReplicaState, ServiceMeta, ServiceSpec, ServiceState,
};
use lb_store::{Compare, Op, Txn};

use super::domains::{self, Claimant};
use super::resolve::{self, LoadedService};
use super::{cleanup, get_many, ids_of, matches, node_keys, replicas, retry_txn, window, Attempt};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode, patched};
use crate::models::{List, Paging, ReplicaCounts, ServiceStatus, ServiceView};

/// How a service is shown: its spec and the counts of its replicas.
pub async fn view(ctx: &Ctx, loaded: &LoadedService) -> Result<ServiceView> {
    let replicas = replicas::of(ctx, &loaded.pid, &loaded.meta.id).await?;
    let mut counts = ReplicaCounts {
        desired: if loaded.spec.state == ServiceState::Paused {
            0
        } else {
            loaded.spec.replicas
        },
        total: replicas.len() as u32,
        ..Default::default()
    };
    // A halted rollout says why at the service's level.
    let reason = replicas
        .iter()
        .filter_map(|(replica, _)| replica.reason.as_deref())
        .find(|r| r.starts_with("rollout halted"))
        .map(str::to_owned);
    for (_, status) in &replicas {
        match status.as_ref().map_or(ReplicaState::Pending, |s| s.state) {
            ReplicaState::Running => counts.running += 1,
            ReplicaState::Pending | ReplicaState::Starting => counts.pending += 1,
            ReplicaState::Failed | ReplicaState::Exited => counts.failed += 1,
            ReplicaState::Stopping => {}
        }
    }
    // What it does, from its replicas and its rollout (the same words in
    // the UI and lbc).
    let pairs: Vec<_> = replicas.iter().map(|(r, s)| (r, s.as_ref())).collect();
    let summary = lb_model::status::summarize(&loaded.spec, loaded.meta.generation, &pairs, now());
    counts.ready = summary.ready;
    let urls = urls(ctx, loaded).await?;
    // Which version is live and which is coming, from the deploy history.
    let history = super::builds::history(ctx, loaded).await?;
    let live_at = history
        .iter()
        .rposition(|d| d.outcome == lb_model::DeployOutcome::RolledOut);
    let live = live_at.map(|i| history[i].clone());
    let coming = history
        .last()
        .filter(|d| {
            matches!(
                d.outcome,
                lb_model::DeployOutcome::InProgress | lb_model::DeployOutcome::Halted
            )
        })
        .cloned();
    Ok(ServiceView {
        urls,
        id: loaded.meta.id.clone(),
        name: loaded.meta.name.clone(),
        project: loaded.pid.clone(),
        revision: loaded.revision(),
        created: loaded.meta.created,
        updated: loaded.meta.updated,
        spec: loaded.spec.clone(),
        status: ServiceStatus {
            state: summary.state,
            label: summary.label,
            detail: summary.detail,
            exit_code: summary.exit_code,
            oom_killed: summary.oom_killed,
            generation: loaded.meta.generation,
            restart_generation: loaded.meta.restart_generation,
            replicas: counts,
            reason,
            live,
            coming,
        },
    })
}

/// Where a service answers: its exact domains and its name under the base
/// domain, https where a certificate is issued.
async fn urls(ctx: &Ctx, loaded: &LoadedService) -> Result<Vec<String>> {
    if loaded.spec.ingress_port().is_none() {
        return Ok(Vec::new());
    }
    let generated = match &ctx.config.ingress.base_domain {
        Some(base) => {
            let owner = owner_of(ctx, &loaded.pid).await?;
            match ctx.store.get(&ctx.keys.user(&owner)).await? {
                Some(kv) => Some(lb_model::ingress::generated_host(
                    &loaded.spec.name,
                    &loaded.project_name,
                    &decode::<lb_model::User>(&kv)?.username,
                    base,
                )),
                None => None,
            }
        }
        None => None,
    };
    let mut secure = std::collections::HashSet::new();
    for domain in &loaded.spec.domains {
        if let Some(kv) = ctx.store.get(&ctx.keys.cert(domain)).await? {
            if let Ok(record) = decode::<lb_model::CertRecord>(&kv) {
                if record.usable(now()) {
                    secure.insert(domain.clone());
                }
            }
        }
    }
    Ok(crate::ingress::urls(
        ctx,
        &loaded.spec,
        generated,
        &|host: &str| secure.contains(host),
    ))
}

fn name_taken(name: &str, project: &str) -> ApiError {
    ApiError::conflict(format!(
        "service name {name:?} is taken in project {project:?}"
    ))
    .with_field("name")
}

/// Creates a service in a project the caller may see.
pub async fn create(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    mut spec: ServiceSpec,
) -> Result<ServiceView> {
    spec.validate()?;
    let project = resolve::project(ctx, caller, p).await?;
    let pid = project.project.id.clone();
    super::quotas::check_service(ctx, &pid, "", None, &spec).await?;
    let now = now();
    let meta = ServiceMeta {
        id: new_id(),
        name: spec.name.clone(),
        project: pid.clone(),
        created: now,
        updated: now,
        generation: 1,
        restart_generation: 0,
    };
    let owner = super::images::Owner {
        pid: &pid,
        project_name: &project.project.name,
        sid: &meta.id,
    };
    super::images::authorize(ctx, &owner, &mut spec).await?;
    let index = ctx.keys.service_index(&pid, &spec.name);
    // The project must still exist: a service is never created into a
    // project deleted meanwhile.
    let txn = Txn::new()
        .when(Compare::ModRevision(
            ctx.keys.project(&pid),
            project.revision,
        ))
        .when(Compare::ModRevision(index.clone(), 0))
        .then(Op::put(
            ctx.keys.service_meta(&pid, &meta.id),
            encode(&meta),
        ))
        .then(Op::put(
            ctx.keys.service_spec(&pid, &meta.id),
            encode(&spec),
        ))
        .then(Op::put(index.clone(), meta.id.clone().into_bytes()))
        // Its first deploy (to settle once its replicas run; a service
        // from source has none until its first build).
        .then(Op::put(
            ctx.keys.deploy(&pid, &meta.id, meta.generation),
            encode(&Deploy::start(
                meta.generation,
                spec.image.clone(),
                "created",
                &caller.user.username,
                now,
            )),
        ));
    let claimant = Claimant {
        project: &pid,
        service: &meta.id,
        owner: &project.project.owner,
    };
    let txn = domains::claim(ctx, &claimant, &[], &spec.domains, txn).await?;
    let resp = ctx.store.txn(txn).await?;
    if !resp.succeeded {
        if ctx.store.get(&index).await?.is_some() {
            return Err(name_taken(&spec.name, &project.project.name));
        }
        domains::lost(ctx, &meta.id, &spec.domains).await?;
        // The project changed or went away: answer as a fresh read would.
        resolve::project(ctx, caller, p).await?;
        return Err(ApiError::conflict(format!(
            "project {p:?} changed meanwhile; try again"
        )));
    }
    let loaded = LoadedService {
        pid,
        project_name: project.project.name,
        meta,
        meta_revision: resp.revision,
        spec,
        spec_revision: resp.revision,
    };
    view(ctx, &loaded).await
}

/// A project's services, by name.
pub async fn list(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    paging: &Paging,
) -> Result<List<ServiceView>> {
    let (offset, limit) = window(paging)?;
    let project = resolve::project(ctx, caller, p).await?;
    let pid = project.project.id.clone();
    let (index, total) = ctx
        .store
        .window(&ctx.keys.service_index_prefix(&pid), offset, limit)
        .await?;
    let ids = ids_of(&index);
    let keys = ids
        .iter()
        .flat_map(|sid| {
            [
                ctx.keys.service_meta(&pid, sid),
                ctx.keys.service_spec(&pid, sid),
            ]
        })
        .collect();
    let records = get_many(ctx, keys).await?;
    let mut items = Vec::with_capacity(ids.len());
    for pair in records.chunks(2) {
        if let [Some(meta), Some(spec)] = pair {
            let loaded = LoadedService::from_records(&pid, &project.project.name, meta, spec)?;
            items.push(view(ctx, &loaded).await?);
        }
    }
    Ok(List { items, total })
}

/// One service.
pub async fn get(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<ServiceView> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    view(ctx, &loaded).await
}

/// A change to a service.
#[derive(Debug, Clone)]
pub enum Change {
    /// The spec replaced.
    Replace(Box<ServiceSpec>),
    /// A JSON merge patch of the spec.
    Patch(serde_json::Value),
    /// The number of replicas.
    Scale(u32),
    /// Replace every replica (a new restart generation).
    Restart,
    /// Stop every replica, keeping the spec.
    Pause,
    /// Run the replicas of a paused service again.
    Resume,
    /// Run this image: a rollback to build number `.1`'s.
    Rollback(String, u64),
    /// Route one more domain to the service.
    AddDomain(String),
    /// Stop routing a domain to the service.
    RemoveDomain(String),
}

impl Change {
    /// What a deploy this change starts is called in its history.
    fn cause(&self) -> String {
        match self {
            Change::Rollback(_, build) => format!("rollback to build #{build}"),
            _ => "spec change".to_owned(),
        }
    }

    /// Applies the change to a copy of the records.
    fn apply(&self, meta: &mut ServiceMeta, spec: &mut ServiceSpec) -> Result<()> {
        match self {
            Change::Replace(new) => *spec = (**new).clone(),
            Change::Patch(patch) => *spec = patched(&*spec, patch)?,
            Change::Scale(replicas) => spec.replicas = *replicas,
            Change::Restart => meta.restart_generation += 1,
            Change::Pause => spec.state = ServiceState::Paused,
            Change::Resume => spec.state = ServiceState::Running,
            Change::Rollback(image, _) => spec.image = Some(image.clone()),
            Change::AddDomain(domain) => {
                if spec.domains.contains(domain) {
                    return Err(ApiError::conflict(format!(
                        "the service already has domain {domain:?}"
                    ))
                    .with_field("domain"));
                }
                spec.domains.push(domain.clone());
            }
            Change::RemoveDomain(domain) => spec.domains.retain(|d| d != domain),
        }
        Ok(())
    }
}

/// Reads, changes and writes a service in a transaction comparing both
/// records; retried on a concurrent change unless `expected` (the caller's
/// `If-Match`) pinned the revision.
pub async fn update(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    expected: Option<i64>,
    change: Change,
) -> Result<ServiceView> {
    let what = format!("service {s:?} in project {p:?}");
    let updated = retry_txn(expected, &what, || async {
        let loaded = resolve::service(ctx, caller, p, s).await?;
        if !matches(expected, loaded.revision()) {
            return Ok(Attempt::Conflict);
        }
        let mut meta = loaded.meta.clone();
        let mut spec = loaded.spec.clone();
        change.apply(&mut meta, &mut spec)?;
        spec.validate()?;
        if spec.image != loaded.spec.image {
            let owner = super::images::Owner {
                pid: &loaded.pid,
                project_name: &loaded.project_name,
                sid: &meta.id,
            };
            super::images::authorize(ctx, &owner, &mut spec).await?;
        }
        super::quotas::check_service(ctx, &loaded.pid, &meta.id, Some(&loaded.spec), &spec).await?;
        meta.record_change(&loaded.spec, &spec, now());
        let pid = &loaded.pid;
        let sid = &meta.id;
        let mut txn = loaded.compares(ctx);
        if spec.name != loaded.spec.name {
            let new_index = ctx.keys.service_index(pid, &spec.name);
            if ctx.store.get(&new_index).await?.is_some() {
                return Err(name_taken(&spec.name, &loaded.project_name));
            }
            txn = txn
                .when(Compare::ModRevision(new_index.clone(), 0))
                .then(Op::delete(ctx.keys.service_index(pid, &loaded.spec.name)))
                .then(Op::put(new_index, sid.clone().into_bytes()));
        }
        let mut txn = txn
            .then(Op::put(ctx.keys.service_meta(pid, sid), encode(&meta)))
            .then(Op::put(ctx.keys.service_spec(pid, sid), encode(&spec)));
        if meta.generation != loaded.meta.generation {
            let deploy = Deploy::start(
                meta.generation,
                spec.image.clone(),
                change.cause(),
                &caller.user.username,
                meta.updated,
            );
            let previous = loaded.meta.generation;
            let (compares, ops) =
                lb_store::deploys::start(&*ctx.store, &ctx.keys, (pid, sid), previous, &deploy)
                    .await?;
            txn = compares.into_iter().fold(txn, Txn::when);
            txn = ops.into_iter().fold(txn, Txn::then);
        }
        let txn = if spec.domains != loaded.spec.domains {
            let owner = owner_of(ctx, pid).await?;
            let claimant = Claimant {
                project: pid,
                service: sid,
                owner: &owner,
            };
            domains::claim(ctx, &claimant, &loaded.spec.domains, &spec.domains, txn).await?
        } else {
            txn
        };
        let resp = ctx.store.txn(txn).await?;
        if !resp.succeeded {
            domains::lost(ctx, sid, &spec.domains).await?;
            return Ok(Attempt::Conflict);
        }
        Ok(Attempt::Done(LoadedService {
            meta,
            spec,
            meta_revision: resp.revision,
            spec_revision: resp.revision,
            ..loaded
        }))
    })
    .await?;
    view(ctx, &updated).await
}

/// The user id of a project's owner.
async fn owner_of(ctx: &Ctx, pid: &str) -> Result<String> {
    let kv = ctx
        .store
        .get(&ctx.keys.project(pid))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project {pid:?} not found")))?;
    Ok(decode::<lb_model::Project>(&kv)?.owner)
}

/// Runs an earlier successful build's image again.
pub async fn rollback(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    expected: Option<i64>,
    build: u64,
) -> Result<ServiceView> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let Some(kv) = ctx
        .store
        .get(&ctx.keys.build(&loaded.pid, &loaded.meta.id, build))
        .await?
    else {
        return Err(
            ApiError::not_found(format!("build {build} of service {s:?} not found"))
                .with_field("build"),
        );
    };
    let image = image_of(&decode(&kv)?).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "build {build} did not succeed: only a successful build can be rolled back to"
        ))
        .with_field("build")
    })?;
    update(ctx, caller, p, s, expected, Change::Rollback(image, build)).await
}

/// The image a successful build made, pinned by digest
/// (`repo@sha256:...`, the tag dropped).
fn image_of(build: &Build) -> Option<String> {
    let (BuildStatus::Succeeded, Some(image), Some(digest)) =
        (&build.status, &build.image, &build.digest)
    else {
        return None;
    };
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(repo, |(r, _)| r);
    Some(format!("{repo}@{digest}"))
}

/// Deletes a service: its records, replicas, builds and index key, in one
/// transaction of prefix deletes; then the nodes' keys of its replicas (see
/// [`cleanup`]).
pub async fn delete(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    expected: Option<i64>,
) -> Result<()> {
    let what = format!("service {s:?} in project {p:?}");
    retry_txn(expected, &what, || async {
        let loaded = resolve::service(ctx, caller, p, s).await?;
        if !matches(expected, loaded.revision()) {
            return Ok(Attempt::Conflict);
        }
        let prefix = ctx.keys.service_prefix(&loaded.pid, &loaded.meta.id);
        let node_keys = node_keys(ctx, &prefix).await?;
        let txn = loaded
            .compares(ctx)
            .then(Op::DeletePrefix(prefix.clone()))
            .then(Op::DeletePrefix(
                ctx.keys.images(&loaded.pid, &loaded.meta.id),
            ))
            .then(Op::delete(
                ctx.keys.service_index(&loaded.pid, &loaded.spec.name),
            ));
        let txn = domains::release_all(ctx, &loaded.meta.id, &loaded.spec.domains, txn).await?;
        if !ctx.store.txn(txn).await?.succeeded {
            return Ok(Attempt::Conflict);
        }
        tracing::info!(service = %loaded.meta.id, "service deleted");
        cleanup(ctx, node_keys).await;
        Ok(Attempt::Done(()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(status: BuildStatus, image: Option<&str>, digest: Option<&str>) -> Build {
        Build {
            number: 1,
            status,
            commit: None,
            image: image.map(str::to_owned),
            digest: digest.map(str::to_owned),
            message: String::new(),
            steps: Vec::new(),
            created: 0,
            finished: None,
            by: String::new(),
            stack: None,
            applied: None,
        }
    }

    #[test]
    fn rollback_images_are_pinned_by_digest() {
        let check = |image: &str, expect: &str| {
            let b = build(BuildStatus::Succeeded, Some(image), Some("sha256:ab"));
            assert_eq!(image_of(&b).as_deref(), Some(expect), "{image}");
        };
        check("reg:5000/p/s:7", "reg:5000/p/s@sha256:ab");
        check("reg:5000/p/s", "reg:5000/p/s@sha256:ab");
        check("reg/p/s@sha256:old", "reg/p/s@sha256:ab");
        assert_eq!(
            image_of(&build(
                BuildStatus::Failed,
                Some("r/p/s:1"),
                Some("sha256:ab")
            )),
            None
        );
        assert_eq!(
            image_of(&build(BuildStatus::Succeeded, Some("r/p/s:1"), None)),
            None
        );
    }
}
