//! Health checks: what a service asks its replicas to pass
//! ([`HealthCheck`], the spec's `health`), and what a node reports of them
//! ([`Health`] in a replica's status).
//!
//! A check is exactly one probe (`{"http": "/healthz"}`, `{"tcp": true}` or
//! `{"command": ["pg_isready"]}`) with its timing. The node runs it: an HTTP
//! GET or a TCP connect to the host port bound to the check's container
//! port, or a command executed in the container (exit 0 passes). A replica
//! is `starting` until its first passing check, `healthy` after it, and
//! `unhealthy` after `retries` failing checks in a row (failures within
//! `start_period` do not count); an unhealthy replica is restarted.
//!
//! The check is part of what a replica runs: a changed `health` makes a new
//! generation, so a wrong check halts a rollout instead of restarting every
//! running replica. Assignments carry it with the port resolved.

use serde::{Deserialize, Serialize};

use super::{truncate, Port, Protocol, Result, ValidationError};

/// Seconds between checks unless the spec says otherwise.
pub const DEFAULT_INTERVAL: u32 = 10;
/// Seconds a check may take unless the spec says otherwise.
pub const DEFAULT_TIMEOUT: u32 = 3;
/// Failing checks in a row that make a replica unhealthy, by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// The longest interval, start period and timeout, in seconds (1 hour).
pub const MAX_SECONDS: u32 = 3600;
/// The most failing checks in a row a spec may allow.
pub const MAX_RETRIES: u32 = 100;
const MAX_PATH: usize = 1024;
const MAX_ARGS: usize = 100;
const MAX_COMMAND: usize = 4096;

fn default_interval() -> u32 {
    DEFAULT_INTERVAL
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// A service's health check (the spec's `health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// HTTP GET of this path (starting with `/`); 2xx and 3xx pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `true`: a TCP connect passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<bool>,
    /// A command run in the container; exit code 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Seconds between checks (1–3600, default 10).
    #[serde(default = "default_interval")]
    pub interval: u32,
    /// Seconds a check may take before it fails (1–3600, default 3).
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// Failing checks in a row that make the replica unhealthy (1–100,
    /// default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds after a start in which failing checks do not count (0–3600,
    /// default 0).
    #[serde(default)]
    pub start_period: u32,
    /// The TCP container port that http and tcp checks reach; by default
    /// the service's ingress port (else its only TCP port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// What a check does, taken from a valid [`HealthCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<'a> {
    /// GET of the path at the container port.
    Http {
        /// The container port.
        port: u16,
        /// The path, starting with `/`.
        path: &'a str,
    },
    /// A TCP connect to the container port.
    Tcp {
        /// The container port.
        port: u16,
    },
    /// A command in the container.
    Command(&'a [String]),
}

impl HealthCheck {
    /// Checks the check; the error names the field at fault (without the
    /// `health.` prefix, which the spec adds). `ports` are the service's,
    /// `default_port` the one http and tcp checks use without `port`.
    pub fn validate(&self, ports: &[Port], default_port: Option<u16>) -> Result<()> {
        let kinds = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.command.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ValidationError::new(
                "",
                "give exactly one of http, tcp or command",
            ));
        }
        if let Some(path) = &self.http {
            let visible = path.bytes().all(|b| b.is_ascii_graphic());
            if !path.starts_with('/') || path.len() > MAX_PATH || !visible {
                return Err(ValidationError::new(
                    "http",
                    format!(
                        "{:?} is not a path: it must start with '/' and hold at most {MAX_PATH} visible ASCII characters",
                        truncate(path)
                    ),
                ));
            }
        }
        if self.tcp == Some(false) {
            return Err(ValidationError::new(
                "tcp",
                "must be true (leave it out for another kind of check)",
            ));
        }
        if let Some(command) = &self.command {
            let total: usize = command.iter().map(String::len).sum();
            if command.is_empty() || command.len() > MAX_ARGS || total > MAX_COMMAND {
                return Err(ValidationError::new(
                    "command",
                    format!(
                        "must hold 1 to {MAX_ARGS} arguments of at most {MAX_COMMAND} bytes in all"
                    ),
                ));
            }
            if command.iter().any(|a| a.contains('\0')) {
                return Err(ValidationError::new(
                    "command",
                    "an argument holds a NUL byte",
                ));
            }
        }
        for (field, value, min) in [
            ("interval", self.interval, 1),
            ("timeout", self.timeout, 1),
            ("start_period", self.start_period, 0),
        ] {
            if !(min..=MAX_SECONDS).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("{value} s is out of range ({min}–{MAX_SECONDS} s)"),
                ));
            }
        }
        if !(1..=MAX_RETRIES).contains(&self.retries) {
            return Err(ValidationError::new(
                "retries",
                format!("{} is out of range (1–{MAX_RETRIES})", self.retries),
            ));
        }
        if self.command.is_some() {
            if self.port.is_some() {
                return Err(ValidationError::new(
                    "port",
                    "a command check reaches no port: leave port out",
                ));
            }
            return Ok(());
        }
        let tcp = |port: u16| {
            ports
                .iter()
                .any(|p| p.protocol == Protocol::Tcp && p.container == port)
        };
        match self.port.or(default_port) {
            Some(port) if tcp(port) => Ok(()),
            Some(port) => Err(ValidationError::new(
                "port",
                format!("{port} is not a TCP container port in ports"),
            )),
            None => Err(ValidationError::new(
                "port",
                "http and tcp checks need a TCP port: list one in ports, or name one of several here",
            )),
        }
    }

    /// The same check with `port` resolved to `default_port` when absent
    /// (as an assignment carries it).
    pub fn with_port(&self, default_port: Option<u16>) -> HealthCheck {
        let port = if self.command.is_some() {
            None
        } else {
            self.port.or(default_port)
        };
        HealthCheck {
            port,
            ..self.clone()
        }
    }

    /// What the check does; `None` when it is invalid (no kind, or an http
    /// or tcp check without a port).
    pub fn probe(&self) -> Option<Probe<'_>> {
        match (&self.http, self.tcp, &self.command, self.port) {
            (Some(path), None, None, Some(port)) => Some(Probe::Http { port, path }),
            (None, Some(true), None, Some(port)) => Some(Probe::Tcp { port }),
            (None, None, Some(command), _) => Some(Probe::Command(command)),
            _ => None,
        }
    }

    /// The longest a new replica may take to become healthy: the start
    /// period, then `retries + 1` intervals and one more timeout. A replica
    /// not healthy by then never will be (the node restarts it after
    /// `retries` failing checks in a row).
    pub fn deadline_secs(&self) -> u64 {
        u64::from(self.start_period)
            + u64::from(self.interval) * (u64::from(self.retries) + 1)
            + u64::from(self.timeout)
    }
}

/// A replica's health as its node last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No check has passed since the container started.
    Starting,
    /// The last check passed (or failed fewer than `retries` times in a row
    /// since).
    Healthy,
    /// `retries` checks in a row failed: it is being restarted.
    Unhealthy,
}

/// Whether a replica in `state` with `health` should get traffic: it runs,
/// and it is healthy or has no check.
pub fn takes_traffic(state: super::ReplicaState, health: Option<Health>) -> bool {
    state == super::ReplicaState::Running && matches!(health, None | Some(Health::Healthy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ports() -> Vec<Port> {
        vec![
            Port {
                container: 8080,
                host: None,
                protocol: Protocol::Tcp,
            },
            Port {
                container: 53,
                host: None,
                protocol: Protocol::Udp,
            },
        ]
    }

    /// Parses a check, validates it against [`ports`] with 8080 as the
    /// default port (or `default`) and compares the field at fault.
    fn check(body: serde_json::Value, default: Option<u16>, expect: Option<&str>) {
        let h: HealthCheck =
            serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
        let got = h.validate(&ports(), default).err().map(|e| e.field);
        assert_eq!(got.as_deref(), expect, "{body}");
    }

    #[test]
    fn checks_and_the_field_at_fault() {
        let d = Some(8080);
        check(json!({"http": "/healthz"}), d, None);
        check(json!({"tcp": true}), d, None);
        check(json!({"command": ["pg_isready"]}), None, None);
        check(json!({}), d, Some(""));
        check(json!({"http": "/", "tcp": true}), d, Some(""));
        check(json!({"http": "healthz"}), d, Some("http"));
        check(json!({"http": "/a b"}), d, Some("http"));
        check(json!({"http": "/a\r\nX: y"}), d, Some("http"));
        check(json!({"tcp": false}), d, Some("tcp"));
        check(json!({"command": []}), d, Some("command"));
        check(json!({"command": ["a\u{0}"]}), d, Some("command"));
        check(json!({"tcp": true, "interval": 0}), d, Some("interval"));
        check(json!({"tcp": true, "interval": 3601}), d, Some("interval"));
        check(json!({"tcp": true, "timeout": 0}), d, Some("timeout"));
        check(json!({"tcp": true, "retries": 0}), d, Some("retries"));
        check(json!({"tcp": true, "retries": 101}), d, Some("retries"));
        check(json!({"tcp": true, "start_period": 0}), d, None);
        check(
            json!({"tcp": true, "start_period": 3601}),
            d,
            Some("start_period"),
        );
        check(json!({"tcp": true}), None, Some("port"));
        check(json!({"tcp": true, "port": 8080}), None, None);
        check(json!({"tcp": true, "port": 53}), None, Some("port"));
        check(json!({"http": "/", "port": 9}), d, Some("port"));
        check(json!({"command": ["true"], "port": 8080}), d, Some("port"));
    }

    #[test]
    fn defaults_unknown_fields_and_numbers() {
        let h: HealthCheck = serde_json::from_value(json!({"http": "/healthz"})).unwrap();
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period, h.port),
            (10, 3, 3, 0, None)
        );
        assert_eq!(h.deadline_secs(), 10 * 4 + 3);
        for body in [
            json!({"http": "/", "every": 5}),
            json!({"http": "/", "interval": -1}),
            json!({"http": "/", "interval": 1.5}),
            json!({"http": 1}),
        ] {
            assert!(
                serde_json::from_value::<HealthCheck>(body.clone()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_probe_has_its_port_resolved() {
        let h: HealthCheck = serde_json::from_value(json!({"http": "/healthz"})).unwrap();
        assert_eq!(h.probe(), None, "no port yet");
        let h = h.with_port(Some(8080));
        assert_eq!(
            h.probe(),
            Some(Probe::Http {
                port: 8080,
                path: "/healthz"
            })
        );
        let c: HealthCheck = serde_json::from_value(json!({"command": ["true"]})).unwrap();
        assert_eq!(c.with_port(Some(8080)).port, None);
        assert!(matches!(c.probe(), Some(Probe::Command(_))));
    }

    #[test]
    fn the_spec_names_health_fields_and_rolls_out_a_new_check() {
        let spec = |health: serde_json::Value, ports: serde_json::Value| {
            let spec: crate::ServiceSpec = serde_json::from_value(
                json!({"name": "web", "image": "x", "ports": ports, "health": health}),
            )
            .unwrap();
            spec.validate().err().map(|e| e.field)
        };
        let one = json!([{"container": 8080}]);
        let two = json!([{"container": 8080}, {"container": 9090}]);
        assert_eq!(spec(json!({"http": "/healthz"}), one.clone()), None);
        assert_eq!(
            spec(json!({"http": "x"}), one.clone()).as_deref(),
            Some("health.http")
        );
        assert_eq!(
            spec(json!({"tcp": true}), json!([])).as_deref(),
            Some("health.port")
        );
        assert_eq!(
            spec(json!({"tcp": true}), two.clone()).as_deref(),
            Some("health.port")
        );
        assert_eq!(spec(json!({"tcp": true, "port": 9090}), two), None);
        assert_eq!(spec(json!({"command": ["true"]}), json!([])), None);
        assert_eq!(
            spec(json!({"http": "/", "tcp": true}), one).as_deref(),
            Some("health")
        );
        let old: crate::ServiceSpec =
            serde_json::from_value(json!({"name": "web", "image": "x"})).unwrap();
        let mut new = old.clone();
        new.health = Some(serde_json::from_value(json!({"command": ["true"]})).unwrap());
        assert!(old.needs_new_generation(&new));
    }

    #[test]
    fn only_running_healthy_or_unchecked_replicas_take_traffic() {
        use super::super::ReplicaState::*;
        assert!(takes_traffic(Running, None));
        assert!(takes_traffic(Running, Some(Health::Healthy)));
        assert!(!takes_traffic(Running, Some(Health::Starting)));
        assert!(!takes_traffic(Running, Some(Health::Unhealthy)));
        assert!(!takes_traffic(Exited, None));
        assert_eq!(
            serde_json::to_value(Health::Unhealthy).unwrap(),
            json!("unhealthy")
        );
    }
}
