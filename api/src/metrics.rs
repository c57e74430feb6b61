//! Prometheus metrics: requests by route and status, request latency, and
//! store latency (through [`MeteredStore`], which wraps the store).

use std::time::Instant;

use async_trait::async_trait;
use lb_store::{KeyValue, Page, Result, Shared, Store, Txn, TxnResponse, WatchStream};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The API's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    store: HistogramVec,
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "lb_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("lb_http_request_duration_seconds", "HTTP request latency")
                .buckets(BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let store = HistogramVec::new(
            HistogramOpts::new(
                "lb_store_request_duration_seconds",
                "Store operation latency",
            )
            .buckets(BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(store.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            store,
        }
    }

    /// Records one request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// The registry, for other roles of this process (the ingress) to
    /// register their metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A store that times every operation into [`Metrics`].
pub struct MeteredStore {
    inner: Shared,
    latency: HistogramVec,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Shared, metrics: &Metrics) -> Self {
        Self {
            inner,
            latency: metrics.store.clone(),
        }
    }

    fn observe(&self, op: &str, started: Instant) {
        self.latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t);
        r
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let t = Instant::now();
        let r = self.inner.range(prefix, after, limit).await;
        self.observe("range", t);
        r
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let t = Instant::now();
        let r = self.inner.txn(txn).await;
        self.observe("txn", t);
        r
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, from_revision).await;
        self.observe("watch", t);
        r
    }

    async fn revision(&self) -> Result<i64> {
        let t = Instant::now();
        let r = self.inner.revision().await;
        self.observe("revision", t);
        r
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        self.inner.lease_grant(ttl_secs).await
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<()> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn window(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<lb_store::KeyValue>, usize)> {
        self.inner.window(prefix, offset, limit).await
    }

    fn limits(&self) -> lb_store::Limits {
        self.inner.limits()
    }

    fn key_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.key_dir()
    }
}
