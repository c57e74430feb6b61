//! `lbc service create | ls | get | update | rm` and the actions on one
//! service: `scale`, `restart`, `pause`, `resume`, `rollback`, `replicas`.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::args::{ServiceCmd, ServiceFlags};
use crate::client::segment;
use crate::error::{Error, Result};
use crate::output::{age, paint_state, s, Shown, Table};
use crate::session::Session;

/// Runs `lbc service ...`.
pub async fn run(session: &mut Session, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(flags) => {
            let (project, name) = session.service_ref(&flags.service)?;
            let body = create_body(&name, &flags)?;
            let client = session.client()?;
            let service = client
                .post(&format!("/projects/{}/services", segment(&project)), &body)
                .await?;
            let shown = one(&project, service, session.out.color);
            session.out.show(shown)
        }
        ServiceCmd::Ls => {
            let project = session.project()?;
            let client = session.client()?;
            let list = client
                .get(&format!(
                    "/projects/{}/services?limit=1000",
                    segment(&project)
                ))
                .await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let color = session.out.color;
            let table = Table {
                headers: vec!["NAME", "IMAGE", "REPLICAS", "STATE", "PORTS", "AGE"],
                rows: items
                    .iter()
                    .map(|svc| {
                        vec![
                            s(svc, "name"),
                            image_or_source(&svc["spec"]),
                            replica_counts(&svc["status"]),
                            paint_state(&s(&svc["spec"], "state"), color),
                            ports(&svc["spec"]["ports"]),
                            age(svc, "created"),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|svc| s(svc, "id")).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        ServiceCmd::Get { service } => {
            let (project, _) = session.service_ref(&service)?;
            let path = session.service_path(&service)?;
            let service = session.client()?.get(&path).await?;
            let shown = one(&project, service, session.out.color);
            session.out.show(shown)
        }
        ServiceCmd::Update(flags) => {
            let (project, _) = session.service_ref(&flags.service)?;
            let path = session.service_path(&flags.service)?;
            let patch = update_patch(&flags)?;
            let service = session
                .client()?
                .call(Method::PATCH, &path, Some(&patch))
                .await?;
            let shown = one(&project, service, session.out.color);
            session.out.show(shown)
        }
        ServiceCmd::Rm { service } => {
            let path = session.service_path(&service)?;
            session.client()?.call(Method::DELETE, &path, None).await?;
            session.out.show(Shown::Message {
                value: json!({"deleted": service}),
                text: format!("Service {service:?} deleted."),
            })
        }
    }
}

/// `lbc scale SERVICE N`.
pub async fn scale(session: &mut Session, service: &str, replicas: u32) -> Result<()> {
    let path = format!("{}/scale", session.service_path(service)?);
    let answer = session
        .client()?
        .post(&path, &json!({"replicas": replicas}))
        .await?;
    session.out.show(Shown::Message {
        value: answer,
        text: format!("Service {service:?} scaled to {replicas}."),
    })
}

/// `lbc restart | pause | resume SERVICE`.
pub async fn action(session: &mut Session, service: &str, action: &str) -> Result<()> {
    let path = format!("{}/{action}", session.service_path(service)?);
    let answer = session.client()?.post(&path, &json!({})).await?;
    let done = match action {
        "restart" => "restarting (one replica at a time)",
        "pause" => "paused",
        _ => "resumed",
    };
    session.out.show(Shown::Message {
        value: answer,
        text: format!("Service {service:?} {done}."),
    })
}

/// `lbc rollback SERVICE BUILD`.
pub async fn rollback(session: &mut Session, service: &str, build: u64) -> Result<()> {
    let path = format!("{}/rollback", session.service_path(service)?);
    let answer = session
        .client()?
        .post(&path, &json!({"build": build}))
        .await?;
    let image = s(&answer["spec"], "image");
    session.out.show(Shown::Message {
        text: format!("Service {service:?} rolled back to build {build} ({image})."),
        value: answer,
    })
}

/// `lbc replicas SERVICE`.
pub async fn replicas(session: &mut Session, service: &str) -> Result<()> {
    let path = format!("{}/replicas", session.service_path(service)?);
    let client = session.client()?;
    let list = client.get(&path).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    // Node names read better than ids; a failure here only costs the names.
    let mut names: HashMap<String, String> = HashMap::new();
    if session.out.format == crate::output::Format::Table && !session.out.quiet {
        if let Ok(nodes) = client.get("/nodes").await {
            for n in nodes["items"].as_array().into_iter().flatten() {
                names.insert(s(n, "id"), s(n, "name"));
            }
        }
    }
    let color = session.out.color;
    let table = Table {
        headers: vec![
            "ID", "NODE", "STATE", "PORTS", "RESTARTS", "GEN", "IMAGE", "MESSAGE",
        ],
        rows: items
            .iter()
            .map(|r| {
                let node = s(r, "node");
                vec![
                    s(r, "id"),
                    names.get(&node).cloned().unwrap_or(node),
                    paint_state(&s(r, "state"), color),
                    replica_ports(&r["ports"]),
                    s(r, "restarts"),
                    s(r, "generation"),
                    s(r, "image"),
                    s(r, "message"),
                ]
            })
            .collect(),
    };
    let ids = items.iter().map(|r| s(r, "id")).collect();
    session.out.show(Shown::List {
        value: list,
        table,
        ids,
    })
}

fn one(project: &str, service: Value, color: bool) -> Shown {
    let spec = &service["spec"];
    let status = &service["status"];
    let map = |v: &Value| -> String {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let list = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let volumes = spec["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| format!("{}:{}", s(v, "name"), s(v, "path")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut fields = vec![
        ("Name", format!("{project}/{}", s(&service, "name"))),
        ("Id", s(&service, "id")),
    ];
    if !s(spec, "description").is_empty() {
        fields.push(("Description", s(spec, "description")));
    }
    fields.extend([
        ("Image", s(spec, "image")),
        ("Source", source(spec)),
        ("State", paint_state(&s(spec, "state"), color)),
        ("Replicas", replica_counts(status)),
        ("Memory", format!("{} MiB", s(spec, "memory"))),
        ("CPU", s(spec, "cpu")),
        ("Stop timeout", format!("{} s", s(spec, "stop_timeout"))),
        ("Ports", ports(&spec["ports"])),
        ("Env", map(&spec["env"])),
        ("Command", list(&spec["command"])),
        ("Volumes", volumes),
        ("Node selector", map(&spec["node_selector"])),
        ("Domains", list(&spec["domains"])),
        ("Generation", s(status, "generation")),
        ("Revision", s(&service, "revision")),
        ("Age", age(&service, "created")),
    ]);
    Shown::One {
        id: s(&service, "id"),
        fields,
        value: service,
    }
}

fn source(spec: &Value) -> String {
    let src = &spec["source"];
    if src.is_null() {
        return String::new();
    }
    let mut out = s(src, "url");
    let branch = s(src, "branch");
    if !branch.is_empty() {
        out.push_str(&format!(" ({branch})"));
    }
    let build = &src["build"];
    if s(build, "kind") == "template" {
        out.push_str(&format!(
            ", template {}/{}",
            s(build, "language"),
            s(build, "framework")
        ));
    } else if !s(build, "dockerfile").is_empty() {
        out.push_str(&format!(", {}", s(build, "dockerfile")));
    }
    out
}

fn image_or_source(spec: &Value) -> String {
    let image = s(spec, "image");
    if image.is_empty() {
        s(&spec["source"], "url")
    } else {
        image
    }
}

fn replica_counts(status: &Value) -> String {
    let r = &status["replicas"];
    format!("{}/{}", s(r, "running"), s(r, "desired"))
}

fn ports(ports: &Value) -> String {
    ports
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let mut out = match p.get("host").and_then(Value::as_u64) {
                        Some(host) => format!("{host}:{}", s(p, "container")),
                        None => s(p, "container"),
                    };
                    if s(p, "protocol") == "udp" {
                        out.push_str("/udp");
                    }
                    out
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn replica_ports(ports: &Value) -> String {
    ports
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| match p.get("host").and_then(Value::as_u64) {
                    Some(host) => format!("{host}->{}", s(p, "container")),
                    None => s(p, "container"),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// MiB from `256`, `256M`, `256Mi`, `256MiB`, `1G`, `1Gi`, `1GiB`.
pub fn parse_memory(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || {
        Error::usage(format!(
            "memory {s:?} is invalid: give MiB as 256, 256M or 1G"
        ))
    };
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mi" | "mib" | "mb" => 1,
        "g" | "gi" | "gib" | "gb" => 1024,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// A port from `CONTAINER`, `HOST:CONTAINER`, either with `/tcp` or `/udp`.
pub fn parse_port(s: &str) -> Result<Value> {
    let bad = |why: &str| Error::usage(format!("port {s:?} is invalid: {why}"));
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (s, "tcp"),
    };
    let number = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("give [HOST:]CONTAINER with ports 1 to 65535")),
        }
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (Some(number(h)?), number(c)?),
        None => (None, number(ports)?),
    };
    Ok(json!({"container": container, "host": host, "protocol": protocol}))
}

/// `KEY=VALUE` (or `KEY-` when removal is allowed: value `None`).
fn parse_pair(what: &str, s: &str, removal: bool) -> Result<(String, Option<String>)> {
    if removal {
        if let Some(key) = s.strip_suffix('-').filter(|k| !k.contains('=')) {
            if !key.is_empty() {
                return Ok((key.to_owned(), None));
            }
        }
    }
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Some(v.to_owned()))),
        _ => Err(Error::usage(format!(
            "{what} {s:?} is invalid: give KEY=VALUE{}",
            if removal {
                " (or KEY- to remove it)"
            } else {
                ""
            }
        ))),
    }
}

fn parse_volume(s: &str) -> Result<Value> {
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && path.starts_with('/') => {
            Ok(json!({"name": name, "path": path}))
        }
        _ => Err(Error::usage(format!(
            "volume {s:?} is invalid: give NAME:/PATH"
        ))),
    }
}

fn parse_template(s: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((l, f)) if !l.is_empty() && !f.is_empty() && !f.contains('/') => {
            Ok((l.to_owned(), f.to_owned()))
        }
        _ => Err(Error::usage(format!(
            "template {s:?} is invalid: give LANG/FRAMEWORK, e.g. python/flask"
        ))),
    }
}

fn pairs(what: &str, items: &[String], removal: bool) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for item in items {
        let (k, v) = parse_pair(what, item, removal)?;
        out.insert(k, v.map_or(Value::Null, Value::String));
    }
    Ok(out)
}

/// The fields both create and update set from flags (a JSON merge patch).
fn common(flags: &ServiceFlags, removal: bool) -> Result<Map<String, Value>> {
    let mut body = Map::new();
    if let Some(image) = &flags.image {
        body.insert("image".into(), json!(image));
    }
    if let Some(d) = &flags.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(r) = flags.replicas {
        body.insert("replicas".into(), json!(r));
    }
    if let Some(m) = &flags.memory {
        body.insert("memory".into(), json!(parse_memory(m)?));
    }
    if let Some(cpu) = flags.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(Error::usage(format!(
                "cpu {cpu} is invalid: give more than 0"
            )));
        }
        body.insert("cpu".into(), json!(cpu));
    }
    if let Some(t) = flags.stop_timeout {
        body.insert("stop_timeout".into(), json!(t));
    }
    if !flags.ports.is_empty() {
        let ports = flags
            .ports
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>>>()?;
        body.insert("ports".into(), Value::Array(ports));
    }
    if !flags.env.is_empty() {
        body.insert(
            "env".into(),
            Value::Object(pairs("env", &flags.env, removal)?),
        );
    }
    if !flags.volumes.is_empty() {
        let volumes = flags
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<Vec<_>>>()?;
        body.insert("volumes".into(), Value::Array(volumes));
    }
    if !flags.node_selector.is_empty() {
        body.insert(
            "node_selector".into(),
            Value::Object(pairs("node selector", &flags.node_selector, removal)?),
        );
    }
    if !flags.domains.is_empty() {
        body.insert("domains".into(), json!(flags.domains));
    }
    if let Some(a) = flags.autodeploy {
        body.insert("autodeploy".into(), json!(a));
    }
    if !flags.command.is_empty() {
        body.insert("command".into(), json!(flags.command));
    }
    let mut build = Map::new();
    if let Some(d) = &flags.dockerfile {
        build.insert("kind".into(), json!("dockerfile"));
        build.insert("dockerfile".into(), json!(d));
    }
    if let Some(t) = &flags.template {
        if flags.dockerfile.is_some() {
            return Err(Error::usage(
                "--dockerfile and --template exclude each other",
            ));
        }
        let (language, framework) = parse_template(t)?;
        build.insert("kind".into(), json!("template"));
        build.insert("language".into(), json!(language));
        build.insert("framework".into(), json!(framework));
    }
    let mut source = Map::new();
    if let Some(url) = &flags.repo {
        source.insert("url".into(), json!(url));
    }
    if let Some(b) = &flags.branch {
        source.insert("branch".into(), json!(b));
    }
    if !build.is_empty() {
        source.insert("build".into(), Value::Object(build));
    }
    if !source.is_empty() {
        body.insert("source".into(), Value::Object(source));
    }
    Ok(body)
}

fn create_body(name: &str, flags: &ServiceFlags) -> Result<Value> {
    if flags.image.is_none() && flags.repo.is_none() {
        return Err(Error::usage("a service needs --image IMAGE or --repo URL"));
    }
    if flags.repo.is_none()
        && (flags.branch.is_some() || flags.dockerfile.is_some() || flags.template.is_some())
    {
        return Err(Error::usage(
            "--branch, --dockerfile and --template need --repo URL",
        ));
    }
    let mut body = common(flags, false)?;
    body.insert("name".into(), json!(name));
    Ok(Value::Object(body))
}

fn update_patch(flags: &ServiceFlags) -> Result<Value> {
    let body = common(flags, true)?;
    if body.is_empty() {
        return Err(Error::usage(
            "nothing to change: pass at least one flag (see `lbc service update --help`)",
        ));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256").unwrap(), 256);
        assert_eq!(parse_memory("256M").unwrap(), 256);
        assert_eq!(parse_memory("1Gi").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("1T").is_err());
        assert!(parse_memory("").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_port("8080").unwrap(),
            json!({"container": 8080, "host": null, "protocol": "tcp"})
        );
        assert_eq!(
            parse_port("80:8080/udp").unwrap(),
            json!({"container": 8080, "host": 80, "protocol": "udp"})
        );
        for bad in ["", "0", "x", "1:2:3", "70000", "80/sctp", ":80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_and_removal() {
        assert_eq!(
            parse_pair("env", "A=b=c", false).unwrap(),
            ("A".into(), Some("b=c".into()))
        );
        assert_eq!(parse_pair("env", "A-", true).unwrap(), ("A".into(), None));
        assert!(parse_pair("env", "A-", false).is_err());
        assert!(parse_pair("env", "=x", false).is_err());
    }
}
