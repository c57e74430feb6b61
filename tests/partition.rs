//! Partitions: nodes that are alive but cut off. The API and the scheduler
//! run in this process (the harness in `common/`), the API bound on the
//! test's own bridge; each `lb node` (the real binary) runs in its own
//! network namespace joined to that bridge (`lb_testing::netns`), and the
//! partition is an iptables DROP inside the node's namespace: its TCP
//! connection stays open and falls silent. Containers run in the shared
//! Docker engine, told apart by their `lb.node` and `lb.service` labels.
//!
//! `LB_PARTITION_ROUNDS` (default 20, about 4 minutes) sets how often the
//! node is cut off.
//! Needs root (network namespaces, iptables), Docker, busybox-static.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{running, sleeper, Cluster};
use lb_testing::netns::{Host, Net};
use serde_json::{json, Value};

/// The scheduler's node grace in these tests.
const GRACE: Duration = Duration::from_secs(3);

/// An `lb node` process, perhaps inside a namespace.
struct Daemon {
    id: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {}", self.child.id());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Starts `lb node` through `command` (plain, or inside a namespace) and
/// waits until it is alive.
async fn start_node(cluster: &mut Cluster, name: &str, mut command: Command) -> Daemon {
    let (token, _) =
        lb_api::handlers::nodes::issue_join_token(cluster.store.as_ref(), &cluster.keys, 600)
            .await
            .unwrap();
    let data = cluster.dir.path().join(name);
    std::fs::create_dir_all(&data).unwrap();
    let log = cluster.dir.path().join(format!("{name}.log"));
    let full = format!("{name}-{}", &lb_model::ids::new_id().to_lowercase()[18..]);
    command
        .args(["node", "--api", &cluster.api, "--name", &full])
        .args(["--join-token", &token, "--label", &format!("zone={name}")])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("LB_DATA_DIR")
        .env("LB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    #[allow(clippy::zombie_processes)] // waited for by Daemon's Drop
    let mut child = command.spawn().expect("start lb node");
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Ok(bytes) = std::fs::read(data.join("node.json")) {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            break v["id"].as_str().unwrap().to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "node {name} exited: {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "node {name} did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.nodes.push(id.clone());
    let daemon = Daemon { id, child, log };
    wait_alive(cluster, &daemon, true, Duration::from_secs(20)).await;
    daemon
}

async fn alive(cluster: &Cluster, id: &str) -> bool {
    // The alive key itself (the node list is for admins).
    cluster
        .store
        .get(&cluster.keys.node_alive(id))
        .await
        .unwrap()
        .is_some()
}

/// Waits until the API says the node is (not) alive; answers how long.
async fn wait_alive(cluster: &Cluster, node: &Daemon, want: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    while alive(cluster, &node.id).await != want {
        assert!(
            started.elapsed() < limit,
            "node {} not alive={want} within {limit:?}; its log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The running containers of a service, as (node id, replica id).
fn containers(service: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["ps", "--filter", &format!("label=lb.service={service}")])
        .args([
            "--format",
            "{{.Label \"lb.node\"}} {{.Label \"lb.replica\"}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, r)| (n.to_owned(), r.to_owned()))
        .collect()
}

/// Creates a service of `replicas` sleepers (killed at once when stopped)
/// and waits until they run with at least one on `on`; answers its id.
async fn service_on(cluster: &Cluster, name: &str, replicas: u32, on: &str) -> String {
    let mut spec = sleeper(name, replicas);
    spec["stop_timeout"] = json!(1);
    let created = cluster.call("POST", "/projects/demo/services", spec).await;
    let sid = created["id"]
        .as_str()
        .or_else(|| created["meta"]["id"].as_str())
        .unwrap_or_else(|| panic!("no service id in {created}"))
        .to_owned();
    cluster
        .wait(name, "running", Duration::from_secs(30), |r| {
            running(r) == replicas as usize && r.iter().any(|x| x["node"].as_str() == Some(on))
        })
        .await;
    sid
}

fn rounds() -> usize {
    std::env::var("LB_PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Figures of one round.
#[derive(Debug, Default)]
struct Round {
    /// Partition to the API's node alive key gone.
    lost: Duration,
    /// Partition to every replica placed on the other node (the
    /// scheduler's part).
    placed: Duration,
    /// Partition to every replica running again, none on the cut-off node.
    moved: Duration,
    /// Partition to the cut-off node's containers gone (it fenced itself).
    fenced: Duration,
    /// Longest time a service had more containers running than replicas.
    duplicate: Duration,
    /// Heal to the node alive again.
    back: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_node_fences_itself_and_its_replicas_run_elsewhere() {
    let mut net = Net::new();
    let listen = format!("{}:0", net.host_ip());
    let mut cluster = Cluster::start_graced(GRACE, |c| c.listen = listen.parse().unwrap()).await;
    let lb = env!("CARGO_BIN_EXE_lb");
    let (host_a, host_b): (Host, Host) = (net.host("a"), net.host("b"));
    let a = start_node(&mut cluster, "a", host_a.command(lb)).await;
    let b = start_node(&mut cluster, "b", host_b.command(lb)).await;
    let rounds = rounds();
    let started = Instant::now();
    let mut figures = Vec::new();
    for round in 0..rounds {
        let name = format!("r{round}");
        let sid = service_on(&cluster, &name, 2, &b.id).await;
        let on_b = containers(&sid).iter().filter(|(n, _)| *n == b.id).count();
        assert!(on_b >= 1, "round {round}: nothing on b");

        let cut = Instant::now();
        host_b.partition();
        let mut figure = Round::default();
        let mut dup_since: Option<Instant> = None;
        let mut healed: Option<Instant> = None;
        // Watch until moved, fenced, healed, back, and a grace more.
        let mut quiet_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let held = containers(&sid);
            let on_b = held.iter().filter(|(n, _)| *n == b.id).count();
            if held.len() > 2 {
                let since = *dup_since.get_or_insert(now);
                figure.duplicate = figure.duplicate.max(now - since);
            } else {
                dup_since = None;
            }
            if figure.fenced.is_zero() && on_b == 0 {
                figure.fenced = now - cut;
            }
            if figure.lost.is_zero() && !alive(&cluster, &b.id).await {
                figure.lost = now - cut;
            }
            if figure.moved.is_zero() {
                let replicas = cluster.replicas(&name).await;
                let on_a = replicas.len() == 2
                    && replicas
                        .iter()
                        .all(|r| r["node"].as_str() == Some(a.id.as_str()));
                if on_a && figure.placed.is_zero() {
                    figure.placed = now - cut;
                }
                if on_a && running(&replicas) == 2 {
                    figure.moved = now - cut;
                }
            }
            // Placing elsewhere is the scheduler's, bounded by the grace;
            // a container's start on a loaded machine is not, so running
            // gets a generous bound and its time is the figure reported.
            assert!(
                !figure.placed.is_zero() || now - cut < GRACE + Duration::from_secs(5),
                "round {round}: replicas not placed elsewhere within grace + 5 s: {:#?}\nb's log:\n{}",
                cluster.replicas(&name).await,
                b.log_tail()
            );
            assert!(
                !figure.moved.is_zero() || now - cut < GRACE + Duration::from_secs(30),
                "round {round}: replicas not running elsewhere within grace + 30 s: {:#?}\nb's log:\n{}",
                cluster.replicas(&name).await,
                b.log_tail()
            );
            assert!(
                figure.duplicate <= GRACE,
                "round {round}: {held:?} ran twice for {:?}",
                figure.duplicate
            );
            match (healed, quiet_until) {
                (None, _) if !figure.moved.is_zero() && !figure.fenced.is_zero() => {
                    host_b.heal();
                    healed = Some(Instant::now());
                }
                (Some(at), None) => {
                    if alive(&cluster, &b.id).await {
                        figure.back = at.elapsed();
                        quiet_until = Some(Instant::now() + GRACE);
                    }
                    assert!(
                        at.elapsed() < Duration::from_secs(60),
                        "round {round}: b not back within 60 s of the heal:\n{}",
                        b.log_tail()
                    );
                }
                (Some(_), Some(until)) if now >= until => break,
                _ => {}
            }
            assert!(
                cut.elapsed() < Duration::from_secs(120),
                "round {round}: stuck: {figure:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = containers(&sid);
        assert_eq!(after.len(), 2, "round {round}: after the heal {after:?}");
        assert!(
            after.iter().all(|(n, _)| *n == a.id),
            "round {round}: b runs a replica it no longer owns: {after:?}"
        );
        eprintln!("round {round}: {figure:?}");
        figures.push(figure);
        cluster
            .call(
                "DELETE",
                &format!("/projects/demo/services/{name}"),
                Value::Null,
            )
            .await;
    }
    let max = |f: fn(&Round) -> Duration| figures.iter().map(f).max().unwrap_or_default();
    let mean = |f: fn(&Round) -> Duration| {
        figures.iter().map(f).sum::<Duration>() / figures.len().max(1) as u32
    };
    eprintln!(
        "partition figures over {rounds} rounds (grace {GRACE:?}), mean / max: \
         alive key gone {:?} / {:?}; replicas placed elsewhere {:?} / {:?}; \
         running elsewhere {:?} / {:?} (within grace + 5 s in {} of {rounds}); \
         cut-off node's containers gone {:?} / {:?}; duplicate window {:?} / {:?}; \
         back after heal {:?} / {:?}; total {:?}",
        mean(|f| f.lost),
        max(|f| f.lost),
        mean(|f| f.placed),
        max(|f| f.placed),
        mean(|f| f.moved),
        max(|f| f.moved),
        figures
            .iter()
            .filter(|f| f.moved <= GRACE + Duration::from_secs(5))
            .count(),
        mean(|f| f.fenced),
        max(|f| f.fenced),
        mean(|f| f.duplicate),
        max(|f| f.duplicate),
        mean(|f| f.back),
        max(|f| f.back),
        started.elapsed(),
    );
    drop((a, b));
}

/// SIGSTOP looks to the API exactly like a partition: the TCP connection
/// stays open. The node's lease must lapse (it sends no heartbeat and
/// answers no ping), its replicas move, and once resumed it removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_node_loses_its_lease_and_its_replicas() {
    let mut cluster = Cluster::start_graced(GRACE, |_| {}).await;
    let lb = env!("CARGO_BIN_EXE_lb");
    let a = start_node(&mut cluster, "a", Command::new(lb)).await;
    let b = start_node(&mut cluster, "b", Command::new(lb)).await;
    let sid = service_on(&cluster, "web", 2, &b.id).await;

    let stopped = Instant::now();
    b.signal("-STOP");
    let lost = wait_alive(&cluster, &b, false, Duration::from_secs(10)).await;
    cluster
        .wait(
            "web",
            "moved off the stopped node",
            GRACE + Duration::from_secs(10),
            |r| running(r) == 2 && r.iter().all(|x| x["node"].as_str() == Some(a.id.as_str())),
        )
        .await;
    let moved = stopped.elapsed();
    eprintln!("stopped node: alive key gone after {lost:?}, replicas elsewhere after {moved:?} (grace {GRACE:?})");
    assert!(
        lost <= lb_api::handlers::nodes::SILENCE + Duration::from_secs(2),
        "lease kept {lost:?} for a silent node"
    );

    // Resumed, it finds itself fenced and removes what it no longer owns.
    b.signal("-CONT");
    let resumed = Instant::now();
    loop {
        let held = containers(&sid);
        if held.iter().all(|(n, _)| *n == a.id) && held.len() == 2 {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(15),
            "the resumed node still runs {held:?}:\n{}",
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "resumed node removed its replicas {:?} after SIGCONT",
        resumed.elapsed()
    );
    wait_alive(&cluster, &b, true, Duration::from_secs(40)).await;
}
