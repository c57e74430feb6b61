//! The build log's buffer: output not yet written, cut to the log's bound,
//! and the chunks in the store (`build-logs/<n>/<seq>`), the oldest dropped
//! beyond `BUILD_LOG_MAX`. Pure: it answers the store operations to run,
//! and is told when they committed.

use std::collections::VecDeque;

use lb_model::keys::Keys;
use lb_model::{BUILD_LOG_DROPPED, BUILD_LOG_MAX};
use lb_store::Op;

/// A build's log: output not yet written, and the chunks in the store.
#[derive(Default)]
pub(crate) struct Log {
    /// Output since the last chunk written.
    pub(crate) pending: Vec<u8>,
    /// `pending` lost its front (more than the log keeps came at once).
    cut: bool,
    /// The next chunk's number.
    next: u64,
    /// Chunks in the store, oldest first: number and size.
    stored: VecDeque<(u64, usize)>,
    /// Bytes of `stored`.
    stored_bytes: usize,
}

/// The chunks after a write of [`Log::pending`]: applied once it committed.
pub(crate) struct LogWrite {
    next: u64,
    stored: VecDeque<(u64, usize)>,
    stored_bytes: usize,
}

impl Log {
    /// Appends one line, keeping `pending` within the bound.
    pub(crate) fn line(&mut self, line: &str) {
        self.pending
            .extend_from_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
        self.pending.push(b'\n');
        if self.pending.len() > BUILD_LOG_MAX {
            let cut = self.pending.len() - BUILD_LOG_MAX;
            let cut = self.pending[cut..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(cut, |p| cut + p + 1);
            self.pending.drain(..cut);
            self.cut = true;
        }
    }

    /// The store operations writing `pending` as the next chunk and
    /// deleting the oldest chunks beyond the bound (none when nothing is
    /// pending), and the state they lead to.
    pub(crate) fn write(
        &self,
        keys: &Keys,
        pid: &str,
        sid: &str,
        number: u64,
    ) -> (Vec<Op>, LogWrite) {
        let mut after = LogWrite {
            next: self.next,
            stored: self.stored.clone(),
            stored_bytes: self.stored_bytes,
        };
        if self.pending.is_empty() {
            return (Vec::new(), after);
        }
        let mut chunk = Vec::with_capacity(self.pending.len() + BUILD_LOG_DROPPED.len());
        if self.cut {
            chunk.extend_from_slice(BUILD_LOG_DROPPED.as_bytes());
        }
        chunk.extend_from_slice(&self.pending);
        let mut ops = Vec::new();
        while after.stored_bytes + chunk.len() > BUILD_LOG_MAX {
            let Some((seq, len)) = after.stored.pop_front() else {
                break;
            };
            ops.push(Op::delete(keys.build_log_chunk(pid, sid, number, seq)));
            after.stored_bytes -= len;
        }
        after.stored.push_back((self.next, chunk.len()));
        after.stored_bytes += chunk.len();
        after.next = self.next + 1;
        ops.push(Op::put(
            keys.build_log_chunk(pid, sid, number, self.next),
            chunk,
        ));
        (ops, after)
    }

    /// Takes in a write that committed.
    pub(crate) fn written(&mut self, after: LogWrite) {
        self.pending.clear();
        self.cut = false;
        self.next = after.next;
        self.stored = after.stored;
        self.stored_bytes = after.stored_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes what is pending as the store would take it: chunk number ->
    /// bytes, deletes removing.
    fn flush(log: &mut Log, store: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let keys = Keys::default();
        let (ops, after) = log.write(&keys, "P", "S", 1);
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    store.insert(key, value);
                }
                Op::Delete(key) => {
                    store.remove(&key);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        log.written(after);
    }

    fn joined(store: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
        let keys = Keys::default();
        let prefix = keys.build_log_prefix("P", "S", 1);
        let chunks = store
            .iter()
            .map(|(k, v)| (keys.build_log_seq(&prefix, k).unwrap(), v.as_slice()));
        String::from_utf8(lb_model::join_log_chunks(chunks)).unwrap()
    }

    #[test]
    fn log_appends_chunks_and_drops_the_oldest_beyond_the_bound() {
        let mut log = Log::default();
        let mut store = std::collections::BTreeMap::new();
        flush(&mut log, &mut store);
        assert!(store.is_empty(), "nothing pending, nothing written");
        log.line("one\r\n");
        flush(&mut log, &mut store);
        log.line("two");
        flush(&mut log, &mut store);
        assert_eq!(store.len(), 2);
        assert_eq!(joined(&store), "one\ntwo\n");

        // 100 KiB chunks: the oldest go once the log passes 256 KiB.
        let line = "x".repeat((100 << 10) - 1);
        for _ in 0..4 {
            log.line(&line);
            flush(&mut log, &mut store);
        }
        let total: usize = store.values().map(Vec::len).sum();
        assert!(total <= BUILD_LOG_MAX, "{total} bytes kept");
        assert_eq!(store.len(), 2, "the two newest chunks");
        let text = joined(&store);
        assert!(text.starts_with(BUILD_LOG_DROPPED), "marker first");
        assert_eq!(text.len(), BUILD_LOG_DROPPED.len() + (200 << 10));

        // More than the bound at once: cut at a line, marked in the chunk.
        let mut log = Log::default();
        let mut store = std::collections::BTreeMap::new();
        for i in 0..40_000 {
            log.line(&format!("line {i:05}"));
        }
        flush(&mut log, &mut store);
        let text = joined(&store);
        assert!(text.starts_with(BUILD_LOG_DROPPED), "{}", &text[..80]);
        assert!(text[BUILD_LOG_DROPPED.len()..].starts_with("line "));
        assert!(text.ends_with("line 39999\n"));
    }
}
