//! Health checks of this node's replicas.
//!
//! A replica whose assignment has a `health` check gets a checker while its
//! container runs: a task of its own that sleeps on a timer between probes
//! (so 50 idle replicas cost 50 sleeping tasks, nothing more), runs one
//! probe through the [`Runtime`] bounded by the check's timeout, counts the
//! results ([`Tracker`]) and sends a [`Verdict`] to the loop only when the
//! health or the failure text changed. The first probe comes one second
//! after the start (at most `interval`), the next ones every `interval`.
//!
//! A replica without a check of its own uses the image's `HEALTHCHECK`:
//! Docker runs it, and its verdict comes with every container list (a
//! change is a Docker event, which starts a pass). Either way, an
//! `unhealthy` replica is stopped by the pass and restarted as a crash.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lb_model::{Assignment, Health, HealthCheck, Probe, Timestamp};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::runtime::{Check, Container, Runtime};

/// The first probe of a container this long after it started (or after
/// `interval`, when shorter), so a quick replica is healthy quickly.
pub(super) const FIRST_CHECK: Duration = Duration::from_secs(1);

/// A change of a replica's checks, sent by its checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The replica.
    pub replica: String,
    /// The container checked.
    pub container: String,
    /// Its health now.
    pub health: Health,
    /// Why the last probe failed; empty when it passed.
    pub message: String,
}

/// Counts one container's probe results, as Docker counts its own: a pass
/// makes it healthy; a failure counts unless it comes within the start
/// period before any pass; `retries` counted failures in a row make it
/// unhealthy.
#[derive(Debug)]
pub(super) struct Tracker {
    health: Health,
    failures: u32,
    message: String,
    retries: u32,
    start_period: Duration,
}

impl Tracker {
    /// A tracker for a container just started.
    pub fn new(check: &HealthCheck) -> Self {
        Self {
            health: Health::Starting,
            failures: 0,
            message: String::new(),
            retries: check.retries.max(1),
            start_period: Duration::from_secs(check.start_period.into()),
        }
    }

    /// Takes a probe's result, `age` after the container started; answers
    /// whether the health or the failure text changed.
    pub fn record(&mut self, result: Result<(), String>, age: Duration) -> bool {
        let before = (self.health, self.message.clone());
        match result {
            Ok(()) => {
                self.failures = 0;
                self.health = Health::Healthy;
                self.message.clear();
            }
            Err(message) => {
                self.message = message;
                let grace = self.health == Health::Starting && age < self.start_period;
                if !grace {
                    self.failures += 1;
                    if self.failures >= self.retries {
                        self.health = Health::Unhealthy;
                    }
                }
            }
        }
        before != (self.health, self.message.clone())
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.health
    }
}

/// A checker task of one container; aborted when dropped.
struct Checker {
    container: Container,
    check: HealthCheck,
    task: AbortHandle,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The checks of every replica of the node.
pub(super) struct Checks {
    checkers: HashMap<String, Checker>,
    /// Replicas whose checker a pass asked for: the others end after it.
    marked: HashSet<String>,
    /// The last verdict on each replica's current checker.
    verdicts: HashMap<String, Verdict>,
    /// Why each replica's last probe failed, until one passes (kept across
    /// restarts: it is why the last one was unhealthy).
    failures: HashMap<String, String>,
    /// Each replica's health as last reported, and since when.
    since: HashMap<String, (Option<Health>, Timestamp)>,
    tx: mpsc::Sender<Verdict>,
    rx: mpsc::Receiver<Verdict>,
}

impl Default for Checks {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(256);
        Self {
            checkers: HashMap::new(),
            marked: HashSet::new(),
            verdicts: HashMap::new(),
            failures: HashMap::new(),
            since: HashMap::new(),
            tx,
            rx,
        }
    }
}

impl Checks {
    /// The next verdict of any checker (never ends: the sender is ours).
    pub async fn next(&mut self) -> Option<Verdict> {
        self.rx.recv().await
    }

    /// Makes sure a running container of `a` is checked as `a` says: a
    /// checker for it (a new one when the container or the check changed).
    pub fn ensure<R: Runtime>(&mut self, runtime: &R, a: &Assignment, c: &Container) {
        let Some(spec) = &a.health else {
            self.end(&a.replica);
            return;
        };
        self.marked.insert(a.replica.clone());
        if let Some(checker) = self.checkers.get(&a.replica) {
            if checker.container.id == c.id && &checker.check == spec {
                return;
            }
        }
        self.end(&a.replica);
        let Some((check, what)) = probe_of(spec, c) else {
            let port = spec.port.unwrap_or_default();
            self.failures.insert(
                a.replica.clone(),
                format!("container port {port} is not published: cannot check it"),
            );
            return;
        };
        let task = tokio::spawn(run(
            runtime.clone(),
            check,
            what,
            spec.clone(),
            (a.replica.clone(), c.id.clone()),
            self.tx.clone(),
        ))
        .abort_handle();
        self.checkers.insert(
            a.replica.clone(),
            Checker {
                container: c.clone(),
                check: spec.clone(),
                task,
            },
        );
    }

    /// Ends a replica's checker (its container is being stopped), forgetting
    /// its verdict but not why it failed.
    pub fn end(&mut self, replica: &str) {
        self.checkers.remove(replica);
        self.verdicts.remove(replica);
    }

    /// After a pass: ends the checkers it did not ask for (their containers
    /// no longer run) and forgets replicas no longer assigned.
    pub fn sweep(&mut self, assigned: impl Fn(&str) -> bool) {
        let marked = std::mem::take(&mut self.marked);
        let gone: Vec<String> = self
            .checkers
            .keys()
            .filter(|r| !marked.contains(*r))
            .cloned()
            .collect();
        for replica in gone {
            self.end(&replica);
        }
        self.failures.retain(|r, _| assigned(r));
        self.since.retain(|r, _| assigned(r));
    }

    /// Takes a verdict of a current checker; whether it is one (a verdict
    /// of a checker ended meanwhile is dropped). The container checked is
    /// answered with it.
    pub fn accept(&mut self, v: Verdict) -> Option<Container> {
        let checker = self.checkers.get(&v.replica)?;
        if checker.container.id != v.container {
            return None;
        }
        let container = checker.container.clone();
        if v.message.is_empty() {
            self.failures.remove(&v.replica);
        } else {
            self.failures.insert(v.replica.clone(), v.message.clone());
        }
        self.verdicts.insert(v.replica.clone(), v);
        Some(container)
    }

    /// The health of a replica's running container: its checks' verdict
    /// (`starting` before the first), or the image's `HEALTHCHECK` verdict
    /// when the assignment has no check.
    pub fn health(&self, a: &Assignment, c: &Container) -> Option<Health> {
        if a.health.is_none() {
            return c.health;
        }
        Some(
            self.verdicts
                .get(&a.replica)
                .filter(|v| v.container == c.id)
                .map_or(Health::Starting, |v| v.health),
        )
    }

    /// Why the replica's last probe failed ("" once one passed).
    pub fn failure(&self, replica: &str) -> String {
        self.failures.get(replica).cloned().unwrap_or_default()
    }

    /// When the replica's health became `health` (now, when it just did).
    pub fn since(&mut self, replica: &str, health: Option<Health>) -> Option<Timestamp> {
        let at = match self.since.get(replica) {
            Some((h, at)) if *h == health => *at,
            _ => {
                let at = lb_model::now();
                self.since.insert(replica.to_owned(), (health, at));
                at
            }
        };
        health.map(|_| at)
    }
}

/// The probe of a check against a container, and how messages name it.
fn probe_of(spec: &HealthCheck, c: &Container) -> Option<(Check, String)> {
    let host_port = |port: u16| c.ports.iter().find(|(p, _)| *p == port).map(|p| p.1);
    Some(match spec.probe()? {
        Probe::Http { port, path } => (
            Check::Http {
                host_port: host_port(port)?,
                path: path.to_owned(),
            },
            format!("GET {path}"),
        ),
        Probe::Tcp { port } => (
            Check::Tcp {
                address: c.address.clone(),
                port,
                host_port: host_port(port)?,
            },
            format!("TCP port {port}"),
        ),
        Probe::Command(command) => (
            Check::Command {
                container: c.id.clone(),
                command: command.to_vec(),
            },
            format!("command {}", command.first().map_or("", String::as_str)),
        ),
    })
}

/// One checker: probes on a timer until the container is unhealthy (the
/// loop stops and restarts it) or the task is aborted.
async fn run<R: Runtime>(
    runtime: R,
    check: Check,
    what: String,
    spec: HealthCheck,
    (replica, container): (String, String),
    tx: mpsc::Sender<Verdict>,
) {
    let started = Instant::now();
    let interval = Duration::from_secs(spec.interval.max(1).into());
    let timeout = Duration::from_secs(spec.timeout.max(1).into());
    let mut tracker = Tracker::new(&spec);
    let mut next = started + interval.min(FIRST_CHECK);
    loop {
        tokio::time::sleep_until(next).await;
        let result = match tokio::time::timeout(timeout, runtime.check(&check)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(format!("{what}: {why}")),
            Err(_) => Err(format!("{what}: no answer within {} s", spec.timeout)),
        };
        let now = Instant::now();
        next += interval;
        if next <= now {
            // The probe took longer than an interval: the next one waits
            // a full interval rather than following at once.
            next = now + interval;
        }
        if tracker.record(result, now - started) {
            let verdict = Verdict {
                replica: replica.clone(),
                container: container.clone(),
                health: tracker.health(),
                message: tracker.message.clone(),
            };
            if tx.send(verdict).await.is_err() {
                return;
            }
        }
        if tracker.health() == Health::Unhealthy {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32, start_period: u32) -> HealthCheck {
        HealthCheck {
            http: None,
            tcp: Some(true),
            command: None,
            interval: 10,
            timeout: 3,
            retries,
            start_period,
            port: Some(80),
        }
    }

    /// Feeds results at the given ages (s) and compares the health after
    /// each and whether it counted as a change.
    fn table(spec: HealthCheck, steps: &[(u64, bool, Health, bool)]) {
        let mut t = Tracker::new(&spec);
        for (i, (age, pass, health, changed)) in steps.iter().enumerate() {
            let result = if *pass {
                Ok(())
            } else {
                Err("GET /: 503".into())
            };
            let got = t.record(result, Duration::from_secs(*age));
            assert_eq!((t.health(), got), (*health, *changed), "step {i}");
        }
    }

    #[test]
    fn failures_count_after_the_start_period_and_retries_in_a_row() {
        use Health::*;
        table(
            check(3, 0),
            &[
                (1, false, Starting, true),
                (11, false, Starting, false),
                (21, false, Unhealthy, true),
            ],
        );
        table(
            check(2, 30),
            &[
                (1, false, Starting, true),
                (11, false, Starting, false),
                (21, false, Starting, false),
                (31, false, Starting, false),
                (41, false, Unhealthy, true),
            ],
        );
        // A pass ends the start period; failures after it count.
        table(
            check(2, 30),
            &[
                (1, true, Healthy, true),
                (11, true, Healthy, false),
                (21, false, Healthy, true),
                (31, true, Healthy, true),
                (41, false, Healthy, true),
                (51, false, Unhealthy, true),
            ],
        );
    }
}
