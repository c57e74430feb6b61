//! Route handlers: each takes the shared context, the caller and the parsed
//! request, and answers a reply or an [`ApiError`](crate::error::ApiError).

pub mod accounts;
pub mod builds;
pub mod events;
pub mod hooks;
pub mod internal;
pub mod nodes;
pub mod projects;
pub mod registry;
pub mod services;
pub mod streams;
pub mod vendors;

use lb_store::KeyValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use warp::http::StatusCode;
use warp::Reply;

use crate::error::{ApiError, Result};
use crate::models::Paging;

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

/// Decodes a stored JSON record; damage is our fault, not the caller's.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("record {} is damaged: {e}", kv.key)))
}

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("models serialize")
}

/// Parses a JSON body into `T`, naming the field at fault
/// (`ports[0].container`) when it does not fit.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    Ok(value)
}

/// Converts a JSON value (a patched resource) into `T`, naming the field at
/// fault.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::bad_request(format!("invalid JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde appends " at line 1 column 9"; the field says where.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    if path == "." {
        ApiError::bad_request(format!("invalid body: {message}"))
    } else {
        ApiError::invalid(path, message)
    }
}

/// Offset and limit of a list request.
pub fn paging(p: &Paging) -> Result<(usize, usize)> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is out of range (1–1000)"),
        ));
    }
    let offset = usize::try_from(p.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    Ok((offset, limit as usize))
}

/// Applies an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("object");
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Whether a conflict may be retried: only when the caller did not pin a
/// revision with `If-Match`.
pub fn retry_or_conflict(expected: Option<i64>, attempt: usize, what: &str) -> Result<()> {
    if expected.is_some() {
        return Err(ApiError::conflict(format!(
            "{what} changed since revision {}; read it again",
            expected.unwrap_or(0)
        )));
    }
    if attempt >= 8 {
        return Err(ApiError::conflict(format!(
            "{what} is being changed concurrently; try again"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(target: serde_json::Value, patch: serde_json::Value, expect: serde_json::Value) {
        let mut t = target;
        merge_patch(&mut t, &patch);
        assert_eq!(t, expect);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        );
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        );
        check(
            json!({"a": [1]}),
            json!({"a": [2, 3]}),
            json!({"a": [2, 3]}),
        );
        check(json!({"a": "b"}), json!(["c"]), json!(["c"]));
        check(
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        );
    }

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
