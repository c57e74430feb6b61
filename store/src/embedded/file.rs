//! The embedded store's file: opening (and compacting a sparse one),
//! reads, and writes — each transaction checked, applied and committed with
//! fsync under the writer lock — plus the history replayed to watches.

use super::*;

impl Inner {
    pub(super) fn open(path: PathBuf) -> Result<Self> {
        let shown = path.display().to_string();
        // A store of this process closing a moment ago (its last background
        // tick or blocking read still holding the file) frees it shortly;
        // another process holding it does not, and is reported as Locked.
        let mut opened = Database::create(&path);
        for _ in 0..20 {
            if !matches!(opened, Err(redb::DatabaseError::DatabaseAlreadyOpen)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            opened = Database::create(&path);
        }
        let mut db = opened.map_err(|err| match err {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, WriteState> {
        // A panic while holding the lock cannot leave the file inconsistent
        // (the redb transaction is dropped uncommitted), so go on.
        self.write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let rtx = self.db.begin_read().map_err(backend)?;
        let kv = rtx.open_table(KV).map_err(backend)?;
        let value = kv.get(key.as_bytes()).map_err(backend)?;
        value
            .map(|v| codec::decode_value(key, v.value()).map_err(damaged))
            .transpose()
    }

    pub(super) fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
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
    pub(super) fn apply(&self, txn: &Txn) -> Result<TxnResponse> {
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
    pub(super) fn commit(
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
    pub(super) fn history(&self, from: i64) -> Result<Vec<(i64, Vec<Event>)>> {
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
}

/// Every key under `prefix`.
pub(super) fn keys_in(kv: &redb::Table<&[u8], &[u8]>, prefix: &str) -> Result<Vec<Vec<u8>>> {
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
pub(super) fn remove_key(
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
