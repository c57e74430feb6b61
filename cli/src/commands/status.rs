//! `lbc status [SERVICE]`: what runs, as it is. For one service: its state
//! with why, the live version (the build whose image the running replicas
//! run) and the one coming, the rollout's progress, each replica with its
//! node, state and restarts, the URLs, and the scheduler's reason for a
//! pending replica. Without SERVICE: one line per service of the project.
//!
//! The live and coming lines name the deploy records the API marks
//! (`status.live`, `status.coming`: generation, cause, who, outcome).
//!
//! The state is the API's computed `status.label` and `status.detail`
//! (the words the web UI shows). An API that does not compute them yet gets
//! the same words worked out here from the replicas ([`fallback`]), and the
//! output says so.
//!
//! [`Snapshot`] and [`Rollout`] are also what `lbc deploy` follows.

use std::collections::HashMap;

use lb_model::views::{List, NodeView, ReplicaView, ServiceView};
use lb_model::{Build, ReplicaState, ServiceState};
use serde_json::{json, Value};

use crate::client::{segment, typed, Client};
use crate::error::Result;
use crate::output::{fields_and_table, paint_state, text, word, Shown, Table};
use crate::session::Session;

use super::logs::short_id;

/// A replica as lbc reads it: the view, and the last exit of APIs that
/// report it.
#[derive(Debug, Clone, Default)]
pub struct Rep {
    /// Id.
    pub id: String,
    /// Node id, once placed.
    pub node: Option<String>,
    /// State.
    pub state: ReplicaState,
    /// The service generation it runs.
    pub generation: u64,
    /// Its image.
    pub image: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it is where it is (for a pending one: the scheduler's reason).
    pub message: String,
    /// Its last exit code, when the API says.
    pub exit_code: Option<i64>,
    /// Whether its last exit was an out-of-memory kill.
    pub oom_killed: bool,
}

impl Rep {
    fn of(view: ReplicaView, value: &Value) -> Self {
        Self {
            exit_code: value["exit_code"].as_i64(),
            oom_killed: value["oom_killed"].as_bool().unwrap_or(false),
            id: view.id,
            node: view.node,
            state: view.state,
            generation: view.generation,
            image: view.image,
            restarts: view.restarts,
            message: view.message,
        }
    }

    /// "exited with code 1 (restarted 3 times): message".
    fn crash_words(&self) -> String {
        let mut out = match (self.oom_killed, self.exit_code) {
            (true, Some(code)) => format!("killed: out of memory (exit code {code})"),
            (true, None) => "killed: out of memory".to_owned(),
            (false, Some(code)) => format!("exited with code {code}"),
            (false, None) => word(&self.state),
        };
        match self.restarts {
            0 => {}
            1 => out.push_str(", restarted once"),
            n => out.push_str(&format!(", restarted {n} times")),
        }
        if !self.message.is_empty() {
            out.push_str(&format!(": {}", crate::client::one_line(&self.message)));
        }
        out
    }
}

/// How the replicas of a service's current generation are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The generation replicas should run.
    pub generation: u64,
    /// Replicas wanted.
    pub desired: u32,
    /// Of the current generation, running.
    pub ready: u32,
    /// Of older generations, not gone yet.
    pub old: u32,
    /// The first pending replica of the current generation and why it waits.
    pub pending: Option<(String, String)>,
    /// The first crashing or failing replica of the current generation and
    /// how it ended.
    pub crashing: Option<(String, String)>,
    /// Of the current generation, starting (placed, not running yet).
    pub starting: u32,
}

impl Rollout {
    /// The rollout of `generation` among `replicas`.
    pub fn of(generation: u64, desired: u32, replicas: &[Rep]) -> Self {
        let mut r = Rollout {
            generation,
            desired,
            ..Default::default()
        };
        for rep in replicas {
            if rep.generation != generation {
                r.old += 1;
                continue;
            }
            match rep.state {
                ReplicaState::Running => r.ready += 1,
                ReplicaState::Pending if rep.node.is_none() => {
                    if r.pending.is_none() {
                        let why = if rep.message.is_empty() {
                            "not placed yet".to_owned()
                        } else {
                            crate::client::one_line(&rep.message)
                        };
                        r.pending = Some((short_id(&rep.id), why));
                    }
                }
                ReplicaState::Pending | ReplicaState::Starting => r.starting += 1,
                ReplicaState::Failed | ReplicaState::Exited => {
                    if r.crashing.is_none() {
                        r.crashing = Some((short_id(&rep.id), rep.crash_words()));
                    }
                }
                ReplicaState::Stopping => {}
            }
        }
        r
    }

    /// Whether every wanted replica of the current generation runs.
    pub fn done(&self) -> bool {
        self.ready >= self.desired
    }

    /// "1/2 replicas of generation 4 running, 1 old replica left; replica
    /// ab12cd pending: no node has 2048 MiB free".
    pub fn progress(&self) -> String {
        let mut out = format!(
            "{}/{} replicas of generation {} running",
            self.ready, self.desired, self.generation
        );
        if self.starting > 0 {
            out.push_str(&format!(", {} starting", self.starting));
        }
        match self.old {
            0 => {}
            1 => out.push_str(", 1 old replica left"),
            n => out.push_str(&format!(", {n} old replicas left")),
        }
        if let Some((id, why)) = &self.pending {
            out.push_str(&format!("; replica {id} pending: {why}"));
        }
        if let Some((id, how)) = &self.crashing {
            out.push_str(&format!("; replica {id} {how}"));
        }
        out
    }
}

/// The state and its why, worked out from the replicas for an API that does
/// not compute them (the words of the API's `status.label`).
pub fn fallback(paused: bool, has_image: bool, r: &Rollout) -> (String, String) {
    let pending = || {
        r.pending
            .as_ref()
            .map(|(id, why)| format!("replica {id} pending: {why}"))
    };
    let crash = || {
        r.crashing
            .as_ref()
            .map(|(id, how)| format!("replica {id} {how}"))
    };
    if paused {
        return ("paused".into(), String::new());
    }
    if !has_image {
        return (
            "no image yet".into(),
            "no build has succeeded yet: `lbc deploy` builds one".into(),
        );
    }
    if r.desired == 0 {
        return ("stopped".into(), "scaled to 0 replicas".into());
    }
    if r.done() {
        return ("running".into(), String::new());
    }
    let deploying = format!("deploying {}/{}", r.ready, r.desired);
    if r.ready == 0 && r.crashing.is_some() && r.pending.is_none() && r.starting == 0 {
        return ("crash_looping".into(), crash().unwrap_or_default());
    }
    if r.ready == 0 && r.old == 0 && r.pending.is_some() && r.starting == 0 {
        return ("pending".into(), pending().unwrap_or_default());
    }
    if let Some(why) = crash() {
        return ("degraded".into(), why);
    }
    if r.old > 0 || r.starting > 0 {
        return (deploying, pending().unwrap_or_default());
    }
    (
        "degraded".into(),
        pending().unwrap_or_else(|| "some replicas do not run".into()),
    )
}

/// A service with its replicas, read together.
pub struct Snapshot {
    /// The service's view.
    pub service: ServiceView,
    /// Its replicas as the API sent them.
    pub replicas_value: Value,
    /// Its replicas.
    pub replicas: Vec<Rep>,
    /// The rollout of its current generation.
    pub rollout: Rollout,
    /// The state's words (`deploying 1/2`, `crash_looping`).
    pub label: String,
    /// Why.
    pub detail: String,
    /// Whether the label is worked out here (the API did not send one).
    pub computed: bool,
}

impl Snapshot {
    /// Reads the service at `path` and its replicas.
    pub async fn read(client: &Client, path: &str) -> Result<Self> {
        let value = client.get(path).await?;
        let replicas_value = client.get(&format!("{path}/replicas")).await?;
        Self::of(value, replicas_value)
    }

    fn of(value: Value, replicas_value: Value) -> Result<Self> {
        let service: ServiceView = typed(&value)?;
        let views = typed::<List<ReplicaView>>(&replicas_value)?.items;
        let replicas: Vec<Rep> = views
            .into_iter()
            .enumerate()
            .map(|(i, view)| Rep::of(view, &replicas_value["items"][i]))
            .collect();
        let desired = if service.spec.state == ServiceState::Paused {
            0
        } else {
            service.spec.replicas
        };
        let rollout = Rollout::of(service.status.generation, desired, &replicas);
        let api_label = value["status"]["label"].as_str().unwrap_or_default();
        let (label, detail, computed) = if api_label.is_empty() {
            let has_image = service.spec.image.as_deref().is_some_and(|i| !i.is_empty());
            let (label, detail) = fallback(
                service.spec.state == ServiceState::Paused,
                has_image,
                &rollout,
            );
            (label, detail, true)
        } else {
            let detail = value["status"]["detail"].as_str().unwrap_or_default();
            (api_label.to_owned(), detail.to_owned(), false)
        };
        Ok(Self {
            service,
            replicas_value,
            replicas,
            rollout,
            label,
            detail,
            computed,
        })
    }

    /// Why the rollout halted, when it did.
    pub fn halted(&self) -> Option<String> {
        self.service
            .status
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
    }

    /// "deploying 1/2" with its word painted.
    fn painted_label(&self, color: bool) -> String {
        let word = self.label.split_whitespace().next().unwrap_or_default();
        paint_state(word, color) + &self.label[word.len()..]
    }

    /// "deploying 1/2 (replica ab12cd pending: ...)" (painted).
    fn state_line(&self, color: bool) -> String {
        let mut out = self.painted_label(color);
        if !self.detail.is_empty() {
            out.push_str(&format!(" ({})", self.detail));
        }
        if self.computed {
            out.push_str(" [worked out by lbc from the replicas]");
        }
        out
    }
}

/// Runs `lbc status [SERVICE]`.
pub async fn run(session: &mut Session, service: Option<&str>) -> Result<()> {
    match service {
        Some(service) => one(session, service).await,
        None => all(session).await,
    }
}

/// The build a replica image came from: the build whose digest it names.
fn build_of<'a>(builds: &'a [Build], image: &str) -> Option<&'a Build> {
    builds.iter().find(|b| {
        b.digest
            .as_deref()
            .is_some_and(|d| !d.is_empty() && image.contains(d))
            || b.image.as_deref().is_some_and(|i| i == image)
    })
}

/// "build 3 (sha256:0123456789ab)", or the image when no build made it.
fn version(builds: &[Build], image: &str) -> String {
    match build_of(builds, image) {
        Some(b) => {
            let digest: String = text(&b.digest).chars().take(19).collect();
            if digest.is_empty() {
                format!("build {}", b.number)
            } else {
                format!("build {} ({digest})", b.number)
            }
        }
        None => image.to_owned(),
    }
}

async fn one(session: &mut Session, service: &str) -> Result<()> {
    let (project, name) = session.service_ref(service)?;
    let path = session.service_path(service)?;
    let client = session.client()?;
    let snap = Snapshot::read(&client, &path).await?;
    let color = session.out.color;
    // Builds name versions; nodes name nodes (the node list is the admin's:
    // others see node ids). A failure of either costs only the names.
    let builds = match client.get(&format!("{path}/builds")).await {
        Ok(list) => typed::<List<Build>>(&list)
            .map(|l| l.items)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut nodes: HashMap<String, String> = HashMap::new();
    if let Ok(list) = client.get("/nodes").await {
        if let Ok(list) = typed::<List<NodeView>>(&list) {
            nodes.extend(list.items.into_iter().map(|n| (n.id, n.name)));
        }
    }
    let spec_image = text(&snap.service.spec.image);
    // Live: what running replicas run, newest generation first.
    let mut running: Vec<&Rep> = snap
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Running)
        .collect();
    running.sort_by_key(|r| std::cmp::Reverse(r.generation));
    let mut live: Vec<String> = Vec::new();
    for r in &running {
        let v = version(&builds, &r.image);
        if !live.contains(&v) {
            live.push(v);
        }
    }
    let coming = version(&builds, &spec_image);
    let rollout = &snap.rollout;
    let rollout_line = if rollout.done() && rollout.old == 0 {
        format!(
            "complete: {}/{} replicas of generation {} running",
            rollout.ready, rollout.desired, rollout.generation
        )
    } else {
        rollout.progress()
    };
    let pending: Vec<String> = snap
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Pending && r.node.is_none())
        .map(|r| {
            format!(
                "{}: {}",
                short_id(&r.id),
                if r.message.is_empty() {
                    "not placed yet"
                } else {
                    &r.message
                }
            )
        })
        .collect();
    // The deploy records the API names live and coming, when it keeps them.
    let live_deploy = snap.service.status.live.as_ref();
    let coming_deploy = snap.service.status.coming.as_ref();
    let live_versions = if live.is_empty() {
        "nothing runs".to_owned()
    } else {
        live.join(", ")
    };
    let mut fields = vec![
        ("Service", format!("{project}/{name}")),
        ("State", snap.state_line(color)),
        (
            "Live",
            match live_deploy {
                Some(d) => format!(
                    "{}, rolled out{}: {live_versions}",
                    super::deploys::named(d),
                    d.finished
                        .map(|t| format!(" {} ago", crate::output::age(t)))
                        .unwrap_or_default()
                ),
                None => live_versions,
            },
        ),
    ];
    match coming_deploy {
        Some(d) => fields.push((
            "Coming",
            format!(
                "{}, {}: {coming}",
                super::deploys::named(d),
                super::deploys::outcome_words(d)
            ),
        )),
        None if live.first() != Some(&coming) && !spec_image.is_empty() => {
            fields.push(("Coming", coming.clone()));
        }
        None => {}
    }
    fields.push(("Rollout", rollout_line.clone()));
    if let Some(halted) = snap.halted() {
        fields.push(("Halted", halted));
    }
    fields.push(("Pending", pending.join("; ")));
    fields.push(("URLs", snap.service.urls.join(" ")));
    let table = Table {
        headers: vec![
            "REPLICA", "NODE", "STATE", "RESTARTS", "GEN", "VERSION", "MESSAGE",
        ],
        rows: snap
            .replicas
            .iter()
            .map(|r| {
                let node = text(&r.node);
                let mut message = crate::client::one_line(&r.message);
                if let Some(code) = r.exit_code.filter(|_| r.state != ReplicaState::Running) {
                    message = format!(
                        "exit code {code}{}",
                        if r.oom_killed { " (OOM)" } else { "" }
                    ) + if message.is_empty() { "" } else { ": " }
                        + &message;
                }
                vec![
                    short_id(&r.id),
                    nodes.get(&node).cloned().unwrap_or(node),
                    paint_state(&word(&r.state), color),
                    r.restarts.to_string(),
                    r.generation.to_string(),
                    version(&builds, &r.image),
                    message,
                ]
            })
            .collect(),
    };
    let value = json!({
        "service": format!("{project}/{name}"),
        "state": snap.label,
        "detail": snap.detail,
        "computed_by_lbc": snap.computed,
        "live": live,
        "coming": coming,
        "live_deploy": live_deploy,
        "coming_deploy": coming_deploy,
        "rollout": {
            "generation": rollout.generation,
            "desired": rollout.desired,
            "running": rollout.ready,
            "starting": rollout.starting,
            "old": rollout.old,
            "text": rollout_line,
        },
        "halted": snap.halted(),
        "pending": pending,
        "urls": snap.service.urls,
        "replicas": snap.replicas_value["items"],
    });
    session.out.show(Shown::Message {
        text: fields_and_table(&fields, &table, color),
        value,
    })
}

async fn all(session: &mut Session) -> Result<()> {
    let project = session.project()?;
    let client = session.client()?;
    let path = format!("/projects/{}/services", segment(&project));
    let list = client.get(&format!("{path}?limit=1000")).await?;
    let values = list["items"].as_array().cloned().unwrap_or_default();
    // One replica list per service, read together (only an API without the
    // computed state needs them, but they also give the pending reasons).
    let reads = values.into_iter().map(|value| {
        let client = client.clone();
        let name = value["name"].as_str().unwrap_or_default().to_owned();
        let path = format!("{path}/{}", segment(&name));
        async move {
            let replicas = client.get(&format!("{path}/replicas")).await?;
            Snapshot::of(value, replicas)
        }
    });
    let snaps = futures::future::try_join_all(reads).await?;
    let color = session.out.color;
    let computed = snaps.iter().any(|s| s.computed);
    let table = Table {
        headers: vec!["SERVICE", "STATE", "READY", "WHY", "URL"],
        rows: snaps
            .iter()
            .map(|s| {
                vec![
                    s.service.name.clone(),
                    s.painted_label(color),
                    format!("{}/{}", s.rollout.ready, s.rollout.desired),
                    s.detail.clone(),
                    s.service.urls.first().cloned().unwrap_or_default(),
                ]
            })
            .collect(),
    };
    if computed && session.out.format == crate::output::Format::Table && !session.out.quiet {
        session
            .out
            .note("(the API computes no state: lbc worked it out from the replicas)");
    }
    let value = json!({
        "project": project,
        "items": snaps.iter().map(|s| json!({
            "service": s.service.name,
            "state": s.label,
            "detail": s.detail,
            "computed_by_lbc": s.computed,
            "running": s.rollout.ready,
            "desired": s.rollout.desired,
            "urls": s.service.urls,
        })).collect::<Vec<_>>(),
    });
    let ids = snaps.iter().map(|s| s.service.id.clone()).collect();
    session.out.show(Shown::List { value, table, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(id: &str, generation: u64, state: ReplicaState, message: &str) -> Rep {
        Rep {
            id: id.into(),
            node: (state != ReplicaState::Pending).then(|| "n1".into()),
            state,
            generation,
            message: message.into(),
            ..Default::default()
        }
    }

    fn check(paused: bool, image: bool, desired: u32, replicas: &[Rep], expect: (&str, &str)) {
        let r = Rollout::of(2, desired, replicas);
        let (label, detail) = fallback(paused, image, &r);
        assert_eq!((label.as_str(), detail.as_str()), expect, "{replicas:?}");
    }

    #[test]
    fn states_from_replicas() {
        use ReplicaState::*;
        let no_room = "no node has 4096 MiB free; the most free is 900 MiB on n1";
        check(true, true, 0, &[], ("paused", ""));
        check(
            false,
            false,
            1,
            &[],
            (
                "no image yet",
                "no build has succeeded yet: `lbc deploy` builds one",
            ),
        );
        check(false, true, 0, &[], ("stopped", "scaled to 0 replicas"));
        check(
            false,
            true,
            1,
            &[rep("r1", 2, Running, "")],
            ("running", ""),
        );
        check(
            false,
            true,
            1,
            &[rep("r1", 2, Pending, no_room)],
            ("pending", &format!("replica r1 pending: {no_room}")),
        );
        check(
            false,
            true,
            2,
            &[
                rep("r1", 1, Running, ""),
                rep("r2", 2, Running, ""),
                rep("r3", 2, Pending, no_room),
            ],
            ("deploying 1/2", &format!("replica r3 pending: {no_room}")),
        );
        check(
            false,
            true,
            1,
            &[rep("r1", 2, Starting, "")],
            ("deploying 0/1", ""),
        );
        let mut crashed = rep("r1", 2, Exited, "");
        crashed.exit_code = Some(3);
        crashed.restarts = 4;
        check(
            false,
            true,
            1,
            &[crashed.clone()],
            (
                "crash_looping",
                "replica r1 exited with code 3, restarted 4 times",
            ),
        );
        check(
            false,
            true,
            2,
            &[rep("r2", 2, Running, ""), crashed],
            (
                "degraded",
                "replica r1 exited with code 3, restarted 4 times",
            ),
        );
        check(
            false,
            true,
            2,
            &[rep("r2", 2, Running, ""), rep("r3", 2, Pending, no_room)],
            ("degraded", &format!("replica r3 pending: {no_room}")),
        );
    }

    #[test]
    fn progress_lines() {
        use ReplicaState::*;
        let r = Rollout::of(
            4,
            2,
            &[
                rep("01AAAAAAAAAAAAAAAAAAAB12CD", 3, Running, ""),
                rep("01AAAAAAAAAAAAAAAAAAAEF34G", 4, Running, ""),
                rep(
                    "01AAAAAAAAAAAAAAAAAAAXY56Z",
                    4,
                    Pending,
                    "no node has 0.5 CPUs free",
                ),
            ],
        );
        assert!(!r.done());
        assert_eq!(
            r.progress(),
            "1/2 replicas of generation 4 running, 1 old replica left; \
             replica xy56z pending: no node has 0.5 CPUs free"
                .replace("xy56z", &short_id("01AAAAAAAAAAAAAAAAAAAXY56Z"))
        );
    }
}
