//! Quotas: the limits an admin sets per user (`GET|PUT /users/{user}/quota`)
//! and the checks the other operations call before a write that would make
//! a user hold more (a project, a service, replicas or memory, a queued
//! build). A limit passed is 403 with `field` naming it; a user without a
//! quota record is unlimited.
//!
//! The checks read what the user holds from the cache and then write; two
//! requests of one user at the same moment may both pass the last unit of
//! a limit (the limits bound abuse, they are not accounting).

use lb_model::ids::is_id;
use lb_model::{Exceeded, Limit, Project, Quota, ServiceSpec, User};
use lb_store::StoreExt;
use serde::Serialize;

use super::{get_many, ids_of};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};

/// What a user holds, counted as the limits count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Projects owned.
    pub projects: u64,
    /// Services in them.
    pub services: u64,
    /// Replicas those services ask for.
    pub replicas: u64,
    /// MiB: replicas × memory, summed.
    pub memory: u64,
    /// Builds in the queue.
    pub queued_builds: u64,
    /// Bytes of registry blobs in the user's repositories.
    pub registry_bytes: u64,
}

/// A user's quota as answered: the limits and what the user holds.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaView {
    /// User id.
    pub user: String,
    /// User name.
    pub username: String,
    /// The limits (`null`: unlimited).
    pub quota: Quota,
    /// What the user holds now.
    pub usage: Usage,
}

/// The 403 for a limit passed: `field` names the limit.
pub fn exceeded(e: &Exceeded) -> ApiError {
    ApiError::forbidden(e.to_string()).with_field(e.limit.name())
}

fn admin(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin may see or set quotas"))
    }
}

/// A user by id or name.
async fn find(ctx: &Ctx, user: &str) -> Result<User> {
    let not_found = || ApiError::not_found(format!("user {user:?} not found"));
    let uid = if is_id(user) {
        user.to_owned()
    } else {
        let kv = ctx
            .store
            .get(&ctx.keys.user_index(user))
            .await?
            .ok_or_else(not_found)?;
        String::from_utf8_lossy(&kv.value).into_owned()
    };
    let kv = ctx
        .store
        .get(&ctx.keys.user(&uid))
        .await?
        .ok_or_else(not_found)?;
    decode(&kv)
}

/// A user's quota (the default, unlimited, when none was set).
pub async fn load(ctx: &Ctx, uid: &str) -> Result<Quota> {
    match ctx.store.get(&ctx.keys.quota(uid)).await? {
        Some(kv) => decode(&kv),
        None => Ok(Quota::default()),
    }
}

/// `GET /users/{user}/quota` (admin).
pub async fn get(ctx: &Ctx, caller: &Caller, user: &str) -> Result<QuotaView> {
    admin(caller)?;
    let user = find(ctx, user).await?;
    let quota = load(ctx, &user.id).await?;
    view(ctx, user, quota).await
}

/// `PUT /users/{user}/quota` (admin): replaces the user's limits. Lowering
/// a limit below what the user holds refuses only what would add more.
pub async fn put(ctx: &Ctx, caller: &Caller, user: &str, quota: Quota) -> Result<QuotaView> {
    admin(caller)?;
    quota.validate()?;
    let user = find(ctx, user).await?;
    ctx.store
        .put(&ctx.keys.quota(&user.id), encode(&quota))
        .await?;
    tracing::info!(user = %user.username, by = %caller.user.username, ?quota, "quota set");
    view(ctx, user, quota).await
}

async fn view(ctx: &Ctx, user: User, quota: Quota) -> Result<QuotaView> {
    let usage = usage(ctx, &user.id).await?;
    Ok(QuotaView {
        user: user.id,
        username: user.username,
        quota,
        usage,
    })
}

/// The ids of the user's projects.
async fn projects_of(ctx: &Ctx, uid: &str) -> Result<Vec<String>> {
    let (index, _) = ctx.store.list(&ctx.keys.project_index_prefix(uid)).await?;
    Ok(ids_of(&index))
}

/// The specs of the services in `pids`, with their ids.
async fn services_of(ctx: &Ctx, pids: &[String]) -> Result<Vec<(String, ServiceSpec)>> {
    let mut keys = Vec::new();
    let mut sids = Vec::new();
    for pid in pids {
        let (index, _) = ctx.store.list(&ctx.keys.service_index_prefix(pid)).await?;
        for sid in ids_of(&index) {
            keys.push(ctx.keys.service_spec(pid, &sid));
            sids.push(sid);
        }
    }
    let mut out = Vec::with_capacity(sids.len());
    for (sid, kv) in sids.into_iter().zip(get_many(ctx, keys).await?) {
        if let Some(kv) = kv {
            out.push((sid, decode::<ServiceSpec>(&kv)?));
        }
    }
    Ok(out)
}

/// Services, replicas and memory of `specs`.
fn add_services<'a>(usage: &mut Usage, specs: impl Iterator<Item = &'a ServiceSpec>) {
    for spec in specs {
        usage.services += 1;
        usage.replicas += u64::from(spec.replicas);
        usage.memory += u64::from(spec.replicas) * spec.memory;
    }
}

/// Builds of `pids` in the queue.
async fn queued_of(ctx: &Ctx, pids: &[String]) -> Result<u64> {
    let (queued, _) = ctx.store.list(&ctx.keys.build_queue()).await?;
    Ok(queued
        .iter()
        .filter(|kv| {
            let name = kv.key.rsplit('/').next().unwrap_or_default();
            let pid = name.split('.').next().unwrap_or_default();
            pids.iter().any(|p| p == pid)
        })
        .count() as u64)
}

/// Bytes of registry blobs in `pids`' repositories (a blob in two
/// repositories counts twice: each can be pulled on its own).
async fn registry_bytes_of(ctx: &Ctx, pids: &[String]) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Blob {
        size: u64,
    }
    let mut total = 0;
    for pid in pids {
        let (kvs, _) = ctx.store.list(&ctx.keys.project_images(pid)).await?;
        total += kvs
            .iter()
            .filter(|kv| kv.key.contains("/blobs/"))
            .filter_map(|kv| serde_json::from_slice::<Blob>(&kv.value).ok())
            .map(|b| b.size)
            .sum::<u64>();
    }
    Ok(total)
}

/// What `uid` holds.
pub async fn usage(ctx: &Ctx, uid: &str) -> Result<Usage> {
    let pids = projects_of(ctx, uid).await?;
    let mut usage = Usage {
        projects: pids.len() as u64,
        ..Usage::default()
    };
    let services = services_of(ctx, &pids).await?;
    add_services(&mut usage, services.iter().map(|(_, s)| s));
    usage.queued_builds = queued_of(ctx, &pids).await?;
    usage.registry_bytes = registry_bytes_of(ctx, &pids).await?;
    Ok(usage)
}

/// Before `owner` creates a project.
pub async fn check_project(ctx: &Ctx, owner: &str) -> Result<()> {
    let quota = load(ctx, owner).await?;
    if quota.projects.is_none() {
        return Ok(());
    }
    let (_, total) = ctx
        .store
        .window(&ctx.keys.project_index_prefix(owner), 0, 1)
        .await?;
    quota
        .check(Limit::Projects, total as u64 + 1)
        .map_err(|e| exceeded(&e))
}

/// Before a service of project `pid` is created (`old` is `None`) or
/// changed from `old` to `new`. Only what grows is checked, so a user over
/// a lowered limit can still shrink or change other fields.
pub async fn check_service(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    old: Option<&ServiceSpec>,
    new: &ServiceSpec,
) -> Result<()> {
    let grows = match old {
        None => true,
        Some(old) => {
            new.replicas > old.replicas
                || u64::from(new.replicas) * new.memory > u64::from(old.replicas) * old.memory
        }
    };
    if !grows {
        return Ok(());
    }
    let owner = owner_of(ctx, pid).await?;
    let quota = load(ctx, &owner).await?;
    if quota.services.is_none() && quota.replicas.is_none() && quota.memory.is_none() {
        return Ok(());
    }
    let pids = projects_of(ctx, &owner).await?;
    let services = services_of(ctx, &pids).await?;
    let mut after = Usage::default();
    add_services(
        &mut after,
        services
            .iter()
            .filter(|(s, _)| s != sid)
            .map(|(_, s)| s)
            .chain(std::iter::once(new)),
    );
    let check = |limit: Limit, wanted: u64| quota.check(limit, wanted).map_err(|e| exceeded(&e));
    if old.is_none() {
        check(Limit::Services, after.services)?;
    }
    if old.is_none_or(|o| new.replicas > o.replicas) {
        check(Limit::Replicas, after.replicas)?;
    }
    check(Limit::Memory, after.memory)
}

/// Before a build of a service of project `pid` is queued; answers the
/// owner's id (the queue entry carries it, for the builder's round-robin).
pub async fn check_build(ctx: &Ctx, pid: &str) -> Result<String> {
    let owner = owner_of(ctx, pid).await?;
    let quota = load(ctx, &owner).await?;
    if quota.queued_builds.is_some() {
        let pids = projects_of(ctx, &owner).await?;
        let queued = queued_of(ctx, &pids).await?;
        quota
            .check(Limit::QueuedBuilds, queued + 1)
            .map_err(|e| exceeded(&e))?;
    }
    Ok(owner)
}

async fn owner_of(ctx: &Ctx, pid: &str) -> Result<String> {
    let kv = ctx
        .store
        .get(&ctx.keys.project(pid))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project {pid:?} not found")))?;
    Ok(decode::<Project>(&kv)?.owner)
}
