//! The ingress's settings: where it listens, its body limit and timeouts.
//! Plain data, imported by the rest of the crate.

use std::net::SocketAddr;
use std::time::Duration;

/// How an ingress listens and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Plain HTTP (ACME HTTP-01 answers, redirects, plain routes); `None`
    /// for none.
    pub http_listen: Option<SocketAddr>,
    /// HTTPS with certificates from the route table; `None` for none.
    pub https_listen: Option<SocketAddr>,
    /// The largest request body passed upstream, in bytes; larger gets 413.
    pub max_body: u64,
    /// How long connecting to a replica may take before the next one is
    /// tried.
    pub connect_timeout: Duration,
    /// How long a replica may take to start its answer; past it, 504.
    pub response_header_timeout: Duration,
    /// How long a client's keep-alive connection (HTTP/1.1) may wait for its
    /// next request's headers, and how long an idle upstream connection
    /// stays pooled.
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// After shutdown: how long requests in flight (and upgraded
    /// connections) may go on before they are cut.
    pub shutdown_grace: Duration,
    /// The port put in HTTP → HTTPS redirects; `None`: the bound HTTPS
    /// port (left out of the URL when 443).
    pub https_redirect_port: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            https_listen: None,
            max_body: 100 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            https_redirect_port: None,
        }
    }
}
