//! A whole project described in one file, and what applying it changes.
//!
//! lb's own format ([`Document`]) names the project and its services, each
//! with the spec the REST API takes (`POST .../services`), keyed by name,
//! plus the services it starts after (`depends_on`):
//!
//! ```yaml
//! project: demo            # optional: must name the project applied to
//! services:
//!   db:
//!     image: postgres:16
//!     volumes: [{name: data, path: /var/lib/postgresql/data}]
//!   web:
//!     image: nginx:1.25
//!     replicas: 2
//!     ports: ["8080:80"]      # HOST:CONTAINER[/udp], or {container: 80, host: 8080}
//!     domains: [www.example.com]
//!     depends_on: [db]
//! scripts:                 # optional: the project's stored scripts
//!   migrate: {interpreter: bash, body: "./migrate.sh", timeout: 120}
//! ```
//!
//! A docker-compose file is read too, for the subset that maps onto a
//! service's spec ([`compose`]); every key it cannot honour is named in one
//! error. [`parse`] reads either (detected by file name or content, see
//! [`detect`]); [`plan`] compares a document with a project's services:
//! the services to create, to update (field by field) and, with prune, to
//! delete. Pure: no IO (a compose file's `env_file`s are read through a
//! function the caller passes).

pub mod compose;
mod plan;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Port, Script, ServiceSpec, ValidationError};

pub use plan::{
    plan, plan_scripts, Current, CurrentScript, FieldChange, Plan, PlannedCreate, PlannedDelete,
    PlannedScriptUpdate, PlannedUpdate, ScriptPlan,
};

/// The most services one document may hold.
pub const MAX_SERVICES: usize = 500;

/// A project as a file describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// The project's name, when the file names one.
    pub project: Option<String>,
    /// The services, by name.
    pub services: BTreeMap<String, DocService>,
    /// The project's stored scripts, by name (`None`: the document says
    /// nothing of scripts, and they are left alone even with prune).
    pub scripts: Option<BTreeMap<String, Script>>,
}

/// One service of a [`Document`].
#[derive(Debug, Clone, PartialEq)]
pub struct DocService {
    /// Its spec, as the API takes it (`name` is the document's key).
    pub spec: ServiceSpec,
    /// Services of the document this one is created after (compose's
    /// `depends_on`: start order only).
    pub depends_on: Vec<String>,
}

/// Why a file cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not YAML (or JSON) at all.
    #[error("invalid {format} at line {line} column {column}: {message}")]
    Syntax {
        /// "YAML" or "JSON".
        format: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// Well-formed, but keys or values lb cannot take: every one of them.
    #[error("{}", join(.0))]
    Invalid(Vec<ValidationError>),
}

fn join(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DocumentError {
    /// The problems, each naming its key (empty for a syntax error).
    pub fn problems(&self) -> &[ValidationError] {
        match self {
            DocumentError::Syntax { .. } => &[],
            DocumentError::Invalid(all) => all,
        }
    }
}

/// Which format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// lb's own ([`Document`]).
    Lb,
    /// docker-compose ([`compose`]).
    Compose,
}

/// Keys only compose has in a service.
const COMPOSE_SERVICE_KEYS: &[&str] = &[
    "environment",
    "env_file",
    "build",
    "deploy",
    "healthcheck",
    "restart",
    "container_name",
    "entrypoint",
    "expose",
    "labels",
    "networks",
    "privileged",
    "user",
    "working_dir",
    "hostname",
    "cap_drop",
    "devices",
    "extra_hosts",
    "logging",
    "mem_limit",
    "cpus",
    "secrets",
    "configs",
    "profiles",
    "tty",
    "stdin_open",
    "network_mode",
    "pid",
    "ipc",
    "security_opt",
    "sysctls",
    "ulimits",
    "tmpfs",
    "init",
    "platform",
    "pull_policy",
];

/// Whether a parsed file is lb's format or compose: compose when the file
/// is named like one (`compose.yaml`, `docker-compose.yml`, ...), or its
/// top level has a compose-only key (`version`, `name`, `volumes`,
/// `networks`, `configs`, `secrets`, `x-...`), or a service uses a
/// compose-only key (`environment`, `build`, `deploy`, ...), a port lb
/// does not read (a number, a range, a host address: `"8080:80"` is lb's
/// form too), a volume written as a string, or a command written as one
/// string.
pub fn detect(file_name: Option<&str>, value: &Value) -> Format {
    if let Some(name) = file_name {
        let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let yaml = base.ends_with(".yml") || base.ends_with(".yaml");
        if yaml && (base.starts_with("compose.") || base.starts_with("docker-compose.")) {
            return Format::Compose;
        }
    }
    let Some(top) = value.as_object() else {
        return Format::Lb;
    };
    let top_compose = [
        "version", "name", "volumes", "networks", "configs", "secrets",
    ];
    if top
        .keys()
        .any(|k| top_compose.contains(&k.as_str()) || k.starts_with("x-"))
    {
        return Format::Compose;
    }
    if top.contains_key("project") {
        return Format::Lb;
    }
    let services = top.get("services").and_then(Value::as_object);
    let compose_service = |s: &Value| {
        let Some(s) = s.as_object() else {
            return false;
        };
        let strings = |key: &str| {
            s.get(key)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| !v.is_object()))
        };
        s.keys()
            .any(|k| COMPOSE_SERVICE_KEYS.contains(&k.as_str()) || k.starts_with("x-"))
            // `"8080:80"` is lb's form too; numbers, ranges and
            // addresses are compose's alone.
            || s.get("ports").and_then(Value::as_array).is_some_and(|a| {
                a.iter().any(|v| {
                    !v.is_object() && v.as_str().and_then(|t| t.parse::<Port>().ok()).is_none()
                })
            })
            || strings("volumes")
            || s.get("command").is_some_and(Value::is_string)
    };
    if services.is_some_and(|s| s.values().any(compose_service)) {
        Format::Compose
    } else {
        Format::Lb
    }
}

/// Reads YAML (JSON is YAML too) into a JSON value, merge keys (`<<:`)
/// applied; a syntax error names its line and column.
pub fn parse_yaml(text: &str) -> Result<Value, DocumentError> {
    let syntax = |e: &serde_yaml::Error| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The parser's message ends with the position again.
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        DocumentError::Syntax {
            format: "YAML",
            line,
            column,
            message,
        }
    };
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax(&e))?;
    value.apply_merge().map_err(|e| {
        DocumentError::Invalid(vec![ValidationError::new("", format!("merge key: {e}"))])
    })?;
    serde_json::to_value(&value).map_err(|e| {
        DocumentError::Invalid(vec![ValidationError::new(
            "",
            format!("not a document of names and values: {e}"),
        )])
    })
}

/// Reads a file in either format ([`detect`]): `file_name` helps tell them
/// apart, `env_file` reads a compose file's env files (a path as written,
/// relative to the compose file; an error for a file that cannot be read).
pub fn parse(
    text: &str,
    file_name: Option<&str>,
    env_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Format, Document), DocumentError> {
    let value = parse_yaml(text)?;
    match detect(file_name, &value) {
        Format::Lb => Ok((Format::Lb, Document::from_value(value)?)),
        Format::Compose => Ok((Format::Compose, compose::convert(&value, env_file)?)),
    }
}

/// Converts a value into `T`, naming the field at fault under `path`.
fn value_at<T: serde::de::DeserializeOwned>(
    value: Value,
    path: &str,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = if inner == "." || inner.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        ValidationError::new(field, e.into_inner().to_string())
    })
}

impl Document {
    /// Reads lb's format from a parsed value, reporting every key at fault.
    pub fn from_value(value: Value) -> Result<Document, DocumentError> {
        let mut problems = Vec::new();
        let Value::Object(top) = value else {
            return Err(DocumentError::Invalid(vec![ValidationError::new(
                "",
                "the document must be a mapping with services",
            )]));
        };
        let mut doc = Document::default();
        for (key, value) in top {
            match key.as_str() {
                "project" => match value {
                    Value::String(name) => {
                        if let Err(e) = crate::check_name("project", &name) {
                            problems.push(e);
                        }
                        doc.project = Some(name);
                    }
                    Value::Null => {}
                    _ => problems.push(ValidationError::new("project", "must be a name")),
                },
                "services" => match value {
                    Value::Object(services) => {
                        for (name, entry) in services {
                            match service_from_value(&name, entry) {
                                Ok(service) => {
                                    doc.services.insert(name, service);
                                }
                                Err(mut e) => problems.append(&mut e),
                            }
                        }
                    }
                    Value::Null => {}
                    _ => problems.push(ValidationError::new(
                        "services",
                        "must be a mapping of service names to specs",
                    )),
                },
                "scripts" => match value {
                    Value::Object(scripts) => {
                        let mut all = BTreeMap::new();
                        for (name, entry) in scripts {
                            match script_from_value(&name, entry) {
                                Ok(script) => {
                                    all.insert(name, script);
                                }
                                Err(mut e) => problems.append(&mut e),
                            }
                        }
                        doc.scripts = Some(all);
                    }
                    Value::Null => doc.scripts = Some(BTreeMap::new()),
                    _ => problems.push(ValidationError::new(
                        "scripts",
                        "must be a mapping of script names to scripts",
                    )),
                },
                other => problems.push(ValidationError::new(
                    other,
                    "unknown key (lb's format has project, services and scripts)",
                )),
            }
        }
        problems.extend(doc.check());
        if problems.is_empty() {
            Ok(doc)
        } else {
            Err(DocumentError::Invalid(problems))
        }
    }

    /// Checks what spans services: their count, names, and that
    /// `depends_on` names services of the document without a cycle. Every
    /// spec is validated as the API would.
    pub fn check(&self) -> Vec<ValidationError> {
        let mut problems = Vec::new();
        if self.services.len() > MAX_SERVICES {
            problems.push(ValidationError::new(
                "services",
                format!("at most {MAX_SERVICES} services in one document"),
            ));
        }
        for (name, service) in &self.services {
            let path = format!("services.{name}");
            if let Err(e) = service.spec.validate() {
                problems.push(e.under(&path));
            }
            for (i, dep) in service.depends_on.iter().enumerate() {
                if !self.services.contains_key(dep) {
                    problems.push(ValidationError::new(
                        format!("{path}.depends_on[{i}]"),
                        format!("{dep:?} is not a service of the document"),
                    ));
                } else if dep == name {
                    problems.push(ValidationError::new(
                        format!("{path}.depends_on[{i}]"),
                        "a service cannot depend on itself",
                    ));
                }
            }
        }
        for (name, script) in self.scripts.iter().flatten() {
            if let Err(e) = script.validate() {
                problems.push(e.under(&format!("scripts.{name}")));
            }
        }
        if problems.is_empty() {
            if let Err(cycle) = self.start_order() {
                problems.push(ValidationError::new(
                    format!("services.{}.depends_on", cycle[0]),
                    format!("a cycle: {}", cycle.join(" -> ")),
                ));
            }
        }
        problems
    }

    /// The services' names in an order that creates each after what it
    /// depends on (by name among equals); a cycle is an error naming it.
    pub fn start_order(&self) -> Result<Vec<String>, Vec<String>> {
        let mut order: Vec<String> = Vec::with_capacity(self.services.len());
        let mut done = std::collections::HashSet::new();
        // Kahn's algorithm, by name: deterministic.
        while order.len() < self.services.len() {
            let ready: Vec<&String> = self
                .services
                .iter()
                .filter(|(name, _)| !done.contains(name.as_str()))
                .filter(|(_, s)| {
                    s.depends_on
                        .iter()
                        .all(|d| done.contains(d.as_str()) || !self.services.contains_key(d))
                })
                .map(|(name, _)| name)
                .collect();
            if ready.is_empty() {
                let mut cycle: Vec<String> = self
                    .services
                    .keys()
                    .filter(|n| !done.contains(n.as_str()))
                    .cloned()
                    .collect();
                cycle.truncate(10);
                return Err(cycle);
            }
            for name in ready {
                done.insert(name.as_str());
                order.push(name.clone());
            }
        }
        Ok(order)
    }

    /// The document as JSON in lb's format (what `lbc` sends the API).
    pub fn to_value(&self) -> Value {
        let mut services = Map::new();
        for (name, service) in &self.services {
            let mut spec = serde_json::to_value(&service.spec).unwrap_or_default();
            if let Some(map) = spec.as_object_mut() {
                if !service.depends_on.is_empty() {
                    map.insert("depends_on".into(), service.depends_on.clone().into());
                }
            }
            services.insert(name.clone(), spec);
        }
        let mut top = Map::new();
        if let Some(project) = &self.project {
            top.insert("project".into(), project.clone().into());
        }
        top.insert("services".into(), Value::Object(services));
        if let Some(scripts) = &self.scripts {
            let scripts: Map<String, Value> = scripts
                .iter()
                .map(|(name, script)| (name.clone(), script_value(script)))
                .collect();
            top.insert("scripts".into(), Value::Object(scripts));
        }
        Value::Object(top)
    }
}

impl Serialize for Document {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Document::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// One entry of `services`: the spec with `depends_on` taken out and the
/// name filled in from the key.
fn service_from_value(name: &str, entry: Value) -> Result<DocService, Vec<ValidationError>> {
    let path = format!("services.{name}");
    let mut map = match entry {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => {
            return Err(vec![ValidationError::new(
                path,
                "must be a mapping: the service's spec",
            )])
        }
    };
    let mut problems = Vec::new();
    let depends_on = match map.remove("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::String(s) => Some(s),
                _ => {
                    problems.push(ValidationError::new(
                        format!("{path}.depends_on[{i}]"),
                        "must be a service name",
                    ));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(ValidationError::new(
                format!("{path}.depends_on"),
                "must be a list of service names",
            ));
            Vec::new()
        }
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => problems.push(ValidationError::new(
            format!("{path}.name"),
            format!("{other} differs from the service's key {name:?}"),
        )),
    }
    if let Err(e) = crate::check_name(&path, name) {
        problems.push(e);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = spec_from_map(map, &path)?;
    Ok(DocService { spec, depends_on })
}

/// A script as a document holds it: what a user writes (no name, no
/// `updated` or `updated_by`, which the API sets).
pub(crate) fn script_value(script: &Script) -> Value {
    let mut value = serde_json::to_value(script).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for key in ["name", "updated", "updated_by"] {
            map.remove(key);
        }
    }
    value
}

/// One entry of `scripts`: the script the API takes, its name from the key.
fn script_from_value(name: &str, entry: Value) -> Result<Script, Vec<ValidationError>> {
    let path = format!("scripts.{name}");
    let Value::Object(mut map) = entry else {
        return Err(vec![ValidationError::new(
            path,
            "must be a mapping: the script (interpreter, body, args, env, timeout)",
        )]);
    };
    let mut problems = Vec::new();
    for key in ["updated", "updated_by"] {
        if map.contains_key(key) {
            problems.push(ValidationError::new(
                format!("{path}.{key}"),
                "is set by lb, not by the document",
            ));
        }
    }
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => problems.push(ValidationError::new(
            format!("{path}.name"),
            format!("{other} differs from the script's key {name:?}"),
        )),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    from_map(map, &path, "a script")
}

/// Converts a spec's keys and values, naming every unknown key of the spec.
pub(crate) fn spec_from_map(
    map: Map<String, Value>,
    path: &str,
) -> Result<ServiceSpec, Vec<ValidationError>> {
    from_map(map, path, "a service's spec")
}

/// Converts keys and values into `T`, naming every unknown key (serde stops
/// at the first: each is taken out and the rest read again).
fn from_map<T: serde::de::DeserializeOwned>(
    mut map: Map<String, Value>,
    path: &str,
    what: &str,
) -> Result<T, Vec<ValidationError>> {
    let mut unknown = Vec::new();
    loop {
        match value_at::<T>(Value::Object(map.clone()), path) {
            Ok(spec) if unknown.is_empty() => return Ok(spec),
            Ok(_) => return Err(unknown),
            Err(e) => {
                let key = e
                    .message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .filter(|key| e.field == path || e.field == format!("{path}.{key}"))
                    .map(str::to_owned);
                match key {
                    Some(key) if map.remove(&key).is_some() => unknown.push(ValidationError::new(
                        format!("{path}.{key}"),
                        format!("unknown key of {what}"),
                    )),
                    _ => {
                        unknown.push(e);
                        return Err(unknown);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
