//! Blob uploads (push): sessions started by POST (or a cross-repository
//! mount), fed by PATCH chunks, finished by PUT with the digest; each is
//! hashed while written to `uploads/<id>` and moved into the blob store
//! only once its digest matches.

use std::collections::HashMap;
use std::path::PathBuf;

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

/// An upload in progress (its bytes are in `uploads/<id>`).
pub(super) struct Upload {
    pid: String,
    sid: String,
    hasher: Sha256,
    size: u64,
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
        let id = lb_model::ids::new_id().to_lowercase();
        private_file(&self.upload_path(&id)).await?;
        self.uploads_lock().insert(
            id.clone(),
            Upload {
                pid,
                sid,
                hasher: Sha256::new(),
                size: 0,
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
        self.link_blob(pid, sid, digest, size).await?;
        Ok(Some(created(&format!("/v2/{name}/blobs/{digest}"), digest)))
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
