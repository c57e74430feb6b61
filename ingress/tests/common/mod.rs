//! Shared by the ingress tests: real upstream servers (hyper on 127.0.0.1:0),
//! an ingress on port 0 fed through a watch channel, `curl` as the client
//! and certificates made with the `openssl` CLI.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_ingress::{Config, Metrics, Running};
use lb_model::ingress::{Certificate, Route, RouteTable, Upstream};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// An upstream's answer body.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Fixed bytes as an upstream body.
pub fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(
        Full::new(Bytes::from(s.into()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    )
}

/// Fails with `what` when `fut` takes longer than `secs` (a hang is a
/// failure, never a stuck test).
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// Starts an HTTP/1.1 upstream answering with `handler`; returns its address.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers `name` plus the request's head, one
/// `name: value` line per header.
pub async fn echo(name: &'static str) -> SocketAddr {
    upstream(move |req: Request<Incoming>| async move {
        let mut out = format!("{name}\n{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        text(out)
    })
    .await
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A route for `hosts` to `upstreams`.
pub fn route(name: &str, hosts: &[&str], upstreams: &[SocketAddr]) -> Route {
    Route {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        project: "P1".into(),
        service: format!("S-{name}"),
        name: format!("demo/{name}"),
        upstreams: upstreams
            .iter()
            .enumerate()
            .map(|(i, a)| Upstream {
                replica: format!("R{i}"),
                address: a.to_string(),
            })
            .collect(),
        https_redirect: false,
        access_log: true,
    }
}

/// A table of `routes`.
pub fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable {
        revision: 1,
        routes,
        ..Default::default()
    }
}

/// A running ingress with its table's sender and metrics registry.
pub struct Ingress {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub routes: watch::Sender<Arc<RouteTable>>,
    pub registry: prometheus::Registry,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

impl Ingress {
    /// Plain HTTP only, default settings.
    pub async fn start(table: RouteTable) -> Self {
        Self::with(test_config(false), table).await
    }

    /// With `config` (listen addresses on port 0).
    pub async fn with(config: Config, table: RouteTable) -> Self {
        let (tx, rx) = watch::channel(Arc::new(table));
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = lb_ingress::serve(config, rx, metrics, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        Ingress {
            http: running.http.unwrap(),
            https: running.https,
            routes: tx,
            registry,
            shutdown: Some(stop),
            running: Some(running),
        }
    }

    /// Starts the graceful shutdown; `wait` to see it end.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the ingress's task to end.
    pub async fn wait(&mut self) {
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
    }

    /// `http://127.0.0.1:<port>` of the plain listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// Settings for tests: port 0, short grace.
pub fn test_config(https: bool) -> Config {
    Config {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        https_listen: https.then(|| "127.0.0.1:0".parse().unwrap()),
        shutdown_grace: Duration::from_secs(10),
        ..Config::default()
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// curl's exit code.
    pub exit: i32,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -s -i` with `args`; parses the last response head.
pub async fn curl(args: &[&str]) -> Reply {
    let out = within(
        30,
        "curl",
        tokio::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "20"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl runs");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// A self-signed certificate (P-256) for `names`, made by `openssl` in
/// `dir`, as the table carries it.
pub fn certificate(dir: &Path, names: &[&str]) -> Certificate {
    let tag = names[0].replace('*', "star");
    let key = dir.join(format!("{tag}.key"));
    let cert = dir.join(format!("{tag}.pem"));
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={}", names[0]))
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(",")))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made no certificate");
    Certificate {
        domains: names.iter().map(|n| n.to_string()).collect(),
        chain_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: std::fs::read_to_string(&key).unwrap(),
        not_after: 4_000_000_000,
    }
}

/// The sum of `lb_ingress_requests_total` for `route` and `class`.
pub fn requests(registry: &prometheus::Registry, route: &str, class: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "lb_ingress_requests_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            let labels = m.get_label();
            labels
                .iter()
                .any(|l| l.name() == "route" && l.value() == route)
                && labels
                    .iter()
                    .any(|l| l.name() == "class" && l.value() == class)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// An HTTP/1.1 client connection straight to `addr` (for tests that need
/// to watch a body arrive in pieces).
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}
