//! Route handlers: thin adapters between HTTP and [`crate::ops`]. Each
//! takes the shared context, the caller and the parsed request, calls an
//! operation, and shapes its answer into a reply (status, JSON, ETag,
//! cookies, a websocket); errors are [`ApiError`]s, answered by
//! `error::recover`. No handler calls another handler.

pub mod accounts;
pub mod apply;
pub mod backup;
pub mod builds;
pub mod domains;
pub mod events;
pub mod hooks;
pub mod internal;
pub mod jobs;
pub mod nodes;
pub mod projects;
pub mod quotas;
pub mod registry;
pub mod scripts;
pub mod services;
pub mod streams;
pub mod vendors;

use serde::Serialize;
use warp::http::StatusCode;
use warp::Reply;

use crate::error::{ApiError, Result};

/// The reply type of every handler.
pub type Response = warp::reply::Response;

/// A JSON reply.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// A JSON reply carrying the resource's revision as its ETag.
pub fn json_tagged<T: Serialize>(status: StatusCode, body: &T, revision: i64) -> Response {
    let mut reply = json(status, body);
    if let Ok(value) = format!("\"{revision}\"").parse() {
        reply.headers_mut().insert("etag", value);
    }
    reply
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Parses `If-Match`: a revision, bare or quoted (weak tags accepted).
pub fn if_match(header: Option<String>) -> Result<Option<i64>> {
    let Some(raw) = header else { return Ok(None) };
    let trimmed = raw.trim().trim_start_matches("W/").trim_matches('"');
    trimmed
        .parse::<i64>()
        .ok()
        .filter(|r| *r > 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!("If-Match {raw:?} is not a revision"))
                .with_field("If-Match")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(None).unwrap(), None);
        assert_eq!(if_match(Some("12".into())).unwrap(), Some(12));
        assert_eq!(if_match(Some("\"12\"".into())).unwrap(), Some(12));
        assert_eq!(if_match(Some("W/\"12\"".into())).unwrap(), Some(12));
        assert_eq!(if_match(Some("abc".into())).unwrap_err().status, 400);
        assert_eq!(if_match(Some("-1".into())).unwrap_err().status, 400);
    }
}
