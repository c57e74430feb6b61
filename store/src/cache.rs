//! A read cache over the store: the keys under one prefix kept in memory by
//! list + watch (a reflector, as kube-runtime's), serving `get`, `range` and
//! read-only transactions without a round trip.
//!
//! Consistency:
//! - Writes always go to the store, with their compares: the cache never
//!   decides a conditional write, so no acknowledged write is lost and no
//!   conflict is missed.
//! - After a write (or a lease revoke) through this cache changes keys, it
//!   returns only once the cache has applied that revision: a client reads
//!   its own writes. The cache watches every key (keeping those under the
//!   prefix) so that every revision reaches it.
//! - Writes by other processes show up after the watch delivers them
//!   (milliseconds); a read may lag by that much — except that a `get` of a
//!   key the cache lacks asks the store, so a key just created elsewhere is
//!   found at once.
//! - A revision's events are applied together, so a read never sees half of
//!   a transaction.
//! - While the cache is (re)listing — at start, after a compaction or a lost
//!   watch — reads go to the store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lb_model::backoff::Backoff;
use tokio::sync::watch;

use super::{
    Error, Event, KeyValue, Op, OpResult, Page, Result, Shared, Store, StoreExt, Txn, TxnResponse,
    WatchStream,
};

/// How long a write waits for the cache to catch up before answering anyway.
const CATCH_UP: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Data {
    kvs: BTreeMap<String, KeyValue>,
    revision: i64,
    ready: bool,
}

/// A store whose reads under `prefix` come from memory.
pub struct CachedStore {
    inner: Shared,
    prefix: String,
    data: Arc<RwLock<Data>>,
    applied: watch::Receiver<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CachedStore {
    /// Starts caching the keys under `prefix`; answers once the first list is
    /// loaded (or failed: then reads go to the store until it succeeds).
    pub async fn new(inner: Shared, prefix: &str) -> Self {
        let data = Arc::new(RwLock::new(Data::default()));
        let (applied_tx, applied) = watch::channel(0);
        let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(reflect(
            inner.clone(),
            prefix.to_owned(),
            data.clone(),
            applied_tx,
            loaded_tx,
        ));
        let _ = tokio::time::timeout(Duration::from_secs(10), loaded).await;
        Self {
            inner,
            prefix: prefix.to_owned(),
            data,
            applied,
            task,
        }
    }

    fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the cache holds `revision`.
    async fn catch_up(&self, revision: i64) {
        let mut applied = self.applied.clone();
        let caught = tokio::time::timeout(CATCH_UP, applied.wait_for(|r| *r >= revision)).await;
        if !matches!(caught, Ok(Ok(_))) {
            tracing::warn!(
                revision,
                "store cache did not catch up in time; reads may lag"
            );
        }
    }
}

/// Keeps `data` equal to the store under `prefix`: list, then watch from the
/// list's revision; relist on compaction or a lost watch.
async fn reflect(
    inner: Shared,
    prefix: String,
    data: Arc<RwLock<Data>>,
    applied: watch::Sender<i64>,
    loaded: tokio::sync::oneshot::Sender<()>,
) {
    let mut loaded = Some(loaded);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let listed = inner.list(&prefix).await;
        let (kvs, revision) = match listed {
            Ok(listed) => listed,
            Err(err) => {
                tracing::warn!(error = %err, "store cache cannot list; retrying");
                if let Some(done) = loaded.take() {
                    let _ = done.send(());
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // Watch every key, not just the prefix: each revision then reaches the
        // cache, so a writer waiting for its revision is never left waiting
        // for a change outside the prefix.
        let mut stream = match inner.watch("", revision + 1).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "store cache cannot watch; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        {
            let mut d = data.write().unwrap_or_else(|p| p.into_inner());
            d.kvs = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            d.revision = revision;
            d.ready = true;
        }
        applied.send_replace(revision);
        if let Some(done) = loaded.take() {
            let _ = done.send(());
        }
        backoff.reset();
        while let Some(item) = stream.next().await {
            let changes = match item {
                Ok(changes) => changes,
                Err(Error::Compacted { .. }) => {
                    tracing::info!("store cache fell behind a compaction; relisting");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "store cache watch failed; relisting");
                    break;
                }
            };
            {
                let mut d = data.write().unwrap_or_else(|p| p.into_inner());
                for event in changes
                    .events
                    .into_iter()
                    .filter(|e| e.key().starts_with(&prefix))
                {
                    match event {
                        Event::Put(kv) => {
                            d.kvs.insert(kv.key.clone(), kv);
                        }
                        Event::Delete(kv) => {
                            d.kvs.remove(&kv.key);
                        }
                    }
                }
                d.revision = changes.revision;
            }
            applied.send_replace(changes.revision);
        }
        // Serve from the store until the relist is done.
        data.write().unwrap_or_else(|p| p.into_inner()).ready = false;
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn snapshot(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.inner.snapshot(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if self.covers(key) {
            let hit = {
                let d = self.read();
                if d.ready {
                    d.kvs.get(key).cloned().map(Some)
                } else {
                    None
                }
            };
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        // A miss asks the store: a key just created elsewhere (a join token,
        // an API token made by another API instance) is found at once.
        self.inner.get(key).await
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        if self.covers(prefix) {
            let d = self.read();
            if d.ready {
                let start = match after {
                    Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
                    _ => std::ops::Bound::Included(prefix.to_owned()),
                };
                let mut kvs = Vec::new();
                let mut more = false;
                for (key, kv) in d.kvs.range((start, std::ops::Bound::Unbounded)) {
                    if !key.starts_with(prefix) {
                        break;
                    }
                    if limit > 0 && kvs.len() == limit {
                        more = true;
                        break;
                    }
                    kvs.push(kv.clone());
                }
                return Ok(Page {
                    kvs,
                    more,
                    revision: d.revision,
                });
            }
        }
        self.inner.range(prefix, after, limit).await
    }

    async fn window(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, usize)> {
        if self.covers(prefix) {
            let d = self.read();
            if d.ready {
                let mut kvs = Vec::new();
                let mut total = 0;
                for (key, kv) in d.kvs.range(prefix.to_owned()..) {
                    if !key.starts_with(prefix) {
                        break;
                    }
                    if total >= offset && kvs.len() < limit {
                        kvs.push(kv.clone());
                    }
                    total += 1;
                }
                return Ok((kvs, total));
            }
        }
        self.inner.window(prefix, offset, limit).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let read_only = txn.compares.is_empty()
            && txn
                .success
                .iter()
                .all(|op| matches!(op, Op::Get(k) if self.covers(k)));
        if read_only {
            let d = self.read();
            if d.ready {
                let results = txn
                    .success
                    .iter()
                    .map(|op| match op {
                        Op::Get(key) => OpResult::Get(d.kvs.get(key).cloned()),
                        _ => unreachable!("read-only transaction"),
                    })
                    .collect();
                return Ok(TxnResponse {
                    succeeded: true,
                    revision: d.revision,
                    results,
                });
            }
        }
        let resp = self.inner.txn(txn.clone()).await?;
        let branch = if resp.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let changed = branch
            .iter()
            .zip(&resp.results)
            .any(|(op, result)| match (op, result) {
                (Op::Put { .. }, OpResult::Put) => true,
                (Op::Delete(_) | Op::DeletePrefix(_), OpResult::Deleted(n)) => *n > 0,
                _ => false,
            });
        if changed {
            self.catch_up(resp.revision).await;
        }
        Ok(resp)
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        self.inner.lease_grant(ttl_secs).await
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.inner.lease_revoke(lease).await?;
        // The keys it deleted: visible in the cache before answering.
        let revision = self.inner.revision().await?;
        self.catch_up(revision).await;
        Ok(())
    }
    fn limits(&self) -> super::Limits {
        self.inner.limits()
    }

    fn key_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.key_dir()
    }
}
