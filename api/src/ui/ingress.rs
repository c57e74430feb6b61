//! The service page's ingress panel: one service's requests through the
//! ingress by status class, and its p50/p99 latency, read from this
//! process's Prometheus registry (where `lb up` registers the ingress's
//! metrics). Only the series of the one route asked for are read, so a
//! page never learns another service's traffic.
//!
//! The figures are this API process's own ingress since it started: in a
//! cluster whose ingress runs on nodes (`lb node --ingress`) they stay
//! empty here.

use std::collections::BTreeMap;

use prometheus::proto::MetricFamily;
use prometheus::Registry;
use serde::Serialize;

/// The counter of requests by route and status class.
const REQUESTS: &str = "lb_ingress_requests_total";
/// The latency histogram by route.
const DURATION: &str = "lb_ingress_request_duration_seconds";

/// One route's traffic as the panel shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngressStats {
    /// The route label: `<project>/<service>`.
    pub route: String,
    /// Requests by status class (`2xx`, `4xx`, …), zero classes left out.
    pub requests: BTreeMap<String, u64>,
    /// All requests counted.
    pub total: u64,
    /// Median time to the answer's headers, seconds (`None`: no requests).
    pub p50: Option<f64>,
    /// 99th percentile of the same, seconds.
    pub p99: Option<f64>,
}

/// The stats of `route` from `registry`.
pub fn stats(registry: &Registry, route: &str) -> IngressStats {
    let families = registry.gather();
    let mut requests = BTreeMap::new();
    for m in series(&families, REQUESTS, route) {
        let class = label(m, "class").unwrap_or("other").to_owned();
        let n = m.get_counter().get_value() as u64;
        if n > 0 {
            *requests.entry(class).or_insert(0) += n;
        }
    }
    let total = requests.values().sum();
    let (mut p50, mut p99) = (None, None);
    if let Some(m) = series(&families, DURATION, route).next() {
        let h = m.get_histogram();
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        p50 = quantile(0.5, &buckets, h.get_sample_count());
        p99 = quantile(0.99, &buckets, h.get_sample_count());
    }
    IngressStats {
        route: route.to_owned(),
        requests,
        total,
        p50,
        p99,
    }
}

/// The metrics of family `name` whose `route` label is `route`.
fn series<'a>(
    families: &'a [MetricFamily],
    name: &'a str,
    route: &'a str,
) -> impl Iterator<Item = &'a prometheus::proto::Metric> + 'a {
    families
        .iter()
        .filter(move |f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(move |m| label(m, "route") == Some(route))
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// The `q` quantile of a histogram as Prometheus's `histogram_quantile`
/// estimates it: linear within the bucket the rank falls in. `buckets` are
/// (upper bound, cumulative count) without `+Inf`; `count` is every sample.
fn quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let in_bucket = (cumulative - lower.1) as f64;
            if in_bucket <= 0.0 {
                return Some(upper);
            }
            let share = (rank - lower.1 as f64) / in_bucket;
            return Some(lower.0 + (upper - lower.0) * share);
        }
        lower = (upper, cumulative);
    }
    // In the +Inf bucket: the highest finite bound is all that is known.
    buckets.last().map(|&(upper, _)| upper)
}

#[cfg(test)]
mod tests {
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

    use super::*;

    /// A registry with the ingress's two families, as lb-ingress makes them.
    fn registry() -> (Registry, IntCounterVec, HistogramVec) {
        let registry = Registry::new();
        let requests =
            IntCounterVec::new(Opts::new(REQUESTS, "requests"), &["route", "class"]).unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(DURATION, "latency").buckets(vec![0.001, 0.01, 0.1, 1.0]),
            &["route"],
        )
        .unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        (registry, requests, duration)
    }

    #[test]
    fn only_the_route_asked_for() {
        let (registry, requests, duration) = registry();
        requests.with_label_values(&["demo/web", "2xx"]).inc_by(98);
        requests.with_label_values(&["demo/web", "5xx"]).inc_by(2);
        requests.with_label_values(&["demo/webx", "2xx"]).inc_by(7);
        requests.with_label_values(&["other/api", "4xx"]).inc_by(5);
        for _ in 0..99 {
            duration.with_label_values(&["demo/web"]).observe(0.005);
        }
        duration.with_label_values(&["demo/web"]).observe(0.5);
        duration.with_label_values(&["other/api"]).observe(5.0);

        let s = stats(&registry, "demo/web");
        assert_eq!(s.route, "demo/web");
        assert_eq!(s.total, 100);
        assert_eq!(
            s.requests,
            BTreeMap::from([("2xx".into(), 98), ("5xx".into(), 2)])
        );
        // 50 of 99 in (0.001, 0.01]: interpolated in that bucket.
        let p50 = s.p50.unwrap();
        assert!((0.001..=0.01).contains(&p50), "{p50}");
        // 99 of 100 are at most 0.01 s: the top of that bucket.
        let p99 = s.p99.unwrap();
        assert!((p99 - 0.01).abs() < 1e-9, "{p99}");

        let none = stats(&registry, "nobody/here");
        assert_eq!(none.total, 0);
        assert!(none.requests.is_empty());
        assert_eq!(none.p50, None);
    }

    #[test]
    fn quantiles_like_prometheus() {
        let b = [(1.0, 10), (2.0, 20), (4.0, 20)];
        assert_eq!(quantile(0.5, &b, 20), Some(1.0));
        assert_eq!(quantile(0.75, &b, 20), Some(1.5));
        assert_eq!(quantile(0.25, &b, 20), Some(0.5));
        // Beyond the last finite bucket.
        assert_eq!(quantile(0.99, &b, 40), Some(4.0));
        assert_eq!(quantile(0.5, &b, 0), None);
    }
}
