//! The stack controller, run by every API server: applies each succeeded
//! build of a stack (a service whose source names a compose file, see
//! [`lb_model::stack`]) to the stack's project, then builds the services it
//! names that come from the same repository, at the stack build's commit.
//!
//! - It sleeps on a watch of the projects' keys and acts on a build record
//!   that turns `succeeded` with the file read (`stack`) and no `applied`;
//!   a scan at start and every [`RESYNC`] finds the newest such build of
//!   each stack (missed while no API server ran, or claimed by a server
//!   that died mid-apply more than [`STALE_SECS`] ago).
//! - A build is claimed by writing `applied` (`started`, no `finished`)
//!   compared with the record's revision: of several API servers, one
//!   applies it.
//! - The file is applied as the project's owner through
//!   [`ops::apply::apply`] (prune only with `source.prune`, never deleting
//!   the stack itself); a compose file without `x-lb.source` builds
//!   `build: .` from the stack's own repository. A build older than the
//!   stack's newest succeeded one is not applied (`superseded`).
//! - The outcome (the changes made, the builds started, or the error) is
//!   written to the build record's `applied` and appended to its log.

use std::time::Duration;

use futures::StreamExt;
use lb_model::apply::DocService;
use lb_model::keys::Parsed;
use lb_model::stack::{document, is_stack, same_repository};
use lb_model::{now, Build, BuildStatus, ServiceSpec, StackApply};
use lb_store::{Compare, Event, KeyValue, Op, StoreExt, Txn};
use tracing::Instrument;

use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::ApiError;
use crate::json::encode;
use crate::ops;

/// How often every stack's newest build is checked without a change.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long an apply may run before another server takes it over, seconds.
pub const STALE_SECS: i64 = 600;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Applies stack builds until the process ends.
pub async fn run(ctx: Ctx) {
    loop {
        if let Err(e) = watch(&ctx).await {
            tracing::warn!("stack controller: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Watches from now after a scan of what came before; returns when the
/// watch ends (compacted, or the store lost).
async fn watch(ctx: &Ctx) -> Result<(), Error> {
    let revision = ctx.store.revision().await?;
    let mut changes = ctx.store.watch(&ctx.keys.projects(), revision + 1).await?;
    scan(ctx).await?;
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = resync.tick() => {
                if let Err(e) = scan(ctx).await {
                    tracing::warn!("stack controller scan failed: {e}");
                }
            }
            change = changes.next() => match change {
                Some(Ok(c)) => {
                    for event in c.events {
                        if let Event::Put(kv) = event {
                            put(ctx, &kv).await;
                        }
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// Whether a build is a stack's, succeeded and not applied yet (or its
/// apply was claimed long ago and never finished).
fn pending(build: &Build, at: i64) -> bool {
    build.status == BuildStatus::Succeeded
        && build.stack.is_some()
        && match &build.applied {
            None => true,
            Some(applied) => applied.finished.is_none() && at - applied.started > STALE_SECS,
        }
}

/// A written key: a stack build to apply?
async fn put(ctx: &Ctx, kv: &KeyValue) {
    let Some(Parsed::Build { pid, sid, .. }) = ctx.keys.parse(&kv.key) else {
        return;
    };
    let Ok(build) = serde_json::from_slice::<Build>(&kv.value) else {
        return;
    };
    if pending(&build, now()) {
        if let Err(e) = handle(ctx, pid, sid, build, kv.mod_revision).await {
            tracing::warn!(project = %pid, service = %sid, "stack apply failed: {e}");
        }
    }
}

/// Every stack's newest succeeded build, applied when it is pending.
async fn scan(ctx: &Ctx) -> Result<(), Error> {
    let all = ctx.keys.service_index_all();
    let (index, _) = ctx.store.list(&all).await?;
    for kv in &index {
        let Some(pid) = kv
            .key
            .strip_prefix(&all)
            .and_then(|rest| rest.split('/').next())
        else {
            continue;
        };
        let sid = String::from_utf8_lossy(&kv.value).into_owned();
        let Some(spec) = ctx.store.get(&ctx.keys.service_spec(pid, &sid)).await? else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<ServiceSpec>(&spec.value) else {
            continue;
        };
        if !is_stack(&spec) {
            continue;
        }
        let (builds, _) = ctx.store.list(&ctx.keys.builds_prefix(pid, &sid)).await?;
        let newest = builds.iter().rev().find_map(|kv| {
            let build = serde_json::from_slice::<Build>(&kv.value).ok()?;
            (build.status == BuildStatus::Succeeded && build.stack.is_some())
                .then_some((build, kv.mod_revision))
        });
        if let Some((build, revision)) = newest {
            if pending(&build, now()) {
                handle(ctx, pid, &sid, build, revision).await?;
            }
        }
    }
    Ok(())
}

/// What an apply did.
#[derive(Default)]
struct Outcome {
    done: Vec<String>,
    builds: Vec<String>,
    error: Option<String>,
    log: Vec<String>,
}

/// Claims a stack build (at `revision`), applies it, records the outcome.
async fn handle(ctx: &Ctx, pid: &str, sid: &str, build: Build, revision: i64) -> Result<(), Error> {
    let key = ctx.keys.build(pid, sid, build.number);
    let started = now();
    let mut claimed = build.clone();
    claimed.applied = Some(StackApply {
        started,
        finished: None,
        done: Vec::new(),
        builds: Vec::new(),
        error: None,
    });
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), revision))
        .then(Op::put(key, encode(&claimed)));
    if !ctx.store.txn(txn).await?.succeeded {
        return Ok(()); // another server has it, or it changed
    }
    let span = tracing::info_span!("stack", project = %pid, service = %sid, build = build.number);
    async {
        let outcome = apply(ctx, pid, sid, &build).await;
        match &outcome.error {
            Some(e) => tracing::warn!("stack not applied: {e}"),
            None => {
                tracing::info!(changes = ?outcome.done, builds = ?outcome.builds, "stack applied")
            }
        }
        record(ctx, pid, sid, build.number, started, outcome).await
    }
    .instrument(span)
    .await
}

/// An API error as one line, naming its field.
fn describe(e: &ApiError) -> String {
    match &e.field {
        Some(field) if !e.message.contains(field.as_str()) => format!("{field}: {}", e.message),
        _ => e.message.clone(),
    }
}

/// Applies a claimed stack build.
async fn apply(ctx: &Ctx, pid: &str, sid: &str, build: &Build) -> Outcome {
    let mut out = Outcome::default();
    if let Err(e) = try_apply(ctx, pid, sid, build, &mut out).await {
        out.log.push(format!("stack: not applied: {e}"));
        out.error = Some(e);
    }
    out
}

async fn try_apply(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    build: &Build,
    out: &mut Outcome,
) -> Result<(), String> {
    let store = |e: lb_store::Error| e.to_string();
    let Some(files) = &build.stack else {
        return Err("the build read no file".to_owned());
    };
    let spec = ctx
        .store
        .get(&ctx.keys.service_spec(pid, sid))
        .await
        .map_err(store)?
        .and_then(|kv| serde_json::from_slice::<ServiceSpec>(&kv.value).ok())
        .ok_or("the stack service was deleted")?;
    let source = spec
        .source
        .clone()
        .filter(|s| s.compose.is_some())
        .ok_or("the service is no longer a stack (its source names no compose file)")?;
    let (builds, _) = ctx
        .store
        .list(&ctx.keys.builds_prefix(pid, sid))
        .await
        .map_err(store)?;
    let newer = builds.iter().rev().find_map(|kv| {
        let b = serde_json::from_slice::<Build>(&kv.value).ok()?;
        (b.number > build.number && b.status == BuildStatus::Succeeded && b.stack.is_some())
            .then_some(b.number)
    });
    if let Some(newer) = newer {
        return Err(format!("superseded by build #{newer}"));
    }
    let commit = build.commit.clone();
    let short = commit.as_deref().map_or("", |c| &c[..c.len().min(7)]);
    let caller = Caller {
        user: ops::hooks::owner_of(ctx, pid)
            .await
            .map_err(|e| describe(&e))?,
    };
    out.log.push(format!(
        "stack: applying {} (commit {short}) as {}",
        files.file, caller.user.username
    ));
    let read = |path: &str| {
        files
            .env_files
            .get(path)
            .cloned()
            .ok_or_else(|| format!("not found in the repository at commit {short}"))
    };
    let (_, mut doc) = document(&files.file, &files.text, &source, &read)
        .map_err(|e| format!("{}: {e}", files.file))?;
    if doc.services.contains_key(&spec.name) {
        return Err(format!(
            "{}: services.{}: names the stack service itself (rename one of them)",
            files.file, spec.name
        ));
    }
    let from_repository: Vec<String> = doc
        .services
        .iter()
        .filter(|(_, s)| {
            s.spec
                .source
                .as_ref()
                .is_some_and(|s| s.compose.is_none() && same_repository(&s.url, &source.url))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if source.prune {
        // The stack is no service of its file: kept as it is.
        doc.services.insert(
            spec.name.clone(),
            DocService {
                spec: spec.clone(),
                depends_on: Vec::new(),
            },
        );
    }
    let options = ops::apply::Options {
        prune: source.prune,
        dry_run: false,
    };
    let applied = ops::apply::apply(ctx, &caller, pid, doc, options)
        .await
        .map_err(|e| describe(&e))?;
    out.done = applied.done;
    if out.done.is_empty() {
        out.log
            .push("stack: the project already matches".to_owned());
    }
    for change in &out.done {
        out.log.push(format!("stack: {change}"));
    }
    let by = format!("stack {} build #{}", spec.name, build.number);
    let mut failed = Vec::new();
    for name in from_repository {
        match ops::builds::create(ctx, &caller, (pid, &name), commit.clone(), &by).await {
            Ok(b) => {
                out.log.push(format!(
                    "stack: build {name} #{} queued (commit {short})",
                    b.number
                ));
                out.builds.push(format!("{name} #{}", b.number));
            }
            Err(e) => failed.push(format!("build of {name}: {}", describe(&e))),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Writes the outcome on the build record with its lines appended to the
/// build's log, in one transaction (retried when the record moved).
async fn record(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    number: u64,
    started: i64,
    outcome: Outcome,
) -> Result<(), Error> {
    let key = ctx.keys.build(pid, sid, number);
    let mut text = String::new();
    for line in &outcome.log {
        text.push_str(line);
        text.push('\n');
    }
    for _ in 0..20 {
        let Some(kv) = ctx.store.get(&key).await? else {
            return Ok(()); // the service was deleted meanwhile
        };
        let mut build: Build = serde_json::from_slice(&kv.value)?;
        build.applied = Some(StackApply {
            started,
            finished: Some(now()),
            done: outcome.done.clone(),
            builds: outcome.builds.clone(),
            error: outcome.error.clone(),
        });
        let (_, last, _) = ops::builds::read_log(ctx, pid, sid, number).await?;
        let chunk = ctx
            .keys
            .build_log_chunk(pid, sid, number, last.map_or(0, |l| l + 1));
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .when(Compare::ModRevision(chunk.clone(), 0))
            .then(Op::put(chunk, text.clone().into_bytes()))
            .then(Op::put(key.clone(), encode(&build)));
        if ctx.store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Err(format!("build {number}: its record kept changing: the outcome is not recorded").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(status: BuildStatus, stack: bool, applied: Option<(i64, Option<i64>)>) -> Build {
        let mut value = serde_json::json!({"number": 1, "status": status, "created": 0});
        if stack {
            value["stack"] = serde_json::json!({"file": "compose.yaml", "text": "services: {}"});
        }
        if let Some((started, finished)) = applied {
            value["applied"] = serde_json::json!({"started": started, "finished": finished});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_succeeded_stack_builds_not_applied_are_pending() {
        let at = 10_000;
        assert!(pending(&build(BuildStatus::Succeeded, true, None), at));
        assert!(
            !pending(&build(BuildStatus::Succeeded, false, None), at),
            "no stack"
        );
        assert!(!pending(&build(BuildStatus::Failed, true, None), at));
        assert!(!pending(&build(BuildStatus::Building, true, None), at));
        let done = build(BuildStatus::Succeeded, true, Some((at - 5, Some(at - 1))));
        assert!(!pending(&done, at), "applied");
        let running = build(BuildStatus::Succeeded, true, Some((at - 5, None)));
        assert!(!pending(&running, at), "claimed by a server now");
        let stale = build(
            BuildStatus::Succeeded,
            true,
            Some((at - STALE_SECS - 1, None)),
        );
        assert!(pending(&stale, at), "a claim left by a server that died");
    }

    #[test]
    fn errors_name_their_field_once() {
        let e = ApiError::invalid("services.web.memory", "5 MiB is out of range");
        assert_eq!(describe(&e), "services.web.memory: 5 MiB is out of range");
        let e = ApiError::invalid(
            "services.web.privileged",
            "services.web.privileged: not supported",
        );
        assert_eq!(describe(&e), "services.web.privileged: not supported");
    }
}
