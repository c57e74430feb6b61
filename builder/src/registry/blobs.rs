//! The blob store: blobs (layers, configs, manifests) kept once by digest
//! under `blobs/sha256/<hex>`, which repository holds which (`blobs/<digest>`
//! in the store), and serving them (GET, HEAD, Range) in large chunks.

use std::path::{Path, PathBuf};

use futures::Stream;
use lb_store::StoreExt;
use serde::{Deserialize, Serialize};
use warp::http::{HeaderMap, HeaderValue, Response, StatusCode};
use warp::hyper::Body;

use super::digest::digest_hex;
use super::range::parse_range;
use super::reply::{err, insert, Reply, Result};
use super::Registry;

/// `blobs/<digest>` in the store.
#[derive(Serialize, Deserialize)]
struct BlobRecord {
    size: u64,
}

impl Registry {
    /// Where the blob with this hex digest is stored.
    pub(super) fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Records that the repository holds the blob.
    pub(super) async fn link_blob(
        &self,
        pid: &str,
        sid: &str,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        let record = serde_json::to_vec(&BlobRecord { size }).unwrap_or_default();
        self.store
            .put(&self.keys.image_blob(pid, sid, digest), record)
            .await?;
        Ok(())
    }

    /// The blob's size, if the repository holds it.
    pub(super) async fn blob_size(
        &self,
        pid: &str,
        sid: &str,
        digest: &str,
    ) -> Result<Option<u64>> {
        Ok(self
            .store
            .get(&self.keys.image_blob(pid, sid, digest))
            .await?
            .map(|kv| {
                serde_json::from_slice::<BlobRecord>(&kv.value)
                    .map(|r| r.size)
                    .unwrap_or(0)
            }))
    }

    /// GET or HEAD of a blob, whole or a `Range` of it.
    pub(super) async fn get_blob(
        &self,
        pid: &str,
        sid: &str,
        digest: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Reply> {
        let hex = digest_hex(digest)?;
        let unknown = || {
            err(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                format!("blob {digest} unknown to this repository"),
            )
        };
        if self.blob_size(pid, sid, digest).await?.is_none() {
            return Err(unknown());
        }
        let path = self.blob_path(hex);
        // HEAD needs the size only: no open, no read.
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let range = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(|r| parse_range(r, size))
            .transpose()?;
        let (status, start, len) = match range {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            None => (StatusCode::OK, 0, size),
        };
        let body = if head {
            Body::empty()
        } else {
            let file = match tokio::fs::File::open(&path).await {
                Ok(f) => f.into_std().await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
                Err(e) => return Err(e.into()),
            };
            Body::wrap_stream(read_chunks(file, start, len))
        };
        let mut reply = Response::new(body);
        *reply.status_mut() = status;
        let h = reply.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert("content-length", HeaderValue::from(len));
        h.insert("accept-ranges", HeaderValue::from_static("bytes"));
        insert(h, "docker-content-digest", digest);
        if status == StatusCode::PARTIAL_CONTENT {
            insert(
                h,
                "content-range",
                &format!("bytes {start}-{}/{size}", start + len - 1),
            );
        }
        Ok(reply)
    }
}

/// Bytes read from a blob per chunk sent: large, so a 200 MB pull is a
/// couple of hundred reads and socket writes, not thousands.
const READ_CHUNK: usize = 2 << 20;
/// Chunks read ahead of the socket (per download: `READ_CHUNK` times this,
/// plus the one being sent).
const READ_AHEAD: usize = 2;

/// `len` bytes of `file` from `start`, as a stream of large chunks. A
/// thread of the blocking pool reads with plain `read`s straight into each
/// chunk's buffer (no intermediate buffer, no trip to the pool per read)
/// and stays `READ_AHEAD` chunks ahead of the socket; it stops when the
/// client goes away. An IO error ends the stream with that error, so the
/// client sees a cut-off body, never wrong bytes.
fn read_chunks(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use std::io::{Read, Seek};
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(READ_CHUNK as u64);
            let mut buf = Vec::with_capacity(want as usize);
            let chunk = match (&mut file).take(want).read_to_end(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                )),
                Ok(n) => {
                    left -= n as u64;
                    Ok(bytes::Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Makes a rename in `dir` durable.
pub(super) async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}
