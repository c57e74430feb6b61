//! The builder: claims queued builds, clones the source, builds the image with
//! the Docker engine and pushes it to lb's private OCI registry, which this
//! crate also serves.
//!
//! `registry` is the OCI Distribution server; `worker` the build queue.

pub mod credentials;
pub mod registry;
pub mod template;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;

use lb_model::keys::Keys;
use lb_store::{Shared, StoreExt};

/// Errors of the builder role.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry address cannot be bound.
    #[error("cannot listen on {addr} (registry): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The registry's directory cannot be prepared.
    #[error("registry storage {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The build worker ended (a panic, or an early return) while lb
    /// serves: the caller restarts the builder.
    #[error("the build worker stopped: {0}")]
    Worker(String),
}

/// Builder settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The key tree.
    pub keys: Keys,
    /// Where the registry listens.
    pub registry_listen: SocketAddr,
    /// Where blobs and build work dirs live.
    pub data_dir: PathBuf,
    /// host:port the registry is reached at (image references use it).
    pub registry_address: String,
    /// The API's base URL (the registry sends clients there for tokens).
    pub api: String,
    /// Builds run at once.
    pub concurrency: usize,
    /// Memory limit of one build, MiB.
    pub build_memory: u64,
    /// Time limit of one build.
    pub build_timeout: std::time::Duration,
    /// The largest build context, bytes.
    pub max_context: u64,
    /// Images kept per service.
    pub keep_images: usize,
    /// Base image per template language (overrides the defaults).
    pub base_images: std::collections::BTreeMap<String, String>,
    /// Keeping the disk from filling: registry garbage collection and the
    /// build cache's limit.
    pub housekeeping: Housekeeping,
}

/// How the builder keeps its disk from filling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Housekeeping {
    /// Time between registry garbage collection passes (`registry/gc.rs`).
    pub registry_gc_interval: std::time::Duration,
    /// Blobs and untagged manifests younger than this are never collected
    /// (an upload not yet referenced by its manifest survives a pass).
    pub registry_gc_grace: std::time::Duration,
    /// The Docker build cache is pruned to this many bytes after each
    /// build (`worker/prune.rs`).
    pub build_cache_max: u64,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self {
            registry_gc_interval: std::time::Duration::from_secs(3600),
            registry_gc_grace: std::time::Duration::from_secs(3600),
            build_cache_max: 10 << 30,
        }
    }
}

/// A registry bound to its address, ready to serve.
pub struct Bound {
    registry: std::sync::Arc<registry::Registry>,
    listener: tokio::net::TcpListener,
    address: String,
    config: Config,
}

impl Bound {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// host:port image references name the registry by.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The registry.
    pub fn registry(&self) -> &std::sync::Arc<registry::Registry> {
        &self.registry
    }
}

/// Binds the registry's address and prepares its storage.
pub async fn bind(store: Shared, config: &Config) -> Result<Bound, Error> {
    let listener = tokio::net::TcpListener::bind(config.registry_listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.registry_listen,
            source,
        })?;
    let dir = config.data_dir.join("registry");
    let realm = format!("{}/api/v1/registry/token", config.api.trim_end_matches('/'));
    let registry = registry::Registry::new(store, config.keys.clone(), &dir, realm)
        .await
        .map_err(|source| Error::Storage {
            path: dir.display().to_string(),
            source,
        })?;
    // Asked for any free port: name the one we got.
    let address = match config.registry_address.strip_suffix(":0") {
        Some(host) => {
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            format!("{host}:{port}")
        }
        None => config.registry_address.clone(),
    };
    // Nodes learn where lb's registry is (to pull from it with their
    // credential) from this key.
    let key = config.keys.cluster("registry");
    let store_error = |e: lb_store::Error| Error::Storage {
        path: "the store".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let known = registry.store().get(&key).await.map_err(store_error)?;
    if known.is_none_or(|kv| kv.value != address.as_bytes()) {
        registry
            .store()
            .put(&key, address.clone().into_bytes())
            .await
            .map_err(store_error)?;
    }
    Ok(Bound {
        registry,
        listener,
        address,
        config: config.clone(),
    })
}

/// For tests only: `LB_TEST_PANIC_BUILD_WORKER=<n>` makes the build worker
/// panic as it starts, the first `n` times in this process (as a bug in it
/// would), so the role's restart can be tested.
pub const WORKER_PANIC_ENV: &str = "LB_TEST_PANIC_BUILD_WORKER";

/// Whether this start of the build worker panics (the test hook
/// [`WORKER_PANIC_ENV`]); counts the panics left down.
fn test_worker_panics() -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LEFT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let left = LEFT.get_or_init(|| {
        let n = std::env::var(WORKER_PANIC_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        AtomicU32::new(n)
    });
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Runs the registry (and the build worker) until `shutdown` resolves.
pub async fn run(
    bound: Bound,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = match worker::Worker::new(
        bound.registry.store().clone(),
        bound.config.clone(),
        bound.address.clone(),
        bound.registry.signer_arc(),
    )
    .await
    {
        Ok(worker) => Some(std::sync::Arc::new(worker)),
        Err(e) => {
            tracing::warn!("no builds on this machine: {e}");
            None
        }
    };
    {
        let mut rx = rx.clone();
        let h = &bound.config.housekeeping;
        tokio::spawn(registry::gc::run(
            bound.registry.clone(),
            h.registry_gc_interval,
            h.registry_gc_grace,
            async move {
                let _ = rx.changed().await;
            },
        ));
    }
    let worker = worker.map(|worker| {
        let mut rx = rx.clone();
        let panics = test_worker_panics();
        tokio::spawn(async move {
            if panics {
                panic!("{WORKER_PANIC_ENV}: the build worker panics at start, as asked");
            }
            worker
                .run(async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    });
    let serve = bound.registry.serve(bound.listener, async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    tokio::pin!(serve);
    let Some(mut worker) = worker else {
        serve.await;
        return Ok(());
    };
    tokio::select! {
        _ = &mut serve => Ok(()),
        ended = &mut worker => {
            if *rx.borrow() {
                // Shutting down: the worker stopped as asked.
                serve.await;
                return Ok(());
            }
            // A worker that died while lb serves is no builder at all:
            // say so, so the supervisor restarts the role.
            Err(Error::Worker(match ended {
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("panicked: {text}")
                }
                Err(e) => e.to_string(),
                Ok(()) => "it returned".into(),
            }))
        }
    }
}
