//! One request through the ingress: ACME answers, routing by host, the
//! HTTPS redirect, then forwarding to a replica with a retry on another
//! when connecting fails, websocket upgrades, metrics and the access log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_model::ingress::{Route, RouteTable};
use tokio::sync::watch;

use crate::balance::Balancer;
use crate::body::{self, Body, Slot, Upload};
use crate::headers;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pages;
use crate::Config;

/// The path prefix of ACME HTTP-01 challenges.
const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// The route label of requests no route took.
const NO_ROUTE: &str = "-";

/// What every connection's requests share.
pub(crate) struct Proxy {
    config: Config,
    routes: watch::Receiver<Arc<RouteTable>>,
    /// The current table's host index, rebuilt when the table changes.
    index: RwLock<Arc<Index>>,
    client: Client<HttpConnector, Upload>,
    pub(crate) metrics: Metrics,
    pub(crate) balancer: Balancer,
    /// The port in HTTPS redirects (`None`: 443, left out).
    redirect_port: Option<u16>,
    /// Upgraded connections stop when this turns true.
    stop: watch::Receiver<bool>,
}

/// How a request came in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Over TLS.
    pub https: bool,
}

impl Proxy {
    pub(crate) fn new(
        config: Config,
        routes: watch::Receiver<Arc<RouteTable>>,
        metrics: Metrics,
        https_port: Option<u16>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let redirect_port = config
            .https_redirect_port
            .or(https_port)
            .filter(|p| *p != 443);
        let index = RwLock::new(Arc::new(Index::new(routes.borrow().clone())));
        Proxy {
            config,
            routes,
            index,
            client,
            metrics,
            balancer: Balancer::default(),
            redirect_port,
            stop,
        }
    }

    /// Answers one request; never fails (errors are pages).
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let index = self.index();
        let table = &index.table;
        let host = request_host(&req).unwrap_or_default();
        if !peer.https {
            if let Some(token) = req.uri().path().strip_prefix(ACME_PREFIX) {
                let response = match table.challenges.get(token) {
                    Some(key_auth) => pages::challenge(key_auth),
                    None => pages::error(StatusCode::NOT_FOUND, "No such ACME challenge."),
                };
                let route = index.route(&host).map_or(NO_ROUTE, |r| r.name.as_str());
                self.metrics
                    .request(route, response.status().as_u16(), start.elapsed());
                return Ok(response);
            }
        }
        let Some(route) = index.route(&host) else {
            let response = pages::unknown_host(&host);
            self.metrics
                .request(NO_ROUTE, response.status().as_u16(), start.elapsed());
            return Ok(response);
        };
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let response = if !peer.https && route.https_redirect && table.certificate(&host).is_some()
        {
            pages::redirect(&self.https_url(&host, req.uri()))
        } else if route.upstreams.is_empty() {
            pages::no_upstream(&route.name)
        } else {
            self.forward(req, route, peer, &host).await
        };
        let took = start.elapsed();
        let status = response.status().as_u16();
        self.metrics.request(&route.name, status, took);
        if route.access_log {
            tracing::info!(
                target: "lb_ingress::access",
                project = %route.project,
                service = %route.service,
                method = %method,
                path = %path,
                status,
                duration_ms = took.as_secs_f64() * 1000.0,
                client = %peer.addr.ip(),
                "request"
            );
        }
        Ok(response)
    }

    /// The index of the current table.
    fn index(&self) -> Arc<Index> {
        let table = self.routes.borrow().clone();
        if let Ok(index) = self.index.read() {
            if Arc::ptr_eq(&index.table, &table) {
                return index.clone();
            }
        }
        let fresh = Arc::new(Index::new(table));
        if let Ok(mut index) = self.index.write() {
            *index = fresh.clone();
        }
        fresh
    }

    /// `https://host[:port]/path?query` for a redirect.
    fn https_url(&self, host: &str, uri: &Uri) -> String {
        let name = lb_model::ingress::normalize_host(host).unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match self.redirect_port {
            Some(port) => format!("https://{name}:{port}{path}"),
            None => format!("https://{name}{path}"),
        }
    }

    /// Sends the request to a replica of `route`, retrying once on another
    /// when connecting fails before the body was taken.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        peer: Peer,
        host: &str,
    ) -> Response<Body> {
        if headers::content_length(req.headers()).is_some_and(|n| n > self.config.max_body) {
            return too_large(self.config.max_body);
        }
        let upgrade = headers::upgrade(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let mut head = parts.headers;
        headers::strip_hop_by_hop(&mut head, upgrade.as_ref());
        if !head.contains_key(header::HOST) {
            if let Ok(value) = HeaderValue::from_str(host) {
                head.insert(header::HOST, value);
            }
        }
        headers::set_forwarded(&mut head, peer.addr.ip(), peer.https, host);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let slot = Slot::new(incoming, self.config.max_body);

        let picks = self.balancer.pick(&route.service, route.upstreams.len());
        let mut last = StatusCode::BAD_GATEWAY;
        for (attempt, index) in picks.iter().enumerate() {
            let Some(upstream) = route.upstreams.get(*index) else {
                break;
            };
            let uri = match format!("http://{}{path}", upstream.address).parse::<Uri>() {
                Ok(uri) => uri,
                Err(e) => {
                    tracing::warn!(route = %route.name, upstream = %upstream.address, error = %e,
                        "ingress: replica address is no URL authority");
                    self.metrics.upstream_error(&route.name);
                    continue;
                }
            };
            let mut out = Request::new(slot.upload());
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = head.clone();
            let sent = tokio::time::timeout(
                self.config.response_header_timeout,
                self.client.request(out),
            )
            .await;
            match sent {
                Ok(Ok(response)) => return self.respond(response, client_upgrade),
                Ok(Err(e)) => {
                    if slot.over_limit() {
                        return too_large(self.config.max_body);
                    }
                    self.metrics.upstream_error(&route.name);
                    let timed_out = is_timeout(&e);
                    tracing::warn!(route = %route.name, upstream = %upstream.address,
                        attempt, error = %chain(&e), "ingress: replica failed");
                    last = if timed_out {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    if e.is_connect() && slot.untouched() {
                        continue;
                    }
                    break;
                }
                Err(_) => {
                    self.metrics.upstream_error(&route.name);
                    tracing::warn!(route = %route.name, upstream = %upstream.address,
                        "ingress: replica did not answer in time");
                    last = StatusCode::GATEWAY_TIMEOUT;
                    break;
                }
            }
        }
        let detail = if last == StatusCode::GATEWAY_TIMEOUT {
            format!("Service {} did not answer in time.", route.name)
        } else {
            format!("Service {} could not be reached.", route.name)
        };
        pages::error(last, &detail)
    }

    /// A replica's answer on its way back; a 101 starts the tunnel.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client) = client_upgrade else {
                return pages::error(
                    StatusCode::BAD_GATEWAY,
                    "The service switched protocols unasked.",
                );
            };
            let protocol = headers::upgrade(response.headers());
            let upstream = hyper::upgrade::on(&mut response);
            let mut stop = self.stop.clone();
            tokio::spawn(async move {
                let tunnel = async {
                    let (client, upstream) = tokio::try_join!(client, upstream)?;
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                };
                tokio::select! {
                    r = tunnel => if let Err(e) = r {
                        tracing::debug!(error = %e, "ingress: upgraded connection ended");
                    },
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
            let (mut parts, _) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, protocol.as_ref());
            return Response::from_parts(parts, body::empty());
        }
        let (mut parts, incoming) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, None);
        Response::from_parts(parts, body::stream(incoming))
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute form),
/// else the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)?
        .to_str()
        .ok()
        .map(str::to_string)
}

fn too_large(max: u64) -> Response<Body> {
    pages::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body is larger than {max} bytes."),
    )
}

/// Whether a client error came from a timeout (connecting, here).
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// An error with its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}
