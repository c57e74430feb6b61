//! The loop against the recording fake runtime, with tokio's clock paused:
//! sleeps (create and stop times, backoffs, the resync) pass at once, so
//! each test takes milliseconds and runs the same every time. Docker itself
//! is in `tests/docker.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_model::protocol::{FromNode, ToNode};
use lb_model::{Assignment, Port, Protocol, ReplicaState, ReplicaStatus, DEFAULT_STOP_TIMEOUT};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{spec_hash, Reconciler, CREATES, STOPS};
use crate::runtime::fake::{Call, Fake};
use crate::runtime::Container;

/// A reconciler running over a fake runtime, and the statuses it sent.
pub(super) struct Harness {
    pub fake: Fake,
    to: mpsc::Sender<ToNode>,
    fenced: super::Fenced,
    statuses: Arc<Mutex<HashMap<String, ReplicaStatus>>>,
    /// Every status sent, in order.
    pub history: Arc<Mutex<Vec<(String, ReplicaStatus)>>>,
    /// Every job end sent, in order.
    pub ends: Arc<Mutex<Vec<(String, lb_model::JobEnd)>>>,
    _tasks: (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
}

impl Harness {
    pub async fn start(fake: Fake, desired: Vec<Assignment>) -> Self {
        let (to, from) = mpsc::channel(1024);
        let (out, mut statuses_rx) = mpsc::channel(4096);
        let fenced = super::Fenced::default();
        let reconciler = Reconciler::new(fake.clone(), 45000..=45999, out, "secret".into())
            .with_fence(fenced.clone());
        let run = tokio::spawn(reconciler.run(from));
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let history = Arc::new(Mutex::new(Vec::new()));
        let ends = Arc::new(Mutex::new(Vec::new()));
        let (collected, sent, ended) = (statuses.clone(), history.clone(), ends.clone());
        let collect = tokio::spawn(async move {
            while let Some(message) = statuses_rx.recv().await {
                match message {
                    FromNode::Status { replica, status } => {
                        sent.lock().unwrap().push((replica.clone(), status.clone()));
                        collected.lock().unwrap().insert(replica, status);
                    }
                    FromNode::JobEnded { job, end } => ended.lock().unwrap().push((job, end)),
                    _ => {}
                }
            }
        });
        to.send(ToNode::Desired {
            replicas: desired,
            registry: None,
            grace_ms: None,
        })
        .await
        .unwrap();
        Self {
            fake,
            to,
            fenced,
            statuses,
            history,
            ends,
            _tasks: (run, collect),
        }
    }

    pub fn status(&self, replica: &str) -> Option<ReplicaStatus> {
        self.statuses.lock().unwrap().get(replica).cloned()
    }

    pub async fn send(&self, message: ToNode) {
        self.to.send(message).await.unwrap();
    }

    /// Fences the node as its channel does: the flag, then an empty set.
    pub async fn fence(&self) {
        self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
        self.send(ToNode::Desired {
            replicas: Vec::new(),
            registry: None,
            grace_ms: None,
        })
        .await;
    }

    /// Waits for `what` to hold, failing with `message` after `within` (of
    /// tokio's clock).
    pub async fn until(&self, within: Duration, message: &str, what: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !what(self) {
            assert!(
                Instant::now() < deadline,
                "{message} within {within:?} (a hang or a lost pass)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn all_running(&self, replicas: &[Assignment], within: Duration) {
        self.until(within, "not every replica ran", |h| {
            replicas.iter().all(|a| {
                h.status(&a.replica)
                    .is_some_and(|s| s.state == ReplicaState::Running)
            })
        })
        .await;
    }

    /// Waits for a replica's status to show `restarts` and running.
    pub async fn restarted(&self, a: &Assignment, restarts: u32, within: Duration) {
        self.until(within, &format!("no restart {restarts}"), |h| {
            h.status(&a.replica)
                .is_some_and(|s| s.restarts == restarts && s.state == ReplicaState::Running)
        })
        .await;
    }
}

/// A running replica with no ports, 7 s of grace.
pub(super) fn assignment(n: usize) -> Assignment {
    Assignment {
        replica: format!("R{n:04}"),
        project: "P".into(),
        service: "S".into(),
        service_name: "web".into(),
        generation: 1,
        restart_generation: 0,
        image: "busybox".into(),
        memory: 16,
        cpu: 0.1,
        env: BTreeMap::new(),
        command: None,
        ports: Vec::new(),
        volumes: Vec::new(),
        running: true,
        stop_timeout: 7,
        hardening: Default::default(),
        health: None,
        job: None,
    }
}

pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn fifty_replicas_are_created_and_removed_at_once_within_the_bounds() {
    let fake = Fake::new(100 * MS, SEC);
    let replicas: Vec<Assignment> = (0..50).map(assignment).collect();
    let started = Instant::now();
    let h = Harness::start(fake, replicas.clone()).await;
    h.all_running(&replicas, 10 * SEC).await;
    // One after another would take 50 × 100 ms; 8 at a time, 7 rounds.
    assert!(
        started.elapsed() < 2 * SEC,
        "created in {:?}",
        started.elapsed()
    );
    assert_eq!(h.fake.state().max_creates, CREATES, "creates at once");

    let started = Instant::now();
    h.send(ToNode::Desired {
        replicas: Vec::new(),
        registry: None,
        grace_ms: None,
    })
    .await;
    h.until(10 * SEC, "containers left", |h| h.fake.count() == 0)
        .await;
    // One after another would take 50 × 1 s.
    assert!(
        started.elapsed() < 2 * SEC,
        "removed in {:?}",
        started.elapsed()
    );
    let s = h.fake.state();
    assert_eq!(s.max_stops, 50, "all 50 stops at once (bound {STOPS})");
    assert_eq!(s.overlaps, 0, "two operations on one replica");
    // The assignment is gone: the grace is the container's label.
    let stops = s.stops();
    assert_eq!(stops.len(), 50);
    assert!(stops.iter().all(|(_, grace)| *grace == 7), "{stops:?}");
}

#[tokio::test(start_paused = true)]
async fn creates_are_bounded_and_never_share_a_host_port() {
    let fake = Fake::new(100 * MS, MS);
    let replicas: Vec<Assignment> = (0..30)
        .map(|n| Assignment {
            ports: vec![Port {
                container: 80,
                host: None,
                protocol: Protocol::Tcp,
            }],
            ..assignment(n)
        })
        .collect();
    let h = Harness::start(fake, replicas.clone()).await;
    h.all_running(&replicas, 20 * SEC).await;
    let s = h.fake.state();
    assert_eq!(s.max_creates, CREATES, "creates at once");
    assert_eq!(s.overlaps, 0, "two operations on one replica");
    let mut ports: Vec<u16> = s.containers.values().map(|c| c.ports[0].1).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 30, "a host port given twice");
}

#[tokio::test(start_paused = true)]
async fn a_long_stop_holds_up_no_new_assignment() {
    let fake = Fake::new(MS, 5 * SEC);
    let old = assignment(1);
    let h = Harness::start(fake, vec![old.clone()]).await;
    h.all_running(std::slice::from_ref(&old), 5 * SEC).await;
    h.send(ToNode::Delete {
        replica: old.replica.clone(),
    })
    .await;
    h.until(2 * SEC, "the stop did not begin", |h| {
        h.fake.state().stops_now == 1
    })
    .await;
    let new = assignment(2);
    h.send(ToNode::Put(Box::new(new.clone()))).await;
    // Well before the old container's 5 s stop ends.
    h.all_running(&[new], 2 * SEC).await;
    assert_eq!(h.fake.state().stops_now, 1, "the stop is still going on");
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_during_a_stop_wait_for_it() {
    let fake = Fake::new(MS, 300 * MS);
    let a = assignment(1);
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    let paused = Assignment {
        running: false,
        ..a.clone()
    };
    h.send(ToNode::Put(Box::new(paused))).await;
    // Resumed while the stop is in flight, and more passes meanwhile.
    tokio::time::sleep(50 * MS).await;
    h.send(ToNode::Put(Box::new(a.clone()))).await;
    for _ in 0..5 {
        let _ = h.fake.events.send(());
        tokio::time::sleep(20 * MS).await;
    }
    h.until(5 * SEC, "not running again", |h| {
        let s = h.fake.state();
        s.containers.values().any(|c| c.state == "running") && s.stops_now == 0
    })
    .await;
    let s = h.fake.state();
    assert_eq!(s.overlaps, 0, "two operations on one replica");
    assert_eq!(s.containers.len(), 1, "one container");
    assert_eq!(
        s.stops(),
        vec![("c1".to_owned(), 7)],
        "stopped with the assignment's grace"
    );
}

#[tokio::test(start_paused = true)]
async fn stops_honour_the_grace_period() {
    // Processes that ignore SIGTERM for 5 minutes: Docker kills them at the
    // end of the grace the reconciler passes.
    let fake = Fake::new(MS, 300 * SEC);
    let a = Assignment {
        stop_timeout: 3,
        ..assignment(1)
    };
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;

    let started = Instant::now();
    let paused = Assignment {
        running: false,
        ..a.clone()
    };
    h.send(ToNode::Put(Box::new(paused))).await;
    h.until(10 * SEC, "not stopped", |h| {
        h.status(&a.replica)
            .is_some_and(|s| s.state == ReplicaState::Exited && s.message == "paused")
    })
    .await;
    let took = started.elapsed();
    assert!(3 * SEC <= took && took < 4 * SEC, "stopped in {took:?}");
    assert_eq!(h.fake.state().stops(), vec![("c1".to_owned(), 3)]);

    // A container no longer assigned goes with its own label's grace, or
    // lb's default when it has none.
    h.fake.state().containers.insert(
        "old".into(),
        Container {
            id: "old".into(),
            replica: "R9999".into(),
            state: "running".into(),
            spec: String::new(),
            ports: Vec::new(),
            stop_timeout: None,
            health: None,
            address: None,
        },
    );
    h.send(ToNode::Delete {
        replica: a.replica.clone(),
    })
    .await;
    h.until(60 * SEC, "containers left", |h| h.fake.count() == 0)
        .await;
    let s = h.fake.state();
    assert!(
        s.calls.contains(&Call::Remove("c1".into(), 3)),
        "{:?}",
        s.calls
    );
    assert!(
        s.calls
            .contains(&Call::Remove("old".into(), DEFAULT_STOP_TIMEOUT)),
        "{:?}",
        s.calls
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_spec_recreates_the_container() {
    let fake = Fake::new(MS, 100 * MS);
    let a = assignment(1);
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    let old = h.fake.containers_of(&a.replica);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].spec, spec_hash(&a));

    // A new generation: a new image.
    let new = Assignment {
        generation: 2,
        image: "busybox:2".into(),
        ..a.clone()
    };
    h.send(ToNode::Put(Box::new(new.clone()))).await;
    h.until(5 * SEC, "not recreated", |h| {
        let containers = h.fake.containers_of(&a.replica);
        containers.len() == 1
            && containers[0].spec == spec_hash(&new)
            && containers[0].state == "running"
    })
    .await;
    {
        let s = h.fake.state();
        let removed = s
            .calls
            .iter()
            .position(|c| *c == Call::Remove(old[0].id.clone(), 7))
            .expect("the old container removed");
        let created = s
            .calls
            .iter()
            .position(|c| matches!(c, Call::Create(_, hash, _) if *hash == spec_hash(&new)))
            .expect("a container of the new spec created");
        assert!(removed < created, "the old one goes first: {:?}", s.calls);
        assert_eq!(s.overlaps, 0, "two operations on one replica");
    }

    // The grace period alone makes no new container.
    let calls = h.fake.state().count(|c| matches!(c, Call::Create(..)));
    h.send(ToNode::Put(Box::new(Assignment {
        stop_timeout: 30,
        ..new
    })))
    .await;
    tokio::time::sleep(30 * SEC).await;
    assert_eq!(
        h.fake.state().count(|c| matches!(c, Call::Create(..))),
        calls,
        "recreated for a new grace period"
    );
}

#[tokio::test(start_paused = true)]
async fn crashes_restart_with_backoff_without_spinning() {
    let fake = Fake::new(MS, MS);
    let a = assignment(1);
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;

    h.fake.crash(&a.replica, 3);
    h.restarted(&a, 1, 3 * SEC).await;
    assert_eq!(h.status(&a.replica).unwrap().exit_code, Some(3));

    // A second crash within the 1 s backoff waits it out.
    h.fake.crash(&a.replica, 4);
    h.until(3 * SEC, "no backoff reported", |h| {
        h.status(&a.replica)
            .is_some_and(|s| s.state == ReplicaState::Exited && s.exit_code == Some(4))
    })
    .await;
    let (lists, inspects) = {
        let s = h.fake.state();
        (
            s.count(|c| *c == Call::List),
            s.count(|c| matches!(c, Call::Exit(_))),
        )
    };
    h.restarted(&a, 2, 5 * SEC).await;
    let s = h.fake.state();
    let lists = s.count(|c| *c == Call::List) - lists;
    let inspects = s.count(|c| matches!(c, Call::Exit(_))) - inspects;
    assert!(
        inspects <= 2 && lists <= 6,
        "the backoff was spun through: {inspects} inspects, {lists} lists"
    );
}

#[tokio::test(start_paused = true)]
async fn the_crash_backoff_doubles_up_to_a_minute() {
    let fake = Fake::new(MS, MS);
    let a = assignment(1);
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;

    // The first crash restarts at once.
    h.fake.crash(&a.replica, 1);
    h.restarted(&a, 1, SEC).await;
    let mut last = Instant::now();
    // Each next crash comes right after the restart and waits out the
    // backoff, doubled each time (plus up to half again of jitter).
    for (n, base) in [1u64, 2, 4, 8, 16, 32, 60, 60].into_iter().enumerate() {
        h.fake.crash(&a.replica, 1);
        h.restarted(&a, n as u32 + 2, 120 * SEC).await;
        let base = Duration::from_secs(base);
        let waited = last.elapsed();
        assert!(
            base - 20 * MS <= waited && waited <= base + base / 2 + 100 * MS,
            "restart {} after {waited:?}, the backoff being {base:?}",
            n + 2
        );
        last = Instant::now();
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_node_does_not_spin() {
    let fake = Fake::new(MS, MS);
    let a = assignment(1);
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    // Even after a crash and its restart (a backoff now in the past).
    h.fake.crash(&a.replica, 1);
    h.restarted(&a, 1, 3 * SEC).await;
    tokio::time::sleep(2 * SEC).await;
    let lists = || h.fake.state().count(|c| *c == Call::List);
    let before = lists();
    tokio::time::sleep(2 * SEC).await;
    let passes = lists() - before;
    assert!(passes <= 1, "{passes} passes in 2 idle seconds");
    // And the resync still looks every 10 s.
    tokio::time::sleep(20 * SEC).await;
    let passes = lists() - before;
    assert!(
        (2..=3).contains(&passes),
        "{passes} passes in 22 idle seconds"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fenced_node_kills_every_container_until_the_next_desired_set() {
    // Processes that ignore SIGTERM for 5 minutes: a graceful stop would
    // leave them running beside their replacements.
    let fake = Fake::new(MS, 300 * SEC);
    let replicas: Vec<Assignment> = (0..3).map(assignment).collect();
    let h = Harness::start(fake, replicas.clone()).await;
    h.all_running(&replicas, 5 * SEC).await;

    let started = Instant::now();
    h.fence().await;
    h.until(SEC, "containers left after the fence", |h| {
        h.fake.count() == 0
    })
    .await;
    let took = started.elapsed();
    assert!(took < SEC, "removed in {took:?}");
    let removes: Vec<Call> = h
        .fake
        .state()
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Remove(..)))
        .cloned()
        .collect();
    assert_eq!(removes.len(), 3, "{removes:?}");
    assert!(
        removes.iter().all(|c| matches!(c, Call::Remove(_, 0))),
        "killed without a grace: {removes:?}"
    );

    // Nothing comes back by itself while fenced (resyncs pass).
    tokio::time::sleep(30 * SEC).await;
    assert_eq!(h.fake.count(), 0, "a fenced node started containers");

    // The API is back: the desired set is run again.
    h.fenced.store(false, std::sync::atomic::Ordering::SeqCst);
    h.send(ToNode::Desired {
        replicas: replicas[..2].to_vec(),
        registry: None,
        grace_ms: Some(3000),
    })
    .await;
    h.until(5 * SEC, "the desired set not run again", |h| {
        h.fake.count() == 2
    })
    .await;
}
