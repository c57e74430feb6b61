//! `lbc build ls | get | logs | cancel` and `lbc deploy`: start a build,
//! follow its steps and log, then wait until the new version runs.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use lb_model::views::List;
use lb_model::{Build, BuildStatus, Deploy, DeployOutcome, ReplicaState};
use serde_json::{json, Value};

use crate::args::BuildCmd;
use crate::client::{typed, Client};
use crate::error::{Error, Kind, Result};
use crate::output::{age, duration, paint_state, text, word, Shown, Table};
use crate::session::Session;

fn short_commit(build: &Build) -> String {
    text(&build.commit).chars().take(8).collect()
}

fn took(build: &Build) -> String {
    let end = build.finished.unwrap_or_else(lb_model::now);
    duration((end - build.created).max(0) as u64)
}

fn steps(build: &Build) -> String {
    build
        .steps
        .iter()
        .map(|step| {
            let span = match step.finished {
                Some(end) => duration((end - step.started).max(0) as u64),
                None => "…".to_owned(),
            };
            format!("{} ({span})", word(&step.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn one(value: Value, color: bool) -> Result<Shown> {
    let build: Build = typed(&value)?;
    let fields = vec![
        ("Number", build.number.to_string()),
        ("Status", paint_state(&word(&build.status), color)),
        ("Commit", text(&build.commit)),
        ("Message", build.message.clone()),
        ("Image", text(&build.image)),
        ("Digest", text(&build.digest)),
        ("Steps", steps(&build)),
        ("Duration", took(&build)),
        ("Age", age(build.created)),
    ];
    Ok(Shown::One {
        id: build.number.to_string(),
        fields,
        value,
    })
}

/// Runs `lbc build ...`.
pub async fn run(session: &mut Session, cmd: BuildCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        BuildCmd::Ls { service } => {
            let path = format!("{}/builds", session.service_path(&service)?);
            let list = client.get(&path).await?;
            let items = typed::<List<Build>>(&list)?.items;
            let table = Table {
                headers: vec!["NUMBER", "STATUS", "COMMIT", "MESSAGE", "DURATION", "AGE"],
                rows: items
                    .iter()
                    .map(|b| {
                        let message: String = b
                            .message
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect();
                        vec![
                            b.number.to_string(),
                            paint_state(&word(&b.status), color),
                            short_commit(b),
                            message,
                            took(b),
                            age(b.created),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|b| b.number.to_string()).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        BuildCmd::Get { service, number } => {
            let path = format!("{}/builds/{number}", session.service_path(&service)?);
            let build = client.get(&path).await?;
            session.out.show(one(build, color)?)
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
            let status = word(&typed::<Build>(&build)?.status);
            session.out.show(Shown::Message {
                text: format!("Build {number} of {service:?}: {status}."),
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
    let number = typed::<Build>(&build)
        .map_err(|_| Error::server("the build answer holds no number"))?
        .number;
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
    let (build, value) = loop {
        let value = client.get(&build_path).await?;
        let build: Build = typed(&value)?;
        for step in &build.steps {
            let name = word(&step.name);
            if seen.insert(name.clone()) && !step.name.is_final() {
                out.note(&format!("==> {}", step_title(&name)));
            }
        }
        if build.status.is_final() {
            break (build, value);
        }
        if Instant::now() > deadline {
            log_task.abort();
            return Err(Error::failed(format!(
                "build {number} still {} after {timeout} s: gave up following it (it goes on)",
                word(&build.status)
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
    if build.status != BuildStatus::Succeeded {
        let why = if build.message.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::client::one_line(&build.message))
        };
        let status = word(&build.status);
        return Err(Error::failed(format!("build {number} {status}{why}")));
    }
    if let Some(stack) = &build.stack {
        out.note(&format!(
            "==> Build {number} read {} in {}",
            stack.file,
            took(&build)
        ));
        return wait_applied(&client, &build_path, number, deadline, timeout, out).await;
    }
    out.note(&format!(
        "==> Build {number} succeeded in {} ({}): {}",
        took(&build),
        steps(&build),
        text(&build.image)
    ));
    let done = wait_deployed(&client, &path, &build, deadline, timeout, out).await?;
    out.show(Shown::Message {
        text: format!("==> Deployed build {number}: {done}."),
        value,
    })
}

/// Whether `deploy` is the one the builder started for `build`: its cause
/// names the build (`build #3`, `build #3 (commit abc1234)`), or its image
/// holds the build's digest.
fn deploy_of_build(deploy: &Deploy, build: &Build) -> bool {
    let cause = format!("build #{}", build.number);
    let digest = text(&build.digest);
    deploy.cause == cause
        || deploy.cause.starts_with(&format!("{cause} "))
        || (!digest.is_empty() && text(&deploy.image).contains(&digest))
}

/// Follows the deploy the build started (its record in the service's
/// deploys) until it settles, with the rollout's progress on stderr (as
/// [`wait_running`]): `rolled_out` answers "generation G rolled out (n/m
/// replicas running)"; `halted` fails with its reason. A deploy
/// `superseded` by a newer one that runs the same image (a spec change on
/// top of the build, e.g. `lbc env set`) is followed in its place; one
/// superseded by another image (a newer build, a rollback) fails saying
/// so. A new version that crash-loops with no old replica to halt on fails
/// as before. Without deploy records (an API that keeps none, or a build
/// whose image the service already ran) the replicas decide
/// ([`wait_running`]).
async fn wait_deployed(
    client: &Client,
    path: &str,
    build: &Build,
    deadline: Instant,
    timeout: u64,
    out: crate::output::Output,
) -> Result<String> {
    let number = build.number;
    let mut following: Option<u64> = None;
    let mut last_line = String::new();
    loop {
        let deploys = match client.get(&format!("{path}/deploys")).await {
            Ok(list) => typed::<List<Deploy>>(&list)?.items,
            Err(Error::Message {
                kind: Kind::NotFound,
                ..
            }) if following.is_none() => {
                // An API without deploy history: the replicas tell.
                let n = wait_running(client, path, build, deadline, timeout, out).await?;
                return Ok(format!("{n} running"));
            }
            Err(e) => return Err(e),
        };
        let snap = super::status::Snapshot::read(client, path).await?;
        let mine = match following {
            Some(g) => deploys.iter().find(|d| d.generation == g),
            None => deploys.iter().find(|d| deploy_of_build(d, build)),
        };
        let Some(deploy) = mine else {
            let digest = text(&build.digest);
            if following.is_none()
                && !digest.is_empty()
                && text(&snap.service.spec.image).contains(&digest)
            {
                // The service already ran this image: no new generation.
                let n = wait_running(client, path, build, deadline, timeout, out).await?;
                return Ok(format!("{n} running"));
            }
            if Instant::now() > deadline {
                return Err(Error::failed(format!(
                    "timed out after {timeout} s: no deploy of build {number} recorded"
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let generation = deploy.generation;
        if following != Some(generation) {
            out.note(&format!("==> Deploying {}", super::deploys::named(deploy)));
            following = Some(generation);
        }
        let rollout = &snap.rollout;
        let progress = if rollout.generation == generation {
            rollout.progress()
        } else {
            format!("the service is at generation {}", rollout.generation)
        };
        match deploy.outcome {
            DeployOutcome::RolledOut if rollout.generation == generation => {
                return Ok(format!(
                    "generation {generation} rolled out ({}/{} replicas running)",
                    rollout.ready, rollout.desired
                ));
            }
            DeployOutcome::RolledOut => {
                return Ok(format!("generation {generation} rolled out"));
            }
            DeployOutcome::Halted => {
                let why = if deploy.reason.is_empty() {
                    snap.halted().unwrap_or_default()
                } else {
                    deploy.reason.clone()
                };
                return Err(Error::failed(format!(
                    "the rollout of generation {generation} halted: {} ({progress}); the old version keeps serving",
                    crate::client::one_line(&why)
                )));
            }
            DeployOutcome::Superseded => {
                let newer = deploys
                    .iter()
                    .filter(|d| d.generation > generation)
                    .min_by_key(|d| d.generation);
                match newer {
                    Some(newer) if newer.image.is_some() && newer.image == deploy.image => {
                        out.note(&format!(
                            "==> Generation {generation} was superseded by {}, which runs the same image: following it",
                            super::deploys::named(newer)
                        ));
                        following = Some(newer.generation);
                        continue;
                    }
                    Some(newer) => {
                        return Err(Error::failed(format!(
                            "build {number}'s deploy (generation {generation}) was superseded by {}, which runs another image",
                            super::deploys::named(newer)
                        )));
                    }
                    None => {
                        return Err(Error::failed(format!(
                            "build {number}'s deploy (generation {generation}) was superseded{}",
                            if deploy.reason.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", crate::client::one_line(&deploy.reason))
                            }
                        )));
                    }
                }
            }
            DeployOutcome::InProgress => {}
        }
        if rollout.generation == generation {
            // A new replica that keeps crashing with no old one to halt
            // on: the record stays in progress, the new version does not run.
            if let Some(why) = crashing(&snap) {
                return Err(Error::failed(format!(
                    "the new version does not run: {why}"
                )));
            }
            let line = format!("==> Rolling out: {progress}");
            if line != last_line {
                out.note(&line);
                last_line = line;
            }
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                Kind::Failed,
                format!("timed out after {timeout} s: {progress}"),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why the current generation's replicas do not run, when they crash-loop.
fn crashing(snap: &super::status::Snapshot) -> Option<String> {
    let rollout = &snap.rollout;
    let crashing = snap.label.starts_with("crash_looping")
        || snap.replicas.iter().any(|r| {
            r.generation == rollout.generation
                && matches!(r.state, ReplicaState::Failed | ReplicaState::Exited)
                && r.restarts >= 2
        });
    crashing.then(|| match &rollout.crashing {
        Some((id, how)) => format!("replica {id} {how}"),
        None => snap.detail.clone(),
    })
}

/// Follows a stack's build until an API server has applied its file:
/// each change and each build it queued on stderr, then the build. Fails
/// with the apply's error.
async fn wait_applied(
    client: &Client,
    build_path: &str,
    number: u64,
    deadline: Instant,
    timeout: u64,
    out: crate::output::Output,
) -> Result<()> {
    loop {
        let value = client.get(build_path).await?;
        let build: Build = typed(&value)?;
        if let Some(applied) = build.applied.as_ref().filter(|a| a.finished.is_some()) {
            for change in &applied.done {
                out.note(&format!("==> {change}"));
            }
            for queued in &applied.builds {
                out.note(&format!("==> build {queued} queued"));
            }
            if let Some(error) = &applied.error {
                return Err(Error::failed(format!(
                    "build {number}'s file was not applied: {}",
                    crate::client::one_line(error)
                )));
            }
            return out.show(Shown::Message {
                text: format!(
                    "==> Applied build {number}: {} change(s), {} build(s) queued (`lbc status` follows them).",
                    applied.done.len(),
                    applied.builds.len()
                ),
                value,
            });
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "timed out after {timeout} s: build {number}'s file is not applied yet"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn step_title(name: &str) -> String {
    let mut title = name.replace('_', " ");
    if let Some(first) = title.get(..1) {
        title = first.to_uppercase() + &title[1..];
    }
    title
}

/// Follows the rollout of the build's image like `kubectl rollout status`:
/// a line on stderr whenever the progress changes (replicas of the new
/// generation running n/m, old ones left, the scheduler's reason for a
/// pending replica), until every wanted replica of the new generation runs.
/// Fails saying why: the rollout halted, the new version crashes, or the
/// deadline passed (with the last pending reason). Answers `"N/N replicas"`.
async fn wait_running(
    client: &Client,
    path: &str,
    build: &Build,
    deadline: Instant,
    timeout: u64,
    out: crate::output::Output,
) -> Result<String> {
    let digest = text(&build.digest);
    let image = text(&build.image);
    let mut last_line = String::new();
    loop {
        let snap = super::status::Snapshot::read(client, path).await?;
        let spec_image = text(&snap.service.spec.image);
        let applied = (!digest.is_empty() && spec_image.contains(&digest))
            || (!image.is_empty() && spec_image == image);
        let rollout = &snap.rollout;
        if applied {
            if rollout.done() {
                return Ok(format!("{}/{} replicas", rollout.ready, rollout.desired));
            }
            if let Some(halted) = snap.halted() {
                return Err(Error::failed(format!(
                    "the rollout halted: {} ({})",
                    crate::client::one_line(&halted),
                    rollout.progress()
                )));
            }
            // A new replica that keeps crashing: the new version does not run.
            if let Some(why) = crashing(&snap) {
                return Err(Error::failed(format!(
                    "the new version does not run: {why}"
                )));
            }
            let line = format!("==> Rolling out: {}", rollout.progress());
            if line != last_line {
                out.note(&line);
                last_line = line;
            }
        }
        if Instant::now() > deadline {
            let message = if applied {
                format!("timed out after {timeout} s: {}", rollout.progress())
            } else {
                format!(
                    "timed out after {timeout} s: the service does not run the new image {image:?} yet"
                )
            };
            return Err(Error::new(Kind::Failed, message));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
