//! `lbc run`, `lbc job ls | show | cancel` and `lbc cron ls`: one-off jobs
//! of a service and its cron schedules.

use std::io::Write;
use std::time::Duration;

use lb_model::views::List;
use lb_model::{Job, JobState};
use reqwest::Method;
use serde_json::{json, Value};

use crate::args::{CronCmd, JobCmd, RunArgs};
use crate::client::{typed, Client};
use crate::error::{Error, Result};
use crate::output::{age, duration, paint_state, Shown, Table};
use crate::session::Session;

/// How often a followed job is read.
const POLL: Duration = Duration::from_millis(500);

fn took(job: &Job) -> String {
    match (job.started, job.finished) {
        (Some(start), Some(end)) => duration((end - start).max(0) as u64),
        (Some(start), None) => duration((lb_model::now() - start).max(0) as u64),
        _ => String::new(),
    }
}

fn code(job: &Job) -> String {
    job.exit_code.map(|c| c.to_string()).unwrap_or_default()
}

fn one(value: Value, color: bool) -> Result<Shown> {
    let job: Job = typed(&value)?;
    let mut fields = vec![
        ("Id", job.id.clone()),
        ("State", paint_state(job.state.as_str(), color)),
        ("Command", job.command.join(" ")),
        ("Exit code", code(&job)),
        ("Message", job.message.clone()),
        ("Schedule", job.schedule.clone().unwrap_or_default()),
        ("Node", job.node.clone().unwrap_or_default()),
        ("Duration", took(&job)),
        ("Age", age(job.created)),
    ];
    if !job.logs.is_empty() {
        fields.push(("Output", job.logs.clone()));
    }
    Ok(Shown::One {
        id: job.id.clone(),
        fields,
        value,
    })
}

fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// `lbc run SERVICE -- CMD...`: starts a job, follows its state (stderr),
/// prints its output (stdout) when it ends and exits with its exit code;
/// a job that ends without one (cancelled before it ran, its node lost,
/// its image not pulled) fails with its reason.
pub async fn run(session: &mut Session, args: RunArgs) -> Result<()> {
    let path = format!("{}/jobs", session.service_path(&args.service)?);
    let client = session.client()?;
    let out = session.out;
    let body = json!({"command": args.command, "timeout": args.timeout});
    let value = client.post(&path, &body).await?;
    let job: Job = typed(&value)?;
    if args.detach {
        return out.show(Shown::Message {
            text: format!(
                "Job {} started: `lbc job show {} {}` shows it.",
                job.id, args.service, job.id
            ),
            value,
        });
    }
    out.note(&format!("==> Job {} pending", job.id));
    let job_path = format!("{path}/{}", job.id);
    // Until it runs (or is already over); then its output as it comes.
    let started = follow(&client, &job_path, true, |state| {
        out.note(&format!("==> {}", state.as_str()));
    })
    .await?;
    let mut streamed = false;
    if started.state == JobState::Running {
        if let Ok(mut socket) = client.websocket(&format!("{job_path}/logs")).await {
            streamed = super::logs::read_stream(&mut socket, |bytes| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            })
            .await
            .is_ok();
        }
    }
    let job = follow(&client, &job_path, false, |_| {}).await?;
    if !streamed {
        write_stdout(&job.logs);
    }
    match (job.state, job.exit_code) {
        (JobState::Succeeded, _) => Ok(()),
        (_, Some(code)) => {
            out.note(&format!("==> {} ({})", job.state.as_str(), job.message));
            Err(Error::Exit(code.clamp(1, 255) as i32))
        }
        _ => Err(Error::failed(format!(
            "job {} {}: {}",
            job.id,
            job.state.as_str(),
            job.message
        ))),
    }
}

/// Reads the job until it is over (or, with `start`, until it runs),
/// telling each new state.
async fn follow(
    client: &Client,
    path: &str,
    start: bool,
    mut tell: impl FnMut(JobState),
) -> Result<Job> {
    let mut last = JobState::Pending;
    loop {
        let job: Job = typed(&client.get(path).await?)?;
        if job.state != last {
            last = job.state;
            if !job.state.is_final() {
                tell(job.state);
            }
        }
        if job.state.is_final() || (start && job.state == JobState::Running) {
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `lbc job ...`.
pub async fn job(session: &mut Session, cmd: JobCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        JobCmd::Ls { service } => {
            let path = format!("{}/jobs", session.service_path(&service)?);
            let list = client.get(&path).await?;
            let items = typed::<List<Job>>(&list)?.items;
            let table = Table {
                headers: vec![
                    "ID", "STATE", "CODE", "COMMAND", "SCHEDULE", "DURATION", "AGE",
                ],
                rows: items
                    .iter()
                    .map(|j| {
                        let command: String = j.command.join(" ").chars().take(40).collect();
                        vec![
                            j.id.clone(),
                            paint_state(j.state.as_str(), color),
                            code(j),
                            command,
                            j.schedule.clone().unwrap_or_default(),
                            took(j),
                            age(j.created),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|j| j.id.clone()).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        JobCmd::Show { service, id } => {
            let path = format!("{}/jobs/{}", session.service_path(&service)?, id);
            let job = client.get(&path).await?;
            session.out.show(one(job, color)?)
        }
        JobCmd::Cancel { service, id } => {
            let path = format!("{}/jobs/{}", session.service_path(&service)?, id);
            let value = client.call(Method::DELETE, &path, None).await?;
            let job: Job = typed(&value)?;
            let what = if job.state.is_final() {
                job.state.as_str()
            } else {
                "stopping"
            };
            session.out.show(Shown::Message {
                text: format!("Job {id}: {what}."),
                value,
            })
        }
    }
}

/// A schedule as `GET .../schedules` answers it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ScheduleView {
    name: String,
    cron: String,
    timezone: String,
    concurrency: String,
    next_run: Option<i64>,
    skipped: Option<String>,
    last_job: Option<Job>,
}

/// When `at` (Unix seconds) comes, from now.
fn until(at: i64) -> String {
    format!("in {}", duration((at - lb_model::now()).max(0) as u64))
}

/// Runs `lbc cron ...`.
pub async fn cron(session: &mut Session, cmd: CronCmd) -> Result<()> {
    let client = session.client()?;
    let color = session.out.color;
    match cmd {
        CronCmd::Ls { service } => {
            let path = format!("{}/schedules", session.service_path(&service)?);
            let list = client.get(&path).await?;
            let items = typed::<List<ScheduleView>>(&list)?.items;
            let table = Table {
                headers: vec![
                    "NAME",
                    "CRON",
                    "TIMEZONE",
                    "CONCURRENCY",
                    "NEXT",
                    "LAST",
                    "LAST RESULT",
                ],
                rows: items
                    .iter()
                    .map(|s| {
                        let (last, result) = match (&s.last_job, &s.skipped) {
                            (_, Some(why)) => (String::new(), format!("skipped: {why}")),
                            (Some(j), None) => (
                                age(j.created),
                                match j.exit_code {
                                    Some(c) => format!("{} ({c})", j.state.as_str()),
                                    None => j.state.as_str().to_owned(),
                                },
                            ),
                            (None, None) => (String::new(), String::new()),
                        };
                        vec![
                            s.name.clone(),
                            s.cron.clone(),
                            s.timezone.clone(),
                            s.concurrency.clone(),
                            s.next_run.map(until).unwrap_or_default(),
                            last,
                            paint_state(&result, color),
                        ]
                    })
                    .collect(),
            };
            let ids = items.iter().map(|s| s.name.clone()).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
    }
}
