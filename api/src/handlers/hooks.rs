//! Push webhooks: `POST /hooks/{vendor}/{service id}` checks the delivery's
//! signature (constant time, per vendor: [`crate::vendors::signature`]),
//! refuses a delivery id seen before, ignores branches the service does not
//! track, and queues a build of the pushed commit as the service's owner.
//! `GET .../services/{s}/webhook` shows the owner the URL and secret to set
//! up by hand.
//!
//! A delivery finds its service through `/lb/hooks/<sid>`, which the hook
//! controller keeps while the service has `autodeploy` and a git source;
//! without it the answer is 404 and nothing is queued.

use lb_model::{
    repository_of, Allowlist, HookRecord, Project, ServiceSpec, Source, User, Vendor,
    MAX_DELIVERIES,
};
use lb_store::{Compare, Op, Txn};
use serde::Serialize;
use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, StatusCode};

use super::builds::{self, BuildRequest};
use super::{decode, encode, json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::vendors::{push, signature};

/// The answer to a delivery that was accepted.
#[derive(Debug, Serialize)]
pub struct HookResult {
    /// Whether a build was queued.
    pub queued: bool,
    /// What was done, or why nothing was.
    pub message: String,
    /// The queued build's number.
    pub build: Option<u64>,
}

fn accepted(queued: bool, message: impl Into<String>, build: Option<u64>) -> Response {
    json(
        StatusCode::ACCEPTED,
        &HookResult {
            queued,
            message: message.into(),
            build,
        },
    )
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

/// `POST /hooks/{v}/{sid}`.
pub async fn deliver(
    ctx: Ctx,
    v: String,
    sid: String,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response> {
    let vendor = Vendor::parse(&v).ok_or_else(|| {
        ApiError::not_found(format!("no vendor {v:?}: github, gitlab or bitbucket"))
    })?;
    let no_hook = || ApiError::not_found(format!("no webhook for service {sid:?}"));
    if !lb_model::ids::is_id(&sid) {
        return Err(no_hook());
    }
    let key = ctx.keys.hook(&sid);
    let kv = ctx.store.get(&key).await?.ok_or_else(no_hook)?;
    let record: HookRecord = decode(&kv)?;
    let secret = ctx.sealer.webhook_secret(&record.pid, &record.sid);
    if let Err(refused) = signature::verify(vendor, &headers, &body, &secret) {
        tracing::warn!(service = %sid, %vendor, "webhook delivery refused: {refused}");
        return Err(ApiError::unauthorized(refused.to_string()));
    }
    let event = signature::event(vendor, &headers);
    if event == "ping" {
        return Ok(accepted(false, "pong", None));
    }
    let delivery = signature::delivery_id(vendor, &headers).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the delivery has no id header ({})",
            match vendor {
                Vendor::Github => "X-GitHub-Delivery",
                Vendor::Gitlab => "X-Gitlab-Event-UUID",
                Vendor::Bitbucket => "X-Request-UUID",
            }
        ))
    })?;
    remember_delivery(&ctx, &key, vendor, &delivery).await?;
    if event != "push" {
        return Ok(accepted(false, format!("event {event:?} ignored"), None));
    }
    let payload: serde_json::Value = serde_json::from_slice(&body)
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
    if !allowlist(&ctx).await?.allows(&source.url) {
        return Err(ApiError::forbidden(format!(
            "{} is not in the allowlist of repository owners",
            source.url
        )));
    }
    let commit = commit.to_owned();
    let owner = owner_of(&ctx, &pid).await?;
    let reply = builds::create(
        ctx.clone(),
        Caller { user: owner },
        pid,
        sid.clone(),
        BuildRequest {
            commit: Some(commit.clone()),
        },
    )
    .await?;
    let bytes = warp::hyper::body::to_bytes(reply.into_body())
        .await
        .map_err(ApiError::internal)?;
    let number = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|b| b["number"].as_u64());
    tracing::info!(service = %sid, %vendor, %commit, "push webhook queued a build");
    Ok(accepted(true, format!("build of {commit} queued"), number))
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

/// `GET .../services/{s}/webhook`: the URL and secret for a webhook set up
/// by hand (owner and admin only; others get 404).
pub async fn show(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let loaded = super::services::resolve(&ctx, &caller, &p, &s).await?;
    let vendor = loaded.spec.source.as_ref().map(vendor_of);
    let sid = &loaded.meta.id;
    let record = match ctx.store.get(&ctx.keys.hook(sid)).await? {
        Some(kv) => Some(decode::<HookRecord>(&kv)?),
        None => None,
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "url": ctx.config.vendors.hook_url(vendor, sid),
            "secret": ctx.sealer.webhook_secret(&loaded.pid, sid),
            "vendor": vendor,
            "active": record.is_some(),
            "vendor_hook": record.as_ref().and_then(|r| r.vendor_hook_id.as_ref()).is_some(),
            "error": record.and_then(|r| r.error),
        }),
    ))
}
