//! The embedded store's bounds in time: history compaction (by revisions
//! and by bytes) and leases (grant, renew, revoke, expiry with their keys).

use super::file::remove_key;
use super::*;

impl Inner {
    pub(super) fn compact(&self, revision: i64) -> Result<()> {
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
    pub(super) fn compaction_due(&self, retention: Retention) -> Result<Option<i64>> {
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

    pub(super) fn lease_grant(&self, ttl: i64) -> Result<i64> {
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

    pub(super) fn lease_keep_alive(&self, id: i64) -> Result<()> {
        let mut state = self.lock();
        let lease = state.leases.get_mut(&id).ok_or(Error::LeaseNotFound(id))?;
        lease.deadline = Instant::now() + Duration::from_secs(lease.ttl as u64);
        Ok(())
    }

    /// Removes a lease and its keys in one revision.
    pub(super) fn lease_remove(&self, id: i64) -> Result<bool> {
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

    pub(super) fn expired_leases(&self) -> Vec<i64> {
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
