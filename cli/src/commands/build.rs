//! `lbc build ls | get | logs | cancel` and `lbc deploy`: start a build,
//! follow its steps and log, then wait until the new version runs.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::args::BuildCmd;
use crate::client::Client;
use crate::error::{Error, Kind, Result};
use crate::output::{age, duration, paint_state, s, Shown, Table};
use crate::session::Session;

/// Statuses after which a build does not change.
fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "canceled")
}

fn short_commit(build: &Value) -> String {
    s(build, "commit").chars().take(8).collect()
}

fn took(build: &Value) -> String {
    let started = build["created"].as_i64();
    let end = build["finished"].as_i64().or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64)
    });
    match (started, end) {
        (Some(a), Some(b)) => duration((b - a).max(0) as u64),
        _ => String::new(),
    }
}

fn steps(build: &Value) -> String {
    build["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|step| {
                    let span = match (step["started"].as_i64(), step["finished"].as_i64()) {
                        (Some(a), Some(b)) => duration((b - a).max(0) as u64),
                        _ => "…".to_owned(),
                    };
                    format!("{} ({span})", s(step, "name"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn one(build: Value, color: bool) -> Shown {
    let fields = vec![
        ("Number", s(&build, "number")),
        ("Status", paint_state(&s(&build, "status"), color)),
        ("Commit", s(&build, "commit")),
        ("Message", s(&build, "message")),
        ("Image", s(&build, "image")),
        ("Digest", s(&build, "digest")),
        ("Steps", steps(&build)),
        ("Duration", took(&build)),
        ("Age", age(&build, "created")),
    ];
    Shown::One {
        id: s(&build, "number"),
        fields,
        value: build,
    }
}

/// Runs `lbc build ...`.
pub async fn run(session: &mut Session, cmd: BuildCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        BuildCmd::Ls { service } => {
            let path = format!("{}/builds", session.service_path(&service)?);
            let list = client.get(&path).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let table = Table {
                headers: vec!["NUMBER", "STATUS", "COMMIT", "MESSAGE", "DURATION", "AGE"],
                rows: items
                    .iter()
                    .map(|b| {
                        let message: String = s(b, "message")
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect();
                        vec![
                            s(b, "number"),
                            paint_state(&s(b, "status"), color),
                            short_commit(b),
                            message,
                            took(b),
                            age(b, "created"),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|b| s(b, "number")).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        BuildCmd::Get { service, number } => {
            let path = format!("{}/builds/{number}", session.service_path(&service)?);
            let build = client.get(&path).await?;
            session.out.show(one(build, color))
        }
        BuildCmd::Logs {
            service,
            number,
            follow,
        } => {
            let path = format!("{}/builds/{number}/logs", session.service_path(&service)?);
            if follow {
                let mut socket = client.websocket(&path).await?;
                let result = super::logs::read_stream(&mut socket, write_stdout).await;
                let _ = futures::SinkExt::close(&mut socket).await;
                result
            } else {
                let text = client.get_text(&path).await?;
                write_stdout(text.as_bytes());
                Ok(())
            }
        }
        BuildCmd::Cancel { service, number } => {
            let path = format!("{}/builds/{number}/cancel", session.service_path(&service)?);
            let build = client.post(&path, &json!({})).await?;
            session.out.show(Shown::Message {
                text: format!("Build {number} of {service:?}: {}.", s(&build, "status")),
                value: build,
            })
        }
    }
}

fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// `lbc deploy SERVICE`: starts a build, shows its steps (stderr) and log
/// (stdout) as they come, and waits until the service runs the new image.
/// Fails (exit 1) when the build fails or is canceled, or the new version
/// does not come up in time.
pub async fn deploy(
    session: &mut Session,
    service: &str,
    commit: Option<String>,
    detach: bool,
    timeout: u64,
) -> Result<()> {
    let path = session.service_path(service)?;
    let client = session.client()?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let build = client
        .post(&format!("{path}/builds"), &json!({"commit": commit}))
        .await?;
    let number = build["number"]
        .as_u64()
        .ok_or_else(|| Error::server("the build answer holds no number"))?;
    let out = session.out;
    if detach {
        return out.show(Shown::Message {
            text: format!("Build {number} of {service:?} queued: `lbc build logs -f {service} {number}` follows it."),
            value: build,
        });
    }
    out.note(&format!("==> Build {number} of {service:?} queued"));

    // The log, streamed while the steps are polled.
    let log_client = client.clone();
    let log_path = format!("{path}/builds/{number}/logs");
    let log_task = tokio::spawn(async move {
        match log_client.websocket(&log_path).await {
            Ok(mut socket) => super::logs::read_stream(&mut socket, write_stdout).await,
            Err(e) => Err(e),
        }
    });

    let build_path = format!("{path}/builds/{number}");
    let mut seen: HashSet<String> = HashSet::new();
    let build = loop {
        let build = client.get(&build_path).await?;
        for step in build["steps"].as_array().into_iter().flatten() {
            let name = s(step, "name");
            if seen.insert(name.clone()) && !is_final(&name) {
                out.note(&format!("==> {}", step_title(&name)));
            }
        }
        if is_final(&s(&build, "status")) {
            break build;
        }
        if Instant::now() > deadline {
            log_task.abort();
            return Err(Error::failed(format!(
                "build {number} still {} after {timeout} s: gave up following it (it goes on)",
                s(&build, "status")
            )));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    // The log stream ends with the build; give it a moment to drain.
    match tokio::time::timeout(Duration::from_secs(5), log_task).await {
        Ok(Ok(Err(e))) => out.note(&format!("(the build log could not be followed: {e})")),
        Ok(_) => {}
        Err(_) => {}
    }
    let status = s(&build, "status");
    if status != "succeeded" {
        let message = s(&build, "message");
        let why = if message.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::client::one_line(&message))
        };
        return Err(Error::failed(format!("build {number} {status}{why}")));
    }
    out.note(&format!(
        "==> Build {number} succeeded in {} ({}): {}",
        took(&build),
        steps(&build),
        s(&build, "image")
    ));
    let replicas = wait_running(&client, &path, &build, deadline).await?;
    out.show(Shown::Message {
        text: format!("==> Deployed build {number}: {replicas} running."),
        value: build,
    })
}

fn step_title(name: &str) -> String {
    let mut title = name.replace('_', " ");
    if let Some(first) = title.get(..1) {
        title = first.to_uppercase() + &title[1..];
    }
    title
}

/// Waits until the service's spec names the build's image and every wanted
/// replica of the current generation runs; answers `"N/N replicas"`.
async fn wait_running(
    client: &Client,
    path: &str,
    build: &Value,
    deadline: Instant,
) -> Result<String> {
    let digest = s(build, "digest");
    let image = s(build, "image");
    loop {
        let service = client.get(path).await?;
        let spec_image = s(&service["spec"], "image");
        let applied = (!digest.is_empty() && spec_image.contains(&digest))
            || (!image.is_empty() && spec_image == image);
        if applied {
            let generation = service["status"]["generation"].as_u64().unwrap_or(0);
            let desired = service["status"]["replicas"]["desired"]
                .as_u64()
                .unwrap_or(0);
            let list = client.get(&format!("{path}/replicas")).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let current: Vec<&Value> = items
                .iter()
                .filter(|r| r["generation"].as_u64() == Some(generation))
                .collect();
            let running = current
                .iter()
                .filter(|r| s(r, "state") == "running")
                .count() as u64;
            if running >= desired {
                return Ok(format!("{running}/{desired} replicas"));
            }
            // A new replica that keeps crashing halts the rollout.
            if let Some(bad) = current.iter().find(|r| {
                matches!(s(r, "state").as_str(), "failed" | "exited")
                    && r["restarts"].as_u64().unwrap_or(0) >= 2
            }) {
                return Err(Error::failed(format!(
                    "the new version does not run: replica {} is {} ({})",
                    s(bad, "id"),
                    s(bad, "state"),
                    s(bad, "message")
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                Kind::Failed,
                if applied {
                    "the new version did not reach its replica count in time".to_owned()
                } else {
                    format!("the service does not run the new image {image:?} yet")
                },
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
