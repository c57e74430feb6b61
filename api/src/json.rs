//! JSON in and out of the API: store records decoded and encoded, request
//! bodies parsed with the field at fault named (`ports[0].container`), and
//! RFC 7396 merge patches.

use lb_store::KeyValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, Result};

/// Decodes a stored JSON record in any format this release reads
/// ([`lb_model::format`]); damage is our fault, not the caller's.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    lb_model::format::decode(&kv.value)
        .map_err(|e| ApiError::internal(format!("record {} is damaged: {e}", kv.key)))
}

pub use lb_store::encode;

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

/// `value` with a merge patch applied, read back as `T`.
pub fn patched<T: Serialize + DeserializeOwned>(value: &T, patch: &serde_json::Value) -> Result<T> {
    let mut json = serde_json::to_value(value).map_err(ApiError::internal)?;
    merge_patch(&mut json, patch);
    parse_value(json)
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
    fn body_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Port {
            container: u16,
        }
        let err = parse_body::<Vec<Port>>(br#"[{"container": "x"}]"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("[0].container"));
        let err = parse_body::<Vec<Port>>(b"[").unwrap_err();
        assert_eq!(err.code, "bad_request");
    }
}
