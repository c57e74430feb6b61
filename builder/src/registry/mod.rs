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
//!
//! The modules, one concept each: `dispatch` routes a request to its
//! handler, `auth` checks tokens and scopes, `uploads` receives blobs,
//! `blobs` stores and serves them, `manifests` keeps manifests and tags,
//! `catalog` lists repositories and tags, `range` reads Range headers,
//! `digest` checks digests and tags, `reply` shapes answers and errors,
//! `gc` collects blobs no manifest references.

mod auth;
mod blobs;
mod catalog;
mod digest;
mod dispatch;
pub mod gc;
mod manifests;
mod range;
mod reply;
mod uploads;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Buf;
use futures::{Stream, StreamExt};
use lb_model::keys::Keys;
use lb_store::registry::Signer;
use lb_store::Shared;
use warp::http::{HeaderValue, StatusCode};
use warp::Filter;

pub use manifests::MANIFEST_TYPES;
use reply::{err, Reply};
use uploads::Upload;

/// The registry's state.
pub struct Registry {
    store: Shared,
    keys: Keys,
    signer: Arc<Signer>,
    dir: PathBuf,
    realm: String,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Held for reading by a manifest PUT (its checks and its write), for
    /// writing by a garbage collection pass (`gc.rs`): a manifest lands
    /// either before a pass marks or after it swept.
    gc_lock: tokio::sync::RwLock<()>,
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
        // Blobs are private images: only lb's user reads them (0700/0600,
        // wider modes narrowed with a warning).
        for sub in ["blobs/sha256", "uploads"] {
            lb_store::private::create_dir(&dir.join(sub))?;
        }
        lb_store::private::secure_tree(dir)?;
        // Uploads do not survive a restart (their hash state is in memory).
        let mut entries = tokio::fs::read_dir(dir.join("uploads")).await?;
        while let Some(entry) = entries.next_entry().await? {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
        let signer = Signer::load(store.as_ref(), &keys)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let registry = Arc::new(Self {
            store,
            keys,
            signer: Arc::new(signer),
            dir: dir.to_owned(),
            realm,
            uploads: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
        });
        // Uploads a client gave up on are deleted after a while.
        tokio::spawn(uploads::sweep(Arc::downgrade(&registry)));
        Ok(registry)
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
                        let mut reply =
                            match this.handle(&path, &method, &headers, &query, body).await {
                                Ok(reply) => reply,
                                Err(e) => e.into_reply(&this.realm),
                            };
                        reply.headers_mut().insert(
                            "docker-distribution-api-version",
                            HeaderValue::from_static("registry/2.0"),
                        );
                        reply
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
}

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
