//! The embedded store: the store's semantics in one redb file in the data dir,
//! for running lb on one machine without etcd (as k3s runs on SQLite).
//!
//! Layout of the file (tables):
//! - `kv`: key -> current record (revisions, lease, value);
//! - `log`: revision -> the events of that revision, kept from the compaction
//!   point on, replayed to watches that start in the past;
//! - `meta`: `revision`, `compact_revision`, `format`;
//! - `leases`: lease id -> TTL; `lease_keys`: lease id (8 bytes, big endian)
//!   followed by the key, for the keys attached to a lease.
//!
//! Every write runs under one writer lock, gets the next revision and commits
//! with redb's immediate durability (fsync) before it is acknowledged, so a
//! SIGKILL loses no acknowledged write. Committed events then go to live
//! watchers through a broadcast channel, in revision order; a watcher that
//! falls behind catches up from `log`.
//!
//! History is bounded two ways, checked every 100 ms: at most
//! [`DEFAULT_HISTORY`] revisions and at most [`DEFAULT_HISTORY_BYTES`] of
//! encoded events (the newest are kept; a watch from before them gets
//! `Compacted` and relists). Space freed in the file is reused by later
//! commits and a free tail is given back at commit; a file left much larger
//! than its data (after a burst) is compacted when it is next opened.
//!
//! Lease deadlines live in memory. On open every persisted lease gets a fresh
//! full TTL (what etcd does on leader change), so nodes have time to
//! reconnect after a restart, and a lease nobody renews still expires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use crate::codec;
use crate::{
    prefix_end, Changes, Compare, Error, Event, KeyValue, Limits, Op, OpResult, Page, Result,
    Store, Txn, TxnResponse, WatchStream,
};

mod file;
mod leases;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("lease_keys");

const FORMAT: i64 = 1;
/// The file's name inside the data dir.
pub const FILE_NAME: &str = "store.redb";

/// The directory, in the data dir, of the cluster's keys (see
/// [`crate::secrets`]): kept apart from the store file.
pub const KEY_DIR: &str = "keys";
/// Revisions kept in history by the automatic compaction.
pub const DEFAULT_HISTORY: i64 = 100_000;
/// Bytes of encoded events kept in history by the automatic compaction: a
/// store whose values are large keeps fewer revisions, so the file stays
/// bounded whatever is written.
pub const DEFAULT_HISTORY_BYTES: u64 = 16 << 20;
/// On open, a file larger than this and more than [`SPARSE_FACTOR`] times
/// its allocated pages is rewritten by redb's compaction.
const COMPACT_ON_OPEN_ABOVE: u64 = 64 << 20;
const SPARSE_FACTOR: u64 = 2;
const EXPIRY_TICK: Duration = Duration::from_millis(100);
const BROADCAST_CAPACITY: usize = 4096;
const REPLAY_CHUNK: usize = 1024;

/// The events committed at one revision.
#[derive(Debug)]
struct Committed {
    revision: i64,
    events: Vec<Event>,
}

struct Lease {
    ttl: i64,
    deadline: Instant,
}

/// State changed only under the writer lock.
struct WriteState {
    revision: i64,
    compact_revision: i64,
    /// Encoded bytes of the events in `log` (values only).
    log_bytes: u64,
    leases: HashMap<i64, Lease>,
}

/// How much history the automatic compaction keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Revisions.
    pub revisions: i64,
    /// Bytes of encoded events.
    pub bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            revisions: DEFAULT_HISTORY,
            bytes: DEFAULT_HISTORY_BYTES,
        }
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    write: Mutex<WriteState>,
    events: broadcast::Sender<Arc<Committed>>,
}

/// The embedded single-file store. Dropping it stops its background work.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    background: tokio::task::JoinHandle<()>,
    /// `<dir>/keys` when opened with [`EmbeddedStore::open_dir`].
    key_dir: Option<PathBuf>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.background.abort();
    }
}

fn backend(err: impl Into<redb::Error>) -> Error {
    Error::Backend(err.into().to_string())
}

fn damaged(err: codec::DecodeError) -> Error {
    Error::Backend(err.to_string())
}

fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = (lease as u64).to_be_bytes().to_vec();
    out.extend_from_slice(key);
    out
}

fn key_string(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Backend("key is not utf-8".into()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store file inside `dir`, creating the directory
    /// when missing. The store holds the cluster's keys: `dir` and all
    /// under it is made private to lb's user (0700/0600, see
    /// [`crate::private`]), narrowing wider modes with a warning.
    pub async fn open_dir(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: dir.display().to_string(),
            source,
        };
        crate::private::create_dir(dir).map_err(io)?;
        let mut store = Self::open(&dir.join(FILE_NAME)).await?;
        crate::private::secure_tree(dir).map_err(io)?;
        // The cluster's keys beside the store file, not in it.
        store.key_dir = Some(dir.join(KEY_DIR));
        Ok(store)
    }

    /// Opens (or creates) the store file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with_history(path, DEFAULT_HISTORY).await
    }

    /// Opens the store keeping `history` revisions (and at most
    /// [`DEFAULT_HISTORY_BYTES`]) through automatic compaction.
    pub async fn open_with_history(path: &Path, history: i64) -> Result<Self> {
        let retention = Retention {
            revisions: history,
            ..Retention::default()
        };
        Self::open_with_retention(path, retention).await
    }

    /// Opens the store keeping the history `retention` allows through
    /// automatic compaction.
    pub async fn open_with_retention(path: &Path, retention: Retention) -> Result<Self> {
        let path = path.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Inner::open(path))
            .await
            .map_err(|e| Error::Backend(e.to_string()))??;
        let inner = Arc::new(inner);
        let background = tokio::spawn(background(Arc::downgrade(&inner), retention));
        Ok(Self {
            inner,
            background,
            key_dir: None,
        })
    }

    /// The store file's size on disk, in bytes.
    pub fn file_size(&self) -> Result<u64> {
        std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                path: self.inner.path.display().to_string(),
                source,
            })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Backend(e.to_string()))?
    }
}

/// Expires leases and compacts old history while the store lives.
async fn background(inner: std::sync::Weak<Inner>, retention: Retention) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let done = tokio::task::spawn_blocking(move || {
            for id in inner.expired_leases() {
                // Renewed in between? lease_remove checks again under the lock.
                let still_expired = inner
                    .lock()
                    .leases
                    .get(&id)
                    .is_some_and(|l| l.deadline <= Instant::now());
                if still_expired {
                    if let Err(err) = inner.lease_remove(id) {
                        tracing::warn!(lease = id, error = %err, "lease expiry failed");
                    }
                }
            }
            let due = inner.compaction_due(retention);
            if let Err(err) = due.and_then(|due| due.map_or(Ok(()), |to| inner.compact(to))) {
                tracing::warn!(error = %err, "automatic compaction failed");
            }
        })
        .await;
        if done.is_err() {
            return;
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn key_dir(&self) -> Option<PathBuf> {
        self.key_dir.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.blocking(move |inner| inner.range(&prefix, after.as_deref(), limit))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.blocking(move |inner| inner.apply(&txn)).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe first, then read history: every revision is seen at least
        // once, and duplicates are skipped by revision.
        let mut live = self.inner.events.subscribe();
        let (current, compact_revision) = {
            let state = self.inner.lock();
            (state.revision, state.compact_revision)
        };
        let from = if from_revision <= 0 {
            current + 1
        } else {
            from_revision
        };
        if from < compact_revision {
            return Err(Error::Compacted {
                requested: from,
                compact_revision,
            });
        }
        let (tx, rx) = mpsc::channel::<Result<Changes>>(256);
        let inner = Arc::downgrade(&self.inner);
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let mut next = from; // the first revision not yet delivered
            let mut catch_up = from <= current;
            loop {
                if catch_up {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    let chunk = tokio::task::spawn_blocking(move || strong.history(next)).await;
                    let chunk = match chunk {
                        Ok(Ok(chunk)) => chunk,
                        Ok(Err(err)) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                        Err(_) => return,
                    };
                    if chunk.is_empty() {
                        catch_up = false;
                        continue;
                    }
                    for (revision, events) in chunk {
                        if !send_matching(&tx, &prefix, revision, &events).await {
                            return;
                        }
                        next = revision + 1;
                    }
                    continue;
                }
                let received = tokio::select! {
                    received = live.recv() => received,
                    _ = tx.closed() => return,
                };
                match received {
                    Ok(committed) => {
                        if committed.revision < next {
                            continue;
                        }
                        if committed.revision > next {
                            // A revision was missed: read it from history.
                            catch_up = true;
                            continue;
                        }
                        if !send_matching(&tx, &prefix, committed.revision, &committed.events).await
                        {
                            return;
                        }
                        next = committed.revision + 1;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<i64> {
        Ok(self.inner.lock().revision)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.blocking(move |inner| inner.compact(revision)).await
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        self.blocking(move |inner| inner.lease_grant(ttl_secs))
            .await
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        self.inner.lease_keep_alive(lease)
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        if self
            .blocking(move |inner| inner.lease_remove(lease))
            .await?
        {
            Ok(())
        } else {
            Err(Error::LeaseNotFound(lease))
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Sends the revision's events under `prefix` as one item (nothing when none
/// match); answers false when the watcher is gone.
async fn send_matching(
    tx: &mpsc::Sender<Result<Changes>>,
    prefix: &str,
    revision: i64,
    events: &[Event],
) -> bool {
    let events: Vec<Event> = events
        .iter()
        .filter(|e| e.key().starts_with(prefix))
        .cloned()
        .collect();
    if !events.is_empty() && tx.send(Ok(Changes { revision, events })).await.is_err() {
        return false;
    }
    !tx.is_closed()
}
