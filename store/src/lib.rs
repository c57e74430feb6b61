//! lb's store crate: everything that reads or writes the key tree. The
//! [`Store`] trait, its two backends, the watch cache, sealed secrets, the
//! registry's token keys and the cluster secrets every component loads.
//! Models and key spelling live in `lb-model`; this crate adds the IO.
//!
//! The store: one async interface over a revisioned key-value tree, with two
//! backends of the same semantics — etcd ([`etcd::EtcdStore`]) for clusters and
//! a single file ([`embedded::EmbeddedStore`]) for one machine.
//!
//! Semantics, shared by both backends and checked by one conformance suite
//! (`store/tests/store_conformance.rs`):
//!
//! - Every committed write (a put, a delete or a transaction with at least one
//!   mutation) gets the next store revision; revisions only rise, also across
//!   restarts. A key carries its `create_revision` and `mod_revision`.
//! - Conditional writes compare a key's `mod_revision`; `0` means "absent", so
//!   create-if-absent is a compare against `0`.
//! - Ranges are paged by key order; each page is read at its own revision. The
//!   reflector pattern — list, then watch from the first page's revision + 1 —
//!   misses nothing, because the watch replays every change after that revision.
//! - Watches replay kept history from any revision not yet compacted; asking
//!   for a compacted revision fails with [`Error::Compacted`].
//! - Leases expire after their TTL unless kept alive; expiry deletes the keys
//!   attached to them, visible to watchers as delete events.

pub mod cache;
pub mod codec;
pub mod deploys;
pub mod embedded;
pub mod etcd;
pub mod private;
pub mod registry;
pub mod secrets;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested revision was compacted away; relist and watch from the
    /// returned revision.
    #[error("revision {requested} was compacted (oldest kept revision is {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction point: history before it is gone.
        compact_revision: i64,
    },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(i64),
    /// The embedded data file is held by another process.
    #[error("data file {path} is locked by another lb process")]
    Locked {
        /// The data file.
        path: String,
    },
    /// The embedded data file cannot be read as an lb store.
    #[error("data file {path} is corrupt or not an lb store: {reason}")]
    Corrupt {
        /// The data file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The store could not be reached (etcd down, network).
    #[error("{0}")]
    Unavailable(String),
    /// An argument the store refuses (empty key, bad TTL, too many operations).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// A local IO error of the embedded backend.
    #[error("store io error on {path}")]
    Io {
        /// The file involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Any other backend failure.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A key with its value and revisions, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The raw value (JSON for lb's own records).
    pub value: Vec<u8>,
    /// Revision of the put that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last put (or, in a delete event, of the deletion).
    pub mod_revision: i64,
    /// Number of puts since the key was created.
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// Encodes one of lb's records (JSON) for a put. Models always serialize:
/// they hold no maps with non-string keys and no failing `Serialize`.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("models serialize")
}

/// A compare in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the given one; `0` means "absent".
    ModRevision(String, i64),
}

/// An operation in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, optionally attached to a lease (0 = none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Lease id, 0 for none.
        lease: i64,
    },
    /// Delete one key (no error if absent).
    Delete(String),
    /// Delete every key starting with the prefix.
    DeletePrefix(String),
    /// Read one key.
    Get(String),
}

impl Op {
    /// A put with no lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete(key.into())
    }
}

/// A multi-op transaction: if every compare holds, `success` runs, else
/// `failure`; either way atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations run when the compares hold.
    pub success: Vec<Op>,
    /// Operations run when a compare fails.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an operation to the success branch.
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an operation to the failure branch.
    pub fn or_else(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }
}

/// The outcome of one operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A put was applied.
    Put,
    /// Deletes: how many keys were removed.
    Deleted(i64),
    /// A get: the key if present.
    Get(Option<KeyValue>),
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
    /// One result per operation of the branch that ran.
    pub results: Vec<OpResult>,
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys in key order.
    pub kvs: Vec<KeyValue>,
    /// More keys follow: ask again with `after` = the last key.
    pub more: bool,
    /// The store revision this page was read at.
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was written; the value is the new one.
    Put(KeyValue),
    /// A key was deleted; `mod_revision` is the revision of the deletion and
    /// the value is empty.
    Delete(KeyValue),
}

impl Event {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) | Event::Delete(kv) => &kv.key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) | Event::Delete(kv) => kv.mod_revision,
        }
    }
}

/// The changes of one revision that a watch matched, all together: a
/// transaction's events are never split across items, so a consumer never
/// sees half of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The revision.
    pub revision: i64,
    /// Its events under the watched prefix, in the order they were made.
    pub events: Vec<Event>,
}

/// A stream of watch changes, one item per revision, in revision order. It ends with an error item
/// when history it needs was compacted ([`Error::Compacted`]): a watch from a
/// compacted revision fails either at once (embedded) or with that first item
/// (etcd reports it after creating the watch).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Changes>> + Send>>;

/// The store interface. Cheap to clone through [`Shared`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads up to `limit` keys starting with `prefix`, strictly after the key
    /// `after` when given, in key order. `limit` 0 means no limit.
    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page>;

    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams changes to keys starting with `prefix` from `from_revision`
    /// (inclusive; `0` means "from now on").
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// The current store revision.
    async fn revision(&self) -> Result<i64>;

    /// Drops history before `revision`: watches from older revisions fail with
    /// [`Error::Compacted`].
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Grants a lease of `ttl_secs` seconds (at least 1).
    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64>;

    /// Renews a lease for another full TTL; fails with
    /// [`Error::LeaseNotFound`] when it already expired.
    async fn lease_keep_alive(&self, lease: i64) -> Result<()>;

    /// Revokes a lease at once, deleting its keys.
    async fn lease_revoke(&self, lease: i64) -> Result<()>;

    /// A window of the keys under `prefix` in key order — at most `limit`
    /// from position `offset` — and how many keys there are in all: a page
    /// of a long listing without copying the rest (the cache counts in
    /// memory; other stores list).
    async fn window(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, usize)> {
        let (all, _) = self.list(prefix).await?;
        let total = all.len();
        Ok((all.into_iter().skip(offset).take(limit).collect(), total))
    }

    /// Every key under `prefix` as of one revision, and that revision: a
    /// consistent copy for backups. The default reads it in one request;
    /// stores whose single reads are bounded page at a pinned revision.
    async fn snapshot(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let page = self.range(prefix, None, 0).await?;
        Ok((page.kvs, page.revision))
    }

    /// What one transaction may carry on this store.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Where the cluster's keys are kept apart from the store's data (see
    /// [`secrets`]): the embedded store's `<data-dir>/keys`, the etcd
    /// store's `LB_KEYS_DIR`; `None` keeps them in the store. Wrappers
    /// forward it.
    fn key_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// A store shared between tasks.
pub type Shared = Arc<dyn Store>;

/// Convenience operations built on [`Store::txn`], for every backend.
#[async_trait]
pub trait StoreExt: Store {
    /// Puts unconditionally; answers the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        Ok(self
            .txn(Txn::new().then(Op::put(key, value)))
            .await?
            .revision)
    }

    /// Puts only if the key's `mod_revision` equals `expected` (0 = absent).
    /// Answers `Some(new revision)`, or `None` on a conflict.
    async fn put_if(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when(Compare::ModRevision(key.to_owned(), expected))
            .then(Op::put(key, value));
        let resp = self.txn(txn).await?;
        Ok(resp.succeeded.then_some(resp.revision))
    }

    /// Creates the key only if absent. Answers `Some(revision)` when created.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Option<i64>> {
        self.put_if(key, value, 0).await
    }

    /// Deletes only if the key's `mod_revision` equals `expected`. Answers
    /// whether it was deleted.
    async fn delete_if(&self, key: &str, expected: i64) -> Result<bool> {
        let txn = Txn::new()
            .when(Compare::ModRevision(key.to_owned(), expected))
            .then(Op::delete(key));
        Ok(self.txn(txn).await?.succeeded)
    }

    /// Deletes a key unconditionally; answers whether it existed.
    async fn delete(&self, key: &str) -> Result<bool> {
        let resp = self.txn(Txn::new().then(Op::delete(key))).await?;
        Ok(matches!(resp.results.first(), Some(OpResult::Deleted(n)) if *n > 0))
    }

    /// Reads every key under `prefix`, page by page. Answers the keys and the
    /// revision of the first page: watching from it + 1 misses no change.
    /// Puts or deletes many keys that need no atomicity together, in as
    /// few transactions as the store's [`Limits`] allow.
    async fn write_all(&self, ops: Vec<Op>) -> Result<()> {
        for txn in split(ops, self.limits()) {
            self.txn(txn).await?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        let mut first_revision = None;
        loop {
            let page = self.range(prefix, after.as_deref(), PAGE).await?;
            first_revision.get_or_insert(page.revision);
            after = page.kvs.last().map(|kv| kv.key.clone());
            out.extend(page.kvs);
            if !page.more || after.is_none() {
                break;
            }
        }
        Ok((out, first_revision.unwrap_or_default()))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The end of the key range of a prefix: the smallest key greater than every
/// key starting with `prefix` (etcd's "range end"). Empty means "no end".
/// Packs independent operations into unconditional transactions within
/// `limits` (an operation too large on its own goes alone, and the store
/// names the problem).
pub fn split(ops: Vec<Op>, limits: Limits) -> Vec<Txn> {
    let mut out = Vec::new();
    let mut txn = Txn::new();
    let mut size = Limits::size(&txn);
    for op in ops {
        let weight = Limits::op_size(&op);
        if !txn.success.is_empty()
            && (txn.success.len() >= limits.max_ops || size + weight > limits.max_bytes)
        {
            out.push(std::mem::take(&mut txn));
            size = Limits::size(&txn);
        }
        size += weight;
        txn.success.push(op);
    }
    if !txn.success.is_empty() {
        out.push(txn);
    }
    out
}

pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Where the store lives, from `--etcd` / `--data-dir`.
#[derive(Debug, Clone)]
pub enum Backend {
    /// etcd endpoints, e.g. `http://127.0.0.1:2379`.
    Etcd(Vec<String>),
    /// etcd endpoints reached with TLS files and/or a user
    /// (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`, `--etcd-user`).
    EtcdWith(Vec<String>, etcd::EtcdAccess),
    /// The embedded store in this data directory.
    Embedded(std::path::PathBuf),
}

/// The key directory every lb process of an etcd cluster shares
/// (`LB_KEYS_DIR`), if set.
fn key_dir_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os("LB_KEYS_DIR")
        .filter(|d| !d.is_empty())
        .map(Into::into)
}

/// Opens the store chosen by `backend`.
pub async fn open(backend: &Backend) -> Result<Shared> {
    open_with(backend, Limits::default()).await
}

/// Opens a store whose transactions are held to `limits` (for an etcd
/// cluster configured with other limits than etcd's defaults).
pub async fn open_with(backend: &Backend, limits: Limits) -> Result<Shared> {
    Ok(match backend {
        Backend::Etcd(endpoints) => Arc::new(
            etcd::EtcdStore::connect(endpoints)
                .await?
                .with_limits(limits)
                .with_key_dir(key_dir_from_env()),
        ),
        Backend::EtcdWith(endpoints, access) => Arc::new(
            etcd::EtcdStore::connect_with(endpoints, access)
                .await?
                .with_limits(limits)
                .with_key_dir(key_dir_from_env()),
        ),
        Backend::Embedded(dir) => Arc::new(embedded::EmbeddedStore::open_dir(dir).await?),
    })
}

/// What one transaction may carry. etcd refuses a request with more
/// compares, or more operations in either branch, than `--max-txn-ops`
/// (default 128), and a request larger than `--max-request-bytes` (default
/// 1.5 MiB). lb runs on etcd's defaults: writers that may touch many keys
/// split their work into transactions that fit ([`Limits::fits`]), and the
/// embedded store enforces the same limits so both backends fail alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Compares, or operations per branch, in one transaction.
    pub max_ops: usize,
    /// Bytes of one request (as [`Limits::size`] estimates it).
    pub max_bytes: usize,
}

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ops: DEFAULT_MAX_TXN_OPS,
            max_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

impl Limits {
    /// An upper estimate of a transaction's request size: keys and values
    /// plus the framing of each entry (protobuf tags and lengths, well under
    /// 32 bytes an entry).
    pub fn size(txn: &Txn) -> usize {
        let op = Self::op_size;
        let compares: usize = txn.compares.iter().map(Self::compare_size).sum();
        compares
            + txn
                .success
                .iter()
                .chain(&txn.failure)
                .map(op)
                .sum::<usize>()
            + 64
    }

    /// The estimated bytes of one operation in a request.
    pub fn op_size(op: &Op) -> usize {
        match op {
            Op::Put { key, value, .. } => key.len() + value.len() + 32,
            Op::Delete(key) | Op::DeletePrefix(key) | Op::Get(key) => 2 * key.len() + 32,
        }
    }

    /// The estimated bytes of one compare in a request.
    pub fn compare_size(compare: &Compare) -> usize {
        match compare {
            Compare::ModRevision(key, _) => key.len() + 32,
        }
    }

    /// Whether `txn` is within these limits.
    pub fn fits(&self, txn: &Txn) -> bool {
        self.check(txn).is_ok()
    }

    /// `Ok` when `txn` is within these limits, else the error naming which.
    pub fn check(&self, txn: &Txn) -> Result<()> {
        let ops = txn
            .compares
            .len()
            .max(txn.success.len())
            .max(txn.failure.len());
        if ops > self.max_ops {
            return Err(Error::Invalid(format!(
                "too many operations in txn request: {ops} (at most {}, --etcd-max-txn-ops)",
                self.max_ops
            )));
        }
        let size = Self::size(txn);
        if size > self.max_bytes {
            return Err(Error::Invalid(format!(
                "request is too large: about {size} bytes (at most {}, --etcd-max-request-bytes)",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// The bytes a transaction may still take after `used`.
    pub fn room(&self, used: usize) -> usize {
        self.max_bytes.saturating_sub(used)
    }
}
