//! Byte ranges: a download's `Range: bytes=a-b` (or `a-`) within a blob,
//! and the start of an upload chunk's `Content-Range`. Suffix ranges
//! (`bytes=-n`) and multiple ranges are refused with 416, as before.

use warp::http::{HeaderMap, StatusCode};

use super::reply::{err, Result};

/// `bytes=a-b` (or `a-`) within a blob of `size` bytes.
pub(super) fn parse_range(header: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || {
        err(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("range {header:?} does not fit a blob of {size} bytes"),
        )
    };
    let spec = header.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = if b.trim().is_empty() {
        size.saturating_sub(1)
    } else {
        b.trim()
            .parse::<u64>()
            .map_err(|_| bad())?
            .min(size.saturating_sub(1))
    };
    if start > end || start >= size {
        return Err(bad());
    }
    Ok((start, end))
}

/// The start of a `Content-Range: <start>-<end>` header, if any.
pub(super) fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get("content-range") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let start = text
        .split('-')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            err(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!("Content-Range {text:?} is not <start>-<end>"),
            )
        })?;
    Ok(Some(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_within_a_blob() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=99-99", 100).unwrap(), (99, 99));
        assert_eq!(parse_range("bytes= 5 - 6 ", 100).unwrap(), (5, 6));
    }

    #[test]
    fn unsatisfiable_or_malformed_ranges_are_416() {
        for header in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=9-3",
            "items=0-1",
            "bytes=-5",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=5",
            "",
        ] {
            let e = parse_range(header, 100).unwrap_err();
            assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE, "{header:?}");
            assert_eq!(e.code, "RANGE_INVALID", "{header:?}");
        }
        let e = parse_range("bytes=0-", 0).unwrap_err();
        assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[test]
    fn content_range_gives_the_chunk_start() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_range_start(&headers).unwrap(), None);
        headers.insert("content-range", "0-99".parse().unwrap());
        assert_eq!(content_range_start(&headers).unwrap(), Some(0));
        headers.insert("content-range", "bytes 100-199".parse().unwrap());
        assert_eq!(content_range_start(&headers).unwrap(), Some(100));
        headers.insert("content-range", "x-1".parse().unwrap());
        let e = content_range_start(&headers).unwrap_err();
        assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(e.code, "BLOB_UPLOAD_INVALID");
    }
}
