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

use super::codec;
use super::{
    prefix_end, Changes, Compare, Error, Event, KeyValue, Limits, Op, OpResult, Page, Result,
    Store, Txn, TxnResponse, WatchStream,
};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("lease_keys");

const FORMAT: i64 = 1;
/// The file's name inside the data dir.
pub const FILE_NAME: &str = "store.redb";
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
    /// when missing.
    pub async fn open_dir(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Self::open(&dir.join(FILE_NAME)).await
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
        Ok(Self { inner, background })
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

impl Inner {
    fn open(path: PathBuf) -> Result<Self> {
        let shown = path.display().to_string();
        let mut db = Database::create(&path).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
                path: shown.clone(),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() != std::io::ErrorKind::InvalidData =>
            {
                Error::Io {
                    path: shown.clone(),
                    source,
                }
            }
            other => Error::Corrupt {
                path: shown.clone(),
                reason: other.to_string(),
            },
        })?;
        let corrupt = |reason: String| Error::Corrupt {
            path: shown.clone(),
            reason,
        };
        let wtx = db.begin_write().map_err(|e| corrupt(e.to_string()))?;
        let (revision, compact_revision, log_bytes, leases) = {
            let mut meta = wtx.open_table(META).map_err(|e| corrupt(e.to_string()))?;
            let format = meta
                .get("format")
                .map_err(|e| corrupt(e.to_string()))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(backend)?;
                    meta.insert("revision", 1).map_err(backend)?;
                    meta.insert("compact_revision", 0).map_err(backend)?;
                }
                Some(FORMAT) => {}
                Some(other) => return Err(corrupt(format!("unknown store format {other}"))),
            }
            let read = |name: &str| -> Result<i64> {
                meta.get(name)
                    .map_err(|e| corrupt(e.to_string()))?
                    .map(|v| v.value())
                    .ok_or_else(|| corrupt(format!("missing {name}")))
            };
            let revision = read("revision")?;
            let compact_revision = read("compact_revision")?;
            wtx.open_table(KV).map_err(|e| corrupt(e.to_string()))?;
            let log = wtx.open_table(LOG).map_err(|e| corrupt(e.to_string()))?;
            let mut log_bytes = 0u64;
            for entry in log.iter().map_err(backend)? {
                let (_, events) = entry.map_err(backend)?;
                log_bytes += events.value().len() as u64;
            }
            wtx.open_table(LEASE_KEYS)
                .map_err(|e| corrupt(e.to_string()))?;
            let leases_table = wtx.open_table(LEASES).map_err(|e| corrupt(e.to_string()))?;
            let now = Instant::now();
            let mut leases = HashMap::new();
            for entry in leases_table.iter().map_err(backend)? {
                let (id, ttl) = entry.map_err(backend)?;
                let ttl = ttl.value();
                let deadline = now + Duration::from_secs(ttl.max(1) as u64);
                leases.insert(id.value(), Lease { ttl, deadline });
            }
            (revision, compact_revision, log_bytes, leases)
        };
        wtx.commit().map_err(backend)?;
        compact_if_sparse(&mut db, &path);
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Self {
            db,
            path,
            write: Mutex::new(WriteState {
                revision,
                compact_revision,
                log_bytes,
                leases,
            }),
            events,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriteState> {
        // A panic while holding the lock cannot leave the file inconsistent
        // (the redb transaction is dropped uncommitted), so go on.
        self.write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let rtx = self.db.begin_read().map_err(backend)?;
        let kv = rtx.open_table(KV).map_err(backend)?;
        let value = kv.get(key.as_bytes()).map_err(backend)?;
        value
            .map(|v| codec::decode_value(key, v.value()).map_err(damaged))
            .transpose()
    }

    fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let rtx = self.db.begin_read().map_err(backend)?;
        let meta = rtx.open_table(META).map_err(backend)?;
        let revision = meta
            .get("revision")
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(1);
        let kv = rtx.open_table(KV).map_err(backend)?;
        let start = match after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => {
                let mut s = after.as_bytes().to_vec();
                s.push(0);
                s
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let end = prefix_end(prefix);
        let iter = if end.is_empty() {
            kv.range(start.as_slice()..).map_err(backend)?
        } else {
            kv.range(start.as_slice()..end.as_slice())
                .map_err(backend)?
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for entry in iter {
            let (k, v) = entry.map_err(backend)?;
            if limit > 0 && kvs.len() == limit {
                more = true;
                break;
            }
            let key = key_string(k.value())?;
            kvs.push(codec::decode_value(&key, v.value()).map_err(damaged)?);
        }
        Ok(Page {
            kvs,
            more,
            revision,
        })
    }

    /// Applies a transaction under the writer lock; commits (fsync) before
    /// answering, then publishes the events.
    fn apply(&self, txn: &Txn) -> Result<TxnResponse> {
        // The same limits as etcd's defaults, so both backends fail alike.
        Limits::default().check(txn)?;
        let mut state = self.lock();
        let next = state.revision + 1;
        let wtx = self.db.begin_write().map_err(backend)?;
        let (succeeded, results, events) = {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(backend)?;
            let mut succeeded = true;
            for compare in &txn.compares {
                let Compare::ModRevision(key, expected) = compare;
                let current = match kv.get(key.as_bytes()).map_err(backend)? {
                    Some(v) => {
                        codec::decode_value(key, v.value())
                            .map_err(damaged)?
                            .mod_revision
                    }
                    None => 0,
                };
                if current != *expected {
                    succeeded = false;
                    break;
                }
            }
            let branch = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let mut results = Vec::with_capacity(branch.len());
            let mut events = Vec::new();
            for op in branch {
                let result = match op {
                    Op::Put { key, value, lease } => {
                        if key.is_empty() {
                            return Err(Error::Invalid("empty key".into()));
                        }
                        if *lease != 0 && !state.leases.contains_key(lease) {
                            return Err(Error::LeaseNotFound(*lease));
                        }
                        let old = match kv.get(key.as_bytes()).map_err(backend)? {
                            Some(v) => Some(codec::decode_value(key, v.value()).map_err(damaged)?),
                            None => None,
                        };
                        let record = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: old.as_ref().map_or(next, |o| o.create_revision),
                            mod_revision: next,
                            version: old.as_ref().map_or(1, |o| o.version + 1),
                            lease: *lease,
                        };
                        if let Some(old) = &old {
                            if old.lease != 0 && old.lease != *lease {
                                lease_keys
                                    .remove(lease_key(old.lease, key.as_bytes()).as_slice())
                                    .map_err(backend)?;
                            }
                        }
                        if *lease != 0 {
                            lease_keys
                                .insert(lease_key(*lease, key.as_bytes()).as_slice(), ())
                                .map_err(backend)?;
                        }
                        kv.insert(key.as_bytes(), codec::encode_value(&record).as_slice())
                            .map_err(backend)?;
                        events.push(Event::Put(record));
                        OpResult::Put
                    }
                    Op::Delete(key) => {
                        let removed = remove_key(&mut kv, &mut lease_keys, key.as_bytes(), next)?;
                        let n = removed.is_some() as i64;
                        events.extend(removed);
                        OpResult::Deleted(n)
                    }
                    Op::DeletePrefix(prefix) => {
                        let keys = keys_in(&kv, prefix)?;
                        let mut n = 0;
                        for key in keys {
                            events.extend(remove_key(&mut kv, &mut lease_keys, &key, next)?);
                            n += 1;
                        }
                        OpResult::Deleted(n)
                    }
                    Op::Get(key) => {
                        OpResult::Get(match kv.get(key.as_bytes()).map_err(backend)? {
                            Some(v) => Some(codec::decode_value(key, v.value()).map_err(damaged)?),
                            None => None,
                        })
                    }
                };
                results.push(result);
            }
            (succeeded, results, events)
        };
        if events.is_empty() {
            wtx.abort().map_err(backend)?;
            return Ok(TxnResponse {
                succeeded,
                revision: state.revision,
                results,
            });
        }
        self.commit(&mut state, wtx, events)?;
        Ok(TxnResponse {
            succeeded,
            revision: next,
            results,
        })
    }

    /// Writes the events at the next revision, commits, publishes.
    fn commit(
        &self,
        state: &mut WriteState,
        wtx: redb::WriteTransaction,
        events: Vec<Event>,
    ) -> Result<()> {
        let next = state.revision + 1;
        let encoded = codec::encode_events(&events);
        {
            let mut log = wtx.open_table(LOG).map_err(backend)?;
            log.insert(next, encoded.as_slice()).map_err(backend)?;
            let mut meta = wtx.open_table(META).map_err(backend)?;
            meta.insert("revision", next).map_err(backend)?;
        }
        wtx.commit().map_err(backend)?;
        state.revision = next;
        state.log_bytes += encoded.len() as u64;
        // No receiver is not an error: nobody watches.
        let _ = self.events.send(Arc::new(Committed {
            revision: next,
            events,
        }));
        Ok(())
    }

    /// Events with revisions in `from..` (at most `REPLAY_CHUNK` revisions).
    fn history(&self, from: i64) -> Result<Vec<(i64, Vec<Event>)>> {
        let compact_revision = self.lock().compact_revision;
        let rtx = self.db.begin_read().map_err(backend)?;
        // Checked after the read transaction began: a compaction that
        // committed before it is seen by the lock read above.
        if from < compact_revision {
            return Err(Error::Compacted {
                requested: from,
                compact_revision,
            });
        }
        let log = rtx.open_table(LOG).map_err(backend)?;
        let mut out = Vec::new();
        for entry in log.range(from..).map_err(backend)?.take(REPLAY_CHUNK) {
            let (rev, events) = entry.map_err(backend)?;
            out.push((
                rev.value(),
                codec::decode_events(events.value()).map_err(damaged)?,
            ));
        }
        Ok(out)
    }

    fn compact(&self, revision: i64) -> Result<()> {
        let mut state = self.lock();
        if revision > state.revision {
            return Err(Error::Invalid(format!(
                "cannot compact to revision {revision}: the store is at {}",
                state.revision
            )));
        }
        if revision <= state.compact_revision {
            return Ok(());
        }
        let wtx = self.db.begin_write().map_err(backend)?;
        let mut removed = 0u64;
        {
            let mut log = wtx.open_table(LOG).map_err(backend)?;
            // One `remove` at a time: redb's `retain_in` copies the tree's
            // pages for every entry it drops (it does not modify the tree
            // it iterates), and a compaction of thousands of revisions
            // grew the file by 128 MiB at once.
            loop {
                let first = log
                    .first()
                    .map_err(backend)?
                    .map(|(rev, events)| (rev.value(), events.value().len()));
                match first {
                    Some((rev, len)) if rev < revision => {
                        log.remove(rev).map_err(backend)?;
                        removed += len as u64;
                    }
                    _ => break,
                }
            }
            let mut meta = wtx.open_table(META).map_err(backend)?;
            meta.insert("compact_revision", revision).map_err(backend)?;
        }
        wtx.commit().map_err(backend)?;
        state.compact_revision = revision;
        state.log_bytes = state.log_bytes.saturating_sub(removed);
        Ok(())
    }

    /// The revision to compact to when history is past what `retention`
    /// allows: down to 7/8 of the allowance, so that compactions come in
    /// batches and not at every write.
    fn compaction_due(&self, retention: Retention) -> Result<Option<i64>> {
        let (revision, compact_revision, log_bytes) = {
            let state = self.lock();
            (state.revision, state.compact_revision, state.log_bytes)
        };
        let mut target = 0;
        let keep = retention.revisions.max(1);
        if revision - compact_revision > keep + keep / 8 {
            target = revision - keep * 7 / 8;
        }
        if log_bytes > retention.bytes {
            // The oldest revisions whose events hold the excess.
            let excess = log_bytes - retention.bytes * 7 / 8;
            let rtx = self.db.begin_read().map_err(backend)?;
            let log = rtx.open_table(LOG).map_err(backend)?;
            let mut dropped = 0u64;
            for entry in log.iter().map_err(backend)? {
                let (rev, events) = entry.map_err(backend)?;
                dropped += events.value().len() as u64;
                if dropped >= excess {
                    target = target.max(rev.value() + 1);
                    break;
                }
            }
        }
        Ok((target > compact_revision).then_some(target.min(revision)))
    }

    fn lease_grant(&self, ttl: i64) -> Result<i64> {
        if !(1..=i64::from(u32::MAX)).contains(&ttl) {
            return Err(Error::Invalid(format!("lease ttl {ttl}s out of range")));
        }
        let mut state = self.lock();
        let id = loop {
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && !state.leases.contains_key(&id) {
                break id;
            }
        };
        let wtx = self.db.begin_write().map_err(backend)?;
        wtx.open_table(LEASES)
            .map_err(backend)?
            .insert(id, ttl)
            .map_err(backend)?;
        wtx.commit().map_err(backend)?;
        let deadline = Instant::now() + Duration::from_secs(ttl as u64);
        state.leases.insert(id, Lease { ttl, deadline });
        Ok(id)
    }

    fn lease_keep_alive(&self, id: i64) -> Result<()> {
        let mut state = self.lock();
        let lease = state.leases.get_mut(&id).ok_or(Error::LeaseNotFound(id))?;
        lease.deadline = Instant::now() + Duration::from_secs(lease.ttl as u64);
        Ok(())
    }

    /// Removes a lease and its keys in one revision.
    fn lease_remove(&self, id: i64) -> Result<bool> {
        let mut state = self.lock();
        if state.leases.remove(&id).is_none() {
            return Ok(false);
        }
        let next = state.revision + 1;
        let wtx = self.db.begin_write().map_err(backend)?;
        let events = {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(backend)?;
            let prefix = lease_key(id, b"");
            let mut attached = Vec::new();
            for entry in lease_keys.range(prefix.as_slice()..).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                attached.push(k.value()[8..].to_vec());
            }
            let mut events = Vec::new();
            for key in attached {
                events.extend(remove_key(&mut kv, &mut lease_keys, &key, next)?);
            }
            wtx.open_table(LEASES)
                .map_err(backend)?
                .remove(id)
                .map_err(backend)?;
            events
        };
        if events.is_empty() {
            wtx.commit().map_err(backend)?;
        } else {
            self.commit(&mut state, wtx, events)?;
        }
        Ok(true)
    }

    fn expired_leases(&self) -> Vec<i64> {
        let now = Instant::now();
        let state = self.lock();
        state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Every key under `prefix`.
fn keys_in(kv: &redb::Table<&[u8], &[u8]>, prefix: &str) -> Result<Vec<Vec<u8>>> {
    let end = prefix_end(prefix);
    let iter = if end.is_empty() {
        kv.range(prefix.as_bytes()..).map_err(backend)?
    } else {
        kv.range(prefix.as_bytes()..end.as_slice())
            .map_err(backend)?
    };
    iter.map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(backend))
        .collect()
}

/// Removes a key (and its lease link); answers its delete event if it existed.
fn remove_key(
    kv: &mut redb::Table<&[u8], &[u8]>,
    lease_keys: &mut redb::Table<&[u8], ()>,
    key: &[u8],
    revision: i64,
) -> Result<Option<Event>> {
    let Some(old) = kv.remove(key).map_err(backend)? else {
        return Ok(None);
    };
    let key = key_string(key)?;
    let old = codec::decode_value(&key, old.value()).map_err(damaged)?;
    if old.lease != 0 {
        lease_keys
            .remove(lease_key(old.lease, key.as_bytes()).as_slice())
            .map_err(backend)?;
    }
    Ok(Some(Event::Delete(KeyValue {
        key,
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    })))
}

/// Rewrites the file when it is much larger than the pages in use (space
/// freed by a burst that steady use will not need again). Only at open: it
/// needs the database to itself. A failure leaves the file as it was.
fn compact_if_sparse(db: &mut Database, path: &Path) {
    let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else {
        return;
    };
    if size <= COMPACT_ON_OPEN_ABOVE {
        return;
    }
    let Ok(wtx) = db.begin_write() else {
        return;
    };
    let stats = wtx.stats();
    let _ = wtx.abort();
    let Ok(stats) = stats else {
        return;
    };
    let used = stats.allocated_pages() * stats.page_size() as u64;
    if size <= used.saturating_mul(SPARSE_FACTOR) {
        return;
    }
    match db.compact() {
        Ok(_) => {
            let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(size);
            tracing::info!(before = size, after, "store file compacted");
        }
        Err(err) => tracing::warn!(error = %err, "store file compaction failed"),
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
