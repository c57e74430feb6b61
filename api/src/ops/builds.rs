//! Builds of a service: queue one, list and read them, cancel one, read a
//! build's log. The builder (`lb_builder`) does the work; this side records
//! the request and shows what the builder wrote.

use lb_model::{now, Build, BuildStatus, Deploy};
use lb_store::{Compare, Op, StoreExt, Txn};

use super::resolve::{self, LoadedService};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::models::List;

/// Builds queued at once by others before giving up with 409.
const MAX_NUMBER_RACES: usize = 20;

/// Whether `commit` is a commit id: 4 to 64 hex digits.
fn check_commit(commit: &str) -> Result<()> {
    let ok = (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "commit",
            format!("{commit:?} is not a commit id (4 to 64 hex digits)"),
        ))
    }
}

/// Queues a build of a service the caller may see, with the next number:
/// of `commit`, or of the branch head when `None`; `by` says who or what
/// asked (the build's and its deploy's history show it).
pub async fn create(
    ctx: &Ctx,
    caller: &Caller,
    (p, s): (&str, &str),
    commit: Option<String>,
    by: &str,
) -> Result<Build> {
    if let Some(commit) = &commit {
        check_commit(commit)?;
    }
    let mut loaded = resolve::service(ctx, caller, p, s).await?;
    'service: loop {
        if loaded.spec.source.is_none() {
            return Err(ApiError::unprocessable(format!(
                "service {:?} has no source to build: set \"source\" (a git URL) first",
                loaded.meta.name
            )));
        }
        let (pid, sid) = (loaded.pid.clone(), loaded.meta.id.clone());
        let owner = super::quotas::check_build(ctx, &pid).await?;
        for _ in 0..MAX_NUMBER_RACES {
            let (kvs, _) = ctx.store.list(&ctx.keys.builds_prefix(&pid, &sid)).await?;
            let last = kvs
                .last()
                .and_then(|kv| kv.key.rsplit('/').next()?.parse::<u64>().ok())
                .unwrap_or(0);
            let number = last + 1;
            let build = Build {
                number,
                status: BuildStatus::Queued,
                commit: commit.clone(),
                image: None,
                digest: None,
                message: String::new(),
                steps: Vec::new(),
                created: now(),
                finished: None,
                by: by.to_owned(),
                stack: None,
                applied: None,
            };
            let key = ctx.keys.build(&pid, &sid, number);
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), 0))
                .when(Compare::ModRevision(
                    ctx.keys.service_meta(&pid, &sid),
                    loaded.meta_revision,
                ))
                .then(Op::put(key, encode(&build)))
                .then(Op::put(
                    ctx.keys.build_queued(&pid, &sid, number),
                    owner.clone().into_bytes(),
                ));
            if ctx.store.txn(txn).await?.succeeded {
                return Ok(build);
            }
            // Another build took the number, or the service changed: again.
            let still = resolve::service(ctx, caller, p, s).await?;
            if still.meta_revision != loaded.meta_revision {
                loaded = still;
                continue 'service;
            }
        }
        return Err(ApiError::conflict(
            "too many builds queued at once: try again",
        ));
    }
}

/// A service's deploys (each new generation: a build's, a rollback, a spec
/// change), newest first.
pub async fn deploys(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<List<Deploy>> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let mut items = history(ctx, &loaded).await?;
    items.reverse();
    let total = items.len();
    Ok(List { items, total })
}

/// A service's deploy records, oldest first.
pub async fn history(ctx: &Ctx, loaded: &LoadedService) -> Result<Vec<Deploy>> {
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.deploys_prefix(&loaded.pid, &loaded.meta.id))
        .await?;
    kvs.iter().map(decode::<Deploy>).collect()
}

/// A service's builds, newest first.
pub async fn list(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<List<Build>> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.builds_prefix(&loaded.pid, &loaded.meta.id))
        .await?;
    let mut items = kvs
        .iter()
        .map(decode::<Build>)
        .collect::<Result<Vec<_>>>()?;
    items.reverse();
    let total = items.len();
    Ok(List { items, total })
}

/// Build `n` of a service, with its record's revision.
pub async fn load(ctx: &Ctx, loaded: &LoadedService, n: &str) -> Result<(Build, i64)> {
    let not_found = || {
        ApiError::not_found(format!(
            "build {n:?} of service {:?} not found",
            loaded.meta.name
        ))
    };
    let number: u64 = n.parse().map_err(|_| not_found())?;
    let kv = ctx
        .store
        .get(&ctx.keys.build(&loaded.pid, &loaded.meta.id, number))
        .await?
        .ok_or_else(not_found)?;
    Ok((decode(&kv)?, kv.mod_revision))
}

/// One build of a service the caller may see.
pub async fn get(ctx: &Ctx, caller: &Caller, p: &str, s: &str, n: &str) -> Result<Build> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    Ok(load(ctx, &loaded, n).await?.0)
}

/// Cancels a build not yet ended: it becomes `canceled`, and its builder
/// sees that and stops at once.
pub async fn cancel(ctx: &Ctx, caller: &Caller, p: &str, s: &str, n: &str) -> Result<Build> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    loop {
        let (mut build, revision) = load(ctx, &loaded, n).await?;
        if build.status.is_final() {
            return Err(ApiError::conflict(format!(
                "build {} already ended ({})",
                build.number,
                serde_json::to_value(build.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
        let at = now();
        if let Some(step) = build.steps.last_mut() {
            step.finished.get_or_insert(at);
        }
        build.status = BuildStatus::Canceled;
        build.finished = Some(at);
        build.message = format!("canceled by {}", caller.user.username);
        let key = ctx.keys.build(&loaded.pid, &loaded.meta.id, build.number);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), revision))
            .then(Op::put(key, encode(&build)))
            .then(Op::delete(ctx.keys.build_queued(
                &loaded.pid,
                &loaded.meta.id,
                build.number,
            )));
        if ctx.store.txn(txn).await?.succeeded {
            return Ok(build);
        }
    }
}

/// A build's log as stored: the chunks joined (see
/// [`lb_model::join_log_chunks`]), the number of the last chunk, and
/// the revision it was read at. A build logged before logs were chunked
/// has its whole output in one older key, read when there are no chunks.
pub async fn read_log(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    number: u64,
) -> lb_store::Result<(Vec<u8>, Option<u64>, i64)> {
    let prefix = ctx.keys.build_log_prefix(pid, sid, number);
    let (kvs, revision) = ctx.store.list(&prefix).await?;
    let chunks: Vec<(u64, &[u8])> = kvs
        .iter()
        .filter_map(|kv| {
            Some((
                ctx.keys.build_log_seq(&prefix, &kv.key)?,
                kv.value.as_slice(),
            ))
        })
        .collect();
    let last = chunks.last().map(|(seq, _)| *seq);
    if chunks.is_empty() {
        let legacy = ctx
            .store
            .get(&ctx.keys.build_log_legacy(pid, sid, number))
            .await?;
        return Ok((
            legacy.map(|kv| kv.value).unwrap_or_default(),
            None,
            revision,
        ));
    }
    Ok((lb_model::join_log_chunks(chunks), last, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_hex_ids() {
        assert!(check_commit("abcd").is_ok());
        assert!(check_commit(&"f".repeat(64)).is_ok());
        assert!(check_commit("abc").is_err());
        assert!(check_commit(&"f".repeat(65)).is_err());
        assert_eq!(
            check_commit("main").unwrap_err().field.as_deref(),
            Some("commit")
        );
    }
}
