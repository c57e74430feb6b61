//! lb's ingress: the reverse proxy that serves every service's domains over
//! HTTP and HTTPS, routed by a [`lb_model::ingress::RouteTable`] it is fed
//! through a watch channel (the table is computed elsewhere; the ingress
//! holds no store credentials).
//!
//! [`serve`] binds, then serves until its shutdown future resolves. The
//! modules, from the socket inwards: `server` (listeners, connections,
//! graceful shutdown), `tls` (certificates by SNI), `proxy` (one request:
//! ACME answers, routing, redirect, forwarding with a retry, upgrades),
//! `index` (host → route in hash maps),
//! `balance` (round-robin), `headers` (hop-by-hop and `X-Forwarded-*`),
//! `body` (streaming with the body limit), `pages` (the ingress's own
//! answers), `metrics`.

mod balance;
mod body;
mod config;
mod headers;
mod index;
mod metrics;
mod pages;
mod proxy;
mod server;
pub mod tls;

pub use config::Config;
pub use metrics::Metrics;
pub use server::{serve, Running};

/// What can keep the ingress from serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket call failed.
    #[error("ingress socket: {0}")]
    Io(#[source] std::io::Error),
    /// The TLS settings were refused.
    #[error("ingress TLS settings: {0}")]
    Tls(#[source] rustls::Error),
    /// The serving task panicked or was cancelled.
    #[error("ingress task ended abnormally: {0}")]
    Task(String),
}

/// The ingress's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
