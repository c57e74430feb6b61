//! A service's state as the user should read it, computed from what is
//! (its replicas as placed and reported, and its rollout), never from what
//! was asked alone: `deploying n/m`, `running`, `degraded`, `crash_looping`,
//! `pending`, `paused`, `stopped` or `no image yet`, with a detail saying
//! why. The API answers it in a service's `status`; the web UI and `lbc`
//! show the same words.
//!
//! Pure: the caller passes the replicas and the time.

use serde::{Deserialize, Serialize};

use crate::{Health, Replica, ReplicaState, ReplicaStatus, ServiceSpec, ServiceState, Timestamp};

/// A replica that restarted and has been running for less than this long
/// still counts as crash-looping (the node's backoff between crashes grows
/// to a minute, so a crashing container runs only moments at a time).
pub const CRASH_WINDOW_SECS: i64 = 60;

/// A replica without a health check serves once it has run this long (the
/// scheduler's readiness in a rollout too).
pub const MIN_UP_SECS: i64 = 3;

/// What a service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Every wanted replica of the current version serves.
    #[default]
    Running,
    /// A new version (or the first one) is rolling out, or replicas are
    /// starting: `deploying n/m`.
    Deploying,
    /// Some replicas do not serve (failing to start, unhealthy, crashing
    /// beside others that run, waiting for room), or a rollout halted while
    /// the old version keeps serving.
    Degraded,
    /// No replica of the current version stays up: they exit and are
    /// restarted with backoff.
    CrashLooping,
    /// No replica could be placed: the scheduler's reason says why.
    Pending,
    /// Paused: no replica runs.
    Paused,
    /// Scaled to zero replicas.
    Stopped,
    /// The service has no image yet (a source not built yet).
    NoImage,
}

impl State {
    /// The word shown (`crash_looping`, `no image yet`).
    pub fn word(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Deploying => "deploying",
            State::Degraded => "degraded",
            State::CrashLooping => "crash_looping",
            State::Pending => "pending",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::NoImage => "no image yet",
        }
    }
}

/// A service's computed state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// The state.
    pub state: State,
    /// What to show: the state's word, `deploying n/m` while deploying.
    pub label: String,
    /// Why, in a sentence ("" when running as asked).
    pub detail: String,
    /// Replicas of the current version serving (running, healthy or
    /// unchecked).
    pub ready: u32,
    /// The last exit code of a crashing replica.
    pub exit_code: Option<i64>,
    /// Whether that exit was an out-of-memory kill.
    pub oom_killed: bool,
}

/// How one replica of the current version is doing.
enum Class<'a> {
    Serving,
    Starting,
    Crashing(&'a ReplicaStatus),
    Unhealthy(&'a ReplicaStatus),
    Failed(&'a ReplicaStatus),
    Unplaced(Option<&'a str>),
    Stopping,
}

fn classify<'a>(
    replica: &'a Replica,
    status: Option<&'a ReplicaStatus>,
    now: Timestamp,
) -> Class<'a> {
    if replica.node.is_none() {
        return Class::Unplaced(replica.reason.as_deref().filter(|r| !r.is_empty()));
    }
    let Some(s) = status else {
        return Class::Starting;
    };
    match s.state {
        ReplicaState::Pending | ReplicaState::Starting => Class::Starting,
        ReplicaState::Stopping => Class::Stopping,
        ReplicaState::Failed => Class::Failed(s),
        ReplicaState::Exited => Class::Crashing(s),
        ReplicaState::Running if s.restarts > 0 && now - s.updated < CRASH_WINDOW_SECS => {
            Class::Crashing(s)
        }
        ReplicaState::Running => match s.health {
            Some(Health::Unhealthy) => Class::Unhealthy(s),
            Some(Health::Starting) => Class::Starting,
            // Without a check, up a moment is not yet up: a container
            // that exits at once is reported running first.
            None if now - s.updated < MIN_UP_SECS => Class::Starting,
            _ => Class::Serving,
        },
    }
}

/// "exited with code 1", "killed: out of memory (exit code 137)", with the
/// restarts so far.
fn crash_words(s: &ReplicaStatus) -> String {
    let mut out = match (s.oom_killed, s.exit_code) {
        (true, Some(code)) => format!("killed: out of memory (exit code {code})"),
        (true, None) => "killed: out of memory".to_owned(),
        (false, Some(code)) => format!("exited with code {code}"),
        (false, None) => "exited".to_owned(),
    };
    match s.restarts {
        0 => {}
        1 => out.push_str(", restarted once"),
        n => out.push_str(&format!(", restarted {n} times")),
    }
    out
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Computes a service's state from its spec, its current `generation` and
/// its replicas (placements with their nodes' reports) at `now`.
pub fn summarize(
    spec: &ServiceSpec,
    generation: u64,
    replicas: &[(&Replica, Option<&ReplicaStatus>)],
    now: Timestamp,
) -> Summary {
    let (current, old): (Vec<_>, Vec<_>) = replicas
        .iter()
        .partition(|(r, _)| r.generation == generation);
    let classes: Vec<(&Replica, Class)> = current
        .iter()
        .map(|(r, s)| (*r, classify(r, *s, now)))
        .collect();
    // A crashing replica up for a moment between crashes does not count.
    let ready = classes
        .iter()
        .filter(|(_, c)| matches!(c, Class::Serving))
        .count();
    let old_serving = old
        .iter()
        .filter(|(_, s)| s.is_some_and(|s| s.takes_traffic()))
        .count();
    let summary = |state: State, detail: String| Summary {
        state,
        label: state.word().to_owned(),
        detail,
        ready: ready as u32,
        exit_code: None,
        oom_killed: false,
    };
    if let Some(file) = spec.source.as_ref().and_then(|s| s.compose.as_ref()) {
        return summary(
            State::Stopped,
            format!("a stack: each build applies {file} to the project"),
        );
    }
    if spec.image.is_none() {
        let detail = if spec.source.is_some() {
            "waiting for the first build: deploy to build the source"
        } else {
            "the service has no image"
        };
        return summary(State::NoImage, detail.to_owned());
    }
    if spec.state == ServiceState::Paused {
        let detail = match replicas
            .iter()
            .filter(|(_, s)| s.is_some_and(|s| s.state == ReplicaState::Running))
            .count()
        {
            0 => "no replica runs: resume to start them".to_owned(),
            n => format!("{} still stopping", plural(n, "replica")),
        };
        return summary(State::Paused, detail);
    }
    let desired = spec.replicas as usize;
    if desired == 0 {
        let detail = match replicas.len() {
            0 => "scaled to 0 replicas".to_owned(),
            n => format!(
                "scaled to 0 replicas, {} still stopping",
                plural(n, "replica")
            ),
        };
        return summary(State::Stopped, detail);
    }

    let crashing: Vec<(&Replica, &ReplicaStatus)> = classes
        .iter()
        .filter_map(|(r, c)| match c {
            Class::Crashing(s) => Some((*r, *s)),
            _ => None,
        })
        .collect();
    let not_serving: Vec<String> = classes
        .iter()
        .filter_map(|(r, c)| match c {
            Class::Failed(s) => Some(if s.message.is_empty() {
                format!("replica {} cannot start", r.id)
            } else {
                format!("replica {} cannot start: {}", r.id, s.message)
            }),
            Class::Unhealthy(s) => Some(if s.health_message.is_empty() {
                format!("replica {} is unhealthy", r.id)
            } else {
                format!("replica {} is unhealthy ({})", r.id, s.health_message)
            }),
            _ => None,
        })
        .collect();
    let waiting: Option<&str> = classes.iter().find_map(|(_, c)| match c {
        Class::Unplaced(Some(reason)) => Some(*reason),
        _ => None,
    });
    let halted = current
        .iter()
        .filter_map(|(r, _)| r.reason.as_deref())
        .find(|r| r.starts_with("rollout halted"));
    let with_crash = |mut s: Summary| {
        if let Some((_, status)) = crashing
            .iter()
            .find(|(_, s)| s.exit_code.is_some())
            .or(crashing.first())
        {
            s.exit_code = status.exit_code;
            s.oom_killed = status.oom_killed;
        }
        s
    };
    let crash_detail = || {
        let (r, s) = crashing[0];
        if crashing.len() == 1 {
            format!("replica {} {}", r.id, crash_words(s))
        } else {
            format!(
                "{} crashing: replica {} {}",
                plural(crashing.len(), "replica"),
                r.id,
                crash_words(s)
            )
        }
    };
    let deploying = |detail: String| Summary {
        label: format!("deploying {ready}/{desired}"),
        ..summary(State::Deploying, detail)
    };

    if !old.is_empty() || halted.is_some() {
        // A rollout.
        let keep = match old_serving {
            0 => "no old replica serves".to_owned(),
            n => format!(
                "{} of the old version {} serving",
                plural(n, "replica"),
                if n == 1 { "keeps" } else { "keep" }
            ),
        };
        if !crashing.is_empty() {
            let detail = format!(
                "the new version crashes: {}; rollout halted, {keep}",
                crash_detail()
            );
            return with_crash(summary(State::CrashLooping, detail));
        }
        if let Some(reason) = halted {
            return summary(State::Degraded, format!("{reason}; {keep}"));
        }
        if let Some(first) = not_serving.first() {
            return summary(State::Degraded, format!("{first}; {keep}"));
        }
        let detail = match waiting {
            Some(reason) => format!("waiting: {reason}"),
            None => format!(
                "{} of the old version left to replace",
                plural(old.len(), "replica")
            ),
        };
        return deploying(detail);
    }

    if ready >= desired && crashing.is_empty() && not_serving.is_empty() && waiting.is_none() {
        return summary(State::Running, String::new());
    }
    if !crashing.is_empty() {
        let state = if ready == 0 {
            State::CrashLooping
        } else {
            State::Degraded
        };
        let mut detail = crash_detail();
        if ready > 0 {
            detail = format!("{ready}/{desired} running; {detail}");
        }
        return with_crash(summary(state, detail));
    }
    if let Some(first) = not_serving.first() {
        return summary(
            State::Degraded,
            format!("{ready}/{desired} running; {first}"),
        );
    }
    if let Some(reason) = waiting {
        if ready == 0 && classes.iter().all(|(_, c)| matches!(c, Class::Unplaced(_))) {
            return summary(State::Pending, reason.to_owned());
        }
        return summary(
            State::Degraded,
            format!("{ready}/{desired} running; a replica waits: {reason}"),
        );
    }
    let starting = classes
        .iter()
        .filter(|(_, c)| matches!(c, Class::Starting | Class::Unplaced(None)))
        .count();
    let stopping = classes
        .iter()
        .filter(|(_, c)| matches!(c, Class::Stopping))
        .count();
    let detail = if starting > 0 {
        format!("{} starting", plural(starting, "replica"))
    } else if current.len() < desired {
        format!("{} to place", plural(desired - current.len(), "replica"))
    } else if stopping > 0 {
        format!("{} stopping", plural(stopping, "replica"))
    } else {
        String::new()
    };
    deploying(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Timestamp = 1_000_000;

    fn spec(extra: serde_json::Value) -> ServiceSpec {
        let mut base = json!({"name": "web", "image": "busybox", "replicas": 2});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    /// A replica described in a few words: `gen` its generation, `node`
    /// whether placed, `reason` its pending reason, `state` its report.
    struct R {
        generation: u64,
        node: bool,
        reason: Option<&'static str>,
        status: Option<ReplicaStatus>,
    }

    fn r(generation: u64, state: Option<ReplicaState>) -> R {
        R {
            generation,
            node: true,
            reason: None,
            status: state.map(|state| ReplicaStatus {
                state,
                updated: NOW - 600,
                ..ReplicaStatus::default()
            }),
        }
    }

    fn unplaced(generation: u64, reason: Option<&'static str>) -> R {
        R {
            generation,
            node: false,
            reason,
            status: None,
        }
    }

    fn with(mut r: R, f: impl FnOnce(&mut ReplicaStatus)) -> R {
        f(r.status.get_or_insert_with(ReplicaStatus::default));
        r
    }

    /// Checks the state's label and that the detail holds `detail`.
    fn check(
        spec: &ServiceSpec,
        generation: u64,
        replicas: Vec<R>,
        label: &str,
        detail: &str,
    ) -> Summary {
        let records: Vec<(Replica, Option<ReplicaStatus>)> = replicas
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    Replica {
                        id: format!("R{i}"),
                        project: "P".into(),
                        service: "S".into(),
                        node: r.node.then(|| "N".to_owned()),
                        image: "busybox".into(),
                        generation: r.generation,
                        reason: r.reason.map(str::to_owned),
                        created: 0,
                    },
                    r.status,
                )
            })
            .collect();
        let refs: Vec<(&Replica, Option<&ReplicaStatus>)> =
            records.iter().map(|(r, s)| (r, s.as_ref())).collect();
        let got = summarize(spec, generation, &refs, NOW);
        assert_eq!(got.label, label, "{got:?}");
        assert!(
            got.detail.contains(detail),
            "detail {:?} lacks {detail:?}",
            got.detail
        );
        got
    }

    use ReplicaState::*;

    #[test]
    fn all_running_is_running() {
        let s = check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), r(1, Some(Running))],
            "running",
            "",
        );
        assert_eq!(
            (s.state, s.detail.as_str(), s.ready),
            (State::Running, "", 2)
        );
    }

    #[test]
    fn without_an_image_there_is_no_image_yet() {
        let s = spec(json!({"image": null, "source": {"url": "https://example.com/r.git"}}));
        let got = check(
            &s,
            1,
            vec![unplaced(1, Some("waiting for an image"))],
            "no image yet",
            "first build",
        );
        assert_eq!(serde_json::to_value(got.state).unwrap(), "no_image");
    }

    #[test]
    fn a_stack_is_stopped_and_says_what_it_applies() {
        let s = spec(json!({"image": null, "replicas": 0,
            "source": {"url": "https://example.com/r.git", "compose": "deploy/compose.yml"}}));
        check(
            &s,
            1,
            vec![],
            "stopped",
            "a stack: each build applies deploy/compose.yml",
        );
    }

    #[test]
    fn paused_and_stopped() {
        check(
            &spec(json!({"state": "paused"})),
            1,
            vec![r(1, Some(Exited))],
            "paused",
            "resume",
        );
        check(
            &spec(json!({"state": "paused"})),
            1,
            vec![r(1, Some(Running))],
            "paused",
            "1 replica still stopping",
        );
        check(
            &spec(json!({"replicas": 0})),
            1,
            vec![],
            "stopped",
            "scaled to 0",
        );
    }

    #[test]
    fn a_first_deploy_is_deploying_until_every_replica_runs() {
        check(
            &spec(json!({})),
            1,
            vec![],
            "deploying 0/2",
            "2 replicas to place",
        );
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), r(1, Some(Starting))],
            "deploying 1/2",
            "1 replica starting",
        );
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), r(1, None)],
            "deploying 1/2",
            "starting",
        );
        let just_up = with(r(1, Some(Running)), |s| s.updated = NOW - 1);
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), just_up],
            "deploying 1/2",
            "starting",
        );
        let healthy_soon = with(r(1, Some(Running)), |s| s.health = Some(Health::Starting));
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), healthy_soon],
            "deploying 1/2",
            "starting",
        );
    }

    #[test]
    fn a_crash_loop_shows_its_exit_code() {
        let crash = |code, oom| {
            with(r(1, Some(Exited)), |s| {
                s.exit_code = Some(code);
                s.oom_killed = oom;
                s.restarts = 3;
            })
        };
        let s = check(
            &spec(json!({})),
            1,
            vec![crash(1, false), crash(1, false)],
            "crash_looping",
            "exited with code 1, restarted 3 times",
        );
        assert_eq!((s.exit_code, s.oom_killed), (Some(1), false));
        let s = check(
            &spec(json!({"replicas": 1})),
            1,
            vec![crash(137, true)],
            "crash_looping",
            "killed: out of memory (exit code 137)",
        );
        assert!(s.oom_killed);
        // Up again for a moment between crashes: still crash-looping.
        let moment = with(r(1, Some(Running)), |s| {
            s.restarts = 4;
            s.exit_code = Some(2);
            s.updated = NOW - 5;
        });
        check(
            &spec(json!({"replicas": 1})),
            1,
            vec![moment],
            "crash_looping",
            "exit",
        );
        // Up for long after its last crash: it runs.
        let recovered = with(r(1, Some(Running)), |s| s.restarts = 4);
        check(
            &spec(json!({"replicas": 1})),
            1,
            vec![recovered],
            "running",
            "",
        );
        // One of two crashing: degraded, saying why.
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), crash(1, false)],
            "degraded",
            "1/2 running; replica R1 exited with code 1",
        );
    }

    #[test]
    fn replicas_that_cannot_start_or_are_unhealthy_degrade() {
        let failed = with(r(1, Some(Failed)), |s| {
            s.message = "pull: manifest unknown".into()
        });
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), failed],
            "degraded",
            "replica R1 cannot start: pull: manifest unknown",
        );
        let sick = with(r(1, Some(Running)), |s| {
            s.health = Some(Health::Unhealthy);
            s.health_message = "GET /: 503".into();
        });
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), sick],
            "degraded",
            "unhealthy (GET /: 503)",
        );
    }

    #[test]
    fn no_room_is_pending_with_the_schedulers_reason() {
        let why = "no node has 0.1 CPUs free";
        check(
            &spec(json!({})),
            1,
            vec![unplaced(1, Some(why)), unplaced(1, Some(why))],
            "pending",
            why,
        );
        check(
            &spec(json!({})),
            1,
            vec![r(1, Some(Running)), unplaced(1, Some(why))],
            "degraded",
            why,
        );
    }

    #[test]
    fn a_rollout_is_deploying_with_its_pending_reason() {
        check(
            &spec(json!({})),
            2,
            vec![
                r(1, Some(Running)),
                r(1, Some(Running)),
                r(2, Some(Starting)),
            ],
            "deploying 0/2",
            "2 replicas of the old version left",
        );
        check(
            &spec(json!({})),
            2,
            vec![r(1, Some(Running)), r(2, Some(Running))],
            "deploying 1/2",
            "1 replica of the old version left",
        );
        let why =
            "no node has 0.5 CPUs free; replacing replica R0 in place: waiting for it to stop";
        check(
            &spec(json!({"replicas": 1})),
            2,
            vec![r(1, Some(Stopping)), unplaced(2, Some(why))],
            "deploying 0/1",
            why,
        );
    }

    #[test]
    fn a_halted_rollout_says_why_and_what_serves() {
        let crash = with(r(2, Some(Exited)), |s| {
            s.exit_code = Some(1);
            s.restarts = 1;
        });
        let s = check(
            &spec(json!({"replicas": 1})),
            2,
            vec![r(1, Some(Running)), crash],
            "crash_looping",
            "rollout halted, 1 replica of the old version keeps serving",
        );
        assert_eq!(s.exit_code, Some(1));
        let mut sick = with(r(2, Some(Running)), |s| s.health = Some(Health::Unhealthy));
        sick.reason = Some("rollout halted: replica R1 never became healthy (GET /: 503)");
        check(
            &spec(json!({"replicas": 1})),
            2,
            vec![r(1, Some(Running)), sick],
            "degraded",
            "never became healthy (GET /: 503); 1 replica of the old version keeps serving",
        );
    }
}
