//! Garbage collection of the registry: mark and sweep, so deleted and
//! superseded images give their disk back.
//!
//! Mark: the roots are every tag and every digest a service spec or a
//! node's assignment names (what runs and what a rollback goes back to);
//! from them, manifests (an index's children too) and the blobs they
//! reference (config and layers). A manifest record no root reaches is
//! deleted once its file is older than the grace (a manifest pushed by
//! digest alone lives that long). Sweep: a blob file no kept manifest
//! references and older than the grace is removed with every repository's
//! link to it; links whose file is gone are removed too.
//!
//! Safe with pushes going on: a blob uploaded during a pass is younger
//! than the grace, so it survives until a manifest references it; a pass
//! holds the registry's `gc_lock` for writing while a manifest PUT holds it
//! for reading across its checks and its write, so a manifest lands either
//! before the pass marks (and its blobs are marked) or after the sweep (and
//! finds a swept blob missing, answering `MANIFEST_BLOB_UNKNOWN`, so the
//! client uploads it again).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_model::keys::Parsed;
use lb_store::{Op, StoreExt};

use super::Registry;

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Manifest records deleted (untagged, unused, older than the grace).
    pub manifests: usize,
    /// Blob files removed.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blob files kept: referenced, or younger than the grace.
    pub kept: usize,
}

/// Errors of a pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("registry gc: store: {0}")]
    Store(#[from] lb_store::Error),
    /// The blob directory could not be read.
    #[error("registry gc: {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One repository's records.
#[derive(Default)]
struct Repo {
    /// Manifest digests with a record.
    manifests: HashSet<String>,
    /// Digests tags point at.
    tagged: HashSet<String>,
    /// Blob links: digest -> key.
    links: BTreeMap<String, String>,
}

/// Every `sha256:<64 hex>` in a value.
fn digests_in(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    const PREFIX: &[u8] = b"sha256:";
    (0..bytes.len().saturating_sub(PREFIX.len() + 63)).filter_map(move |i| {
        let rest = &bytes[i..];
        let hex = rest.strip_prefix(PREFIX)?.get(..64)?;
        hex.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then(|| format!("sha256:{}", String::from_utf8_lossy(hex)))
    })
}

fn older_than(meta: &std::fs::Metadata, grace: Duration, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= grace)
}

impl Registry {
    /// Digests named by service specs and nodes' assignments.
    async fn in_use(&self) -> Result<HashSet<String>, Error> {
        let mut used = HashSet::new();
        for prefix in [self.keys.projects(), self.keys.nodes()] {
            let (kvs, _) = self.store.list(&prefix).await?;
            for kv in kvs {
                if matches!(
                    self.keys.parse(&kv.key),
                    Some(Parsed::ServiceSpec { .. } | Parsed::NodeReplica { .. })
                ) {
                    used.extend(digests_in(&kv.value));
                }
            }
        }
        Ok(used)
    }

    /// The repositories' records, by (pid, sid).
    async fn repositories(&self) -> Result<BTreeMap<(String, String), Repo>, Error> {
        let root = self.keys.images_all();
        let (kvs, _) = self.store.list(&root).await?;
        let mut repos: BTreeMap<(String, String), Repo> = BTreeMap::new();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(&root) else {
                continue;
            };
            let parts: Vec<&str> = rest.splitn(4, '/').collect();
            let [pid, sid, kind, name] = parts[..] else {
                continue;
            };
            let repo = repos.entry((pid.to_owned(), sid.to_owned())).or_default();
            match kind {
                "manifests" => {
                    repo.manifests.insert(name.to_owned());
                }
                "tags" => {
                    repo.tagged.extend(digests_in(&kv.value));
                }
                "blobs" => {
                    repo.links.insert(name.to_owned(), kv.key.clone());
                }
                _ => {}
            }
        }
        Ok(repos)
    }

    /// A manifest's references: (child manifests, blobs). A manifest file
    /// that cannot be read references nothing.
    async fn references(&self, digest: &str) -> (Vec<String>, Vec<String>) {
        let Ok(hex) = super::digest::digest_hex(digest) else {
            return Default::default();
        };
        let Ok(bytes) = tokio::fs::read(self.blob_path(hex)).await else {
            return Default::default();
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Default::default();
        };
        let digest_of = |v: &serde_json::Value| v["digest"].as_str().map(str::to_owned);
        let children = value["manifests"]
            .as_array()
            .map(|a| a.iter().filter_map(digest_of).collect())
            .unwrap_or_default();
        let mut blobs: Vec<String> = value["layers"]
            .as_array()
            .map(|a| a.iter().filter_map(digest_of).collect())
            .unwrap_or_default();
        blobs.extend(digest_of(&value["config"]));
        (children, blobs)
    }

    /// One mark and sweep pass; blobs and untagged manifests younger than
    /// `grace` are kept.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<Report, Error> {
        let _gc = self.gc_lock.write().await;
        let now = SystemTime::now();
        let used = self.in_use().await?;
        let repos = self.repositories().await?;
        let mut report = Report::default();
        let mut marked: HashSet<String> = HashSet::new();
        let mut deletes = Vec::new();
        for ((pid, sid), repo) in &repos {
            // Reachable manifests of this repository, from its roots.
            let mut kept: HashSet<String> = HashSet::new();
            let mut todo: Vec<String> = repo
                .manifests
                .iter()
                .filter(|d| repo.tagged.contains(*d) || used.contains(*d))
                .cloned()
                .collect();
            // Unreached but young: kept for the grace.
            for d in &repo.manifests {
                if todo.contains(d) {
                    continue;
                }
                let young = match super::digest::digest_hex(d) {
                    Ok(hex) => tokio::fs::metadata(self.blob_path(hex))
                        .await
                        .is_ok_and(|m| !older_than(&m, grace, now)),
                    Err(_) => false,
                };
                if young {
                    todo.push(d.clone());
                }
            }
            while let Some(d) = todo.pop() {
                if !kept.insert(d.clone()) {
                    continue;
                }
                let (children, blobs) = self.references(&d).await;
                marked.extend(blobs);
                todo.extend(children.into_iter().filter(|c| repo.manifests.contains(c)));
            }
            for d in &repo.manifests {
                if kept.contains(d) {
                    marked.insert(d.clone());
                } else {
                    tracing::info!(project = %pid, service = %sid, digest = %d, "registry gc: deleting an untagged, unused manifest");
                    deletes.push(Op::delete(self.keys.image_manifest(pid, sid, d)));
                    report.manifests += 1;
                }
            }
        }
        // Sweep the files.
        let dir = self.dir.join("blobs/sha256");
        let io = |source| Error::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io)?;
        let mut on_disk: HashSet<String> = HashSet::new();
        let mut swept: HashSet<String> = HashSet::new();
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            on_disk.insert(digest.clone());
            if marked.contains(&digest) || !older_than(&meta, grace, now) {
                report.kept += 1;
                continue;
            }
            files.push((digest, entry.path(), meta.len()));
        }
        // Links first, then files: a link without its file is no blob to
        // a manifest PUT, a file without a link is only space.
        for ((_, _), repo) in &repos {
            for (digest, key) in &repo.links {
                let sweeping = files.iter().any(|(d, _, _)| d == digest);
                if sweeping || !on_disk.contains(digest) {
                    deletes.push(Op::delete(key.clone()));
                }
            }
        }
        self.store.write_all(deletes).await?;
        for (digest, path, len) in files {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {
                    report.blobs += 1;
                    report.bytes += len;
                    swept.insert(digest);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "registry gc: cannot remove a blob")
                }
            }
        }
        if !swept.is_empty() {
            super::blobs::sync_dir(&dir).await;
        }
        Ok(report)
    }
}

/// Runs a pass every `interval` (the first one `interval` after the
/// start) until `shutdown` resolves.
pub async fn run(
    registry: Arc<Registry>,
    interval: Duration,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut shutdown => return,
        }
        match registry.collect_garbage(grace).await {
            Ok(r) if r.blobs > 0 || r.manifests > 0 => tracing::info!(
                manifests = r.manifests,
                blobs = r.blobs,
                bytes = r.bytes,
                kept = r.kept,
                "registry gc: swept"
            ),
            Ok(_) => tracing::debug!("registry gc: nothing to sweep"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::digests_in;

    #[test]
    fn digests_are_found_in_values() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let value = format!(r#"{{"image":"127.0.0.1:5000/p/s@{a}","x":"{b}","y":"sha256:abc"}}"#);
        let found: Vec<String> = digests_in(value.as_bytes()).collect();
        assert_eq!(found, vec![a, b]);
        assert_eq!(digests_in(b"").count(), 0);
    }
}
