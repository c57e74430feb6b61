//! The listeners: bind, accept plain and TLS connections, serve each with
//! HTTP/1.1 and HTTP/2 (ALPN or prior knowledge), and shut down gracefully —
//! stop accepting, let requests in flight finish within the grace, then cut
//! what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use lb_model::ingress::RouteTable;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::proxy::{Peer, Proxy};
use crate::{tls, Config, Error, Result};

/// A serving ingress: its bound addresses, and its task.
#[derive(Debug)]
pub struct Running {
    /// Where plain HTTP is served.
    pub http: Option<SocketAddr>,
    /// Where HTTPS is served.
    pub https: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the ingress has shut down (after `shutdown` resolved and
    /// requests in flight ended or the grace passed).
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(|e| Error::Task(e.to_string()))
    }
}

/// Binds the listeners of `config` and serves routes from `routes` until
/// `shutdown` resolves; returns once bound.
pub async fn serve(
    config: Config,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    let http = bind(config.http_listen).await?;
    let https = bind(config.https_listen).await?;
    let http_addr = local_addr(&http)?;
    let https_addr = local_addr(&https)?;
    let acceptor = match https {
        Some(_) => Some(TlsAcceptor::from(Arc::new(
            tls::server_config(routes.clone()).map_err(Error::Tls)?,
        ))),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let proxy = Arc::new(Proxy::new(
        config.clone(),
        routes.clone(),
        metrics,
        https_addr.map(|a| a.port()),
        stop_rx,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.idle_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conns = Conns {
        builder: Arc::new(builder),
        proxy: proxy.clone(),
        tls_timeout: config.tls_handshake_timeout,
    };
    tracing::info!(http = ?http_addr, https = ?https_addr, "ingress: listening");
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let housekeeping = tokio::spawn(forget_gone_routes(routes, proxy));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(&http) => if let Some((stream, addr)) = accepted {
                    tokio::spawn(conns.clone().plain(stream, addr, graceful.watcher()));
                },
                accepted = accept(&https) => if let (Some((stream, addr)), Some(acceptor)) = (accepted, &acceptor) {
                    tokio::spawn(conns.clone().tls(stream, addr, acceptor.clone(), graceful.watcher()));
                },
            }
        }
        drop((http, https));
        housekeeping.abort();
        tracing::info!(connections = graceful.count(), "ingress: shutting down");
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("ingress: requests still in flight after the shutdown grace");
        }
        let _ = stop_tx.send(true);
    });
    Ok(Running {
        http: http_addr,
        https: https_addr,
        task,
    })
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| Error::Bind { addr, source }),
        None => Ok(None),
    }
}

fn local_addr(listener: &Option<TcpListener>) -> Result<Option<SocketAddr>> {
    listener
        .as_ref()
        .map(|l| l.local_addr().map_err(Error::Io))
        .transpose()
}

/// The next connection on `listener`; never resolves without one. After an
/// accept error (e.g. out of file descriptors) it waits a moment first.
async fn accept(listener: &Option<TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok((stream, addr)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, addr))
        }
        Err(e) => {
            tracing::warn!(error = %e, "ingress: accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Drops metrics and balancer state of routes that left the table.
async fn forget_gone_routes(mut routes: watch::Receiver<Arc<RouteTable>>, proxy: Arc<Proxy>) {
    let mut known = names(&routes.borrow_and_update());
    while routes.changed().await.is_ok() {
        let table = routes.borrow_and_update().clone();
        let now = names(&table);
        for name in known.difference(&now) {
            proxy.metrics.forget(name);
        }
        proxy
            .balancer
            .retain(|s| table.routes.iter().any(|r| r.service == s));
        known = now;
    }
}

fn names(table: &RouteTable) -> std::collections::HashSet<String> {
    table.routes.iter().map(|r| r.name.clone()).collect()
}

/// What serving one connection needs.
#[derive(Clone)]
struct Conns {
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    tls_timeout: Duration,
}

impl Conns {
    async fn plain(self, stream: TcpStream, addr: SocketAddr, watcher: Watcher) {
        self.serve(stream, Peer { addr, https: false }, watcher)
            .await
    }

    async fn tls(
        self,
        stream: TcpStream,
        addr: SocketAddr,
        acceptor: TlsAcceptor,
        watcher: Watcher,
    ) {
        match tokio::time::timeout(self.tls_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                self.serve(stream, Peer { addr, https: true }, watcher)
                    .await
            }
            Ok(Err(e)) => {
                tracing::debug!(client = %addr, error = %e, "ingress: TLS handshake failed")
            }
            Err(_) => tracing::debug!(client = %addr, "ingress: TLS handshake timed out"),
        }
    }

    async fn serve<S>(self, stream: S, peer: Peer, watcher: Watcher)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.proxy.clone();
        let service = service_fn(move |req| proxy.clone().handle(req, peer));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(client = %peer.addr, error = %e, "ingress: connection ended with an error");
        }
    }
}
