//! Services: the desired spec of a set of replicas (the REST body and the
//! stored value share this shape) and the service's metadata.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

pub use crate::ports::{Port, Protocol};

use super::project::check_description;
use super::source::Source;
use super::{check_name, truncate, Result, Timestamp, ValidationError};

/// Docker's smallest memory limit, in MiB.
pub const MIN_MEMORY_MIB: u64 = 6;
/// The largest memory request accepted, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// The most CPUs one replica may request.
pub const MAX_CPU: f64 = 1024.0;
/// The most replicas of one service.
pub const MAX_REPLICAS: u32 = 1000;
/// The stop grace period a service gets unless it says otherwise, in seconds.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;
/// The longest stop grace period, in seconds (5 minutes).
pub const MAX_STOP_TIMEOUT: u32 = 300;
const MAX_ENV: usize = 1000;
const MAX_ENV_VALUE: usize = 32 * 1024;
/// Names and values of all env variables together: every replica's
/// assignment carries them, and must fit one store request.
pub const MAX_ENV_TOTAL: usize = 64 * 1024;
/// All arguments of the command together, for the same reason.
pub const MAX_COMMAND_TOTAL: usize = 64 * 1024;
const MAX_LIST: usize = 100;

/// Running or paused: a paused service keeps its replica count but runs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Replicas run.
    #[default]
    Running,
    /// No replica runs.
    Paused,
}

/// A named volume of the service mounted at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Volume name, a DNS label, unique in the service.
    pub name: String,
    /// Absolute mount path in the container.
    pub path: String,
}

fn default_replicas() -> u32 {
    1
}
fn default_memory() -> u64 {
    128
}
fn default_cpu() -> f64 {
    0.1
}
pub(crate) fn default_stop_timeout() -> u32 {
    DEFAULT_STOP_TIMEOUT
}

/// The desired spec of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name, a DNS label, unique in the project.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The image to run; required unless `source` is given.
    #[serde(default)]
    pub image: Option<String>,
    /// Git source to build the image from.
    #[serde(default)]
    pub source: Option<Source>,
    /// Number of replicas, 0–1000.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Memory per replica in MiB: a hard limit.
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// CPUs per replica.
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    /// Published ports, each written `HOST:CONTAINER[/PROTOCOL]` or as an
    /// object; serialized as objects.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Command overriding the image's.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Host names routed to the service by the ingress (exact or
    /// `*.example.com`), each claimed by one service cluster-wide.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The container port that receives the ingress's traffic; by default
    /// the only TCP port in `ports`.
    #[serde(default)]
    pub ingress_port: Option<u16>,
    /// Plain HTTP to the service's domains is redirected to HTTPS once a
    /// certificate exists.
    #[serde(default = "default_true")]
    pub https_redirect: bool,
    /// Each request through the ingress is written to the service's logs.
    #[serde(default)]
    pub access_log: bool,
    /// The check replicas must pass to get traffic and to count as ready in
    /// a rollout (see [`crate::HealthCheck`]); without it, the image's
    /// `HEALTHCHECK` if it has one.
    #[serde(default)]
    pub health: Option<crate::HealthCheck>,
    /// Labels a node must carry to run the replicas.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Redeploy on push to the tracked branch.
    #[serde(default)]
    pub autodeploy: bool,
    /// running or paused.
    #[serde(default)]
    pub state: ServiceState,
    /// Seconds a replica's process gets to exit after SIGTERM before it is
    /// killed, 0–300 (`docker stop -t`).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u32,
    /// How many replicas a rollout that replaces them in place (no node has
    /// room beside the old ones) may take down at once, and how many new
    /// ones it starts at once, 1–1000; `None` is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// Capabilities taken back from those every container drops (see
    /// [`crate::DROPPED_CAPS`]).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// The most processes in a replica, up to [`crate::MAX_PIDS`].
    #[serde(default = "default_pids")]
    pub pids: u32,
    /// A read-only root filesystem (with a writable tmpfs at /tmp).
    #[serde(default)]
    pub read_only: bool,
    /// Cron schedules, each firing a one-off job (see [`crate::Schedule`]).
    /// Not part of the generation: changing them replaces no container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<crate::Schedule>,
}

fn default_pids() -> u32 {
    crate::DEFAULT_PIDS
}

fn default_true() -> bool {
    true
}

impl ServiceSpec {
    /// The container port the ingress sends traffic to: `ingress_port`, or
    /// the only TCP port.
    pub fn ingress_port(&self) -> Option<u16> {
        if self.ingress_port.is_some() {
            return self.ingress_port;
        }
        let mut tcp = self.ports.iter().filter(|p| p.protocol == Protocol::Tcp);
        match (tcp.next(), tcp.next()) {
            (Some(only), None) => Some(only.container),
            _ => None,
        }
    }

    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        check_description(&self.description)?;
        match (&self.image, &self.source) {
            (None, None) => {
                return Err(ValidationError::new(
                    "image",
                    "either image or source is required",
                ))
            }
            (Some(image), _) => check_image(image)?,
            _ => {}
        }
        if let Some(source) = &self.source {
            source.validate().map_err(|e| e.under("source"))?;
        }
        crate::stack::check_spec(self)?;
        if self.replicas > MAX_REPLICAS {
            return Err(ValidationError::new(
                "replicas",
                format!("{} is more than {MAX_REPLICAS}", self.replicas),
            ));
        }
        if let Some(n) = self.max_unavailable {
            if !(1..=MAX_REPLICAS).contains(&n) {
                return Err(ValidationError::new(
                    "max_unavailable",
                    format!("{n} is out of range (1–{MAX_REPLICAS})"),
                ));
            }
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory) {
            return Err(ValidationError::new(
                "memory",
                format!(
                    "{} MiB is out of range ({MIN_MEMORY_MIB}–{MAX_MEMORY_MIB} MiB)",
                    self.memory
                ),
            ));
        }
        if !(self.cpu.is_finite() && self.cpu > 0.0 && self.cpu <= MAX_CPU) {
            return Err(ValidationError::new(
                "cpu",
                format!(
                    "{} is out of range (more than 0, at most {MAX_CPU})",
                    self.cpu
                ),
            ));
        }
        check_ports(&self.ports)?;
        check_env(&self.env)?;
        if let Some(command) = &self.command {
            if command.is_empty() || command.len() > 1000 {
                return Err(ValidationError::new(
                    "command",
                    "must hold 1 to 1000 arguments",
                ));
            }
            if command.iter().any(|a| a.contains('\0')) {
                return Err(ValidationError::new(
                    "command",
                    "an argument holds a NUL byte",
                ));
            }
            let total: usize = command.iter().map(String::len).sum();
            if total > MAX_COMMAND_TOTAL {
                return Err(ValidationError::new(
                    "command",
                    format!("{total} bytes in all; at most {MAX_COMMAND_TOTAL}"),
                ));
            }
        }
        check_volumes(&self.volumes)?;
        if self.stop_timeout > MAX_STOP_TIMEOUT {
            return Err(ValidationError::new(
                "stop_timeout",
                format!(
                    "{} s is out of range (0–{MAX_STOP_TIMEOUT} s)",
                    self.stop_timeout
                ),
            ));
        }
        if self.domains.len() > MAX_LIST {
            return Err(ValidationError::new(
                "domains",
                format!("at most {MAX_LIST} domains"),
            ));
        }
        for (i, domain) in self.domains.iter().enumerate() {
            crate::ingress::check_domain(domain)
                .map_err(|m| ValidationError::new(format!("domains[{i}]"), m))?;
            if self.domains[..i].contains(domain) {
                return Err(ValidationError::new(
                    format!("domains[{i}]"),
                    format!("{domain:?} is listed twice"),
                ));
            }
        }
        let tcp = |p: &&Port| p.protocol == Protocol::Tcp;
        if let Some(port) = self.ingress_port {
            if !self.ports.iter().filter(tcp).any(|p| p.container == port) {
                return Err(ValidationError::new(
                    "ingress_port",
                    format!("{port} is not a TCP container port in ports"),
                ));
            }
        } else if !self.domains.is_empty() && self.ingress_port().is_none() {
            let why = if self.ports.iter().filter(tcp).count() == 0 {
                "domains need a TCP port in ports to send their traffic to"
            } else {
                "the service has several TCP ports: name the one for its domains"
            };
            return Err(ValidationError::new("ingress_port", why));
        }
        for (key, value) in &self.node_selector {
            check_label(key, value).map_err(|m| ValidationError::new("node_selector", m))?;
        }
        if let Some(health) = &self.health {
            health
                .validate(&self.ports, self.ingress_port())
                .map_err(|e| e.under("health"))?;
        }
        self.hardening().validate()?;
        crate::check_schedules(&self.schedules)?;
        Ok(())
    }

    /// How the replicas' containers are confined (`cap_add`, `pids`,
    /// `read_only`), as the assignment carries it.
    pub fn hardening(&self) -> crate::Hardening {
        crate::Hardening {
            cap_add: self.cap_add.clone(),
            pids: self.pids,
            read_only: self.read_only,
        }
    }
}

/// Checks an image reference: `[registry/]name[:tag][@digest]`, in Docker's
/// grammar, and never a string Docker could read as an image id
/// ([`crate::reference`]).
fn check_image(image: &str) -> Result<()> {
    crate::reference::Reference::parse(image).map(|_| ())
}

fn check_ports(ports: &[Port]) -> Result<()> {
    if ports.len() > MAX_LIST {
        return Err(ValidationError::new(
            "ports",
            format!("at most {MAX_LIST} ports"),
        ));
    }
    let mut containers = HashSet::new();
    let mut hosts = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if port.container == 0 {
            return Err(ValidationError::new(
                format!("ports[{i}].container"),
                "0 is out of range (1–65535)",
            ));
        }
        if port.host == Some(0) {
            return Err(ValidationError::new(
                format!("ports[{i}].host"),
                "0 is out of range (1–65535)",
            ));
        }
        if !containers.insert((port.container, port.protocol)) {
            return Err(ValidationError::new(
                format!("ports[{i}].container"),
                format!("port {} is listed twice", port.container),
            ));
        }
        if let Some(host) = port.host {
            if !hosts.insert((host, port.protocol)) {
                return Err(ValidationError::new(
                    format!("ports[{i}].host"),
                    format!("host port {host} is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>) -> Result<()> {
    if env.len() > MAX_ENV {
        return Err(ValidationError::new(
            "env",
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (key, value) in env {
        let valid = !key.is_empty()
            && key.len() <= 256
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ValidationError::new(
                "env",
                format!("{:?} is not a valid variable name (letters, digits, '_', not starting with a digit)", truncate(key)),
            ));
        }
        if value.len() > MAX_ENV_VALUE || value.contains('\0') {
            return Err(ValidationError::new(
                format!("env.{key}"),
                format!("value must be at most {MAX_ENV_VALUE} bytes without NUL"),
            ));
        }
    }
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ENV_TOTAL {
        return Err(ValidationError::new(
            "env",
            format!("{total} bytes of names and values in all; at most {MAX_ENV_TOTAL}"),
        ));
    }
    Ok(())
}

fn check_volumes(volumes: &[Volume]) -> Result<()> {
    if volumes.len() > MAX_LIST {
        return Err(ValidationError::new(
            "volumes",
            format!("at most {MAX_LIST} volumes"),
        ));
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        check_name(&format!("volumes[{i}].name"), &volume.name)?;
        let path_ok = volume.path.starts_with('/')
            && volume.path.len() <= 4096
            && volume.path != "/"
            && !volume.path.split('/').any(|part| part == "..")
            && !volume.path.contains('\0')
            && !volume.path.contains(':');
        if !path_ok {
            return Err(ValidationError::new(
                format!("volumes[{i}].path"),
                format!(
                    "{:?} is not an absolute path below /",
                    truncate(&volume.path)
                ),
            ));
        }
        if !names.insert(&volume.name) {
            return Err(ValidationError::new(
                format!("volumes[{i}].name"),
                format!("{:?} is listed twice", volume.name),
            ));
        }
        if !paths.insert(&volume.path) {
            return Err(ValidationError::new(
                format!("volumes[{i}].path"),
                format!("{:?} is listed twice", volume.path),
            ));
        }
    }
    Ok(())
}

fn check_label(key: &str, value: &str) -> std::result::Result<(), String> {
    let ok = |s: &str, empty_ok: bool| {
        (empty_ok || !s.is_empty())
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    };
    if !ok(key, false) {
        return Err(format!("{:?} is not a valid label key", truncate(key)));
    }
    if !ok(value, true) {
        return Err(format!("{:?} is not a valid label value", truncate(value)));
    }
    Ok(())
}

/// Checks a node label (`key=value`): the same rules as a node selector.
pub fn validate_label(key: &str, value: &str) -> std::result::Result<(), String> {
    check_label(key, value)
}

/// A service's metadata, at `/lb/projects/<pid>/services/<sid>/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMeta {
    /// The service id.
    pub id: String,
    /// Its name (also in the spec).
    pub name: String,
    /// The project id.
    pub project: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last update time.
    pub updated: Timestamp,
    /// Bumped on every change that needs new replicas (image, env, ...).
    pub generation: u64,
    /// Bumped by a restart.
    #[serde(default)]
    pub restart_generation: u64,
}

impl ServiceSpec {
    /// Whether going from `self` to `new` needs new containers: what a
    /// replica runs (image, source, limits, ports, env, command, volumes,
    /// placement, health check) changed. Name, description, labels, domains,
    /// replica count and stop timeout are applied without replacing
    /// containers. A new health check rolls out like a new image, so one
    /// that fails halts the rollout instead of restarting every replica.
    pub fn needs_new_generation(&self, new: &ServiceSpec) -> bool {
        self.image != new.image
            || self.source != new.source
            || self.memory != new.memory
            || self.cpu != new.cpu
            || self.ports != new.ports
            || self.env != new.env
            || self.command != new.command
            || self.volumes != new.volumes
            || self.node_selector != new.node_selector
            || self.health != new.health
            || self.hardening() != new.hardening()
    }
}

impl ServiceMeta {
    /// Records a change of the spec from `old` to `new` at `now`: a new
    /// generation when the containers must be replaced, the name kept in
    /// step, the update time. The one rule for both the API's updates and
    /// the builder's deploys.
    pub fn record_change(&mut self, old: &ServiceSpec, new: &ServiceSpec, now: Timestamp) {
        if old.needs_new_generation(new) {
            self.generation += 1;
        }
        self.name = new.name.clone();
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a spec from JSON, validates it and compares the field at fault.
    fn check(spec: serde_json::Value, expect: Option<&str>) {
        let spec: ServiceSpec =
            serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let got = spec.validate().err().map(|e| e.field);
        assert_eq!(got.as_deref(), expect, "{spec:?}");
    }

    #[test]
    fn the_design_example_is_valid() {
        check(
            json!({ "name": "web", "description": "",
              "image": "nginx:1.25",
              "source": { "url": "https://github.com/o/r.git", "branch": "main", "vendor": "github",
                          "build": { "kind": "dockerfile", "dockerfile": "Dockerfile", "context": "." } },
              "replicas": 2, "memory": 64, "cpu": 0.5,
              "ports": [ { "container": 8080, "host": null, "protocol": "tcp" } ],
              "env": { "KEY": "value" }, "command": null,
              "volumes": [ { "name": "data", "path": "/data" } ],
              "domains": [ "web.example.test" ], "node_selector": { "zone": "a" },
              "autodeploy": true, "state": "running" }),
            None,
        );
    }

    #[test]
    fn a_spec_weighs_at_most_what_one_request_carries() {
        let value = "x".repeat(30 * 1024);
        let env = |n: usize| -> serde_json::Value {
            (0..n)
                .map(|i| (format!("V{i}"), json!(value)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        check(json!({"name": "web", "image": "x", "env": env(2)}), None);
        check(
            json!({"name": "web", "image": "x", "env": env(3)}),
            Some("env"),
        );
        let args = vec![value.clone(); 3];
        check(
            json!({"name": "web", "image": "x", "command": args}),
            Some("command"),
        );
        check(
            json!({"name": "web", "image": "x", "command": [value]}),
            None,
        );
    }

    #[test]
    fn fields_at_fault_are_named() {
        check(json!({"name": "Web", "image": "x"}), Some("name"));
        check(json!({"name": "web"}), Some("image"));
        check(json!({"name": "web", "image": "bad image"}), Some("image"));
        check(
            json!({"name": "web", "image": "x", "memory": 5}),
            Some("memory"),
        );
        check(json!({"name": "web", "image": "x", "memory": 6}), None);
        check(json!({"name": "web", "image": "x", "cpu": 0}), Some("cpu"));
        check(
            json!({"name": "web", "image": "x", "cpu": -1.5}),
            Some("cpu"),
        );
        check(json!({"name": "web", "image": "x", "replicas": 1000}), None);
        check(
            json!({"name": "web", "image": "x", "max_unavailable": 0}),
            Some("max_unavailable"),
        );
        check(
            json!({"name": "web", "image": "x", "max_unavailable": 2}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "replicas": 1001}),
            Some("replicas"),
        );
        check(
            json!({"name": "web", "image": "x", "ports": [{"container": 0}]}),
            Some("ports[0].container"),
        );
        check(
            json!({"name": "web", "image": "x", "ports": [{"container": 80}, {"container": 80}]}),
            Some("ports[1].container"),
        );
        check(
            json!({"name": "web", "image": "x", "ports": [{"container": 80}, {"container": 80, "protocol": "udp"}]}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "ports": [{"container": 80, "host": 8080}, {"container": 81, "host": 8080}]}),
            Some("ports[1].host"),
        );
        check(
            json!({"name": "web", "image": "x", "ports": ["8080:80", "80/udp", {"container": 81}]}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "ports": ["80", {"container": 80}]}),
            Some("ports[1].container"),
        );
        check(
            json!({"name": "web", "image": "x", "ports": ["8080:80", "8080:81"]}),
            Some("ports[1].host"),
        );
        check(
            json!({"name": "web", "image": "x", "env": {"1A": "x"}}),
            Some("env"),
        );
        check(
            json!({"name": "web", "image": "x", "env": {"A-B": "x"}}),
            Some("env"),
        );
        check(
            json!({"name": "web", "image": "x", "env": {"_A1": "x"}}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "command": []}),
            Some("command"),
        );
        check(
            json!({"name": "web", "image": "x", "stop_timeout": 0}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "stop_timeout": 300}),
            None,
        );
        check(
            json!({"name": "web", "image": "x", "stop_timeout": 301}),
            Some("stop_timeout"),
        );
        check(
            json!({"name": "web", "image": "x", "volumes": [{"name": "d", "path": "rel"}]}),
            Some("volumes[0].path"),
        );
        check(
            json!({"name": "web", "image": "x", "volumes": [{"name": "d", "path": "/a/../b"}]}),
            Some("volumes[0].path"),
        );
        check(
            json!({"name": "web", "image": "x", "domains": ["localhost"]}),
            Some("domains[0]"),
        );
        check(
            json!({"name": "web", "source": {"url": "file:///etc"}}),
            Some("source.url"),
        );
        check(
            json!({"name": "web", "source": {"url": "/srv/repo"}}),
            Some("source.url"),
        );
        check(
            json!({"name": "web", "source": {"url": "git@github.com:o/r.git"}}),
            None,
        );
        check(
            json!({"name": "web", "source": {"url": "https://h/r.git", "branch": "a..b"}}),
            Some("source.branch"),
        );
        check(
            json!({"name": "web", "source": {"url": "https://h/r.git", "build": {"kind": "template"}}}),
            Some("source.build.language"),
        );
        check(
            json!({"name": "web", "source": {"url": "https://h/r.git", "build": {"dockerfile": "../x"}}}),
            Some("source.build.dockerfile"),
        );
    }

    #[test]
    fn out_of_range_numbers_fail_to_parse() {
        for body in [
            json!({"name": "web", "image": "x", "replicas": -1}),
            json!({"name": "web", "image": "x", "ports": [{"container": 70000}]}),
            json!({"name": "web", "image": "x", "ports": ["70000"]}),
            json!({"name": "web", "image": "x", "ports": ["80:80:80"]}),
            json!({"name": "web", "image": "x", "memory": -64}),
            json!({"name": "web", "image": "x", "unknown": 1}),
            json!({"name": "web", "image": "x", "stop_timeout": -1}),
            json!({"name": "web", "image": "x", "stop_timeout": 1.5}),
        ] {
            assert!(
                serde_json::from_value::<ServiceSpec>(body.clone()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn a_new_generation_only_when_containers_must_change() {
        let old: ServiceSpec =
            serde_json::from_value(json!({"name": "web", "image": "a:1", "replicas": 1})).unwrap();
        let mut meta = ServiceMeta {
            id: "s".into(),
            name: "web".into(),
            project: "p".into(),
            created: 1,
            updated: 1,
            generation: 3,
            restart_generation: 0,
        };
        let mut scaled = old.clone();
        scaled.replicas = 5;
        scaled.name = "www".into();
        meta.record_change(&old, &scaled, 7);
        assert_eq!(
            (meta.generation, meta.name.as_str(), meta.updated),
            (3, "www", 7)
        );
        let mut new_image = scaled.clone();
        new_image.image = Some("a:2".into());
        meta.record_change(&scaled, &new_image, 8);
        assert_eq!((meta.generation, meta.updated), (4, 8));
        let mut new_env = new_image.clone();
        new_env.env.insert("K".into(), "v".into());
        meta.record_change(&new_image, &new_env, 9);
        assert_eq!(meta.generation, 5);
        let mut read_only = new_env.clone();
        read_only.read_only = true;
        meta.record_change(&new_env, &read_only, 10);
        assert_eq!(meta.generation, 6);
    }
}
