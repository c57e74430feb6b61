//! Blob uploads (push): sessions started by POST (or a cross-repository
//! mount), fed by PATCH chunks, finished by PUT with the digest; each is
//! hashed while written to `uploads/<id>` and moved into the blob store
//! only once its digest matches.
//!
//! Bounds: an upload holds at most [`MAX_UPLOAD`] bytes, and no more than
//! the repository owner's `registry_bytes` quota leaves (403 `DENIED`
//! naming it, checked when the upload starts, while it grows and when it
//! ends); an upload not written to for [`UPLOAD_TTL`] is deleted by a sweep
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

/// An upload in progress (its bytes are in `uploads/<id>`).
pub(super) struct Upload {
    pid: String,
    sid: String,
    hasher: Sha256,
    size: u64,
    /// The most bytes it may reach: [`MAX_UPLOAD`], or less when the
    /// owner's quota leaves less.
    limit: Limit,
}

/// What bounds an upload.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// The size cap of one upload.
    Cap(u64),
    /// What the owner's `registry_bytes` quota leaves.
    Quota { max: u64, left: u64 },
}

impl Limit {
    fn bytes(self) -> u64 {
        match self {
            Limit::Cap(n) => n,
            Limit::Quota { left, .. } => left,
        }
    }

    /// The error for an upload that would reach `size` bytes.
    fn refuse(self, size: u64) -> RegError {
        match self {
            Limit::Cap(max) => err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("an upload may hold at most {max} bytes; this one reached {size}"),
            ),
            Limit::Quota { max, .. } => quota_refused(max),
        }
    }
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
        let limit = self.limit(&pid, None).await?;
        let id = lb_model::ids::new_id().to_lowercase();
        private_file(&self.upload_path(&id)).await?;
        self.uploads_lock().insert(
            id.clone(),
            Upload {
                pid,
                sid,
                hasher: Sha256::new(),
                size: 0,
                limit,
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

    /// Appends a request body to an upload; answers its new size. With
    /// `start` (from Content-Range) the chunk must continue where the upload
    /// ends.
    async fn append(&self, id: &str, mut body: BodyStream, start: Option<u64>) -> Result<u64> {
        // Take the upload out while writing: a second request for the same
        // upload at the same time finds it missing instead of interleaving.
        let mut upload = self.uploads_lock().remove(id).ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                format!("upload {id:?} unknown or busy"),
            )
        })?;
        if let Some(start) = start {
            if start != upload.size {
                let size = upload.size;
                self.uploads_lock().insert(id.to_owned(), upload);
                return Err(err(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    format!("chunk starts at {start}, the upload has {size} bytes"),
                ));
            }
        }
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
                let size = upload.size + chunk.len() as u64;
                if size > upload.limit.bytes() {
                    return Err(upload.limit.refuse(size));
                }
                file.write_all(&chunk).await?;
                upload.hasher.update(&chunk);
                upload.size += chunk.len() as u64;
            }
            file.flush().await?;
            Ok::<_, RegError>(())
        }
        .await;
        let size = upload.size;
        if result.is_ok() {
            self.uploads_lock().insert(id.to_owned(), upload);
        } else {
            // The file and the hash may disagree now: the upload is over.
            let _ = tokio::fs::remove_file(self.upload_path(id)).await;
        }
        result.map(|()| size)
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
        let Some(upload) = self.uploads_lock().remove(id) else {
            return Err(err(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "upload unknown or busy",
            ));
        };
        let path = self.upload_path(id);
        let actual = hex::encode(upload.hasher.finalize());
        if actual != hex {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("the upload's digest is sha256:{actual}, not {digest}"),
            ));
        }
        // Other uploads may have finished meanwhile: the quota again.
        let known = self
            .blob_size(&upload.pid, &upload.sid, digest)
            .await?
            .is_some();
        if let Err(e) = self
            .limit(&upload.pid, Some(if known { 0 } else { upload.size }))
            .await
        {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        tokio::fs::File::open(&path).await?.sync_all().await?;
        let target = self.blob_path(&hex);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            tokio::fs::remove_file(&path).await?;
        } else {
            tokio::fs::rename(&path, &target).await?;
            sync_dir(&self.dir.join("blobs/sha256")).await;
        }
        self.link_blob(&upload.pid, &upload.sid, digest, upload.size)
            .await?;
        Ok(created(&format!("/v2/{name}/blobs/{digest}"), digest))
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
        if self.blob_size(pid, sid, digest).await?.is_none() {
            self.limit(pid, Some(size)).await?;
        }
        self.link_blob(pid, sid, digest, size).await?;
        Ok(Some(created(&format!("/v2/{name}/blobs/{digest}"), digest)))
    }
}

impl Registry {
    /// What an upload to project `pid` may hold: the size cap, or what the
    /// owner's `registry_bytes` quota leaves. `adding`: a blob of that size
    /// is about to be linked (403 when it does not fit); `None`: an upload
    /// starts (403 when nothing is left).
    async fn limit(&self, pid: &str, adding: Option<u64>) -> Result<Limit> {
        let cap = Limit::Cap(MAX_UPLOAD);
        let Some(kv) = self.store.get(&self.keys.project(pid)).await? else {
            return Ok(cap);
        };
        let Ok(project) = serde_json::from_slice::<lb_model::Project>(&kv.value) else {
            return Ok(cap);
        };
        let quota = match self.store.get(&self.keys.quota(&project.owner)).await? {
            Some(kv) => serde_json::from_slice::<lb_model::Quota>(&kv.value).unwrap_or_default(),
            None => return Ok(cap),
        };
        let Some(max) = quota.registry_bytes else {
            return Ok(cap);
        };
        let used = self.bytes_of(&project.owner).await? + adding.unwrap_or(0);
        let full = match adding {
            None => used >= max,
            Some(_) => used > max,
        };
        if full {
            return Err(quota_refused(max));
        }
        let left = max - used;
        Ok(if left < MAX_UPLOAD {
            Limit::Quota { max, left }
        } else {
            cap
        })
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
        let (registry, store, keys) = registry(dir.path()).await;
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
        let id = start(&registry).await.unwrap();
        let more = registry
            .continue_upload(
                &Method::PATCH,
                "p/s",
                &id,
                &HeaderMap::new(),
                &HashMap::new(),
                body(b"more than ten bytes"),
            )
            .await
            .unwrap_err();
        assert_eq!((more.status, more.code), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(more.message.contains("registry_bytes"), "{}", more.message);
        // Once the repositories hold the limit, no upload starts.
        registry
            .link_blob("p1", "s1", &format!("sha256:{}", "a".repeat(64)), 10)
            .await
            .unwrap();
        let full = start(&registry).await.unwrap_err();
        assert_eq!(full.status, StatusCode::FORBIDDEN);
    }
}
