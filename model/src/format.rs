//! The stored value format and its version, so a new release can read what
//! an older one wrote and migrate it.
//!
//! lb's records are JSON objects. Version 1 is the format of every release
//! so far: plain serde JSON of the model types, with no marker. A later
//! format marks its records with a top-level `"_format": N` member;
//! [`decode`] reads the marker (absent means 1), refuses a version newer
//! than this release knows (a record written by a newer lb, after a
//! downgrade) with an error naming the versions, runs the [`MIGRATIONS`]
//! from the record's version up to [`CURRENT`], strips the marker (models
//! with `deny_unknown_fields` would refuse it) and deserializes.
//!
//! [`encode`] writes [`CURRENT`]. While [`CURRENT`] is 1 it writes no marker,
//! so the records of a new release stay readable by the previous one during
//! a rolling upgrade. When a format changes: add a migration from the old
//! shape, bump [`CURRENT`], and keep a fixture of the old shape under
//! `model/tests/fixtures/` (the test reads every fixture with [`decode`]).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The member that names a record's format version.
pub const MARKER: &str = "_format";

/// The format this release writes.
pub const CURRENT: u32 = 1;

/// A migration from format `N` to `N + 1` is `MIGRATIONS[N - 1]`: it
/// rewrites a record's JSON in place. Empty while only version 1 exists.
pub const MIGRATIONS: &[fn(&mut Value)] = &[];

/// A record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The record is not JSON, or does not fit the type.
    #[error("record is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The record's `_format` is not a positive integer.
    #[error("record has a bad {MARKER} member: {0}")]
    BadMarker(Value),
    /// The record was written by a newer release.
    #[error("record is in format {found}, this lb reads formats up to {CURRENT}: it was written by a newer lb")]
    TooNew {
        /// The record's format.
        found: u32,
    },
}

/// The format version of a record's JSON (1 when it carries no marker).
pub fn version_of(value: &Value) -> Result<u32, FormatError> {
    match value.get(MARKER) {
        None => Ok(1),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|v| *v >= 1 && *v <= u64::from(u32::MAX))
            .map(|v| v as u32)
            .ok_or_else(|| FormatError::BadMarker(Value::Number(n.clone()))),
        Some(other) => Err(FormatError::BadMarker(other.clone())),
    }
}

/// Brings a record's JSON to [`CURRENT`], without the marker.
pub fn upgrade(mut value: Value) -> Result<Value, FormatError> {
    let found = version_of(&value)?;
    if found > CURRENT {
        return Err(FormatError::TooNew { found });
    }
    if let Value::Object(map) = &mut value {
        map.remove(MARKER);
    }
    for migrate in &MIGRATIONS[(found - 1) as usize..(CURRENT - 1) as usize] {
        migrate(&mut value);
    }
    Ok(value)
}

/// Reads a stored record of any format this release knows.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let value: Value = serde_json::from_slice(bytes)?;
    // Version 1 without a marker is every record today: nothing to do.
    if value.get(MARKER).is_none() && CURRENT == 1 {
        return Ok(serde_json::from_value(value)?);
    }
    Ok(serde_json::from_value(upgrade(value)?)?)
}

/// Writes a record in [`CURRENT`]'s format.
pub fn encode<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    if CURRENT == 1 {
        return serde_json::to_vec(value);
    }
    let mut json = serde_json::to_value(value)?;
    if let Value::Object(map) = &mut json {
        map.insert(MARKER.into(), Value::from(CURRENT));
    }
    serde_json::to_vec(&json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        name: String,
    }

    fn check(input: Value, expect: Result<&str, &str>) {
        let bytes = serde_json::to_vec(&input).unwrap();
        match (decode::<Strict>(&bytes), expect) {
            (Ok(got), Ok(name)) => assert_eq!(got.name, name, "{input}"),
            (Err(err), Err(message)) => {
                assert!(err.to_string().contains(message), "{input}: {err}")
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn versions_are_read_or_refused() {
        check(json!({"name": "a"}), Ok("a"));
        check(json!({"name": "a", "_format": 1}), Ok("a"));
        check(
            json!({"name": "a", "_format": 2}),
            Err("written by a newer lb"),
        );
        check(json!({"name": "a", "_format": 0}), Err("bad _format"));
        check(json!({"name": "a", "_format": "1"}), Err("bad _format"));
        check(json!({"name": 1}), Err("record is not valid"));
    }

    #[test]
    fn encode_writes_what_decode_reads() {
        let value = Strict { name: "a".into() };
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<Strict>(&bytes).unwrap(), value);
        // Version 1 has no marker: the previous release reads it.
        assert_eq!(bytes, serde_json::to_vec(&value).unwrap());
    }
}
