//! A route table made quick to query: host names in hash maps, built once
//! per table, so a table of thousands of routes costs a request no scan.
//! It matches exactly as [`RouteTable::route`] does (an exact name first,
//! then the wildcard of the parent; of two routes claiming one name, the
//! first); a test holds the two together.

use std::collections::HashMap;
use std::sync::Arc;

use lb_model::ingress::{normalize_host, Route, RouteTable};

/// A table with its host index.
#[derive(Debug)]
pub struct Index {
    /// The table it indexes.
    pub table: Arc<RouteTable>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl Index {
    /// Indexes `table`.
    pub fn new(table: Arc<RouteTable>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, route) in table.routes.iter().enumerate() {
            for host in &route.hosts {
                match host.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(host.clone()).or_insert(i),
                };
            }
        }
        Index {
            table,
            exact,
            wildcard,
        }
    }

    /// The route for a request's host, as [`RouteTable::route`] finds it.
    pub fn route(&self, host: &str) -> Option<&Route> {
        let host = normalize_host(host)?;
        let i = self.exact.get(&host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })?;
        self.table.routes.get(*i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], service: &str) -> Route {
        Route {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            project: "p".into(),
            service: service.into(),
            name: format!("demo/{service}"),
            upstreams: vec![],
            https_redirect: false,
            access_log: false,
        }
    }

    #[test]
    fn the_index_finds_what_the_table_finds() {
        let table = Arc::new(RouteTable {
            routes: vec![
                route(&["*.example.com"], "wild"),
                route(&["app.example.com", "www.app.test"], "app"),
                route(
                    &["app.example.com", "*.example.com", "other.test"],
                    "second",
                ),
                route(&["*.b.example.com"], "deep"),
            ],
            ..Default::default()
        });
        let index = Index::new(table.clone());
        for host in [
            "app.example.com",
            "APP.example.com.:8080",
            "x.example.com",
            "a.b.example.com",
            "b.example.com",
            "example.com",
            "other.test",
            "www.app.test",
            "nothing.test",
            "[::1]:80",
            "app.example.com:x",
            "",
            ".",
        ] {
            let want = table.route(host).map(|r| &r.service);
            let got = index.route(host).map(|r| &r.service);
            assert_eq!(got, want, "{host:?}");
        }
    }
}
