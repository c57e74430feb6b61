//! Blob uploads (push): sessions started by POST (or a cross-repository
//! mount), fed by PATCH chunks, finished by PUT with the digest; each is
//! hashed while written to `uploads/<id>` and moved into the blob store
//! only once its digest matches.
//!
//! Bounds: an upload holds at most [`MAX_UPLOAD`] bytes, and no more than
//! the repository owner's `registry_bytes` quota leaves (403 `DENIED`
//! naming it, checked when the upload starts, while it grows and when it
//! ends). The owner's open uploads count against the quota with the bytes
//! they hold, so uploads in parallel share what is left instead of each
//! taking all of it; an upload not written to for [`UPLOAD_TTL`] is deleted by a sweep
//! every [`SWEEP_EVERY`] ([`sweep`]), which also removes files left in
//! `uploads/` by manifests that never finished.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use lb_store::registry::Claims;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use warp::http::{HeaderMap, Method, StatusCode};

use super::blobs::sync_dir;
use super::digest::digest_hex;
use super::range::content_range_start;
use super::reply::{
    created, empty, err, method_not_allowed, upload_reply, RegError, Reply, Result,
};
use super::{BodyStream, Registry};
use lb_store::StoreExt;

/// The most bytes one upload (one blob) may hold: 10 GiB.
pub const MAX_UPLOAD: u64 = 10 << 30;
/// An upload not written to for this long is deleted.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// How often expired uploads are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An upload in progress (its bytes are in `uploads/<id>`). It stays in
/// the registry's map while a request writes to it (`busy`), its `size`
/// kept current chunk by chunk, so its bytes count against its owner's
/// quota all along.
pub(super) struct Upload {
    pid: String,
    sid: String,
    /// The hash so far (taken out while a request writes).
    hasher: Sha256,
    size: u64,
    /// The owner's `registry_bytes` quota, when one applies.
    quota: Option<Quota>,
    /// A request is writing to it (or finishing it).
    busy: bool,
}

/// The `registry_bytes` quota an upload counts against.
#[derive(Debug, Clone)]
struct Quota {
    /// The project owner's user id.
    owner: String,
    /// The limit.
    max: u64,
    /// Bytes of blobs linked in the owner's repositories: read when the
    /// upload started, raised as the owner's other uploads and mounts link
    /// blobs.
    linked: u64,
}

/// The error for an upload past [`MAX_UPLOAD`].
fn too_large(size: u64) -> RegError {
    err(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SIZE_INVALID",
        format!("an upload may hold at most {MAX_UPLOAD} bytes; this one reached {size}"),
    )
}

/// The error for a busy or unknown upload.
fn unknown_or_busy(id: &str) -> RegError {
    err(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        format!("upload {id:?} unknown or busy"),
    )
}

/// Bytes the open uploads of `owner` hold.
fn open_bytes(uploads: &HashMap<String, Upload>, owner: &str) -> u64 {
    uploads
        .values()
        .filter(|u| u.quota.as_ref().is_some_and(|q| q.owner == owner))
        .map(|u| u.size)
        .sum()
}

/// The 403 for a push past the owner's quota.
fn quota_refused(max: u64) -> RegError {
    err(
        StatusCode::FORBIDDEN,
        "DENIED",
        format!("quota exceeded: registry_bytes limit is {max} bytes (the project owner's repositories would hold more)"),
    )
}

impl Registry {
    /// POST `/blobs/uploads/`: mounts the blob from another repository
    /// when asked and possible, else opens an upload (finished at once when
    /// the request carries `?digest=` and the whole blob).
    pub(super) async fn start_upload(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        q: &HashMap<String, String>,
        claims: &Option<Claims>,
        body: BodyStream,
    ) -> Result<Reply> {
        let (pid, sid) = (pid.to_owned(), sid.to_owned());
        if let (Some(mount), Some(from)) = (q.get("mount"), q.get("from")) {
            if let Some(reply) = self.mount(name, &pid, &sid, mount, from, claims).await? {
                return Ok(reply);
            }
        }
        let quota = self.quota(&pid, None).await?;
        let id = lb_model::ids::new_id().to_lowercase();
        private_file(&self.upload_path(&id)).await?;
        self.uploads_lock().insert(
            id.clone(),
            Upload {
                pid,
                sid,
                hasher: Sha256::new(),
                size: 0,
                quota,
                busy: false,
            },
        );
        if let Some(digest) = q.get("digest") {
            // Monolithic: the whole blob in this request.
            return self.finish_upload(name, &id, digest, body, None).await;
        }
        Ok(upload_reply(StatusCode::ACCEPTED, name, &id, 0))
    }

    /// An open upload: its progress (GET/HEAD), a chunk (PATCH), its last
    /// chunk and digest (PUT), or its cancellation (DELETE).
    pub(super) async fn continue_upload(
        &self,
        method: &Method,
        name: &str,
        id: &str,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
        body: BodyStream,
    ) -> Result<Reply> {
        match *method {
            Method::GET | Method::HEAD => {
                let size = self.uploads_lock().get(id).map(|u| u.size).unwrap_or(0);
                Ok(upload_reply(StatusCode::NO_CONTENT, name, id, size))
            }
            Method::PATCH => {
                let start = content_range_start(headers)?;
                let size = self.append(id, body, start).await?;
                Ok(upload_reply(StatusCode::ACCEPTED, name, id, size))
            }
            Method::PUT => {
                let Some(digest) = q.get("digest") else {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "DIGEST_INVALID",
                        "completing an upload needs ?digest=",
                    ));
                };
                let start = content_range_start(headers)?;
                self.finish_upload(name, id, digest, body, start).await
            }
            Method::DELETE => {
                // A request writing to it finds it gone and stops.
                self.uploads_lock().remove(id);
                let _ = tokio::fs::remove_file(self.upload_path(id)).await;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            _ => Err(method_not_allowed()),
        }
    }

    fn uploads_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where upload `id` is written (manifests stage their bytes here too).
    pub(super) fn upload_path(&self, id: &str) -> PathBuf {
        self.dir.join("uploads").join(id)
    }

    /// Upload `id` exists and belongs to this repository.
    pub(super) fn check_upload(&self, id: &str, pid: &str, sid: &str) -> Result<()> {
        match self.uploads_lock().get(id) {
            Some(u) if u.pid == pid && u.sid == sid => Ok(()),
            _ => Err(err(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                format!("upload {id:?} unknown (finished, canceled, or lost in a restart)"),
            )),
        }
    }

    /// Marks upload `id` busy and takes its hasher out; answers the hasher
    /// and the size. A second request for the same upload at the same time
    /// finds it busy instead of interleaving.
    fn take(&self, id: &str) -> Result<(Sha256, u64)> {
        let mut uploads = self.uploads_lock();
        match uploads.get_mut(id) {
            Some(u) if !u.busy => {
                u.busy = true;
                Ok((std::mem::take(&mut u.hasher), u.size))
            }
            _ => Err(unknown_or_busy(id)),
        }
    }

    /// Counts `len` more bytes into upload `id`, if its size cap and its
    /// owner's quota (with the owner's other open uploads) leave room.
    fn grow(&self, id: &str, len: u64) -> Result<()> {
        let mut uploads = self.uploads_lock();
        let open = match uploads.get(id).and_then(|u| u.quota.as_ref()) {
            Some(q) => open_bytes(&uploads, &q.owner),
            None => 0,
        };
        // Canceled (DELETE) or expired while written to.
        let upload = uploads.get_mut(id).ok_or_else(|| unknown_or_busy(id))?;
        let size = upload.size + len;
        if size > MAX_UPLOAD {
            return Err(too_large(size));
        }
        if let Some(q) = &upload.quota {
            if q.linked + open + len > q.max {
                return Err(quota_refused(q.max));
            }
        }
        upload.size = size;
        Ok(())
    }

    /// Appends a request body to an upload; answers its new size. With
    /// `start` (from Content-Range) the chunk must continue where the upload
    /// ends.
    async fn append(&self, id: &str, mut body: BodyStream, start: Option<u64>) -> Result<u64> {
        let (mut hasher, size) = self.take(id)?;
        if let Some(start) = start {
            if start != size {
                if let Some(u) = self.uploads_lock().get_mut(id) {
                    u.hasher = hasher;
                    u.busy = false;
                }
                return Err(err(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    format!("chunk starts at {start}, the upload has {size} bytes"),
                ));
            }
        }
        let mut size = size;
        let result = async {
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(self.upload_path(id))
                .await?;
            // Request chunks are small: write in large pieces, each of
            // which is one trip to the blocking pool.
            let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    err(
                        StatusCode::BAD_REQUEST,
                        "BLOB_UPLOAD_INVALID",
                        format!("upload interrupted: {e}"),
                    )
                })?;
                self.grow(id, chunk.len() as u64)?;
                file.write_all(&chunk).await?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
            }
            file.flush().await?;
            Ok::<_, RegError>(())
        }
        .await;
        let kept = {
            let mut uploads = self.uploads_lock();
            match (&result, uploads.get_mut(id)) {
                (Ok(()), Some(upload)) => {
                    upload.hasher = hasher;
                    upload.busy = false;
                    true
                }
                _ => {
                    uploads.remove(id);
                    false
                }
            }
        };
        if kept {
            return Ok(size);
        }
        // The file and the hash may disagree now, or the upload was canceled
        // meanwhile: it is over.
        let _ = tokio::fs::remove_file(self.upload_path(id)).await;
        result.and(Err(unknown_or_busy(id)))
    }

    /// Appends the last chunk, checks the digest, moves the blob into place
    /// and links it into the repository.
    async fn finish_upload(
        &self,
        name: &str,
        id: &str,
        digest: &str,
        body: BodyStream,
        start: Option<u64>,
    ) -> Result<Reply> {
        let hex = match digest_hex(digest) {
            Ok(hex) => hex.to_owned(),
            Err(e) => {
                self.uploads_lock().remove(id);
                let _ = tokio::fs::remove_file(self.upload_path(id)).await;
                return Err(e);
            }
        };
        self.append(id, body, start).await?;
        // It stays in the map, busy, until linked: its bytes count against
        // the quota while other uploads finish.
        let (hasher, size) = self.take(id)?;
        let (pid, sid) = match self.uploads_lock().get(id) {
            Some(u) => (u.pid.clone(), u.sid.clone()),
            None => return Err(unknown_or_busy(id)),
        };
        let path = self.upload_path(id);
        let result = async {
            let actual = hex::encode(hasher.finalize());
            if actual != hex {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("the upload's digest is sha256:{actual}, not {digest}"),
                ));
            }
            // Other uploads may have finished meanwhile: the quota again,
            // with this one's bytes among the open ones.
            let known = self.blob_size(&pid, &sid, digest).await?.is_some();
            if !known {
                self.quota(&pid, Some(0)).await?;
            }
            tokio::fs::File::open(&path).await?.sync_all().await?;
            let target = self.blob_path(&hex);
            if tokio::fs::try_exists(&target).await.unwrap_or(false) {
                tokio::fs::remove_file(&path).await?;
            } else {
                tokio::fs::rename(&path, &target).await?;
                sync_dir(&self.dir.join("blobs/sha256")).await;
            }
            self.link_blob(&pid, &sid, digest, size).await?;
            Ok(known)
        }
        .await;
        let quota = self.uploads_lock().remove(id).and_then(|u| u.quota);
        match result {
            Ok(known) => {
                if let (false, Some(q)) = (known, quota) {
                    self.linked(&q.owner, size);
                }
                Ok(created(&format!("/v2/{name}/blobs/{digest}"), digest))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(e)
            }
        }
    }

    /// `size` more bytes linked in `owner`'s repositories: counted into
    /// the owner's open uploads.
    fn linked(&self, owner: &str, size: u64) {
        for upload in self.uploads_lock().values_mut() {
            if let Some(q) = upload.quota.as_mut().filter(|q| q.owner == owner) {
                q.linked += size;
            }
        }
    }

    /// Cross-repository mount: links a blob of `from` into this repository
    /// when the token may pull `from` and `from` has it.
    async fn mount(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        digest: &str,
        from: &str,
        claims: &Option<Claims>,
    ) -> Result<Option<Reply>> {
        digest_hex(digest)?;
        let Some((from_pid, from_sid)) = claims.as_ref().and_then(|c| c.allows(from, "pull"))
        else {
            return Ok(None);
        };
        let Some(size) = self.blob_size(from_pid, from_sid, digest).await? else {
            return Ok(None);
        };
        let quota = match self.blob_size(pid, sid, digest).await? {
            None => self.quota(pid, Some(size)).await?,
            Some(_) => None,
        };
        self.link_blob(pid, sid, digest, size).await?;
        if let Some(q) = quota {
            self.linked(&q.owner, size);
        }
        Ok(Some(created(&format!("/v2/{name}/blobs/{digest}"), digest)))
    }
}

impl Registry {
    /// The `registry_bytes` quota of project `pid`'s owner (`None`: no
    /// limit), checked against the blobs linked in the owner's repositories
    /// plus the bytes of the owner's open uploads. `adding`: a blob of that
    /// size is about to be linked (403 when it does not fit); `None`: an
    /// upload starts (403 when nothing is left).
    async fn quota(&self, pid: &str, adding: Option<u64>) -> Result<Option<Quota>> {
        let Some(kv) = self.store.get(&self.keys.project(pid)).await? else {
            return Ok(None);
        };
        let Ok(project) = serde_json::from_slice::<lb_model::Project>(&kv.value) else {
            return Ok(None);
        };
        let quota = match self.store.get(&self.keys.quota(&project.owner)).await? {
            Some(kv) => serde_json::from_slice::<lb_model::Quota>(&kv.value).unwrap_or_default(),
            None => return Ok(None),
        };
        let Some(max) = quota.registry_bytes else {
            return Ok(None);
        };
        let linked = self.bytes_of(&project.owner).await?;
        let open = open_bytes(&self.uploads_lock(), &project.owner);
        let used = linked
            .saturating_add(open)
            .saturating_add(adding.unwrap_or(0));
        let full = match adding {
            None => used >= max,
            Some(_) => used > max,
        };
        if full {
            return Err(quota_refused(max));
        }
        Ok(Some(Quota {
            owner: project.owner,
            max,
            linked,
        }))
    }

    /// Bytes of blobs in the repositories of `owner`'s projects.
    async fn bytes_of(&self, owner: &str) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Blob {
            size: u64,
        }
        let (projects, _) = self
            .store
            .list(&self.keys.project_index_prefix(owner))
            .await?;
        let mut total = 0;
        for index in projects {
            let pid = String::from_utf8_lossy(&index.value).into_owned();
            let (kvs, _) = self.store.list(&self.keys.project_images(&pid)).await?;
            total += kvs
                .iter()
                .filter(|kv| kv.key.contains("/blobs/"))
                .filter_map(|kv| serde_json::from_slice::<Blob>(&kv.value).ok())
                .map(|b| b.size)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Deletes uploads (and staged manifests) whose file was not written
    /// for `ttl`: a client that started an upload and went away.
    pub(super) async fn expire_uploads(&self, ttl: Duration) -> usize {
        let dir = self.dir.join("uploads");
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return 0;
        };
        let mut expired = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let idle = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok());
            if idle.is_none_or(|idle| idle < ttl) {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            self.uploads_lock().remove(&id);
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                expired += 1;
            }
        }
        if expired > 0 {
            tracing::info!(expired, "registry: expired uploads deleted");
        }
        expired
    }
}

/// Deletes expired uploads every [`SWEEP_EVERY`] (sleeping in between)
/// until the registry is dropped.
pub async fn sweep(registry: Weak<Registry>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.expire_uploads(UPLOAD_TTL).await;
    }
}

/// Creates (or truncates) a file only lb's user may read (0600): uploads
/// become blobs by a rename, which keeps the mode.
pub(super) async fn private_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(lb_store::private::FILE_MODE)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lb_model::keys::Keys;
    use lb_store::embedded::EmbeddedStore;
    use lb_store::{Shared, StoreExt};

    use super::*;

    fn body(bytes: &'static [u8]) -> BodyStream {
        Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from_static(
            bytes,
        ))]))
    }

    async fn registry(dir: &std::path::Path) -> (Arc<Registry>, Shared, Keys) {
        let store: Shared = Arc::new(EmbeddedStore::open_dir(&dir.join("store")).await.unwrap());
        let keys = Keys::default();
        let registry = Registry::new(store.clone(), keys.clone(), &dir.join("reg"), String::new())
            .await
            .unwrap();
        (registry, store, keys)
    }

    async fn start(registry: &Registry) -> Result<String> {
        let reply = registry
            .start_upload("p/s", "p1", "s1", &HashMap::new(), &None, body(b""))
            .await?;
        Ok(reply.headers()["docker-upload-uuid"]
            .to_str()
            .unwrap()
            .to_owned())
    }

    #[tokio::test]
    async fn an_upload_left_alone_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _, _) = registry(dir.path()).await;
        let id = start(&registry).await.unwrap();
        assert_eq!(registry.expire_uploads(UPLOAD_TTL).await, 0);
        assert!(registry.check_upload(&id, "p1", "s1").is_ok());
        assert_eq!(registry.expire_uploads(Duration::ZERO).await, 1);
        assert!(registry.check_upload(&id, "p1", "s1").is_err());
        assert!(!registry.upload_path(&id).exists());
    }

    #[tokio::test]
    async fn uploads_stop_at_the_owners_registry_quota() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _, _) = registry_of_a_10_byte_quota(dir.path()).await;
        let id = start(&registry).await.unwrap();
        denied(
            patch(&registry, &id, b"more than ten bytes")
                .await
                .unwrap_err(),
        );
        // Once the repositories hold the limit, no upload starts.
        registry
            .link_blob("p1", "s1", &format!("sha256:{}", "a".repeat(64)), 10)
            .await
            .unwrap();
        let full = start(&registry).await.unwrap_err();
        assert_eq!(full.status, StatusCode::FORBIDDEN);
    }

    /// A registry whose project `p` (`p1`) belongs to `u1`, whose quota is
    /// 10 registry bytes.
    async fn registry_of_a_10_byte_quota(dir: &std::path::Path) -> (Arc<Registry>, Shared, Keys) {
        let (registry, store, keys) = registry(dir).await;
        let project = serde_json::json!({"id": "p1", "name": "p", "owner": "u1",
            "description": "", "created": 1, "updated": 1});
        store
            .put(&keys.project("p1"), project.to_string().into_bytes())
            .await
            .unwrap();
        store
            .put(&keys.project_index("u1", "p"), b"p1".to_vec())
            .await
            .unwrap();
        store
            .put(&keys.quota("u1"), br#"{"registry_bytes": 10}"#.to_vec())
            .await
            .unwrap();
        (registry, store, keys)
    }

    async fn patch(registry: &Registry, id: &str, bytes: &'static [u8]) -> Result<Reply> {
        registry
            .continue_upload(
                &Method::PATCH,
                "p/s",
                id,
                &HeaderMap::new(),
                &HashMap::new(),
                body(bytes),
            )
            .await
    }

    /// PUT with the digest of `bytes`, the whole blob, already sent.
    async fn finish(registry: &Registry, id: &str, bytes: &[u8]) -> Result<Reply> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let q = HashMap::from([("digest".to_owned(), digest)]);
        registry
            .continue_upload(&Method::PUT, "p/s", id, &HeaderMap::new(), &q, body(b""))
            .await
    }

    fn denied(e: RegError) {
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(e.message.contains("registry_bytes"), "{}", e.message);
    }

    #[tokio::test]
    async fn parallel_uploads_share_what_the_quota_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, store, keys) = registry_of_a_10_byte_quota(dir.path()).await;
        // Two uploads open at once: the bytes one holds are not the other's
        // to take (each alone would fit in 10).
        let a = start(&registry).await.unwrap();
        let b = start(&registry).await.unwrap();
        let c = start(&registry).await.unwrap();
        patch(&registry, &a, b"aaaaaa").await.unwrap();
        denied(patch(&registry, &b, b"bbbbb").await.unwrap_err());
        assert!(registry.check_upload(&b, "p1", "s1").is_err());
        // A finishes (6 bytes linked); C, open since before, sees them.
        finish(&registry, &a, b"aaaaaa").await.unwrap();
        denied(patch(&registry, &c, b"ccccc").await.unwrap_err());
        // What is left still goes, in pieces, and finishes.
        let d = start(&registry).await.unwrap();
        patch(&registry, &d, b"dd").await.unwrap();
        patch(&registry, &d, b"dd").await.unwrap();
        denied(patch(&registry, &d, b"d").await.unwrap_err());
        let e = start(&registry).await.unwrap();
        patch(&registry, &e, b"eeee").await.unwrap();
        // An open upload holding the rest: no other starts.
        denied(start(&registry).await.unwrap_err());
        finish(&registry, &e, b"eeee").await.unwrap();
        denied(start(&registry).await.unwrap_err());
        // Canceling an upload gives its bytes back.
        store
            .put(&keys.quota("u1"), br#"{"registry_bytes": 14}"#.to_vec())
            .await
            .unwrap();
        let f = start(&registry).await.unwrap();
        patch(&registry, &f, b"ffff").await.unwrap();
        denied(start(&registry).await.unwrap_err());
        registry
            .continue_upload(
                &Method::DELETE,
                "p/s",
                &f,
                &HeaderMap::new(),
                &HashMap::new(),
                body(b""),
            )
            .await
            .unwrap();
        let g = start(&registry).await.unwrap();
        patch(&registry, &g, b"gggg").await.unwrap();
        finish(&registry, &g, b"gggg").await.unwrap();
    }
}
