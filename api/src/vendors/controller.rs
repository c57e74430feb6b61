//! The hook controller, run by every API server: level-triggered passes
//! that make `/lb/hooks/<sid>` match the services. A full pass (every
//! service's spec read) runs when a spec or hook record changes and once a
//! minute; in between, a light pass every 2 s reads only the hook records
//! and their services, for retries and polling. With no hooks an idle
//! server does next to nothing, however many services it holds.
//!
//! - A service with `autodeploy` and a git source gets a hook record (which
//!   lets deliveries in). If its source names a linked vendor and the
//!   owner has linked that vendor, a push webhook with the service's secret
//!   is created on the repository with the owner's token; failures are kept
//!   on the record (shown by `GET .../webhook`) and the creation is tried
//!   again every 10 s (so linking the vendor later is enough).
//! - A record whose service is gone, or lost `autodeploy` or its source, is
//!   removed, with the vendor's webhook lb created.
//! - With `--poll-interval`, a service whose source names no vendor has its
//!   branch head read (`git ls-remote`) every interval; a new head queues a
//!   build of it.
//! - Vendor tokens expiring within 10 minutes are refreshed, so a builder
//!   (which cannot refresh) always finds a valid one.
//!
//! Several API servers may run passes at once: record writes compare
//! revisions, but two could create a vendor webhook each (the second is
//! then left behind on the vendor).

use std::time::Duration;

use lb_model::{repository_of, HookRecord, ServiceSpec, Vendor, VendorLink};
use lb_store::{Compare, Op, StoreExt, Txn};

use super::client::Api;
use crate::accounts::now;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::json::{decode, encode};
use crate::ops::builds;
use crate::ops::hooks::{allowlist, owner_of};
use crate::ops::links::{token_for, token_within};

/// How often a light pass runs (retries and polls of existing hooks).
pub const PERIOD: Duration = Duration::from_secs(2);
/// How often a full pass runs without a change (and tokens are refreshed).
pub const RESYNC: Duration = Duration::from_secs(60);
/// How often a vendor webhook that could not be created is tried again.
pub const RETRY_SECS: i64 = 10;

/// Runs passes until the process ends.
pub async fn run(ctx: Ctx) {
    let mut full = true;
    // The newest change seen: a full pass must read at least this revision.
    let mut seen = 0;
    let mut changes = None;
    let mut light = tokio::time::interval(PERIOD);
    light.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if changes.is_none() {
            // Watch from now: the full pass that follows reads the rest.
            match ctx.store.revision().await {
                Ok(revision) => {
                    changes = ctx.store.watch(&ctx.keys.all(), revision + 1).await.ok();
                }
                Err(e) => tracing::warn!("hook controller cannot watch: {e}"),
            }
            full = true;
        }
        match pass(&ctx, full).await {
            // The cache the pass read lagged behind the change that asked
            // for it: read again in a moment, or the change is missed.
            Ok(read) if full && read < seen => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("hook controller pass failed: {e}"),
        }
        full = false;
        let next = async {
            match changes.as_mut() {
                Some(c) => futures::StreamExt::next(c).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = light.tick() => {}
            _ = resync.tick() => {
                full = true;
                if let Err(e) = refresh_tokens(&ctx).await {
                    tracing::warn!("token refresh failed: {e}");
                }
            }
            change = next => match change {
                Some(Ok(c)) => {
                    seen = seen.max(c.revision);
                    full = c.events.iter().any(|e| relevant(&ctx, e.key()));
                    // Everything already queued joins this pass: a burst of
                    // changes (a thousand services created) is one pass, not
                    // one pass each.
                    while let Some(Some(Ok(c))) = changes
                        .as_mut()
                        .and_then(|c| futures::FutureExt::now_or_never(futures::StreamExt::next(c)))
                    {
                        seen = seen.max(c.revision);
                        full |= c.events.iter().any(|e| relevant(&ctx, e.key()));
                    }
                }
                _ => {
                    changes = None;
                    tokio::time::sleep(PERIOD).await;
                }
            },
        }
    }
}

/// Whether a change can alter which hooks are wanted.
fn relevant(ctx: &Ctx, key: &str) -> bool {
    key.starts_with(&ctx.keys.hooks())
        || matches!(
            ctx.keys.parse(key),
            Some(
                lb_model::keys::Parsed::ServiceSpec { .. }
                    | lb_model::keys::Parsed::ServiceMeta { .. }
            )
        )
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One pass: `full` reads every service's spec; otherwise only the
/// services that have a hook record (new ones come with a change, which
/// asks for a full pass). Answers the revision a full pass read at.
pub async fn pass(ctx: &Ctx, full: bool) -> Result<i64, Error> {
    if !full {
        light_pass(ctx).await?;
        return Ok(0);
    }
    // Services: the name index gives (pid, sid) without reading their logs.
    let (index, read) = ctx.store.list(&ctx.keys.service_index_all()).await?;
    let mut wanted = std::collections::HashMap::new();
    for kv in &index {
        let Some(pid) = kv
            .key
            .strip_prefix(&ctx.keys.service_index_all())
            .and_then(|rest| rest.split('/').next())
        else {
            continue;
        };
        let sid = String::from_utf8_lossy(&kv.value).into_owned();
        let Some(spec_kv) = ctx.store.get(&ctx.keys.service_spec(pid, &sid)).await? else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<ServiceSpec>(&spec_kv.value) else {
            continue;
        };
        if spec.autodeploy && spec.source.is_some() {
            wanted.insert(sid.clone(), (pid.to_owned(), spec));
        }
    }
    reconcile(ctx, wanted).await?;
    Ok(read)
}

/// Retries and polls of the hooks that exist.
async fn light_pass(ctx: &Ctx) -> Result<(), Error> {
    let (records, _) = ctx.store.list(&ctx.keys.hooks()).await?;
    let mut wanted = std::collections::HashMap::new();
    for kv in records {
        let Ok(record) = serde_json::from_slice::<HookRecord>(&kv.value) else {
            continue;
        };
        let Some(spec_kv) = ctx
            .store
            .get(&ctx.keys.service_spec(&record.pid, &record.sid))
            .await?
        else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<ServiceSpec>(&spec_kv.value) else {
            continue;
        };
        if spec.autodeploy && spec.source.is_some() {
            wanted.insert(record.sid.clone(), (record.pid.clone(), spec));
        }
    }
    reconcile(ctx, wanted).await
}

/// Makes the hook records match `wanted` (service id → project id, spec).
async fn reconcile(
    ctx: &Ctx,
    wanted: std::collections::HashMap<String, (String, ServiceSpec)>,
) -> Result<(), Error> {
    let (records, _) = ctx.store.list(&ctx.keys.hooks()).await?;
    let mut have = std::collections::HashMap::new();
    for kv in records {
        let Ok(record) = serde_json::from_slice::<HookRecord>(&kv.value) else {
            continue;
        };
        have.insert(record.sid.clone(), (record, kv.mod_revision));
    }
    for (sid, (record, revision)) in &have {
        let keep = wanted
            .get(sid)
            .is_some_and(|(pid, spec)| *pid == record.pid && same_source(record, spec));
        if !keep {
            remove(ctx, record, *revision).await;
        }
    }
    for (sid, (pid, spec)) in &wanted {
        match have.get(sid) {
            Some((record, revision)) if same_source(record, spec) => {
                if !retry(ctx, record, *revision).await {
                    poll(ctx, record, *revision, spec).await;
                }
            }
            _ => create(ctx, pid, sid, spec).await,
        }
    }
    Ok(())
}

/// Whether a record was made for this source (vendor and repository).
fn same_source(record: &HookRecord, spec: &ServiceSpec) -> bool {
    let Some(source) = &spec.source else {
        return false;
    };
    record.repository == repository_of(&source.url).map(|(_, path)| path)
        && record.vendor == linked_vendor(spec)
}

fn linked_vendor(spec: &ServiceSpec) -> Option<Vendor> {
    spec.source
        .as_ref()
        .and_then(|s| s.vendor.as_deref())
        .and_then(Vendor::parse)
}

/// Registers a service's hook: lb's record first, so that a delivery the
/// vendor sends as soon as its webhook exists (GitHub pings at once) finds
/// it, then the vendor's webhook, whose id is added to the record.
async fn create(ctx: &Ctx, pid: &str, sid: &str, spec: &ServiceSpec) {
    let Some(source) = &spec.source else { return };
    let vendor = linked_vendor(spec);
    let repository = repository_of(&source.url).map(|(_, path)| path);
    let record = HookRecord {
        pid: pid.to_owned(),
        sid: sid.to_owned(),
        vendor,
        repository: repository.clone(),
        vendor_hook_id: None,
        created_by: None,
        error: None,
        attempted: Some(now()),
        polled_head: None,
        polled: None,
        deliveries: Vec::new(),
    };
    let key = ctx.keys.hook(sid);
    // Replace any record of an older source (its vendor hook is removed by
    // the next pass only if it is still there: remove it now).
    if let Ok(Some(kv)) = ctx.store.get(&key).await {
        if let Ok(old) = decode::<HookRecord>(&kv) {
            remove(ctx, &old, kv.mod_revision).await;
        }
    }
    match ctx.store.create(&key, encode(&record)).await {
        Ok(Some(_)) => {}
        // Another server registered it first, or the store is away: the
        // next pass looks again.
        Ok(None) | Err(_) => return,
    }
    let (Some(vendor), Some(repo)) = (vendor, &repository) else {
        tracing::info!(service = %sid, "webhook registered (no linked vendor)");
        return;
    };
    let made = create_on_vendor(ctx, pid, sid, vendor, repo).await;
    if !attach(ctx, &record, made).await {
        tracing::warn!(service = %sid, %vendor, "webhook record changed while its vendor webhook was made");
    }
}

/// Writes the outcome of creating a vendor webhook into the record it was
/// made for, keeping deliveries recorded meanwhile; answers whether it did.
/// A webhook made for a record that is gone or replaced is removed again.
async fn attach(ctx: &Ctx, made_for: &HookRecord, made: Result<(String, String), String>) -> bool {
    let key = ctx.keys.hook(&made_for.sid);
    for _ in 0..5 {
        let current = match ctx.store.get(&key).await {
            Ok(Some(kv)) => decode::<HookRecord>(&kv).ok().map(|r| (r, kv.mod_revision)),
            Ok(None) => None,
            Err(_) => continue,
        };
        let Some((mut record, revision)) = current.filter(|(r, _)| {
            r.pid == made_for.pid
                && r.vendor == made_for.vendor
                && r.repository == made_for.repository
                && r.vendor_hook_id.is_none()
        }) else {
            break;
        };
        record.attempted = Some(now());
        match &made {
            Ok((uid, id)) => {
                record.vendor_hook_id = Some(id.clone());
                record.created_by = Some(uid.clone());
                record.error = None;
            }
            Err(e) => record.error = Some(e.clone()),
        }
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), revision))
            .then(Op::put(key.clone(), encode(&record)));
        if let Ok(r) = ctx.store.txn(txn).await {
            if r.succeeded {
                if record.vendor_hook_id.is_some() {
                    tracing::info!(service = %record.sid, vendor = ?record.vendor, "webhook registered");
                }
                return true;
            }
        }
    }
    if let Ok((uid, id)) = made {
        let mut orphan = made_for.clone();
        orphan.vendor_hook_id = Some(id);
        orphan.created_by = Some(uid);
        remove_on_vendor(ctx, &orphan).await;
    }
    false
}

/// Tries again, every [`RETRY_SECS`], to create a vendor webhook that could not
/// be created (the owner had not linked the vendor yet, the vendor was
/// down); answers whether it wrote the record.
async fn retry(ctx: &Ctx, record: &HookRecord, revision: i64) -> bool {
    let (Some(vendor), Some(repo)) = (record.vendor, &record.repository) else {
        return false;
    };
    if record.vendor_hook_id.is_some() || record.attempted.is_some_and(|t| now() - t < RETRY_SECS) {
        return false;
    }
    // Claim the attempt first, so that two servers do not both try.
    let mut claimed = record.clone();
    claimed.attempted = Some(now());
    let key = ctx.keys.hook(&record.sid);
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), revision))
        .then(Op::put(key, encode(&claimed)));
    match ctx.store.txn(txn).await {
        Ok(r) if r.succeeded => {}
        _ => return true,
    }
    let made = create_on_vendor(ctx, &record.pid, &record.sid, vendor, repo).await;
    let created = made.is_ok();
    if attach(ctx, record, made).await && created {
        tracing::info!(service = %record.sid, %vendor, "webhook created on retry");
    }
    true
}

async fn create_on_vendor(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    vendor: Vendor,
    repo: &str,
) -> Result<(String, String), String> {
    let owner = owner_of(ctx, pid).await.map_err(|e| e.message)?;
    let config = ctx
        .config
        .vendors
        .get(vendor)
        .ok_or_else(|| format!("{vendor} is not configured on this server"))?;
    let (_, token) = token_for(ctx, &owner.id, vendor)
        .await
        .map_err(|e| e.message)?;
    let url = ctx.config.vendors.hook_url(Some(vendor), sid);
    let secret = ctx.sealer.webhook_secret(pid, sid);
    let id = Api::new(&ctx.http, vendor, config, &token)
        .create_hook(repo, &url, &secret)
        .await
        .map_err(|e| e.to_string())?;
    Ok((owner.id, id))
}

async fn remove_on_vendor(ctx: &Ctx, record: &HookRecord) -> bool {
    let (Some(vendor), Some(repo), Some(id), Some(uid)) = (
        record.vendor,
        &record.repository,
        &record.vendor_hook_id,
        &record.created_by,
    ) else {
        return true;
    };
    let Some(config) = ctx.config.vendors.get(vendor) else {
        return true;
    };
    let token = match token_for(ctx, uid, vendor).await {
        Ok((_, token)) => token,
        // Unlinked: lb can no longer reach the hook.
        Err(_) => return true,
    };
    match Api::new(&ctx.http, vendor, config, &token)
        .delete_hook(repo, id)
        .await
    {
        Ok(()) => true,
        Err(super::client::Error::Unavailable { message, .. }) => {
            tracing::warn!(service = %record.sid, "webhook removal failed, will retry: {message}");
            false
        }
        Err(e) => {
            tracing::warn!(service = %record.sid, "webhook removal refused: {e}");
            true
        }
    }
}

async fn remove(ctx: &Ctx, record: &HookRecord, revision: i64) {
    if !remove_on_vendor(ctx, record).await {
        return;
    }
    let key = ctx.keys.hook(&record.sid);
    if let Ok(true) = ctx.store.delete_if(&key, revision).await {
        tracing::info!(service = %record.sid, "webhook removed");
    }
}

/// Polls a plain git URL's branch head when the interval has passed.
async fn poll(ctx: &Ctx, record: &HookRecord, revision: i64, spec: &ServiceSpec) {
    let Some(interval) = ctx.config.vendors.poll_interval else {
        return;
    };
    let Some(source) = &spec.source else { return };
    if record.vendor.is_some() {
        return;
    }
    let at = now();
    if record
        .polled
        .is_some_and(|t| at - t < interval.as_secs() as i64)
    {
        return;
    }
    let head = match ls_remote(&source.url, source.branch.as_deref()).await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(service = %record.sid, "polling {}: {e}", source.url);
            None
        }
    };
    let mut updated = record.clone();
    updated.polled = Some(at);
    let changed = head.is_some() && record.polled_head.is_some() && head != record.polled_head;
    if head.is_some() {
        updated.polled_head = head.clone();
    }
    let key = ctx.keys.hook(&record.sid);
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), revision))
        .then(Op::put(key, encode(&updated)));
    match ctx.store.txn(txn).await {
        Ok(r) if r.succeeded => {}
        _ => return,
    }
    if !changed {
        return;
    }
    let Some(commit) = head else { return };
    if !allowlist(ctx).await.unwrap_or_default().allows(&source.url) {
        tracing::warn!(service = %record.sid, "{} is not in the allowlist: not built", source.url);
        return;
    }
    let Ok(owner) = owner_of(ctx, &record.pid).await else {
        return;
    };
    let owner = Caller { user: owner };
    let service = (record.pid.as_str(), record.sid.as_str());
    match builds::create(ctx, &owner, service, Some(commit.clone()), "poll").await {
        Ok(_) => tracing::info!(service = %record.sid, %commit, "branch moved: build queued"),
        Err(e) => tracing::warn!(
            service = %record.sid,
            "polling could not queue a build: {}",
            e.message
        ),
    }
}

/// The head commit of `branch` (or `HEAD`) at `url`, by `git ls-remote`
/// through lb-git (network URLs only, no prompts), 30 s at most.
async fn ls_remote(url: &str, branch: Option<&str>) -> Result<Option<String>, String> {
    lb_git::Git::new(Duration::from_secs(30))
        .ls_remote(url, branch)
        .await
        .map_err(|e| format!("git ls-remote: {e}"))
}

/// Refreshes vendor tokens that expire within 10 minutes.
async fn refresh_tokens(ctx: &Ctx) -> Result<(), Error> {
    let (kvs, _) = ctx.store.list(&ctx.keys.users()).await?;
    let soon = now() + 600;
    for kv in kvs {
        let Some((before, vendor)) = kv.key.rsplit_once("/vendors/") else {
            continue;
        };
        let Some(uid) = before.rsplit('/').next() else {
            continue;
        };
        let Ok(link) = serde_json::from_slice::<VendorLink>(&kv.value) else {
            continue;
        };
        if link.refresh_token.is_none() || link.expires.is_none_or(|e| e > soon) {
            continue;
        }
        let Some(vendor) = Vendor::parse(vendor) else {
            continue;
        };
        if ctx.config.vendors.get(vendor).is_none() {
            continue;
        }
        if let Err(e) = token_within(ctx, uid, vendor, 600).await {
            tracing::warn!(user = %uid, %vendor, "token refresh failed: {}", e.message);
        }
    }
    Ok(())
}
