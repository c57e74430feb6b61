//! Push webhooks: a delivery checked (signature in constant time, per vendor:
//! [`crate::vendors::signature`]; a delivery id seen before refused),
//! branches the service does not track ignored, and a build of the pushed
//! commit queued as the service's owner. Also the allowlist of repository
//! owners, and what the owner sees to set a webhook up by hand.
//!
//! A delivery finds its service through `/lb/hooks/<sid>`, which the hook
//! controller keeps while the service has `autodeploy` and a git source;
//! without it the answer is 404 and nothing is queued.

use lb_model::{
    repository_of, Allowlist, HookRecord, Project, ServiceSpec, Source, User, Vendor,
    MAX_DELIVERIES,
};
use lb_store::{Compare, Op, StoreExt, Txn};
use serde::Serialize;
use sha2::{Digest, Sha256};
use warp::http::HeaderMap;

use super::resolve;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::vendors::{push, signature};

/// What was done with a delivery that was accepted.
#[derive(Debug, Serialize)]
pub struct HookResult {
    /// Whether a build was queued.
    pub queued: bool,
    /// What was done, or why nothing was.
    pub message: String,
    /// The queued build's number.
    pub build: Option<u64>,
}

fn accepted(queued: bool, message: impl Into<String>, build: Option<u64>) -> HookResult {
    HookResult {
        queued,
        message: message.into(),
        build,
    }
}

/// The vendor whose webhook format a source's deliveries use: the linked
/// vendor, else guessed from the host (GitHub's format otherwise, which
/// Gitea and Forgejo also send).
pub fn vendor_of(source: &Source) -> Vendor {
    if let Some(v) = source.vendor.as_deref().and_then(Vendor::parse) {
        return v;
    }
    let host = repository_of(&source.url)
        .map(|(h, _)| h)
        .unwrap_or_default();
    if host.contains("gitlab") {
        Vendor::Gitlab
    } else if host.contains("bitbucket") {
        Vendor::Bitbucket
    } else {
        Vendor::Github
    }
}

/// The allowlist in force (empty: any repository).
pub async fn allowlist(ctx: &Ctx) -> Result<Allowlist> {
    match ctx.store.get(&ctx.keys.allowlist()).await? {
        Some(kv) => decode(&kv),
        None => Ok(Allowlist::default()),
    }
}

fn admin(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only an admin may see or change the allowlist",
        ))
    }
}

/// The allowlist, for an admin.
pub async fn allowlist_get(ctx: &Ctx, caller: &Caller) -> Result<Allowlist> {
    admin(caller)?;
    allowlist(ctx).await
}

/// Replaces the allowlist (admin); an empty list allows any owner.
pub async fn allowlist_put(ctx: &Ctx, caller: &Caller, list: Allowlist) -> Result<Allowlist> {
    admin(caller)?;
    list.validate()?;
    ctx.store.put(&ctx.keys.allowlist(), encode(&list)).await?;
    tracing::info!(entries = list.owners.len(), by = %caller.user.username, "allowlist replaced");
    Ok(list)
}

/// Handles a delivery to `/hooks/{v}/{sid}`: checks it and queues a build
/// of the pushed commit when the tracked branch moved.
pub async fn deliver(
    ctx: &Ctx,
    v: &str,
    sid: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HookResult> {
    let vendor = Vendor::parse(v).ok_or_else(|| {
        ApiError::not_found(format!("no vendor {v:?}: github, gitlab or bitbucket"))
    })?;
    let no_hook = || ApiError::not_found(format!("no webhook for service {sid:?}"));
    if !lb_model::ids::is_id(sid) {
        return Err(no_hook());
    }
    let key = ctx.keys.hook(sid);
    let kv = ctx.store.get(&key).await?.ok_or_else(no_hook)?;
    let record: HookRecord = decode(&kv)?;
    let secret = ctx.sealer.webhook_secret(&record.pid, &record.sid);
    if let Err(refused) = signature::verify(vendor, headers, body, &secret) {
        tracing::warn!(service = %sid, %vendor, "webhook delivery refused: {refused}");
        return Err(ApiError::unauthorized(refused.to_string()));
    }
    let event = signature::event(vendor, headers);
    if event == "ping" {
        return Ok(accepted(false, "pong", None));
    }
    let delivery = signature::delivery_id(vendor, headers).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the delivery has no id header ({})",
            signature::delivery_header(vendor)
        ))
    })?;
    remember_delivery(ctx, &key, vendor, &delivery).await?;
    if event != "push" {
        return Ok(accepted(false, format!("event {event:?} ignored"), None));
    }
    let payload: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the delivery is not JSON: {e}")))?;
    let pushes = push::parse(vendor, &payload)
        .ok_or_else(|| ApiError::bad_request("the delivery is not a push event"))?;
    let (pid, sid) = (record.pid.clone(), record.sid.clone());
    let Some(spec_kv) = ctx.store.get(&ctx.keys.service_spec(&pid, &sid)).await? else {
        return Err(no_hook());
    };
    let spec: ServiceSpec = decode(&spec_kv)?;
    let Some(source) = spec.source.as_ref().filter(|_| spec.autodeploy) else {
        return Ok(accepted(false, "autodeploy is off", None));
    };
    let Some(commit) = pushes.commit_of(source.branch.as_deref()) else {
        let tracked = source.branch.as_deref().unwrap_or("the default branch");
        return Ok(accepted(
            false,
            format!("no push to {tracked}: ignored"),
            None,
        ));
    };
    if !allowlist(ctx).await?.allows(&source.url) {
        return Err(ApiError::forbidden(format!(
            "{} is not in the allowlist of repository owners",
            source.url
        )));
    }
    let commit = commit.to_owned();
    let owner = Caller {
        user: owner_of(ctx, &pid).await?,
    };
    let by = format!("webhook ({vendor} push)");
    let build = super::builds::create(ctx, &owner, (&pid, &sid), Some(commit.clone()), &by).await?;
    tracing::info!(service = %sid, %vendor, %commit, "push webhook queued a build");
    Ok(accepted(
        true,
        format!("build of {commit} queued"),
        Some(build.number),
    ))
}

/// The user who owns a project (builds are queued as them).
pub async fn owner_of(ctx: &Ctx, pid: &str) -> Result<User> {
    let gone = || ApiError::not_found("the service's project is gone");
    let project: Project = decode(
        &ctx.store
            .get(&ctx.keys.project(pid))
            .await?
            .ok_or_else(gone)?,
    )?;
    decode(
        &ctx.store
            .get(&ctx.keys.user(&project.owner))
            .await?
            .ok_or_else(gone)?,
    )
}

/// Records a delivery id in the hook record; one seen before is a replay
/// (409). The record keeps the newest [`MAX_DELIVERIES`] ids, hashed.
async fn remember_delivery(ctx: &Ctx, key: &str, vendor: Vendor, delivery: &str) -> Result<()> {
    let id: String = Sha256::digest(format!("{vendor}:{delivery}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for _ in 0..20 {
        let Some(kv) = ctx.store.get(key).await? else {
            return Err(ApiError::not_found("the webhook was removed"));
        };
        let mut record: HookRecord = decode(&kv)?;
        if record.deliveries.contains(&id) {
            return Err(ApiError::conflict(format!(
                "delivery {delivery:?} was seen before: a replay is refused"
            )));
        }
        record.deliveries.push(id.clone());
        if record.deliveries.len() > MAX_DELIVERIES {
            let excess = record.deliveries.len() - MAX_DELIVERIES;
            record.deliveries.drain(..excess);
        }
        let txn = Txn::new()
            .when(Compare::ModRevision(key.to_owned(), kv.mod_revision))
            .then(Op::put(key.to_owned(), encode(&record)));
        if ctx.store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Err(ApiError::conflict("too many deliveries at once: try again"))
}

/// What the owner needs to set a webhook up by hand.
#[derive(Debug, Serialize)]
pub struct WebhookInfo {
    /// The delivery URL.
    pub url: String,
    /// The secret deliveries are signed with.
    pub secret: String,
    /// The vendor whose format deliveries use.
    pub vendor: Option<Vendor>,
    /// Whether deliveries are let in (the service has a hook record).
    pub active: bool,
    /// Whether lb created the webhook on the vendor.
    pub vendor_hook: bool,
    /// Why lb could not create it, if it could not.
    pub error: Option<String>,
}

/// The URL and secret for a webhook set up by hand (owner and admin only;
/// others get 404).
pub async fn show(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<WebhookInfo> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let vendor = loaded.spec.source.as_ref().map(vendor_of);
    let sid = &loaded.meta.id;
    let record = match ctx.store.get(&ctx.keys.hook(sid)).await? {
        Some(kv) => Some(decode::<HookRecord>(&kv)?),
        None => None,
    };
    Ok(WebhookInfo {
        url: ctx.config.vendors.hook_url(vendor, sid),
        secret: ctx.sealer.webhook_secret(&loaded.pid, sid),
        vendor,
        active: record.is_some(),
        vendor_hook: record
            .as_ref()
            .and_then(|r| r.vendor_hook_id.as_ref())
            .is_some(),
        error: record.and_then(|r| r.error),
    })
}
