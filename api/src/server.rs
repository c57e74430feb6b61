//! The HTTP server: binds the listen address, serves the routes, shuts down
//! gracefully (finishing requests in flight) when told to.

use std::net::SocketAddr;

use futures::Future;
use lb_store::Shared;

pub use crate::config::{Config, Signup};
use crate::context::{Context, Ctx};

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The store failed while setting up.
    #[error(transparent)]
    Store(#[from] lb_store::Error),
}

/// A bound server, ready to run.
pub struct Server {
    addr: SocketAddr,
    ctx: Ctx,
    serve: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Server {
    /// Loads the shared state and binds the listen address now, so a port in
    /// use is reported before anything else starts. The server stops
    /// accepting when `shutdown` resolves and finishes the requests in flight.
    pub async fn bind(
        config: &Config,
        store: Shared,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, Error> {
        // Bind first: a port in use must not leave anything written.
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| Error::Bind {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Bind {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        drop(listener);
        let mut config = config.clone();
        // OAuth callbacks and webhook URLs need an address: the bound one
        // unless one was configured.
        config
            .vendors
            .public_url
            .get_or_insert_with(|| format!("http://{addr}"));
        let ctx = Context::new(config.clone(), store.clone()).await?;
        let mut own = addr;
        if own.ip().is_unspecified() {
            own.set_ip([127, 0, 0, 1].into());
        }
        let url = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{own}"));
        let peers = crate::peers::Peers::load(
            ctx.store.clone(),
            ctx.keys.clone(),
            url.trim_end_matches('/').to_owned(),
            ctx.http.clone(),
        )
        .await?;
        ctx.streams.set_peers(peers);
        {
            let ctx = ctx.clone();
            crate::roles::supervise("api-hooks", move || {
                crate::vendors::controller::run(ctx.clone())
            });
        }
        {
            let ctx = ctx.clone();
            crate::roles::supervise("api-routes", move || crate::ingress::run(ctx.clone()));
        }
        {
            let ctx = ctx.clone();
            crate::roles::supervise("api-stacks", move || crate::stacks::run(ctx.clone()));
        }
        if let Some(acme) = config.acme.clone().filter(|a| a.enabled) {
            let acme = lb_certs::AcmeConfig {
                keys: ctx.keys.clone(),
                holder: url.clone(),
                ..acme
            };
            // The uncached store: woken by a watch, the issuer must read
            // what woke it, and the cache may not have applied it yet.
            let issuer = lb_certs::Issuer::new(store, ctx.sealer.clone(), acme);
            tokio::spawn(issuer.run(std::future::pending()));
        }
        let routes = crate::filters::routes(ctx.clone());
        let (addr, serve) = warp::serve(routes)
            .try_bind_with_graceful_shutdown(addr, shutdown)
            .map_err(|e| Error::Bind {
                addr: config.listen,
                reason: innermost(&e),
            })?;
        Ok(Self {
            addr,
            ctx,
            serve: Box::pin(serve),
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state.
    pub fn context(&self) -> &Ctx {
        &self.ctx
    }

    /// Serves until shutdown.
    pub async fn run(self) {
        self.serve.await
    }
}

/// The deepest cause of an error ("Address already in use (os error 98)").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
