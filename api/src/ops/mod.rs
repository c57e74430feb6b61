//! Operations: what the API does, as typed async functions that take the
//! shared context and the caller and answer values or an
//! [`ApiError`](crate::error::ApiError), never HTTP replies. Handlers,
//! webhooks, the hook controller and the web UI all call these; none of them
//! calls a handler.
//!
//! One file per resource: [`resolve`] (id-or-name lookups with visibility),
//! [`projects`], [`services`], [`replicas`], [`builds`], [`nodes`],
//! [`accounts`], [`links`] (linked vendor accounts) and [`hooks`] (webhook
//! deliveries, the allowlist). The helpers here are shared by them: reads of
//! many keys, list windows, and the retry of revision-checked transactions.

pub mod accounts;
pub mod apply;
pub mod builds;
pub mod domains;
pub mod hooks;
pub mod images;
pub mod jobs;
pub mod links;
pub mod nodes;
pub mod projects;
pub mod quotas;
pub mod replicas;
pub mod resolve;
pub mod scripts;
pub mod services;

use std::future::Future;
use std::time::Duration;

use lb_model::backoff::Backoff;
use lb_model::keys::Parsed;
use lb_store::{KeyValue, Op, StoreExt, Txn};

use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::decode;
use crate::models::Paging;

/// Attempts of a revision-checked write before giving up with 409.
const MAX_ATTEMPTS: usize = 8;

/// What one attempt of a revision-checked write came to.
pub enum Attempt<T> {
    /// Written (or answered): the result.
    Done(T),
    /// The records changed since they were read (or differ from the
    /// revision the caller pinned): read again.
    Conflict,
}

/// Runs `attempt` until it is done: an attempt that lost a race is retried
/// after a short jittered pause (the cache catches up in milliseconds),
/// unless the caller pinned a revision with `If-Match` (`expected`), which
/// answers 409 at once. `what` names the resource in the 409's message.
pub async fn retry_txn<T, F, Fut>(expected: Option<i64>, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let mut pause = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));
    for n in 1.. {
        match attempt().await? {
            Attempt::Done(value) => return Ok(value),
            Attempt::Conflict => conflict_or_retry(expected, n, what)?,
        }
        tokio::time::sleep(pause.next_delay()).await;
    }
    unreachable!("the attempts are bounded by conflict_or_retry")
}

/// The 409 for a conflict that may not be retried: the caller pinned a
/// revision, or [`MAX_ATTEMPTS`] all lost.
fn conflict_or_retry(expected: Option<i64>, attempt: usize, what: &str) -> Result<()> {
    if let Some(revision) = expected {
        return Err(ApiError::conflict(format!(
            "{what} changed since revision {revision}; read it again"
        )));
    }
    if attempt >= MAX_ATTEMPTS {
        return Err(ApiError::conflict(format!(
            "{what} is being changed concurrently; try again"
        )));
    }
    Ok(())
}

/// Whether a read revision may be written over: not when the caller pinned
/// another one.
pub fn matches(expected: Option<i64>, revision: i64) -> bool {
    expected.is_none_or(|e| e == revision)
}

/// Offset and limit of a list request.
pub fn window(p: &Paging) -> Result<(usize, usize)> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is out of range (1–1000)"),
        ));
    }
    let offset = usize::try_from(p.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    Ok((offset, limit as usize))
}

/// The values of index records (ids), in order.
pub fn ids_of(index: &[KeyValue]) -> Vec<String> {
    index
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect()
}

/// Reads many keys: at one revision when they fit one transaction (the
/// cache answers any number from memory), else in transactions within the
/// store's limits.
pub async fn get_many(ctx: &Ctx, keys: Vec<String>) -> Result<Vec<Option<KeyValue>>> {
    let mut out = Vec::with_capacity(keys.len());
    let per_txn = ctx.store.limits().max_ops.max(1);
    let chunks: Vec<Vec<String>> = if keys.len() <= per_txn {
        vec![keys]
    } else {
        keys.chunks(per_txn).map(<[String]>::to_vec).collect()
    };
    for chunk in chunks {
        if chunk.is_empty() {
            continue;
        }
        let txn = chunk
            .into_iter()
            .fold(Txn::new(), |t, k| t.then(Op::Get(k)));
        let resp = ctx.store.txn(txn).await?;
        out.extend(resp.results.into_iter().map(|r| match r {
            lb_store::OpResult::Get(kv) => kv,
            _ => None,
        }));
    }
    Ok(out)
}

/// The nodes' keys (`/nodes/<n>/replicas/<r>`) of the replicas placed under
/// `prefix`.
pub async fn node_keys(ctx: &Ctx, prefix: &str) -> Result<Vec<String>> {
    let (kvs, _) = ctx.store.list(prefix).await?;
    let mut keys = Vec::new();
    for kv in &kvs {
        if let Some(Parsed::Replica { rid, .. }) = ctx.keys.parse(&kv.key) {
            let replica: lb_model::Replica = decode(kv)?;
            if let Some(node) = &replica.node {
                keys.push(ctx.keys.node_replica(node, rid));
            }
        }
    }
    Ok(keys)
}

/// After a delete: removes the nodes' keys of the deleted replicas, in
/// transactions within the store's limits, so nodes stop the containers at
/// once. Not atomic with the delete, and needing not be: a placement the
/// scheduler wrote in between, or a key left by a failure here, is an
/// assignment without its replica, which the scheduler deletes on its next
/// pass (its writes compare the service's records, so none lands after the
/// delete).
pub async fn cleanup(ctx: &Ctx, node_keys: Vec<String>) {
    let ops = node_keys.into_iter().map(Op::delete).collect();
    if let Err(e) = ctx.store.write_all(ops).await {
        tracing::warn!(error = %e, "assignments of deleted replicas left to the scheduler");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn run(expected: Option<i64>, conflicts: usize) -> (Result<&'static str>, usize) {
        let calls = AtomicUsize::new(0);
        let result = retry_txn(expected, "project \"p\"", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Ok(if n < conflicts {
                Attempt::Conflict
            } else {
                Attempt::Done("written")
            })
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_race_is_retried_until_written() {
        let (result, calls) = run(None, 3).await;
        assert_eq!(result.unwrap(), "written");
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_conflicts_end_in_409() {
        let (result, calls) = run(None, usize::MAX).await;
        let err = result.unwrap_err();
        assert_eq!(err.status, 409);
        assert!(err.message.contains("concurrently"), "{}", err.message);
        assert_eq!(calls, MAX_ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_revision_is_never_retried() {
        let (result, calls) = run(Some(7), 1).await;
        let err = result.unwrap_err();
        assert_eq!(err.status, 409);
        assert_eq!(
            err.message,
            "project \"p\" changed since revision 7; read it again"
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn windows_are_bounded() {
        let p = |limit, offset| Paging { limit, offset };
        assert_eq!(window(&p(None, None)).unwrap(), (0, 100));
        assert_eq!(window(&p(Some(5), Some(10))).unwrap(), (10, 5));
        assert_eq!(window(&p(Some(0), None)).unwrap_err().status, 400);
        assert_eq!(window(&p(Some(1001), None)).unwrap_err().status, 400);
    }
}
