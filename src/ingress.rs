//! The ingress's flags (`lb up`, `lb node --ingress`) and its start: the
//! listeners, limits and timeouts of [`lb_ingress::Config`], fed a route
//! table through a watch channel by the API in this process or by the
//! node's channel.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use lb_model::ingress::RouteTable;
use tokio::sync::watch;

/// Where and how the ingress listens.
#[derive(Args, Debug, Clone)]
pub struct IngressArgs {
    /// Plain HTTP for every service's domains (ACME HTTP-01 answers,
    /// redirects to HTTPS); e.g. 0.0.0.0:80.
    #[arg(long, env = "LB_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// HTTPS for every service's domains, with certificates issued over
    /// ACME or uploaded; e.g. 0.0.0.0:443. None without it.
    #[arg(long, env = "LB_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// The largest request body the ingress passes on, MiB (larger: 413).
    #[arg(long, env = "LB_INGRESS_MAX_BODY", default_value_t = 100)]
    pub ingress_max_body: u64,
    /// How long a replica may take to start answering (then 504), e.g. 60s.
    #[arg(long, env = "LB_INGRESS_TIMEOUT", default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub ingress_timeout: std::time::Duration,
}

impl IngressArgs {
    /// The ingress's settings.
    pub fn config(&self) -> lb_ingress::Config {
        lb_ingress::Config {
            http_listen: Some(self.http_listen),
            https_listen: self.https_listen,
            max_body: self.ingress_max_body << 20,
            response_header_timeout: self.ingress_timeout,
            ..Default::default()
        }
    }
}

/// How certificates are issued (`lb up`, `lb api`).
#[derive(Args, Debug, Clone)]
pub struct AcmeArgs {
    /// The ACME server's directory (RFC 8555) certificates are ordered from.
    #[arg(long, env = "LB_ACME_DIRECTORY", default_value = lb_certs::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// The contact address of lb's ACME account.
    #[arg(long, env = "LB_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Extra root certificates (PEM) to trust the ACME server with (a
    /// private CA, a test server).
    #[arg(long, env = "LB_ACME_CA_FILE")]
    pub acme_ca_file: Option<std::path::PathBuf>,
    /// Order no certificates (uploaded ones still serve).
    #[arg(long, env = "LB_NO_ACME")]
    pub no_acme: bool,
}

impl AcmeArgs {
    /// The issuer's settings; `enabled` also needs somewhere to serve HTTPS.
    pub fn config(&self, enabled: bool) -> anyhow::Result<lb_certs::AcmeConfig> {
        if let Some(file) = &self.acme_ca_file {
            std::fs::metadata(file)
                .with_context(|| format!("--acme-ca-file {}", file.display()))?;
        }
        Ok(lb_certs::AcmeConfig {
            enabled: enabled && !self.no_acme,
            directory: self.acme_directory.clone(),
            email: self.acme_email.clone(),
            ca_file: self.acme_ca_file.clone(),
            ..Default::default()
        })
    }
}

/// A new route table channel, empty until the first table arrives.
pub fn routes() -> watch::Sender<Arc<RouteTable>> {
    watch::Sender::new(Arc::default())
}

/// Binds the ingress's listeners and serves until `shutdown`; prints where.
pub async fn start(
    config: lb_ingress::Config,
    routes: watch::Receiver<Arc<RouteTable>>,
    registry: &prometheus::Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<lb_ingress::Running> {
    let metrics = lb_ingress::Metrics::new(registry).context("ingress metrics")?;
    let running = lb_ingress::serve(config, routes, metrics, shutdown)
        .await
        .context("cannot start the ingress")?;
    if let Some(http) = running.http {
        println!("ingress: http://{http}/");
    }
    if let Some(https) = running.https {
        println!("ingress: https://{https}/");
    }
    Ok(running)
}
