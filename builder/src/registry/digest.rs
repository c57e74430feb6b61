//! References: what the registry accepts as a digest (`sha256:` and 64
//! lowercase hex digits) or as a tag.

use warp::http::StatusCode;

use super::reply::{err, Result};

/// `sha256:<64 lowercase hex>`, answered as the hex part.
pub(super) fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ if digest.contains(':') && !digest.starts_with("sha256:") => Err(err(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("digest {digest:?}: only sha256 is supported"),
        )),
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{digest:?} is not a digest (sha256:<64 hex digits>)"),
        )),
    }
}

/// A tag: up to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub(super) fn is_tag(reference: &str) -> bool {
    let bytes = reference.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_tags() {
        let hex = "a".repeat(64);
        assert_eq!(digest_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&format!("sha512:{hex}")).is_err());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(is_tag("v1.0-rc_2") && is_tag("7") && !is_tag(".x") && !is_tag("a/b"));
    }
}
