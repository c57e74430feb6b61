//! `lbc service create | ls | get | update | rm` and the actions on one
//! service: `scale`, `restart`, `pause`, `resume`, `rollback`, `replicas`.

use std::collections::{BTreeMap, HashMap};

use lb_model::views::{
    List, NodeView, ReplicaPort, ReplicaView, RollbackRequest, ScaleRequest, ServiceStatus,
    ServiceView,
};
use lb_model::{BuildKind, Port, Protocol, ServiceSpec};
use reqwest::Method;
use serde_json::{json, Value};

use super::service_body::{create_body, update_patch};
use crate::args::ServiceCmd;
use crate::client::{segment, typed};
use crate::error::{Error, Result};
use crate::output::{age, number, paint_state, text, word, Shown, Table};
use crate::session::Session;

/// Runs `lbc service ...`.
pub async fn run(session: &mut Session, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(flags) => {
            let (project, name) = session.service_ref(&flags.service)?;
            let mut body = create_body(&name, &flags)?;
            max_unavailable(&mut body, flags.max_unavailable)?;
            let client = session.client()?;
            let service = client
                .post(&format!("/projects/{}/services", segment(&project)), &body)
                .await?;
            let shown = one(&project, service, session.out.color)?;
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
            let items = typed::<List<ServiceView>>(&list)?.items;
            let color = session.out.color;
            let table = Table {
                headers: vec![
                    "NAME", "IMAGE", "REPLICAS", "STATE", "PORTS", "AGE", "DETAIL",
                ],
                rows: items
                    .iter()
                    .map(|svc| {
                        vec![
                            svc.name.clone(),
                            image_or_source(&svc.spec),
                            replica_counts(&svc.status),
                            state_of(&svc.status, color),
                            ports(&svc.spec.ports),
                            age(svc.created),
                            svc.status.detail.clone(),
                        ]
                    })
                    .collect(),
            };
            let ids = items.into_iter().map(|svc| svc.id).collect();
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
            let shown = one(&project, service, session.out.color)?;
            session.out.show(shown)
        }
        ServiceCmd::Update(flags) => {
            let (project, _) = session.service_ref(&flags.service)?;
            let path = session.service_path(&flags.service)?;
            let patch = match (update_patch(&flags), flags.max_unavailable) {
                (Ok(mut patch), n) => {
                    max_unavailable(&mut patch, n)?;
                    patch
                }
                // --max-unavailable alone is something to change.
                (Err(Error::Message { message, .. }), Some(n))
                    if message.starts_with("nothing to change") =>
                {
                    let mut patch = json!({});
                    max_unavailable(&mut patch, Some(n))?;
                    patch
                }
                (Err(e), _) => return Err(e),
            };
            let service = session
                .client()?
                .call(Method::PATCH, &path, Some(&patch))
                .await?;
            let shown = one(&project, service, session.out.color)?;
            session.out.show(shown)
        }
        ServiceCmd::Rm { service, yes } => {
            let path = session.service_path(&service)?;
            let client = session.client()?;
            if !yes {
                // Unknown services fail before the question.
                client.get(&path).await?;
            }
            super::confirm::confirm(
                yes,
                &format!("delete service {service:?} with its replicas and builds"),
            )?;
            client.call(Method::DELETE, &path, None).await?;
            session.out.show(Shown::Message {
                value: json!({"deleted": service}),
                text: format!("Service {service:?} deleted."),
            })
        }
    }
}

/// `--max-unavailable N` into a create body or an update patch (1–1000).
fn max_unavailable(body: &mut Value, n: Option<u32>) -> Result<()> {
    let Some(n) = n else {
        return Ok(());
    };
    if !(1..=1000).contains(&n) {
        return Err(Error::usage(format!(
            "--max-unavailable {n} is out of range: give 1 to 1000"
        )));
    }
    body["max_unavailable"] = json!(n);
    Ok(())
}

/// `lbc scale SERVICE N`.
pub async fn scale(session: &mut Session, service: &str, replicas: u32) -> Result<()> {
    let path = format!("{}/scale", session.service_path(service)?);
    let answer = session
        .client()?
        .post(&path, &json!(ScaleRequest { replicas }))
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
        .post(&path, &json!(RollbackRequest { build }))
        .await?;
    let image = text(&typed::<ServiceView>(&answer)?.spec.image);
    session.out.show(Shown::Message {
        text: format!("Service {service:?} rolled back to build {build} ({image})."),
        value: answer,
    })
}

/// `lbc replicas SERVICE`.
pub async fn replicas(session: &mut Session, service: &str) -> Result<()> {
    let service_path = session.service_path(service)?;
    let path = format!("{service_path}/replicas");
    let client = session.client()?;
    let list = client.get(&path).await?;
    let items = typed::<List<ReplicaView>>(&list)?.items;
    let color = session.out.color;
    let health: Vec<String> = (0..items.len())
        .map(|i| health_of(&list["items"][i], color))
        .collect();
    // Node names read better than ids; a failure here only costs the names.
    // The spec's ports give the protocols (a replica's ports are numbers).
    let mut names: HashMap<String, String> = HashMap::new();
    let mut spec_ports: Vec<Port> = Vec::new();
    if session.out.format == crate::output::Format::Table && !session.out.quiet {
        if let Ok(view) = client.get(&service_path).await {
            if let Ok(view) = typed::<ServiceView>(&view) {
                spec_ports = view.spec.ports;
            }
        }
        if let Ok(nodes) = client.get("/nodes").await {
            if let Ok(nodes) = typed::<List<NodeView>>(&nodes) {
                names.extend(nodes.items.into_iter().map(|n| (n.id, n.name)));
            }
        }
    }
    let table = Table {
        headers: vec![
            "ID", "NODE", "STATE", "HEALTH", "PORTS", "RESTARTS", "GEN", "IMAGE", "MESSAGE",
        ],
        rows: items
            .iter()
            .zip(&health)
            .map(|(r, health)| {
                let node = text(&r.node);
                vec![
                    r.id.clone(),
                    names.get(&node).cloned().unwrap_or(node),
                    paint_state(&word(&r.state), color),
                    health.clone(),
                    replica_ports(&r.ports, &spec_ports),
                    r.restarts.to_string(),
                    r.generation.to_string(),
                    r.image.clone(),
                    r.message.clone(),
                ]
            })
            .collect(),
    };
    let ids = items.into_iter().map(|r| r.id).collect();
    session.out.show(Shown::List {
        value: list,
        table,
        ids,
    })
}

/// A replica's health (`healthy`, `unhealthy`, `starting`), with the failed
/// check's message; "" without a check.
fn health_of(replica: &Value, color: bool) -> String {
    let health = replica["health"].as_str().unwrap_or_default();
    let painted = paint_state(health, color);
    match replica["health_message"].as_str().filter(|m| !m.is_empty()) {
        Some(message) if !health.is_empty() && health != "healthy" => {
            format!("{painted} ({message})")
        }
        _ => painted,
    }
}

fn one(project: &str, value: Value, color: bool) -> Result<Shown> {
    let service: ServiceView = typed(&value)?;
    let (spec, status) = (&service.spec, &service.status);
    let map = |m: &BTreeMap<String, String>| -> String {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let volumes = spec
        .volumes
        .iter()
        .map(|v| format!("{}:{}", v.name, v.path))
        .collect::<Vec<_>>()
        .join(", ");
    let mut fields = vec![
        ("Name", format!("{project}/{}", service.name)),
        ("Id", service.id.clone()),
    ];
    if !spec.description.is_empty() {
        fields.push(("Description", spec.description.clone()));
    }
    fields.extend([
        ("Image", text(&spec.image)),
        ("Source", source(spec)),
        ("State", state_of(status, color)),
        ("Detail", status.detail.clone()),
        ("Replicas", replica_counts(status)),
        ("Memory", format!("{} MiB", spec.memory)),
        ("CPU", number(spec.cpu)),
        ("Stop timeout", format!("{} s", spec.stop_timeout)),
        (
            "Max unavailable",
            spec.max_unavailable.unwrap_or(1).to_string(),
        ),
        ("Ports", ports(&spec.ports)),
        ("Env", map(&spec.env)),
        (
            "Command",
            command_text(spec.command.as_deref().unwrap_or_default()),
        ),
        ("Volumes", volumes),
        ("Node selector", map(&spec.node_selector)),
        ("Domains", spec.domains.join(" ")),
        (
            "Ingress port",
            spec.ingress_port()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ),
        ("URLs", service.urls.join(" ")),
        ("Generation", status.generation.to_string()),
        ("Revision", service.revision.to_string()),
        ("Age", age(service.created)),
    ]);
    Ok(Shown::One {
        id: service.id,
        fields,
        value,
    })
}

fn source(spec: &ServiceSpec) -> String {
    let Some(src) = &spec.source else {
        return String::new();
    };
    let mut out = src.url.clone();
    if let Some(branch) = src.branch.as_deref().filter(|b| !b.is_empty()) {
        out.push_str(&format!(" ({branch})"));
    }
    let build = &src.build;
    if build.kind == BuildKind::Template {
        out.push_str(&format!(
            ", template {}/{}",
            text(&build.language),
            text(&build.framework)
        ));
    } else if let Some(dockerfile) = build.dockerfile.as_deref().filter(|d| !d.is_empty()) {
        out.push_str(&format!(", {dockerfile}"));
    }
    out
}

fn image_or_source(spec: &ServiceSpec) -> String {
    match (&spec.image, &spec.source) {
        (Some(image), _) if !image.is_empty() => image.clone(),
        (_, Some(source)) => source.url.clone(),
        _ => String::new(),
    }
}

/// Replicas of the current version serving, of those wanted.
fn replica_counts(status: &ServiceStatus) -> String {
    let r = &status.replicas;
    format!("{}/{}", r.ready, r.desired)
}

/// The service's state as the API computed it (`deploying 1/3`,
/// `crash_looping`, `no image yet`): the same words as the web UI.
fn state_of(status: &ServiceStatus, color: bool) -> String {
    use lb_model::status::State;
    let label = if status.label.is_empty() {
        status.state.word()
    } else {
        &status.label
    };
    // The colours of `paint_state`: green, red, yellow.
    let code = match status.state {
        State::Running => "32",
        State::Degraded | State::CrashLooping => "31",
        State::Deploying | State::Pending | State::Paused => "33",
        State::Stopped | State::NoImage => return label.to_owned(),
    };
    if color {
        format!("\x1b[{code}m{label}\x1b[0m")
    } else {
        label.to_owned()
    }
}

fn ports(ports: &[Port]) -> String {
    ports
        .iter()
        .map(|p| one_port(p.host, p.container, p.protocol))
        .collect::<Vec<_>>()
        .join(",")
}

/// A replica's ports as `docker run -p` writes them, `HOST:CONTAINER[/udp]`
/// (the protocol from the spec's port at the same place, else the first
/// with that container port).
fn replica_ports(ports: &[ReplicaPort], spec: &[Port]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let protocol = spec
                .get(i)
                .filter(|s| s.container == p.container)
                .or_else(|| spec.iter().find(|s| s.container == p.container))
                .map_or(Protocol::Tcp, |s| s.protocol);
            one_port(p.host, p.container, protocol)
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn one_port(host: Option<u16>, container: u16, protocol: Protocol) -> String {
    let mut out = match host {
        Some(host) => format!("{host}:{container}"),
        None => container.to_string(),
    };
    if protocol == Protocol::Udp {
        out.push_str("/udp");
    }
    out
}

/// A command as it was given: the line of `/bin/sh -c LINE` (how the web
/// UI stores a shell line), else the words, quoted for a shell where they
/// need it.
fn command_text(command: &[String]) -> String {
    if let [sh, c, line] = command {
        if sh == "/bin/sh" && c == "-c" {
            return line.clone();
        }
    }
    command
        .iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word as a POSIX shell reads it back: as is when it is plain, else in
/// single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_docker_writes_them() {
        let spec = [
            Port {
                container: 80,
                host: Some(18080),
                protocol: Protocol::Tcp,
            },
            Port {
                container: 53,
                host: None,
                protocol: Protocol::Udp,
            },
        ];
        let bound = [
            ReplicaPort {
                container: 80,
                host: Some(18080),
            },
            ReplicaPort {
                container: 53,
                host: Some(32001),
            },
        ];
        assert_eq!(replica_ports(&bound, &spec), "18080:80,32001:53/udp");
        assert_eq!(ports(&spec), "18080:80,53/udp");
        assert_eq!(replica_ports(&bound[..1], &[]), "18080:80");
    }

    #[test]
    fn commands_read_as_given() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_text(&words(&["/bin/sh", "-c", "echo \"hi there\" | wc -c"])),
            "echo \"hi there\" | wc -c"
        );
        assert_eq!(
            command_text(&words(&["/bin/busybox", "sh", "-c", "echo boom; exit 3"])),
            "/bin/busybox sh -c 'echo boom; exit 3'"
        );
        assert_eq!(command_text(&words(&["echo", "it's"])), "echo 'it'\\''s'");
        assert_eq!(command_text(&[]), "");
    }
}
