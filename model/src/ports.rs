//! A service's published ports, written as `docker run -p` writes them:
//! `HOST:CONTAINER[/PROTOCOL]` or `CONTAINER[/PROTOCOL]` (no host port: the
//! node picks a free one), protocol `tcp` (the default) or `udp`. The REST
//! API, apply documents and lbc read that string through one parser
//! ([`Port`]'s `FromStr`); the API also takes the object form
//! `{"container": 80, "host": 8080, "protocol": "tcp"}`, and always answers
//! with the object form.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A container port and, optionally, the fixed host port it is published on.
///
/// Deserialized from `"8080:80"`, `"8080:80/udp"`, `"80"`, `"80/udp"` or
/// the object form (unknown members refused); serialized as the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port inside the container.
    pub container: u16,
    /// The host port; `None` lets the node pick a free one.
    pub host: Option<u16>,
    /// tcp or udp.
    pub protocol: Protocol,
}

/// Why a port string is not `[HOST:]CONTAINER[/PROTOCOL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError {
    /// The string as given.
    pub input: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {:?} is invalid: {}", self.input, self.why)
    }
}

impl std::error::Error for PortError {}

/// A port number of ASCII digits, 1 to 65535.
fn number(s: &str, what: &str) -> Result<u16, String> {
    let n = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u16>().ok())
        .flatten()
        .filter(|n| *n > 0);
    n.ok_or_else(|| {
        if s.is_empty() {
            format!("the {what} port is missing: give [HOST:]CONTAINER[/tcp|/udp], e.g. 8080:80")
        } else {
            format!("the {what} port {s:?} is not a number from 1 to 65535")
        }
    })
}

impl FromStr for Port {
    type Err = PortError;

    /// `CONTAINER` or `HOST:CONTAINER`, either with `/tcp` or `/udp`.
    fn from_str(s: &str) -> Result<Self, PortError> {
        let bad = |why: String| PortError {
            input: s.to_owned(),
            why,
        };
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => {
                return Err(bad(format!(
                    "the protocol must be tcp or udp, not {other:?}"
                )))
            }
            None => (s, Protocol::Tcp),
        };
        if ports.contains('/') || ports.matches(':').count() > 1 {
            return Err(bad(
                "give [HOST:]CONTAINER[/tcp|/udp] (a host address or several slashes are not supported)"
                    .into(),
            ));
        }
        let (host, container) = match ports.split_once(':') {
            Some((h, c)) => (Some(number(h, "host").map_err(bad)?), c),
            None => (None, ports),
        };
        let container = number(container, "container").map_err(bad)?;
        Ok(Port {
            container,
            host,
            protocol,
        })
    }
}

impl fmt::Display for Port {
    /// The string form: `8080:80`, `80`, `53:53/udp` (`/tcp` left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = self.host {
            write!(f, "{host}:")?;
        }
        write!(f, "{}", self.container)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// The object form, strict as every body the API reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortObject {
    container: u16,
    #[serde(default)]
    host: Option<u16>,
    #[serde(default)]
    protocol: Protocol,
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl<'de> Visitor<'de> for PortVisitor {
            type Value = Port;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a port: \"HOST:CONTAINER[/PROTOCOL]\" (e.g. \"8080:80\") or {\"container\", \"host\", \"protocol\"}",
                )
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Port, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Port, A::Error> {
                // The map goes on as it came, so a path-tracking
                // deserializer still names `ports[0].container`.
                let o = PortObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Port {
                    container: o.container,
                    host: o.host,
                    protocol: o.protocol,
                })
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn port(container: u16, host: Option<u16>, protocol: Protocol) -> Port {
        Port {
            container,
            host,
            protocol,
        }
    }

    #[test]
    fn strings_parse_like_docker_run_p() {
        for (s, want) in [
            ("8080:80", port(80, Some(8080), Protocol::Tcp)),
            ("8080:80/udp", port(80, Some(8080), Protocol::Udp)),
            ("8080:80/tcp", port(80, Some(8080), Protocol::Tcp)),
            ("80", port(80, None, Protocol::Tcp)),
            ("80/udp", port(80, None, Protocol::Udp)),
            ("65535:1", port(1, Some(65535), Protocol::Tcp)),
        ] {
            assert_eq!(s.parse::<Port>().unwrap(), want, "{s}");
        }
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        for (s, why) in [
            ("", "container port is missing"),
            ("0", "container port \"0\" is not a number from 1 to 65535"),
            ("x", "not a number"),
            ("70000", "\"70000\" is not a number"),
            ("+80", "\"+80\" is not a number"),
            (" 80", "not a number"),
            (":80", "host port is missing"),
            ("80:", "container port is missing"),
            ("0:80", "host port \"0\""),
            ("1:2:3", "a host address"),
            ("127.0.0.1:80:80", "a host address"),
            ("80/sctp", "tcp or udp, not \"sctp\""),
            ("80/UDP", "tcp or udp"),
            ("80/", "tcp or udp, not \"\""),
            ("80/tcp/udp", "several slashes"),
            ("8000-8001:80", "\"8000-8001\" is not a number"),
        ] {
            let err = s.parse::<Port>().unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("port {s:?} is invalid: ")),
                "{text}"
            );
            assert!(text.contains(why), "{s}: {text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["8080:80", "80", "53:53/udp", "9000/udp"] {
            assert_eq!(s.parse::<Port>().unwrap().to_string(), s);
        }
        assert_eq!("80/tcp".parse::<Port>().unwrap().to_string(), "80");
    }

    #[test]
    fn deserializes_strings_and_objects_serializes_objects() {
        let ports: Vec<Port> = serde_json::from_value(json!([
            "18080:80/udp",
            "81",
            {"container": 82},
            {"container": 83, "host": 8083, "protocol": "udp"},
            {"container": 84, "host": null},
        ]))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&ports).unwrap(),
            json!([
                {"container": 80, "host": 18080, "protocol": "udp"},
                {"container": 81, "host": null, "protocol": "tcp"},
                {"container": 82, "host": null, "protocol": "tcp"},
                {"container": 83, "host": 8083, "protocol": "udp"},
                {"container": 84, "host": null, "protocol": "tcp"},
            ])
        );
    }

    #[test]
    fn deserialize_errors_name_the_element() {
        let path_error = |v: serde_json::Value| {
            let err = serde_path_to_error::deserialize::<_, Vec<Port>>(v).unwrap_err();
            (err.path().to_string(), err.into_inner().to_string())
        };
        let (path, message) = path_error(json!([{"container": 80}, "80:x"]));
        assert_eq!(path, "[1]");
        assert!(message.contains("port \"80:x\" is invalid"), "{message}");
        let (path, message) = path_error(json!([{"container": 80, "surprise": 1}]));
        assert_eq!(path, "[0].surprise");
        assert!(message.contains("unknown field"), "{message}");
        let (path, _) = path_error(json!([{"container": 70000}]));
        assert_eq!(path, "[0].container");
        let (path, message) = path_error(json!([80]));
        assert_eq!(path, "[0]");
        assert!(message.contains("HOST:CONTAINER"), "{message}");
        assert!(serde_json::from_value::<Port>(json!({"host": 80})).is_err());
        assert!(serde_json::from_value::<Port>(json!(null)).is_err());
    }
}
