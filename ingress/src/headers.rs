//! Header rules of a proxy: hop-by-hop headers stay on their hop, the
//! `X-Forwarded-*` headers tell the replica who asked and how, and an
//! upgrade (websocket) keeps its `Upgrade`/`Connection` pair.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The protocol a client asks to switch to (`Upgrade: websocket` with
/// `Connection: upgrade`), if it asks.
pub fn upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers, those `Connection` names included; with
/// `upgrade`, puts back `Connection: upgrade` and `Upgrade: <upgrade>`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Appends the client's address to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, https: bool, host: &str) {
    let peer = peer.to_canonical().to_string();
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior: Vec<&str> = headers
        .get_all(&xff)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        peer
    } else {
        format!("{}, {peer}", prior.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(xff, value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// The `Content-Length` a client declared, if it declared one that parses.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("host", "app.example.com"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(names(&h), ["content-type", "host"]);
    }

    #[test]
    fn an_upgrade_keeps_its_pair() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let up = upgrade(&h);
        assert_eq!(up, Some(HeaderValue::from_static("websocket")));
        strip_hop_by_hop(&mut h, up.as_ref());
        assert_eq!(names(&h), ["connection", "sec-websocket-key", "upgrade"]);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(upgrade(&map(&[("upgrade", "websocket")])), None);
        assert_eq!(upgrade(&map(&[("connection", "upgrade")])), None);
    }

    #[test]
    fn forwarded_headers_append_the_peer() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            false,
            "app.example.com",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "::ffff:127.0.0.1".parse().unwrap(), true, "a.b");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn content_length_parses_or_is_none() {
        assert_eq!(content_length(&map(&[("content-length", "12")])), Some(12));
        assert_eq!(content_length(&map(&[("content-length", "x")])), None);
        assert_eq!(content_length(&HeaderMap::new()), None);
    }
}
