//! lb's private registry: the OCI Distribution v2 API, for `docker`, `skopeo`
//! and the nodes' Docker engines.
//!
//! Blobs (layers, configs and manifests alike) are stored once, by digest,
//! under `<dir>/blobs/sha256/<hex>`. An upload is written to
//! `<dir>/uploads/<id>` while it is hashed, checked against the digest the
//! client claims, synced and then renamed into place, so a crash never
//! leaves a partial blob where a reader can find it. Which repository holds
//! which blobs, manifests and tags is in the store under
//! `/lb/images/<pid>/<sid>/`.
//!
//! Every request carries a registry token (see `lb_store::registry`); the
//! token names the repository as the client wrote it and the project and
//! service ids it resolved to, so this server never resolves names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Buf;
use futures::{Stream, StreamExt};
use lb_model::keys::Keys;
use lb_store::registry::{Claims, Signer};
use lb_store::{Compare, Op, Shared, StoreExt, Txn};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::hyper::Body;
use warp::Filter;

/// The largest manifest accepted (4 MiB, as Docker's registry).
const MAX_MANIFEST: usize = 4 << 20;

/// Manifest media types this registry stores.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// The registry's state.
pub struct Registry {
    store: Shared,
    keys: Keys,
    signer: Arc<Signer>,
    dir: PathBuf,
    realm: String,
    uploads: Mutex<HashMap<String, Upload>>,
}

/// An upload in progress (its bytes are in `uploads/<id>`).
struct Upload {
    pid: String,
    sid: String,
    hasher: Sha256,
    size: u64,
}

/// `tags/<tag>` in the store.
#[derive(Serialize, Deserialize)]
struct TagRecord {
    digest: String,
}

/// `manifests/<digest>` in the store.
#[derive(Serialize, Deserialize)]
struct ManifestRecord {
    media_type: String,
    size: u64,
}

/// `blobs/<digest>` in the store.
#[derive(Serialize, Deserialize)]
struct BlobRecord {
    size: u64,
}

/// A registry error: status, code and message, as the spec's JSON.
#[derive(Debug)]
struct RegError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<String>,
}

type Reply = Response<Body>;
type Result<T, E = RegError> = std::result::Result<T, E>;

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> RegError {
    RegError {
        status,
        code,
        message: message.into(),
        challenge: None,
    }
}

impl From<lb_store::Error> for RegError {
    fn from(e: lb_store::Error) -> Self {
        tracing::warn!(error = %e, "registry: store error");
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the store is unavailable",
        )
    }
}

impl From<std::io::Error> for RegError {
    fn from(e: std::io::Error) -> Self {
        tracing::warn!(error = %e, "registry: disk error");
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("storage error: {e}"),
        )
    }
}

impl RegError {
    fn into_reply(self, realm: &str) -> Reply {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut reply = Response::new(Body::from(body.to_string()));
        *reply.status_mut() = self.status;
        let headers = reply.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            let mut challenge = format!(
                "Bearer realm=\"{realm}\",service=\"{}\"",
                lb_store::registry::SERVICE
            );
            if let Some(scope) = &self.challenge {
                challenge.push_str(&format!(",scope=\"{scope}\""));
            }
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert("www-authenticate", value);
            }
        }
        reply
    }
}

/// What a request is, from its path under `/v2/`.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Ping,
    Catalog,
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Tags(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Some(Route::Ping);
    }
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = path
        .strip_suffix("/blobs/uploads/")
        .or_else(|| path.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name));
    }
    if let Some((name, id)) = path.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload(name, id));
    }
    if let Some((name, digest)) = path.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, digest));
    }
    if let Some((name, reference)) = path.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, reference));
    }
    None
}

/// `sha256:<64 lowercase hex>`, answered as the hex part.
fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ if digest.contains(':') && !digest.starts_with("sha256:") => Err(err(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("digest {digest:?}: only sha256 is supported"),
        )),
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{digest:?} is not a digest (sha256:<64 hex digits>)"),
        )),
    }
}

fn is_tag(reference: &str) -> bool {
    let bytes = reference.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn sha256_hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn query_map(query: &str) -> HashMap<String, String> {
    url_pairs(query).into_iter().collect()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap_or_default()
}

impl Registry {
    /// A registry keeping blobs under `dir`, checking tokens signed with the
    /// cluster's registry key, and sending clients to `realm` for tokens.
    pub async fn new(
        store: Shared,
        keys: Keys,
        dir: &Path,
        realm: String,
    ) -> std::io::Result<Arc<Self>> {
        for sub in ["blobs/sha256", "uploads"] {
            tokio::fs::create_dir_all(dir.join(sub)).await?;
        }
        // Uploads do not survive a restart (their hash state is in memory).
        let mut entries = tokio::fs::read_dir(dir.join("uploads")).await?;
        while let Some(entry) = entries.next_entry().await? {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
        let signer = Signer::load(store.as_ref(), &keys)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Arc::new(Self {
            store,
            keys,
            signer: Arc::new(signer),
            dir: dir.to_owned(),
            realm,
            uploads: Mutex::new(HashMap::new()),
        }))
    }

    /// Signs a token for lb's own use (the builder pushing, tests).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The signer, shared.
    pub fn signer_arc(&self) -> Arc<Signer> {
        self.signer.clone()
    }

    /// The store.
    pub fn store(&self) -> &Shared {
        &self.store
    }

    /// The warp filter serving `/v2/...`.
    pub fn filter(
        self: &Arc<Self>,
    ) -> impl Filter<Extract = (Reply,), Error = std::convert::Infallible> + Clone {
        let this = self.clone();
        warp::path("v2")
            .and(warp::path::tail())
            .and(warp::method())
            .and(warp::header::headers_cloned())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::body::stream().map(boxed_body))
            .then(
                move |tail: warp::path::Tail, method, headers, query: String, body: BodyStream| {
                    let this = this.clone();
                    async move {
                        let path = tail.as_str().to_owned();
                        match this.handle(&path, &method, &headers, &query, body).await {
                            Ok(mut reply) => {
                                reply.headers_mut().insert(
                                    "docker-distribution-api-version",
                                    HeaderValue::from_static("registry/2.0"),
                                );
                                reply
                            }
                            Err(e) => {
                                let mut reply = e.into_reply(&this.realm);
                                reply.headers_mut().insert(
                                    "docker-distribution-api-version",
                                    HeaderValue::from_static("registry/2.0"),
                                );
                                reply
                            }
                        }
                    }
                },
            )
            .or(warp::any().map(|| {
                let e = err(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route");
                e.into_reply("")
            }))
            .unify()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        warp::serve(self.filter())
            .serve_incoming_with_graceful_shutdown(incoming, shutdown)
            .await;
    }

    fn claims(&self, headers: &HeaderMap) -> Option<Claims> {
        let header = headers.get("authorization")?.to_str().ok()?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?;
        self.signer.verify(token.trim())
    }

    /// The project and service ids `name` stands for, if the token allows
    /// `action` on it.
    fn authorize<'a>(
        &self,
        claims: &'a Option<Claims>,
        name: &str,
        action: &str,
    ) -> Result<(&'a str, &'a str)> {
        let scope = match action {
            "pull" => format!("repository:{name}:pull"),
            "delete" => format!("repository:{name}:delete"),
            _ => format!("repository:{name}:pull,push"),
        };
        let Some(claims) = claims else {
            return Err(RegError {
                challenge: Some(scope),
                ..err(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                )
            });
        };
        claims.allows(name, action).ok_or_else(|| {
            err(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!("requested access to {name} ({action}) is denied"),
            )
        })
    }

    async fn handle(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: &str,
        body: BodyStream,
    ) -> Result<Reply> {
        let claims = self.claims(headers);
        let Some(route) = route(path) else {
            return Err(err(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"));
        };
        let q = query_map(query);
        let action = match *method {
            Method::GET | Method::HEAD => "pull",
            Method::DELETE => "delete",
            _ => "push",
        };
        match route {
            Route::Ping => {
                if claims.is_none() {
                    return Err(RegError {
                        challenge: None,
                        ..err(
                            StatusCode::UNAUTHORIZED,
                            "UNAUTHORIZED",
                            "authentication required",
                        )
                    });
                }
                Ok(json_reply(StatusCode::OK, &serde_json::json!({})))
            }
            Route::Catalog => {
                let Some(claims) = claims.filter(|c| {
                    c.access
                        .iter()
                        .any(|a| a.kind == "registry" && a.name == "catalog")
                }) else {
                    return Err(RegError {
                        challenge: Some("registry:catalog:*".into()),
                        ..err(
                            StatusCode::UNAUTHORIZED,
                            "UNAUTHORIZED",
                            "authentication required",
                        )
                    });
                };
                self.catalog(&claims.sub, &q).await
            }
            Route::Tags(name) => {
                let (pid, sid) = self.authorize(&claims, name, "pull")?;
                self.tags(name, pid, sid, &q).await
            }
            Route::Blob(name, digest) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                match *method {
                    Method::GET | Method::HEAD => {
                        self.get_blob(pid, sid, digest, headers, *method == Method::HEAD)
                            .await
                    }
                    Method::DELETE => Err(err(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "UNSUPPORTED",
                        "blobs are removed with the manifests that use them",
                    )),
                    _ => Err(method_not_allowed()),
                }
            }
            Route::UploadStart(name) => {
                let (pid, sid) = self.authorize(&claims, name, "push")?;
                if *method != Method::POST {
                    return Err(method_not_allowed());
                }
                let (pid, sid) = (pid.to_owned(), sid.to_owned());
                if let (Some(mount), Some(from)) = (q.get("mount"), q.get("from")) {
                    if let Some(reply) = self.mount(name, &pid, &sid, mount, from, &claims).await? {
                        return Ok(reply);
                    }
                }
                let id = lb_model::ids::new_id().to_lowercase();
                tokio::fs::File::create(self.upload_path(&id)).await?;
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
            Route::Upload(name, id) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                self.check_upload(id, pid, sid)?;
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
            Route::Manifest(name, reference) => {
                let (pid, sid) = self.authorize(&claims, name, action)?;
                match *method {
                    Method::GET | Method::HEAD => {
                        self.get_manifest(pid, sid, reference, *method == Method::HEAD)
                            .await
                    }
                    Method::PUT => {
                        let media_type = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_owned();
                        let bytes = read_limited(body, MAX_MANIFEST).await?;
                        self.put_manifest(name, pid, sid, reference, &media_type, bytes)
                            .await
                    }
                    Method::DELETE => self.delete_manifest(pid, sid, reference).await,
                    _ => Err(method_not_allowed()),
                }
            }
        }
    }

    fn uploads_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.dir.join("uploads").join(id)
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    fn check_upload(&self, id: &str, pid: &str, sid: &str) -> Result<()> {
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
        let actual = sha256_hex(upload.hasher);
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

    async fn link_blob(&self, pid: &str, sid: &str, digest: &str, size: u64) -> Result<()> {
        let record = serde_json::to_vec(&BlobRecord { size }).unwrap_or_default();
        self.store
            .put(&self.keys.image_blob(pid, sid, digest), record)
            .await?;
        Ok(())
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
        let Some(kv) = self
            .store
            .get(&self.keys.image_blob(from_pid, from_sid, digest))
            .await?
        else {
            return Ok(None);
        };
        let record: BlobRecord =
            serde_json::from_slice(&kv.value).unwrap_or(BlobRecord { size: 0 });
        self.link_blob(pid, sid, digest, record.size).await?;
        Ok(Some(created(&format!("/v2/{name}/blobs/{digest}"), digest)))
    }

    async fn blob_size(&self, pid: &str, sid: &str, digest: &str) -> Result<Option<u64>> {
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

    async fn get_blob(
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

    async fn resolve_reference(&self, pid: &str, sid: &str, reference: &str) -> Result<String> {
        if reference.contains(':') {
            digest_hex(reference)?;
            return Ok(reference.to_owned());
        }
        if !is_tag(reference) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("{reference:?} is not a tag"),
            ));
        }
        let kv = self
            .store
            .get(&self.keys.image_tag(pid, sid, reference))
            .await?
            .ok_or_else(|| {
                err(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("tag {reference:?} unknown"),
                )
            })?;
        let record: TagRecord = serde_json::from_slice(&kv.value).map_err(|_| {
            err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "tag record unreadable",
            )
        })?;
        Ok(record.digest)
    }

    async fn get_manifest(
        &self,
        pid: &str,
        sid: &str,
        reference: &str,
        head: bool,
    ) -> Result<Reply> {
        let digest = self.resolve_reference(pid, sid, reference).await?;
        let unknown = || {
            err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("manifest {reference:?} unknown"),
            )
        };
        let kv = self
            .store
            .get(&self.keys.image_manifest(pid, sid, &digest))
            .await?
            .ok_or_else(unknown)?;
        let record: ManifestRecord = serde_json::from_slice(&kv.value).map_err(|_| unknown())?;
        let bytes = match tokio::fs::read(self.blob_path(digest_hex(&digest)?)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let len = bytes.len();
        let mut reply = Response::new(if head {
            Body::empty()
        } else {
            Body::from(bytes)
        });
        let h = reply.headers_mut();
        insert(h, "content-type", &record.media_type);
        h.insert("content-length", HeaderValue::from(len));
        insert(h, "docker-content-digest", &digest);
        insert(h, "etag", &format!("\"{digest}\""));
        Ok(reply)
    }

    async fn put_manifest(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Reply> {
        let invalid = |m: String| err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            value["mediaType"].as_str().unwrap_or("").to_owned()
        } else {
            media_type.to_owned()
        };
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(invalid(format!(
                "media type {media_type:?} is not one of {}",
                MANIFEST_TYPES.join(", ")
            )));
        }
        if value["schemaVersion"] != 2 {
            return Err(invalid("schemaVersion must be 2".into()));
        }
        if let Some(declared) = value["mediaType"].as_str() {
            if declared != media_type {
                return Err(invalid(format!(
                    "mediaType {declared:?} disagrees with Content-Type {media_type:?}"
                )));
            }
        }
        let digest_of = |v: &serde_json::Value, what: &str| -> Result<String> {
            let d = v["digest"]
                .as_str()
                .ok_or_else(|| invalid(format!("{what} has no digest")))?;
            digest_hex(d)?;
            Ok(d.to_owned())
        };
        let is_index = media_type.ends_with("manifest.list.v2+json")
            || media_type.ends_with("image.index.v1+json");
        if is_index {
            let manifests = value["manifests"]
                .as_array()
                .ok_or_else(|| invalid("an index needs \"manifests\"".into()))?;
            for m in manifests {
                let d = digest_of(m, "a manifest entry")?;
                if self
                    .store
                    .get(&self.keys.image_manifest(pid, sid, &d))
                    .await?
                    .is_none()
                {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("manifest {d} is not in {name}: push it first"),
                    ));
                }
            }
        } else {
            let mut blobs = vec![digest_of(&value["config"], "config")?];
            let layers = value["layers"]
                .as_array()
                .ok_or_else(|| invalid("an image manifest needs \"layers\"".into()))?;
            for layer in layers {
                blobs.push(digest_of(layer, "a layer")?);
            }
            for d in blobs {
                if self.blob_size(pid, sid, &d).await?.is_none() {
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("blob {d} is not in {name}: push it first"),
                    ));
                }
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        let hex = sha256_hex(hasher);
        let digest = format!("sha256:{hex}");
        let tag = if reference.contains(':') {
            if reference != digest {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("the manifest's digest is {digest}, not {reference}"),
                ));
            }
            None
        } else if is_tag(reference) {
            Some(reference)
        } else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("{reference:?} is not a tag"),
            ));
        };
        let target = self.blob_path(&hex);
        if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
            let tmp = self.upload_path(&format!(
                "manifest-{}",
                lb_model::ids::new_id().to_lowercase()
            ));
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, &target).await?;
            sync_dir(&self.dir.join("blobs/sha256")).await;
        }
        let record = ManifestRecord {
            media_type,
            size: bytes.len() as u64,
        };
        let mut txn = Txn::new().then(Op::put(
            self.keys.image_manifest(pid, sid, &digest),
            serde_json::to_vec(&record).unwrap_or_default(),
        ));
        if let Some(tag) = tag {
            txn = txn.then(Op::put(
                self.keys.image_tag(pid, sid, tag),
                serde_json::to_vec(&TagRecord {
                    digest: digest.clone(),
                })
                .unwrap_or_default(),
            ));
        }
        self.store.txn(txn).await?;
        Ok(created(&format!("/v2/{name}/manifests/{digest}"), &digest))
    }

    async fn delete_manifest(&self, pid: &str, sid: &str, reference: &str) -> Result<Reply> {
        if !reference.contains(':') {
            // A tag: untag only.
            let key = self.keys.image_tag(pid, sid, reference);
            if self.store.get(&key).await?.is_none() {
                return Err(err(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!("tag {reference:?} unknown"),
                ));
            }
            self.store.delete(&key).await?;
            return Ok(empty(StatusCode::ACCEPTED));
        }
        digest_hex(reference)?;
        let key = self.keys.image_manifest(pid, sid, reference);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(err(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("manifest {reference} unknown"),
            ));
        };
        let prefix = format!("{}tags/", self.keys.images(pid, sid));
        let (tags, _) = self.store.list(&prefix).await?;
        let mut txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .then(Op::delete(key));
        for tag in tags {
            if serde_json::from_slice::<TagRecord>(&tag.value).is_ok_and(|t| t.digest == reference)
            {
                txn = txn.then(Op::delete(tag.key));
            }
        }
        self.store.txn(txn).await?;
        Ok(empty(StatusCode::ACCEPTED))
    }

    async fn tags(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        q: &HashMap<String, String>,
    ) -> Result<Reply> {
        let prefix = format!("{}tags/", self.keys.images(pid, sid));
        let (kvs, _) = self.store.list(&prefix).await?;
        let all: Vec<String> = kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let (page, next) = paginate(all, q)?;
        let mut reply = json_reply(
            StatusCode::OK,
            &serde_json::json!({"name": name, "tags": page}),
        );
        if let Some((n, last)) = next {
            insert(
                reply.headers_mut(),
                "link",
                &format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
            );
        }
        Ok(reply)
    }

    /// The repositories of the caller's projects that hold at least one tag.
    async fn catalog(&self, uid: &str, q: &HashMap<String, String>) -> Result<Reply> {
        let projects = self.keys.project_index_prefix(uid);
        let (projects, _) = self.store.list(&projects).await?;
        let mut names = Vec::new();
        for project in projects {
            let pid = String::from_utf8_lossy(&project.value).into_owned();
            let services = self.keys.service_index_prefix(&pid);
            let (services, _) = self.store.list(&services).await?;
            for service in services {
                let sid = String::from_utf8_lossy(&service.value).into_owned();
                let tags = format!("{}tags/", self.keys.images(&pid, &sid));
                if !self.store.list(&tags).await?.0.is_empty() {
                    names.push(lb_store::registry::repository(&pid, &sid));
                }
            }
        }
        names.sort();
        let (page, next) = paginate(names, q)?;
        let mut reply = json_reply(StatusCode::OK, &serde_json::json!({"repositories": page}));
        if let Some((n, last)) = next {
            insert(
                reply.headers_mut(),
                "link",
                &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
            );
        }
        Ok(reply)
    }
}

use std::pin::Pin;

/// A request body as a stream of byte chunks.
type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

fn boxed_body<S, B>(stream: S) -> BodyStream
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send,
{
    Box::pin(stream.map(|r| {
        r.map(|mut b| b.copy_to_bytes(b.remaining()))
            .map_err(std::io::Error::other)
    }))
}

/// A page of names, and the next page's `n` and `last` if there is one.
type Page = (Vec<String>, Option<(usize, String)>);

/// `?n=&last=` over sorted names: the page, and the next page's query.
fn paginate(all: Vec<String>, q: &HashMap<String, String>) -> Result<Page> {
    let n = match q.get("n") {
        Some(n) => n.parse::<usize>().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n={n:?} is not a number"),
            )
        })?,
        None => usize::MAX,
    };
    let mut rest: Vec<String> = match q.get("last") {
        Some(last) => all.into_iter().filter(|t| t > last).collect(),
        None => all,
    };
    if rest.len() > n {
        rest.truncate(n);
        let last = rest.last().cloned().unwrap_or_default();
        return Ok((rest, Some((n, last))));
    }
    Ok((rest, None))
}

/// `bytes=a-b` (or `a-`) within a blob of `size` bytes.
fn parse_range(header: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || {
        err(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("range {header:?} does not fit a blob of {size} bytes"),
        )
    };
    let spec = header.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = if b.trim().is_empty() {
        size.saturating_sub(1)
    } else {
        b.trim()
            .parse::<u64>()
            .map_err(|_| bad())?
            .min(size.saturating_sub(1))
    };
    if start > end || start >= size {
        return Err(bad());
    }
    Ok((start, end))
}

/// The start of a `Content-Range: <start>-<end>` header, if any.
fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get("content-range") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let start = text
        .split('-')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            err(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!("Content-Range {text:?} is not <start>-<end>"),
            )
        })?;
    Ok(Some(start))
}

async fn read_limited(mut body: BodyStream, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("body: {e}"),
            )
        })?;
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("manifests are limited to {limit} bytes"),
            ));
        }
    }
    Ok(out)
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

async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Body::empty());
    *reply.status_mut() = status;
    reply
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Body::from(value.to_string()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    reply
}

fn created(location: &str, digest: &str) -> Reply {
    let mut reply = empty(StatusCode::CREATED);
    let h = reply.headers_mut();
    insert(h, "location", location);
    insert(h, "docker-content-digest", digest);
    h.insert("content-length", HeaderValue::from(0));
    reply
}

fn upload_reply(status: StatusCode, name: &str, id: &str, size: u64) -> Reply {
    let mut reply = empty(status);
    let h = reply.headers_mut();
    insert(h, "location", &format!("/v2/{name}/blobs/uploads/{id}"));
    insert(h, "docker-upload-uuid", id);
    insert(h, "range", &format!("0-{}", size.saturating_sub(1)));
    h.insert("content-length", HeaderValue::from(0));
    reply
}

fn method_not_allowed() -> RegError {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not allowed here",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(route(""), Some(Route::Ping));
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(route("a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(route("a/b/blobs/uploads/"), Some(Route::UploadStart("a/b")));
        assert_eq!(
            route("a/b/blobs/uploads/xyz"),
            Some(Route::Upload("a/b", "xyz"))
        );
        assert_eq!(
            route("a/b/blobs/sha256:00"),
            Some(Route::Blob("a/b", "sha256:00"))
        );
        assert_eq!(
            route("a/b/manifests/latest"),
            Some(Route::Manifest("a/b", "latest"))
        );
        assert_eq!(route("a/b/other"), None);
    }

    #[test]
    fn digests_tags_and_ranges() {
        let hex = "a".repeat(64);
        assert_eq!(digest_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&format!("sha512:{hex}")).is_err());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(is_tag("v1.0-rc_2") && is_tag("7") && !is_tag(".x") && !is_tag("a/b"));
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), (90, 99));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
    }

    #[test]
    fn pages_follow_last() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (page, next) = paginate(all.clone(), &q(&[("n", "2")])).unwrap();
        assert_eq!(
            (page, next),
            (vec!["a".into(), "b".into()], Some((2, "b".into())))
        );
        let (page, next) = paginate(all.clone(), &q(&[("n", "2"), ("last", "b")])).unwrap();
        assert_eq!((page, next), (vec!["c".into(), "d".into()], None));
        assert!(paginate(all, &q(&[("n", "x")])).is_err());
    }
}
