//! A docker-compose file read as a [`Document`], for the subset that maps
//! onto a service's spec:
//!
//! | compose | lb |
//! |---|---|
//! | `name` | the project |
//! | `image` | `image` |
//! | `build` (`context`, `dockerfile`) | `source`: the git repository of `x-lb.source` (a local context is a directory in it), or a git URL context (`https://h/o/r.git#branch:dir`); the Dockerfile's path joined to the context |
//! | `ports` (`"80"`, `"8080:80"`, `"53:53/udp"`, long form) | `ports` |
//! | `environment` (map or list) and `env_file` (read by the caller) | `env` (environment wins) |
//! | `volumes` (named volumes declared at the top level) | `volumes` |
//! | `command` (list, or a string split like a shell would) | `command` |
//! | `healthcheck` (`test`, `interval`, `timeout`, `retries`, `start_period`) | `health` (a command check) |
//! | `deploy.replicas`, `deploy.resources.limits.memory` / `.cpus` | `replicas`, `memory` (MiB, rounded up), `cpu` |
//! | `depends_on` (list or map, any condition) | the order services are created in |
//! | `restart` (`always`, `unless-stopped`) | lb always restarts a failed replica |
//! | `x-lb` in a service | merged into its spec as lb's own fields (`domains`, `node_selector`, ...) |
//!
//! Names become DNS labels: lower case, `_` and `.` as `-`. Every other key
//! is refused, and all of them are named in one error
//! (`services.web.privileged: not supported by lb`); `x-` keys are ignored
//! as compose itself does.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{spec_from_map, DocService, Document, DocumentError};
use crate::{Port, ValidationError};

/// Problems found so far, each naming its key.
#[derive(Default)]
struct Problems(Vec<ValidationError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(field, message));
    }
    fn unsupported(&mut self, field: impl Into<String>) {
        self.add(field, "not supported by lb");
    }
}

/// Where local build contexts come from: the repository holding the file.
#[derive(Debug, Clone, Default)]
struct Repository {
    url: String,
    branch: Option<String>,
    vendor: Option<String>,
}

/// Converts a parsed compose file; `env_file` reads an env file by the path
/// written in the file (relative to the compose file).
pub fn convert(
    value: &Value,
    env_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Document, DocumentError> {
    let mut p = Problems::default();
    let Some(top) = value.as_object() else {
        return Err(DocumentError::Invalid(vec![ValidationError::new(
            "",
            "a compose file must be a mapping with services",
        )]));
    };
    let mut doc = Document::default();
    let mut repository = None;
    let mut volumes: Vec<String> = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            "version" | "services" => {}
            "name" => match value.as_str() {
                Some(name) => doc.project = Some(label(name)),
                None => p.add("name", "must be a string"),
            },
            "volumes" => match value {
                Value::Object(map) => {
                    for (name, def) in map {
                        volumes.push(name.clone());
                        if let Value::Object(def) = def {
                            for key in def.keys().filter(|k| !k.starts_with("x-")) {
                                p.unsupported(format!("volumes.{name}.{key}"));
                            }
                        } else if !def.is_null() {
                            p.add(format!("volumes.{name}"), "must be a mapping or empty");
                        }
                    }
                }
                Value::Null => {}
                _ => p.add("volumes", "must be a mapping of volume names"),
            },
            "x-lb" => repository = x_lb(value, &mut p),
            other if other.starts_with("x-") => {}
            other => p.unsupported(other),
        }
    }
    let services = match top.get("services") {
        Some(Value::Object(services)) => services.clone(),
        Some(_) => {
            p.add("services", "must be a mapping of service names");
            Map::new()
        }
        None => {
            p.add("services", "a compose file needs services");
            Map::new()
        }
    };
    // Compose names to lb's: each must stay distinct.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for name in services.keys() {
        let lb = label(name);
        if let Err(e) = crate::validate_name(&lb) {
            p.add(format!("services.{name}"), format!("its name as lb's: {e}"));
        }
        if let Some((first, _)) = names.iter().find(|(_, v)| **v == lb) {
            p.add(
                format!("services.{name}"),
                format!("named {lb:?} in lb, like {first:?}"),
            );
        }
        names.insert(name.clone(), lb);
    }
    let context = Context {
        repository: repository.as_ref(),
        volumes: &volumes,
        names: &names,
        env_file,
    };
    for (name, service) in &services {
        let path = format!("services.{name}");
        if let Some(converted) = context.service(&path, &names[name], service, &mut p) {
            doc.services.insert(names[name].clone(), converted);
        }
    }
    if p.0.is_empty() {
        let problems: Vec<ValidationError> = doc
            .check()
            .into_iter()
            .map(|e| rename_field(e, &names))
            .collect();
        p.0.extend(problems);
    }
    if p.0.is_empty() {
        Ok(doc)
    } else {
        Err(DocumentError::Invalid(p.0))
    }
}

/// A problem of the converted document, named by the compose file's key.
fn rename_field(mut e: ValidationError, names: &BTreeMap<String, String>) -> ValidationError {
    if let Some(rest) = e.field.strip_prefix("services.") {
        let (lb, tail) = rest.split_once('.').unwrap_or((rest, ""));
        if let Some((compose, _)) = names.iter().find(|(_, v)| *v == lb) {
            e.field = if tail.is_empty() {
                format!("services.{compose}")
            } else {
                format!("services.{compose}.{tail}")
            };
        }
    }
    e
}

/// A compose name as a DNS label: lower case, `_` and `.` as `-`.
pub fn label(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The top-level `x-lb`: `{source: {url, branch, vendor}}`, the repository
/// local build contexts are directories of.
fn x_lb(value: &Value, p: &mut Problems) -> Option<Repository> {
    let Some(map) = value.as_object() else {
        p.add("x-lb", "must be a mapping");
        return None;
    };
    let mut repository = None;
    for (key, value) in map {
        match key.as_str() {
            "source" => {
                let Some(source) = value.as_object() else {
                    p.add("x-lb.source", "must be a mapping with url and branch");
                    continue;
                };
                let mut repo = Repository::default();
                for (key, value) in source {
                    let field = format!("x-lb.source.{key}");
                    let Some(text) = value.as_str() else {
                        p.add(field, "must be a string");
                        continue;
                    };
                    match key.as_str() {
                        "url" => repo.url = text.to_owned(),
                        "branch" => repo.branch = Some(text.to_owned()),
                        "vendor" => repo.vendor = Some(text.to_owned()),
                        _ => p.add(field, "unknown key (url, branch, vendor)"),
                    }
                }
                if repo.url.is_empty() {
                    p.add("x-lb.source.url", "is required");
                }
                repository = Some(repo);
            }
            other => p.add(format!("x-lb.{other}"), "unknown key (source)"),
        }
    }
    repository
}

/// What converting one service needs from the whole file.
struct Context<'a> {
    repository: Option<&'a Repository>,
    volumes: &'a [String],
    names: &'a BTreeMap<String, String>,
    env_file: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Context<'_> {
    fn service(
        &self,
        path: &str,
        name: &str,
        service: &Value,
        p: &mut Problems,
    ) -> Option<DocService> {
        let Some(service) = service.as_object() else {
            p.add(path, "must be a mapping");
            return None;
        };
        let before = p.0.len();
        let mut spec = Map::new();
        spec.insert("name".into(), name.into());
        let mut env = BTreeMap::new();
        let mut depends_on = Vec::new();
        let mut extra = None;
        // env_file first: environment wins over it.
        if let Some(files) = service.get("env_file") {
            self.env_files(&format!("{path}.env_file"), files, &mut env, p);
        }
        for (key, value) in service {
            let field = format!("{path}.{key}");
            match key.as_str() {
                "image" => match value.as_str() {
                    Some(image) => {
                        if !service.contains_key("build") {
                            spec.insert("image".into(), image.into());
                        }
                    }
                    None => p.add(field, "must be a string"),
                },
                "build" => {
                    if let Some(source) = self.build(&field, value, p) {
                        spec.insert("source".into(), source);
                    }
                }
                "ports" => {
                    let ports = list(&field, value, p)
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| port(&format!("{field}[{i}]"), v, p))
                        .collect::<Vec<_>>();
                    spec.insert("ports".into(), ports.into());
                }
                "environment" => environment(&field, value, &mut env, p),
                "env_file" => {}
                "volumes" => {
                    let volumes = list(&field, value, p)
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| self.volume(&format!("{field}[{i}]"), v, p))
                        .collect::<Vec<_>>();
                    spec.insert("volumes".into(), volumes.into());
                }
                "command" => {
                    if let Some(command) = command(&field, value, p) {
                        spec.insert("command".into(), command.into());
                    }
                }
                "healthcheck" => {
                    if let Some(health) = healthcheck(&field, value, p) {
                        spec.insert("health".into(), health);
                    }
                }
                "deploy" => deploy(&field, value, &mut spec, p),
                "depends_on" => {
                    let deps: Vec<String> = match value {
                        Value::Object(map) => {
                            for (dep, how) in map {
                                if let Some(how) = how.as_object() {
                                    for key in how.keys() {
                                        if !["condition", "restart", "required"]
                                            .contains(&key.as_str())
                                        {
                                            p.unsupported(format!("{field}.{dep}.{key}"));
                                        }
                                    }
                                }
                            }
                            map.keys().cloned().collect()
                        }
                        _ => list(&field, value, p)
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    };
                    for dep in deps {
                        match self.names.get(&dep) {
                            Some(lb) => depends_on.push(lb.clone()),
                            None => p.add(
                                format!("{field}.{dep}"),
                                format!("{dep:?} is not a service of the file"),
                            ),
                        }
                    }
                }
                "restart" => match value.as_str() {
                    Some("always" | "unless-stopped") => {}
                    Some(other) => p.add(
                        field,
                        format!("{other:?} is not supported: lb restarts every replica that stops (always)"),
                    ),
                    None => p.add(field, "must be a string"),
                },
                "x-lb" => extra = Some(value.clone()),
                other if other.starts_with("x-") => {}
                _ => p.unsupported(field),
            }
        }
        if !env.is_empty() {
            spec.insert(
                "env".into(),
                Value::Object(
                    env.into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ),
            );
        }
        if !service.contains_key("image") && !service.contains_key("build") {
            p.add(path, "needs image or build");
        }
        if let Some(extra) = extra {
            match extra {
                Value::Object(map) => {
                    for (key, value) in map {
                        if key == "name" {
                            p.add(format!("{path}.x-lb.name"), "the name is the service's key");
                            continue;
                        }
                        spec.insert(key, value);
                    }
                }
                _ => p.add(
                    format!("{path}.x-lb"),
                    "must be a mapping of lb's spec fields",
                ),
            }
        }
        if p.0.len() > before {
            return None;
        }
        match spec_from_map(spec, path) {
            Ok(spec) => Some(DocService { spec, depends_on }),
            Err(errors) => {
                p.0.extend(errors);
                None
            }
        }
    }

    /// `build`: a context (string) or `{context, dockerfile}`.
    fn build(&self, field: &str, value: &Value, p: &mut Problems) -> Option<Value> {
        let (context, dockerfile) = match value {
            Value::String(context) => (context.clone(), None),
            Value::Object(map) => {
                let mut context = ".".to_owned();
                let mut dockerfile = None;
                for (key, value) in map {
                    let sub = format!("{field}.{key}");
                    match (key.as_str(), value.as_str()) {
                        ("context", Some(c)) => context = c.to_owned(),
                        ("dockerfile", Some(d)) => dockerfile = Some(d.to_owned()),
                        ("context" | "dockerfile", None) => p.add(sub, "must be a string"),
                        (other, _) if other.starts_with("x-") => {}
                        _ => p.unsupported(sub),
                    }
                }
                (context, dockerfile)
            }
            _ => {
                p.add(field, "must be a context path or a mapping");
                return None;
            }
        };
        let git = ["https://", "http://", "git://", "ssh://", "git@"]
            .iter()
            .any(|s| context.starts_with(s));
        let (url, branch, vendor, dir) = if git {
            // compose's git contexts: URL#ref:subdirectory.
            let (url, fragment) = context.split_once('#').unwrap_or((&context, ""));
            let (reference, dir) = fragment.split_once(':').unwrap_or((fragment, ""));
            let branch = (!reference.is_empty()).then(|| reference.to_owned());
            (url.to_owned(), branch, None, dir.to_owned())
        } else {
            let Some(repo) = self.repository else {
                p.add(
                    field,
                    format!(
                        "the local context {context:?} needs the git repository holding it: \
                         set x-lb.source.url (and branch) at the top of the file"
                    ),
                );
                return None;
            };
            (
                repo.url.clone(),
                repo.branch.clone(),
                repo.vendor.clone(),
                context.clone(),
            )
        };
        let dir = normalize(&dir);
        let dockerfile = match (&dir, dockerfile) {
            (None, None) => None,
            (Some(d), None) => Some(format!("{d}/Dockerfile")),
            (None, Some(f)) => normalize(&f),
            (Some(d), Some(f)) => Some(format!("{d}/{}", normalize(&f).unwrap_or_default())),
        };
        let mut build = Map::new();
        build.insert("kind".into(), "dockerfile".into());
        if let Some(d) = dockerfile {
            build.insert("dockerfile".into(), d.into());
        }
        if let Some(d) = dir {
            build.insert("context".into(), d.into());
        }
        let mut source = Map::new();
        source.insert("url".into(), url.into());
        if let Some(b) = branch {
            source.insert("branch".into(), b.into());
        }
        if let Some(v) = vendor {
            source.insert("vendor".into(), v.into());
        }
        source.insert("build".into(), Value::Object(build));
        Some(Value::Object(source))
    }

    /// A named volume: `data:/path` or `{type: volume, source, target}`.
    fn volume(&self, field: &str, value: &Value, p: &mut Problems) -> Option<Value> {
        let (source, target) = match value {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                match parts.as_slice() {
                    [target] => {
                        p.add(field, format!("{target:?} is an anonymous volume: name it (data:{target}) and declare it under volumes"));
                        return None;
                    }
                    [source, target] => (source.to_string(), target.to_string()),
                    [_, _, mode] if *mode == "rw" => (parts[0].to_owned(), parts[1].to_owned()),
                    [_, _, mode] => {
                        p.add(
                            field,
                            format!("mode {mode:?} is not supported: lb mounts volumes read-write"),
                        );
                        return None;
                    }
                    _ => {
                        p.add(field, format!("{s:?} is not source:target"));
                        return None;
                    }
                }
            }
            Value::Object(map) => {
                let mut source = String::new();
                let mut target = String::new();
                for (key, v) in map {
                    let sub = format!("{field}.{key}");
                    match (key.as_str(), v) {
                        ("type", Value::String(t)) if t == "volume" => {}
                        ("type", _) => p.add(sub, "only type volume (a named volume) is supported"),
                        ("source", Value::String(s)) => source = s.clone(),
                        ("target", Value::String(t)) => target = t.clone(),
                        ("read_only", Value::Bool(false)) => {}
                        (k, _) if k.starts_with("x-") => {}
                        _ => p.unsupported(sub),
                    }
                }
                (source, target)
            }
            _ => {
                p.add(field, "must be a string or a mapping");
                return None;
            }
        };
        if source.starts_with('.') || source.starts_with('/') || source.starts_with('~') {
            p.add(
                field,
                format!("{source:?} is a bind mount of the host: only named volumes are supported"),
            );
            return None;
        }
        if !self.volumes.contains(&source) {
            p.add(
                field,
                format!("volume {source:?} is not declared under the top-level volumes"),
            );
            return None;
        }
        Some(serde_json::json!({"name": label(&source), "path": target}))
    }

    fn env_files(
        &self,
        field: &str,
        value: &Value,
        env: &mut BTreeMap<String, String>,
        p: &mut Problems,
    ) {
        let entries: Vec<(String, bool)> = match value {
            Value::String(s) => vec![(s.clone(), true)],
            _ => list(field, value, p)
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    Value::String(s) => Some((s.clone(), true)),
                    Value::Object(map) => {
                        let path = map.get("path").and_then(Value::as_str);
                        let required = map.get("required").and_then(Value::as_bool).unwrap_or(true);
                        for key in map.keys() {
                            if !["path", "required"].contains(&key.as_str()) {
                                p.unsupported(format!("{field}[{i}].{key}"));
                            }
                        }
                        match path {
                            Some(path) => Some((path.to_owned(), required)),
                            None => {
                                p.add(format!("{field}[{i}].path"), "is required");
                                None
                            }
                        }
                    }
                    _ => {
                        p.add(format!("{field}[{i}]"), "must be a path");
                        None
                    }
                })
                .collect(),
        };
        for (i, (path, required)) in entries.into_iter().enumerate() {
            let at = if value.is_string() {
                field.to_owned()
            } else {
                format!("{field}[{i}]")
            };
            match (self.env_file)(&path) {
                Ok(text) => {
                    if let Err(e) = parse_env_file(&text, env) {
                        p.add(at, format!("{path}: {e}"));
                    }
                }
                Err(_) if !required => {}
                Err(e) => p.add(at, format!("{path}: {e}")),
            }
        }
    }
}

/// A list value (a bare scalar is an error naming the field).
fn list(field: &str, value: &Value, p: &mut Problems) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        _ => {
            p.add(field, "must be a list");
            Vec::new()
        }
    }
}

/// A repository path without `./`, `.` as none.
fn normalize(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A scalar as compose reads it in strings: numbers and booleans as written.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port(field: &str, value: &Value, p: &mut Problems) -> Option<Value> {
    let (container, host, protocol) = match value {
        Value::Number(_) | Value::String(_) => {
            // lb's own `[HOST:]CONTAINER[/PROTOCOL]`, after the compose
            // forms lb cannot honour are named.
            let text = scalar(value).unwrap_or_default();
            let ports = text.split('/').next().unwrap_or_default();
            if ports.matches(':').count() > 1 {
                p.add(
                    field,
                    format!("{text:?}: a host address is not supported (lb publishes on the node's addresses)"),
                );
                return None;
            }
            if ports.contains('-') {
                p.add(field, format!("{text:?}: port ranges are not supported"));
                return None;
            }
            return match text.parse::<Port>() {
                Ok(port) => Some(serde_json::json!(port)),
                Err(e) => {
                    p.add(field, e.to_string());
                    None
                }
            };
        }
        Value::Object(map) => {
            let mut container = String::new();
            let mut host = None;
            let mut protocol = "tcp".to_owned();
            for (key, v) in map {
                let sub = format!("{field}.{key}");
                match key.as_str() {
                    "target" => container = scalar(v).unwrap_or_default(),
                    "published" => host = scalar(v),
                    "protocol" => protocol = scalar(v).unwrap_or_default(),
                    "mode" if matches!(v.as_str(), Some("ingress" | "host")) => {}
                    k if k.starts_with("x-") => {}
                    _ => p.unsupported(sub),
                }
            }
            (container, host, protocol)
        }
        _ => {
            p.add(field, "must be a string, a number or a mapping");
            return None;
        }
    };
    let number = |s: &str, p: &mut Problems| match s.parse::<u16>() {
        Ok(n) => Some(n),
        Err(_) => {
            let why = if s.contains('-') {
                format!("{s:?}: port ranges are not supported")
            } else {
                format!("{s:?} is not a port number")
            };
            p.add(field, why);
            None
        }
    };
    let container = number(&container, p)?;
    let host = match host.filter(|h| !h.is_empty()) {
        Some(h) => Some(number(&h, p)?),
        None => None,
    };
    if !["tcp", "udp"].contains(&protocol.as_str()) {
        p.add(field, format!("protocol {protocol:?} is not tcp or udp"));
        return None;
    }
    Some(serde_json::json!({"container": container, "host": host, "protocol": protocol}))
}

fn environment(field: &str, value: &Value, env: &mut BTreeMap<String, String>, p: &mut Problems) {
    let no_value = |key: &str, p: &mut Problems| {
        p.add(
            format!("{field}.{key}"),
            "has no value: give one (lb does not read the shell's environment)",
        )
    };
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match scalar(v) {
                    Some(s) => {
                        env.insert(key.clone(), s);
                    }
                    None => no_value(key, p),
                }
            }
        }
        _ => {
            for (i, item) in list(field, value, p).iter().enumerate() {
                match item.as_str().map(|s| s.split_once('=')) {
                    Some(Some((k, v))) => {
                        env.insert(k.to_owned(), v.to_owned());
                    }
                    Some(None) => no_value(item.as_str().unwrap_or_default(), p),
                    None => p.add(format!("{field}[{i}]"), "must be KEY=VALUE"),
                }
            }
        }
    }
}

fn command(field: &str, value: &Value, p: &mut Problems) -> Option<Vec<String>> {
    match value {
        Value::String(s) => match split_words(s) {
            Ok(words) => Some(words),
            Err(e) => {
                p.add(field, e);
                None
            }
        },
        Value::Null => None,
        _ => {
            let items = list(field, value, p);
            let words: Vec<String> = items.iter().filter_map(scalar).collect();
            if words.len() != items.len() {
                p.add(field, "must be a list of strings");
                return None;
            }
            Some(words)
        }
    }
}

fn healthcheck(field: &str, value: &Value, p: &mut Problems) -> Option<Value> {
    let Some(map) = value.as_object() else {
        p.add(field, "must be a mapping");
        return None;
    };
    let mut health = Map::new();
    for (key, v) in map {
        let sub = format!("{field}.{key}");
        match key.as_str() {
            "test" => {
                let command = match v {
                    Value::String(s) => Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
                    Value::Array(items) => {
                        let words: Vec<String> = items.iter().filter_map(scalar).collect();
                        match words.split_first() {
                            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => {
                                Some(rest.to_vec())
                            }
                            Some((kind, [script])) if kind == "CMD-SHELL" => {
                                Some(vec!["/bin/sh".into(), "-c".into(), script.clone()])
                            }
                            Some((kind, _)) if kind == "NONE" => {
                                p.add(sub.clone(), "NONE is not supported: lb cannot turn off an image's own HEALTHCHECK");
                                None
                            }
                            _ => {
                                p.add(
                                    sub.clone(),
                                    "must be [\"CMD\", ...] or [\"CMD-SHELL\", \"...\"]",
                                );
                                None
                            }
                        }
                    }
                    _ => {
                        p.add(sub.clone(), "must be a string or a list");
                        None
                    }
                };
                if let Some(c) = command {
                    health.insert("command".into(), c.into());
                }
            }
            "interval" | "timeout" | "start_period" => match v.as_str().map(seconds) {
                Some(Ok(secs)) => {
                    health.insert(key.clone(), secs.into());
                }
                Some(Err(e)) => p.add(sub, e),
                None => p.add(sub, "must be a duration like 30s or 1m30s"),
            },
            "retries" => match v.as_u64() {
                Some(n) => {
                    health.insert("retries".into(), n.into());
                }
                None => p.add(sub, "must be a number"),
            },
            "disable" if v == &Value::Bool(false) => {}
            "disable" => p.add(
                sub,
                "is not supported: lb cannot turn off an image's own HEALTHCHECK",
            ),
            k if k.starts_with("x-") => {}
            _ => p.unsupported(sub),
        }
    }
    if !health.contains_key("command") {
        if !map.contains_key("test") {
            p.add(format!("{field}.test"), "is required");
        }
        return None;
    }
    Some(Value::Object(health))
}

fn deploy(field: &str, value: &Value, spec: &mut Map<String, Value>, p: &mut Problems) {
    let Some(map) = value.as_object() else {
        p.add(field, "must be a mapping");
        return;
    };
    for (key, v) in map {
        let sub = format!("{field}.{key}");
        match key.as_str() {
            "replicas" => match v.as_u64() {
                Some(n) => {
                    spec.insert("replicas".into(), n.into());
                }
                None => p.add(sub, "must be a number"),
            },
            "mode" if v.as_str() == Some("replicated") => {}
            "resources" => {
                let Some(resources) = v.as_object() else {
                    p.add(sub, "must be a mapping");
                    continue;
                };
                for (key, v) in resources {
                    let sub = format!("{sub}.{key}");
                    if key != "limits" {
                        p.unsupported(sub);
                        continue;
                    }
                    let Some(limits) = v.as_object() else {
                        p.add(sub, "must be a mapping");
                        continue;
                    };
                    for (key, v) in limits {
                        let at = format!("{sub}.{key}");
                        match key.as_str() {
                            "memory" => match scalar(v).map(|s| mebibytes(&s)) {
                                Some(Ok(mib)) => {
                                    spec.insert("memory".into(), mib.into());
                                }
                                Some(Err(e)) => p.add(at, e),
                                None => p.add(at, "must be a size like 512M"),
                            },
                            "cpus" => match scalar(v).and_then(|s| s.parse::<f64>().ok()) {
                                Some(cpu) => {
                                    spec.insert("cpu".into(), cpu.into());
                                }
                                None => p.add(at, "must be a number like 0.5"),
                            },
                            _ => p.unsupported(at),
                        }
                    }
                }
            }
            k if k.starts_with("x-") => {}
            _ => p.unsupported(sub),
        }
    }
}

/// A size as compose writes it (`512m`, `1g`, `1.5G`, `268435456`: bytes,
/// k, m, g with binary factors) in MiB, rounded up.
pub fn mebibytes(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size like 512m or 1g");
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * factor / (1024.0 * 1024.0)).ceil() as u64)
}

/// A duration as compose writes it (`30s`, `1m30s`, `1h`, `500ms`) in whole
/// seconds, rounded up.
pub fn seconds(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration like 30s or 1m30s");
    let mut total = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(split);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let factor = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        let n: f64 = number.parse().map_err(|_| bad())?;
        total += n * factor;
        rest = tail;
    }
    Ok(total.ceil() as u64)
}

/// Splits a command string into words the way compose does (a POSIX
/// shell's quoting, without expansions).
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a quote (') is not closed".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a quote (\") is not closed".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a quote (\") is not closed".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err("ends with a backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("is empty".into());
    }
    Ok(words)
}

/// Reads an env file (`KEY=VALUE` lines, `#` comments, `export ` allowed,
/// values in single quotes as written, in double quotes with `\n`, `\"`
/// and `\\` escapes) into `env`.
pub fn parse_env_file(text: &str, env: &mut BTreeMap<String, String>) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", n + 1));
        };
        let key = key.trim();
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('\'') {
            inner
                .strip_suffix('\'')
                .ok_or_else(|| format!("line {}: a quote (') is not closed", n + 1))?
                .to_owned()
        } else if let Some(inner) = value.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or_else(|| format!("line {}: a quote (\") is not closed", n + 1))?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c) => out.push(c),
                        None => out.push('\\'),
                    }
                } else {
                    out.push(c);
                }
            }
            out
        } else {
            // An unquoted value ends at " #".
            value
                .split(" #")
                .next()
                .unwrap_or(value)
                .trim_end()
                .to_owned()
        };
        env.insert(key.to_owned(), value);
    }
    Ok(())
}
