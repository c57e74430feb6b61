//! The ingress on its own, for benchmarks and manual tries: serves the route
//! table in a JSON file (`lb_model::ingress::RouteTable`) until Ctrl-C or
//! SIGTERM.
//!
//! ```text
//! cargo run --release -p lb-ingress --example serve -- \
//!     --routes routes.json --http 127.0.0.1:8080 [--https 127.0.0.1:8443]
//! ```

use std::sync::Arc;

use anyhow::{bail, Context};
use lb_ingress::{Config, Metrics};
use lb_model::ingress::RouteTable;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config {
        http_listen: None,
        ..Config::default()
    };
    let mut routes = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--routes" => routes = Some(value()?),
            "--http" => config.http_listen = Some(value()?.parse().context("--http")?),
            "--https" => config.https_listen = Some(value()?.parse().context("--https")?),
            other => bail!("unknown flag {other:?} (--routes FILE --http ADDR --https ADDR)"),
        }
    }
    let path = routes.context("--routes FILE is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let table: RouteTable =
        serde_json::from_str(&text).with_context(|| format!("{path} is no route table"))?;
    let (_routes, rx) = tokio::sync::watch::channel(Arc::new(table));
    let metrics = Metrics::new(&prometheus::Registry::new())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let running = lb_ingress::serve(config, rx, metrics, shutdown).await?;
    println!("http={:?} https={:?}", running.http, running.https);
    running.wait().await?;
    Ok(())
}
