//! What an ingress serves: the route table the API computes from the store
//! and hands to every ingress (in-process under `lb up`, over the node
//! channel to `lb node --ingress`), and the rules that go with it: host
//! matching, a service's generated host name, domain syntax.
//!
//! An ingress holds no store credentials: everything it needs — routes,
//! pending ACME HTTP-01 answers and certificates with their keys — is in
//! the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// A domain's claim, at `<root>/index/domains/<domain>`: which service it
/// routes to. Written with the service's spec, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainClaim {
    /// The domain (exact or `*.` wildcard).
    pub domain: String,
    /// The project id.
    pub project: String,
    /// The service id.
    pub service: String,
    /// The user id of the project's owner.
    pub owner: String,
}

/// Everything an ingress serves; replaced whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// The store revision it reflects (larger is newer).
    #[serde(default)]
    pub revision: i64,
    /// One per service with an ingress port and at least one host name.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Pending ACME HTTP-01 challenges: token → key authorization, served
    /// at `/.well-known/acme-challenge/<token>` on every host.
    #[serde(default)]
    pub challenges: BTreeMap<String, String>,
    /// Certificates for HTTPS, chosen by SNI.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
}

/// A service as an ingress serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The host names it answers: exact names or `*.example.com` (one
    /// label, not the bare parent).
    pub hosts: Vec<String>,
    /// The project id.
    pub project: String,
    /// The service id.
    pub service: String,
    /// `<project name>/<service name>`, for metrics and logs.
    pub name: String,
    /// Healthy running replicas that take traffic, in no order.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// Plain HTTP answered with a redirect to HTTPS (only for hosts that
    /// have a certificate).
    #[serde(default)]
    pub https_redirect: bool,
    /// Log each request in the service's logs.
    #[serde(default)]
    pub access_log: bool,
}

/// One replica that takes a route's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// The replica id.
    pub replica: String,
    /// `host:port` where its ingress port is published.
    pub address: String,
}

/// A certificate with its private key, as an ingress needs it. Its `Debug`
/// leaves the key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The names it covers (exact or `*.` wildcards).
    pub domains: Vec<String>,
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key, PEM. Never shown through the API.
    pub key_pem: String,
    /// When it expires (seconds since the epoch).
    pub not_after: Timestamp,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("domains", &self.domains)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// The route for a request's host (port and trailing dot ignored, case
    /// folded): an exact name first, then the wildcard of its parent.
    pub fn route(&self, host: &str) -> Option<&Route> {
        let host = normalize_host(host)?;
        let exact = self.routes.iter().find(|r| r.hosts.contains(&host));
        exact.or_else(|| {
            let (_, parent) = host.split_once('.')?;
            let wildcard = format!("*.{parent}");
            self.routes.iter().find(|r| r.hosts.contains(&wildcard))
        })
    }

    /// The certificate for a TLS server name: one naming it exactly, else
    /// one whose wildcard covers it; of several, the one that lasts longest.
    pub fn certificate(&self, server_name: &str) -> Option<&Certificate> {
        let name = normalize_host(server_name)?;
        let covers = |c: &&Certificate, exact: bool| {
            c.domains.iter().any(|d| {
                if exact {
                    *d == name
                } else {
                    d.strip_prefix("*.")
                        .is_some_and(|parent| name.split_once('.').map(|(_, p)| p) == Some(parent))
                }
            })
        };
        let best = |exact: bool| {
            self.certificates
                .iter()
                .filter(|c| covers(c, exact))
                .max_by_key(|c| c.not_after)
        };
        best(true).or_else(|| best(false))
    }
}

/// A `Host` header or TLS server name as a lower-case name without port or
/// trailing dot; `None` when it is no host name at all.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        // An IPv6 literal `[::1]:80` or `[::1]`: never routed by name.
        _ if host.starts_with('[') => return None,
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty() && name.len() <= 253).then_some(name)
}

/// Checks a domain a service may claim: a lower-case host name of at least
/// two labels, or a wildcard `*.` in front of one with at least two labels.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|l| crate::validate_name(l).is_ok());
    let numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if labels_ok && !numeric {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a lower-case host name (e.g. app.example.com or *.example.com)",
            crate::truncate(domain)
        ))
    }
}

/// The name a service answers under `--base-domain` without any DNS work:
/// `<service>-<project>-<owner>.<base>`, stable and unique across the
/// cluster. When a part holds a `-` (so two triples could give the same
/// name) or the label would pass 63 characters, the label becomes a prefix
/// of the service name and a hash of the three names.
pub fn generated_host(service: &str, project: &str, owner: &str, base: &str) -> String {
    let plain = format!("{service}-{project}-{owner}");
    let ambiguous = [service, project, owner].iter().any(|p| p.contains('-'));
    let label = if !ambiguous && plain.len() <= 63 {
        plain
    } else {
        let digest = Sha256::digest(format!("{owner}/{project}/{service}").as_bytes());
        let hash: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
        let prefix: String = service.chars().take(40).collect();
        format!("{}-{hash}", prefix.trim_end_matches('-'))
    };
    format!("{label}.{base}")
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
    fn hosts_match_exactly_before_wildcards() {
        let table = RouteTable {
            routes: vec![
                route(&["*.example.com"], "wild"),
                route(&["app.example.com"], "app"),
            ],
            ..Default::default()
        };
        let found = |h: &str| table.route(h).map(|r| r.service.as_str());
        assert_eq!(found("app.example.com"), Some("app"));
        assert_eq!(found("APP.example.com.:8080"), Some("app"));
        assert_eq!(found("other.example.com"), Some("wild"));
        assert_eq!(found("a.b.example.com"), None, "one label only");
        assert_eq!(found("example.com"), None, "not the bare parent");
        assert_eq!(found("[::1]:80"), None);
        assert_eq!(found("app.example.com:x"), None);
    }

    #[test]
    fn certificates_are_chosen_by_name_then_wildcard_then_life() {
        let cert = |domains: &[&str], not_after| Certificate {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            chain_pem: String::new(),
            key_pem: format!("{not_after}"),
            not_after,
        };
        let table = RouteTable {
            certificates: vec![
                cert(&["*.example.com"], 50),
                cert(&["app.example.com"], 10),
                cert(&["app.example.com"], 20),
            ],
            ..Default::default()
        };
        assert_eq!(table.certificate("app.example.com").unwrap().not_after, 20);
        assert_eq!(table.certificate("x.example.com").unwrap().not_after, 50);
        assert!(table.certificate("example.com").is_none());
    }

    #[test]
    fn domains_are_host_names_or_one_level_wildcards() {
        for good in ["app.example.com", "*.example.com", "a-b.c.io"] {
            assert_eq!(check_domain(good), Ok(()), "{good}");
        }
        for bad in [
            "localhost",
            "*.com",
            "*",
            "a.*.example.com",
            "App.example.com",
            "10.0.0.1",
            "x..com",
            "-a.example.com",
            "",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_hosts_are_stable_and_never_collide() {
        assert_eq!(
            generated_host("web", "shop", "alice", "apps.test"),
            "web-shop-alice.apps.test"
        );
        let a = generated_host("a-b", "c", "d", "apps.test");
        let b = generated_host("a", "b-c", "d", "apps.test");
        assert_ne!(a, b);
        assert_eq!(a, generated_host("a-b", "c", "d", "apps.test"));
        let long = generated_host(&"s".repeat(63), &"p".repeat(63), "o", "apps.test");
        let label = long.split('.').next().unwrap();
        assert!(label.len() <= 63, "{label}");
        assert!(check_domain(&long).is_ok(), "{long}");
    }

    #[test]
    fn a_certificates_key_is_not_in_its_debug_output() {
        let cert = Certificate {
            domains: vec!["app.example.com".into()],
            chain_pem: String::new(),
            key_pem: "PRIVATE".into(),
            not_after: 1,
        };
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }
}
