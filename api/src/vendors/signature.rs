//! Webhook delivery checks, as each vendor documents them (its
//! [`super::GitVendor`] names the headers), all in constant time:
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`
//!   (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>);
//!   delivery id `X-GitHub-Delivery`, event `X-GitHub-Event`.
//! - GitLab: `X-Gitlab-Token: <secret>`, the secret itself
//!   (<https://docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token>);
//!   delivery id `X-Gitlab-Event-UUID` (or `Idempotency-Key`), event
//!   `X-Gitlab-Event`.
//! - Bitbucket Cloud: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>`
//!   (<https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/#Secure-webhooks>);
//!   delivery id `X-Request-UUID`, event `X-Event-Key`.

use hmac::{Hmac, Mac};
use lb_model::Vendor;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use warp::http::HeaderMap;

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The signature (or token) header is missing.
    #[error("the delivery is not signed: {0} is missing")]
    Unsigned(&'static str),
    /// The signature does not match the body and the service's secret.
    #[error("the delivery's {0} does not match")]
    BadSignature(&'static str),
}

/// The header carrying the signature or token.
pub fn signature_header(vendor: Vendor) -> &'static str {
    super::vendor(vendor).signature_header()
}

/// The delivery id, unique per delivery (a redelivery by hand from the
/// vendor's page gets a new one on GitHub and Bitbucket).
pub fn delivery_id(vendor: Vendor, headers: &HeaderMap) -> Option<String> {
    super::vendor(vendor)
        .delivery_headers()
        .iter()
        .find_map(|n| header(headers, n))
        .filter(|v| !v.trim().is_empty() && v.len() <= 200)
}

/// The delivery id header as the vendor documents it (for messages).
pub fn delivery_header(vendor: Vendor) -> &'static str {
    super::vendor(vendor).delivery_header()
}

/// The event name, normalised: `push`, `ping`, or the vendor's own name.
pub fn event(vendor: Vendor, headers: &HeaderMap) -> String {
    let v = super::vendor(vendor);
    v.event(header(headers, v.event_header()).unwrap_or_default())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks a delivery's signature against the service's secret.
pub fn verify(
    vendor: Vendor,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<(), Refused> {
    let v = super::vendor(vendor);
    let name = v.signature_header();
    let value = headers.get(name).ok_or(Refused::Unsigned(name))?.as_bytes();
    if v.signature_matches(value, body, secret) {
        Ok(())
    } else {
        Err(Refused::BadSignature(name))
    }
}

/// Whether `value` is `sha256=<hex HMAC-SHA256(secret, body)>`, compared in
/// constant time (GitHub and Bitbucket).
pub(super) fn hmac_matches(value: &[u8], body: &[u8], secret: &str) -> bool {
    let Some(expected) = value.strip_prefix(b"sha256=").and_then(decode_hex) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// Whether `value` is the secret itself, compared in constant time (GitLab).
pub(super) fn token_matches(value: &[u8], secret: &str) -> bool {
    bool::from(value.ct_eq(secret.as_bytes()))
}

/// `sha256=<hex>` of a body, as GitHub and Bitbucket sign it (tests, and
/// documentation by example).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_signatures() {
        // The example in GitHub's documentation.
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), good);
        let h = headers(&[("x-hub-signature-256", good)]);
        assert_eq!(verify(Vendor::Github, &h, body, secret), Ok(()));
        assert!(verify(Vendor::Github, &h, b"Hello, World?", secret).is_err());
        assert!(verify(Vendor::Github, &h, body, "other").is_err());
        let h = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert!(verify(Vendor::Github, &h, body, secret).is_err());
        let h = headers(&[("x-hub-signature", good)]);
        assert_eq!(
            verify(Vendor::Github, &h, body, secret),
            Err(Refused::Unsigned("x-hub-signature-256"))
        );
    }

    #[test]
    fn gitlab_tokens_and_bitbucket_signatures() {
        let h = headers(&[("x-gitlab-token", "s3cret")]);
        assert_eq!(verify(Vendor::Gitlab, &h, b"{}", "s3cret"), Ok(()));
        assert!(verify(Vendor::Gitlab, &h, b"{}", "s3cret2").is_err());
        assert!(verify(Vendor::Gitlab, &h, b"{}", "s3cre").is_err());
        let sig = sign("k", b"{}");
        let h = headers(&[("x-hub-signature", &sig)]);
        assert_eq!(verify(Vendor::Bitbucket, &h, b"{}", "k"), Ok(()));
        assert!(verify(Vendor::Bitbucket, &h, b"{ }", "k").is_err());
        let h = headers(&[("x-hub-signature-256", &sig)]);
        assert!(verify(Vendor::Bitbucket, &h, b"{}", "k").is_err());
    }

    #[test]
    fn events_and_delivery_ids() {
        let h = headers(&[
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-event-uuid", "u1"),
        ]);
        assert_eq!(event(Vendor::Gitlab, &h), "push");
        assert_eq!(delivery_id(Vendor::Gitlab, &h).as_deref(), Some("u1"));
        let h = headers(&[("x-event-key", "repo:push"), ("x-request-uuid", "r1")]);
        assert_eq!(event(Vendor::Bitbucket, &h), "push");
        assert_eq!(delivery_id(Vendor::Bitbucket, &h).as_deref(), Some("r1"));
        assert_eq!(delivery_id(Vendor::Github, &h), None);
    }
}
