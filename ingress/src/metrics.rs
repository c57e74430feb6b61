//! The ingress's Prometheus metrics, per route (`<project>/<service>`):
//! requests by status class, latency to the response's headers, and
//! upstream errors. Requests for unknown hosts count under route `-`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Handles to the ingress's metrics in the caller's registry.
#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
}

impl Metrics {
    /// Registers the ingress's metrics in `registry` (once per registry).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "lb_ingress_requests_total",
                "Requests through the ingress by route and status class",
            ),
            &["route", "class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lb_ingress_request_duration_seconds",
                "Time from a request to its answer's headers, by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "lb_ingress_upstream_errors_total",
                "Failed attempts to reach a route's replicas (connect, timeout, broken answer)",
            ),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        Ok(Metrics {
            requests,
            duration,
            upstream_errors,
        })
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .with_label_values(&[route, class(status)])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Counts one failed attempt at a replica.
    pub(crate) fn upstream_error(&self, route: &str) {
        self.upstream_errors.with_label_values(&[route]).inc();
    }

    /// Drops the series of routes no longer served.
    pub(crate) fn forget(&self, route: &str) {
        for c in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let _ = self.requests.remove_label_values(&[route, c]);
        }
        let _ = self.duration.remove_label_values(&[route]);
        let _ = self.upstream_errors.remove_label_values(&[route]);
    }
}

/// `2xx`, `4xx`, … for a status code.
fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_class() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.request("demo/web", 200, Duration::from_millis(3));
        m.request("demo/web", 204, Duration::from_millis(3));
        m.request("demo/web", 502, Duration::from_millis(3));
        m.upstream_error("demo/web");
        assert_eq!(m.requests.with_label_values(&["demo/web", "2xx"]).get(), 2);
        assert_eq!(m.requests.with_label_values(&["demo/web", "5xx"]).get(), 1);
        assert_eq!(m.upstream_errors.with_label_values(&["demo/web"]).get(), 1);
        assert!(Metrics::new(&registry).is_err(), "registered twice");
        m.forget("demo/web");
        let families = registry.gather();
        assert!(families.iter().all(|f| f.get_metric().is_empty()));
    }
}
