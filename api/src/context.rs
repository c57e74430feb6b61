//! The state every handler shares: the (metered) store, the key tree, the
//! settings, token signing and the login limiter.

use std::sync::Arc;
use std::time::Duration;

use lb_model::keys::Keys;
use lb_store::cache::CachedStore;
use lb_store::Shared;

use crate::auth::{LoginLimiter, Tokens};
use crate::config::Config;
use crate::metrics::{MeteredStore, Metrics};

/// Shared handler state.
pub struct Context {
    /// The store: cached reads, metered store operations.
    pub store: Shared,
    /// The key tree.
    pub keys: Keys,
    /// Settings.
    pub config: Config,
    /// Access-token signing.
    pub tokens: Tokens,
    /// Failed-login limits.
    pub limiter: LoginLimiter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Registry-token signing.
    pub registry: lb_store::registry::Signer,
    /// Requests to nodes over their channels.
    pub streams: std::sync::Arc<crate::streams::Streams>,
    /// Seals vendor tokens at rest; derives webhook secrets.
    pub sealer: lb_store::secrets::Sealer,
    /// HTTP client for the git vendors (no redirects followed).
    pub http: reqwest::Client,
    /// The ingress route table, kept current by [`crate::ingress::run`].
    pub routes: crate::ingress::Routes,
}

/// A handle to the shared state.
pub type Ctx = Arc<Context>;

impl Context {
    /// Builds the state; loads (or creates) the token signing key.
    pub async fn new(config: Config, store: Shared) -> Result<Ctx, lb_store::Error> {
        let metrics = Arc::new(Metrics::new());
        let store: Shared = Arc::new(MeteredStore::new(store, &metrics));
        // Reads come from memory, kept current by a watch; writes go to the
        // store and wait until the cache has them (read-your-writes).
        let store: Shared = Arc::new(CachedStore::new(store, &config.keys.all()).await);
        let tokens = Tokens::load(store.as_ref(), &config.keys, config.token_ttl).await?;
        let registry = lb_store::registry::Signer::load(store.as_ref(), &config.keys).await?;
        let sealer = lb_store::secrets::Sealer::load(store.as_ref(), &config.keys).await?;
        let http = reqwest::Client::builder()
            // Following redirects from a token endpoint invites SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| lb_store::Error::Backend(format!("http client: {e}")))?;
        Ok(Arc::new(Self {
            store,
            keys: config.keys.clone(),
            limiter: LoginLimiter::new(
                Duration::from_secs(300),
                config.login_limit_per_user,
                config.login_limit_per_address,
            ),
            tokens,
            registry,
            metrics,
            streams: Default::default(),
            sealer,
            http,
            routes: tokio::sync::watch::Sender::new(Default::default()),
            config,
        }))
    }
}
