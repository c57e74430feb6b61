//! The node daemon against the real Docker engine of this machine, joined to
//! a real API server (in this process, on the embedded store). Images are
//! built locally from Debian's busybox-static (no registry is reachable).
//! Placements are written into the store directly, as the scheduler will.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_api::server::Signup;
use lb_api::{Config, Server};
use lb_model::keys::Keys;
use lb_model::{Assignment, Port, Protocol, Replica, ReplicaState, ReplicaStatus};
use lb_store::embedded::EmbeddedStore;
use lb_store::{Shared, StoreExt};

const IMAGE: &str = "lb-test-busybox:1";

struct Cluster {
    store: Shared,
    keys: Keys,
    api: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running node daemon.
struct NodeProcess {
    id: String,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<lb_node::Result<()>>,
}

impl NodeProcess {
    /// Stops the daemon (its containers keep running) and waits for it.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Cluster {
    async fn start() -> Self {
        lb_testing::busybox_image();
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let config = Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
        lb_api::accounts::ensure_admin(store.as_ref(), &config.keys, Some("admin-password".into()))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::bind(&config, store.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let api = format!("http://{}", server.addr());
        tokio::spawn(server.run());
        Cluster {
            store,
            keys: Keys::default(),
            api,
            _dir: dir,
            stop: Some(stop),
        }
    }

    /// Joins a node (first start) or restarts one from its data dir.
    async fn node(&self, dir: PathBuf, join: bool) -> NodeProcess {
        let join_token = if join {
            Some(
                lb_api::handlers::nodes::issue_join_token(self.store.as_ref(), &self.keys, 600)
                    .await
                    .unwrap()
                    .0,
            )
        } else {
            None
        };
        let name = format!("n{}", rand_suffix());
        let config = lb_node::Config {
            api: self.api.clone(),
            join_token,
            name: Some(name),
            labels: Vec::new(),
            data_dir: dir.clone(),
            address: None,
            port_range: 30000..=32767,
            routes: None,
            disk: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(lb_node::run(config, async {
            let _ = stopped.await;
        }));
        // The credential file names the node.
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            if let Ok(bytes) = std::fs::read(dir.join("node.json")) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                break v["id"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the node did not join within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        NodeProcess {
            id,
            dir,
            stop: Some(stop),
            task,
        }
    }

    /// Places a replica on a node, as the scheduler does.
    async fn assign(&self, node: &str, a: &Assignment) {
        let placement = Replica {
            id: a.replica.clone(),
            project: a.project.clone(),
            service: a.service.clone(),
            node: Some(node.to_owned()),
            image: a.image.clone(),
            generation: a.generation,
            reason: None,
            created: 0,
        };
        let txn = lb_store::Txn::new()
            .then(lb_store::Op::put(
                self.keys.replica(&a.project, &a.service, &a.replica),
                serde_json::to_vec(&placement).unwrap(),
            ))
            .then(lb_store::Op::put(
                self.keys.node_replica(node, &a.replica),
                serde_json::to_vec(a).unwrap(),
            ));
        self.store.txn(txn).await.unwrap();
    }

    async fn unassign(&self, node: &str, a: &Assignment) {
        self.store
            .delete(&self.keys.node_replica(node, &a.replica))
            .await
            .unwrap();
    }

    async fn status(&self, a: &Assignment) -> Option<ReplicaStatus> {
        let kv = self
            .store
            .get(&self.keys.replica_status(&a.project, &a.service, &a.replica))
            .await
            .unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    /// Waits until the replica's status satisfies `want`.
    async fn wait(
        &self,
        a: &Assignment,
        what: &str,
        want: impl Fn(&ReplicaStatus) -> bool,
    ) -> ReplicaStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(a).await;
            if let Some(s) = &status {
                if want(s) {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica {} not {what} within 30 s: {status:?}",
                a.replica
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rand_suffix() -> String {
    lb_model::ids::new_id().to_lowercase()[14..].to_owned()
}

fn assignment(command: &[&str], memory: u64, ports: Vec<Port>) -> Assignment {
    let id = lb_model::ids::new_id();
    Assignment {
        replica: id.clone(),
        project: "P".repeat(2) + &id[..4],
        service: format!("S{}", &id[10..]),
        service_name: "web".into(),
        generation: 1,
        restart_generation: 0,
        image: IMAGE.into(),
        memory,
        cpu: 0.5,
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        ports,
        volumes: Vec::new(),
        running: true,
        stop_timeout: 10,
        hardening: Default::default(),
        health: None,
        job: None,
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn inspect(id: &str) -> serde_json::Value {
    let text = docker(&["inspect", id]);
    serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()[0].clone()
}

/// Removes every container a test's node made, whatever happened.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for node in &self.0 {
            let ids = docker(&["ps", "-aq", "--filter", &format!("label=lb.node={node}")]);
            for id in ids.lines() {
                docker(&["rm", "-f", id]);
            }
        }
    }
}

const HTTPD: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_runs_with_limits_and_answers_on_its_host_port() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let a = assignment(
        HTTPD,
        32,
        vec![Port {
            container: 8080,
            host: None,
            protocol: Protocol::Tcp,
        }],
    );
    cluster.assign(&node.id, &a).await;
    let status = cluster
        .wait(&a, "running", |s| s.state == ReplicaState::Running)
        .await;
    let host = status.ports[0].host;
    assert!((30000..=32767).contains(&host), "allocated port {host}");
    let body = reqwest::get(format!("http://127.0.0.1:{host}/index.html"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello from lb\n");

    let c = inspect(status.container_id.as_deref().unwrap());
    let hc = &c["HostConfig"];
    assert_eq!(hc["Memory"], 32 * 1024 * 1024);
    assert_eq!(
        hc["MemorySwap"],
        32 * 1024 * 1024,
        "swap equal to the limit"
    );
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Privileged"], false);
    assert!(hc["SecurityOpt"].to_string().contains("no-new-privileges"));
    assert_eq!(c["Config"]["Labels"]["lb.replica"], a.replica.as_str());
    assert_eq!(c["Config"]["Labels"]["lb.node"], node.id.as_str());
    assert!(c["Config"]["Env"].to_string().contains("GREETING=hi"));

    // The node shows up alive with its capacity.
    let meta: serde_json::Value = serde_json::from_slice(
        &cluster
            .store
            .get(&cluster.keys.node_meta(&node.id))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert!(meta["capacity"]["memory"].as_u64().unwrap() > 0);
    assert!(cluster
        .store
        .get(&cluster.keys.node_alive(&node.id))
        .await
        .unwrap()
        .is_some());

    // Unassigned: stopped and removed.
    cluster.unassign(&node.id, &a).await;
    let id = status.container_id.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !docker(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "container of an unassigned replica still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
}

/// A process that ignores SIGTERM: only the kill after the grace ends it.
const DEAF: &[&str] = &[
    "/bin/busybox",
    "sh",
    "-c",
    "trap '' TERM; while true; do /bin/busybox sleep 1; done",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_are_stopped_at_once_each_with_its_grace() {
    const N: usize = 20;
    const GRACE: u32 = 2;
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let replicas: Vec<Assignment> = (0..N)
        .map(|_| Assignment {
            stop_timeout: GRACE,
            ..assignment(DEAF, 8, Vec::new())
        })
        .collect();
    for a in &replicas {
        cluster.assign(&node.id, a).await;
    }
    let mut ids = Vec::new();
    for a in &replicas {
        let s = cluster
            .wait(a, "running", |s| s.state == ReplicaState::Running)
            .await;
        ids.push(s.container_id.unwrap());
    }
    assert_eq!(
        inspect(&ids[0])["Config"]["Labels"]["lb.stop-timeout"],
        GRACE.to_string(),
        "the grace period is on the container"
    );

    // All assignments go at once.
    let mut txn = lb_store::Txn::new();
    for a in &replicas {
        txn = txn.then(lb_store::Op::delete(
            cluster.keys.node_replica(&node.id, &a.replica),
        ));
    }
    let started = Instant::now();
    cluster.store.txn(txn).await.unwrap();
    let filter = format!("label=lb.node={}", node.id);
    // One after another: at least N × GRACE = 40 s.
    let bound = Duration::from_secs(u64::from(GRACE) * 3 + 9);
    loop {
        let left = docker(&["ps", "-aq", "--filter", &filter]).lines().count();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < bound,
            "{left} of {N} containers still there after {:?}: stops do not run at once",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    eprintln!("{N} replicas ignoring SIGTERM removed in {took:?} (grace {GRACE} s)");
    assert!(
        took >= Duration::from_secs(u64::from(GRACE)),
        "removed in {took:?}: the grace period was not given"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_removed_containers_come_back() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let a = assignment(&["/bin/busybox", "sleep", "3600"], 16, Vec::new());
    cluster.assign(&node.id, &a).await;
    let first = cluster
        .wait(&a, "running", |s| s.state == ReplicaState::Running)
        .await;
    let id = first.container_id.clone().unwrap();

    // docker kill by hand: noticed through Docker events and restarted.
    let killed_at = Instant::now();
    docker(&["kill", &id]);
    let back = cluster
        .wait(&a, "restarted", |s| {
            s.restarts >= 1 && s.state == ReplicaState::Running
        })
        .await;
    assert_eq!(
        back.container_id.as_deref(),
        Some(id.as_str()),
        "the same container is started again"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "noticed at once, not at a resync: {:?}",
        killed_at.elapsed()
    );
    assert_eq!(back.exit_code, Some(137), "SIGKILL's exit code is reported");

    // docker rm -f by hand: a new container.
    docker(&["rm", "-f", &id]);
    let fresh = cluster
        .wait(&a, "recreated", |s| {
            s.state == ReplicaState::Running && s.container_id.as_deref() != Some(id.as_str())
        })
        .await;
    assert!(fresh.container_id.is_some());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exit_codes_and_out_of_memory_are_reported() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let failing = assignment(&["/bin/busybox", "sh", "-c", "exit 3"], 16, Vec::new());
    cluster.assign(&node.id, &failing).await;
    let s = cluster
        .wait(&failing, "exited with 3", |s| {
            s.exit_code == Some(3) && s.restarts >= 1
        })
        .await;
    assert!(!s.oom_killed);

    // Holds 64 MiB in a shell variable under an 8 MiB limit.
    let hog = assignment(
        &["/bin/busybox", "sh", "-c", "x=$(/bin/busybox head -c 67108864 /dev/zero | /bin/busybox tr '\\0' a); /bin/busybox sleep 60"],
        8,
        Vec::new(),
    );
    cluster.assign(&node.id, &hog).await;
    let s = cluster
        .wait(&hog, "killed for memory", |s| s.oom_killed)
        .await;
    assert_eq!(s.exit_code, Some(137));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_adopts_its_containers() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let nid = node.id.clone();
    let _cleanup = Cleanup(vec![nid.clone()]);
    let keep = assignment(&["/bin/busybox", "sleep", "3600"], 16, Vec::new());
    let drop_me = assignment(&["/bin/busybox", "sleep", "3600"], 16, Vec::new());
    cluster.assign(&nid, &keep).await;
    cluster.assign(&nid, &drop_me).await;
    let kept = cluster
        .wait(&keep, "running", |s| s.state == ReplicaState::Running)
        .await;
    let dropped = cluster
        .wait(&drop_me, "running", |s| s.state == ReplicaState::Running)
        .await;
    let kept_id = kept.container_id.unwrap();
    let started = inspect(&kept_id)["State"]["StartedAt"].clone();

    // Stopping the daemon stops no container.
    let data = node.dir.clone();
    node.stop().await;
    assert_eq!(inspect(&kept_id)["State"]["Running"], true);
    // While it is down, one replica goes away.
    cluster.unassign(&nid, &drop_me).await;

    let node = cluster.node(data, false).await;
    assert_eq!(node.id, nid, "the same node, from its credential file");
    let dropped_id = dropped.container_id.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !docker(&["ps", "-aq", "--filter", &format!("id={dropped_id}")]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the unassigned replica's container was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = inspect(&kept_id);
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(c["State"]["StartedAt"], started, "adopted, not restarted");
    let ours = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=lb.replica={}", keep.replica),
    ]);
    assert_eq!(ours.lines().count(), 1, "no duplicate container");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_node_is_refused() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .store
        .get(&cluster.keys.node_alive(&node.id))
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "node never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The admin removes the node: its credential is revoked.
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{}/api/v1/auth/login", cluster.api))
        .json(&serde_json::json!({"username": "admin", "password": "admin-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let r = client
        .delete(format!("{}/api/v1/nodes/{}", cluster.api, node.id))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut node = node;
    let result = tokio::time::timeout(Duration::from_secs(30), &mut node.task)
        .await
        .expect("the node gave up within 30 s")
        .unwrap();
    assert!(matches!(result, Err(lb_node::Error::Refused)), "{result:?}");
    // A used join token does not work twice either.
    let (token, _) =
        lb_api::handlers::nodes::issue_join_token(cluster.store.as_ref(), &cluster.keys, 600)
            .await
            .unwrap();
    let join = |name: &str| {
        client
            .post(format!("{}/api/v1/nodes/join", cluster.api))
            .json(&serde_json::json!({"token": token, "name": name}))
            .send()
    };
    assert_eq!(join("first").await.unwrap().status(), 201);
    assert_eq!(join("second").await.unwrap().status(), 401);
}

/// A health check from JSON, its port resolved to 8080.
fn health(check: serde_json::Value) -> Option<lb_model::HealthCheck> {
    let check: lb_model::HealthCheck = serde_json::from_value(check).unwrap();
    Some(check.with_port(Some(8080)))
}

fn port_8080() -> Vec<Port> {
    vec![Port {
        container: 8080,
        host: None,
        protocol: Protocol::Tcp,
    }]
}

/// Builds `tag` from the test image with a `HEALTHCHECK` line.
fn image_with_healthcheck(tag: &str, healthcheck: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nHEALTHCHECK {healthcheck}\n"),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_checks_pass_and_an_unhealthy_replica_is_restarted() {
    use lb_model::Health;
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let fast = |mut check: serde_json::Value| {
        check["interval"] = 1.into();
        check["timeout"] = 1.into();
        check["retries"] = 2.into();
        health(check)
    };
    // A page that answers: healthy.
    let good = Assignment {
        health: fast(serde_json::json!({"http": "/index.html"})),
        ..assignment(HTTPD, 32, port_8080())
    };
    // A page that does not (busybox httpd answers 404).
    let bad = Assignment {
        health: fast(serde_json::json!({"http": "/healthz"})),
        ..assignment(HTTPD, 32, port_8080())
    };
    // A port nobody listens on (Docker's proxy must not pass for it).
    let deaf = Assignment {
        health: fast(serde_json::json!({"tcp": true})),
        ..assignment(&["/bin/busybox", "sleep", "3600"], 32, port_8080())
    };
    // A command that exits 0, and one that does not.
    let fine = Assignment {
        health: health(serde_json::json!({"command": ["/bin/busybox", "true"], "interval": 1})),
        ..assignment(&["/bin/busybox", "sleep", "3600"], 32, Vec::new())
    };
    let failing = Assignment {
        health: health(
            serde_json::json!({"command": ["/bin/busybox", "sh", "-c", "echo not ready >&2; exit 3"],
            "interval": 1, "retries": 1}),
        ),
        ..assignment(&["/bin/busybox", "sleep", "3600"], 32, Vec::new())
    };
    for a in [&good, &bad, &deaf, &fine, &failing] {
        cluster.assign(&node.id, a).await;
    }
    for a in [&good, &fine] {
        let s = cluster
            .wait(a, "healthy", |s| s.health == Some(Health::Healthy))
            .await;
        assert!(s.takes_traffic() && s.restarts == 0, "{s:?}");
    }
    let s = cluster
        .wait(&bad, "restarted for being unhealthy", |s| s.restarts >= 1)
        .await;
    assert_eq!(
        s.message, "restarted: unhealthy (GET /healthz: 404)",
        "{s:?}"
    );
    assert_eq!(s.health_message, "GET /healthz: 404");
    assert!(!s.takes_traffic());
    let s = cluster
        .wait(&deaf, "restarted for being unhealthy", |s| s.restarts >= 1)
        .await;
    assert!(
        s.message
            .starts_with("restarted: unhealthy (TCP port 8080: "),
        "{s:?}"
    );
    let s = cluster
        .wait(&failing, "restarted for being unhealthy", |s| {
            s.restarts >= 1
        })
        .await;
    assert_eq!(
        s.message, "restarted: unhealthy (command /bin/busybox: exit code 3: not ready)",
        "{s:?}"
    );
    // The healthy ones were left alone meanwhile.
    for a in [&good, &fine] {
        let s = cluster.status(a).await.unwrap();
        assert_eq!((s.health, s.restarts), (Some(Health::Healthy), 0), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_images_healthcheck_is_reported_and_an_unhealthy_one_restarted() {
    use lb_model::Health;
    let cluster = Cluster::start().await;
    image_with_healthcheck(
        "lb-test-busybox-healthy:1",
        r#"--interval=1s --timeout=2s --retries=1 CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]"#,
    );
    image_with_healthcheck(
        "lb-test-busybox-sick:1",
        r#"--interval=1s --timeout=2s --retries=1 CMD ["/bin/busybox", "sh", "-c", "echo sick; exit 2"]"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(dir.path().join("node"), true).await;
    let _cleanup = Cleanup(vec![node.id.clone()]);
    let healthy = Assignment {
        image: "lb-test-busybox-healthy:1".into(),
        ..assignment(HTTPD, 32, port_8080())
    };
    let sick = Assignment {
        image: "lb-test-busybox-sick:1".into(),
        ..assignment(HTTPD, 32, port_8080())
    };
    let plain = assignment(HTTPD, 32, port_8080());
    for a in [&healthy, &sick, &plain] {
        cluster.assign(&node.id, a).await;
    }
    let s = cluster
        .wait(&healthy, "healthy by Docker", |s| {
            s.health == Some(Health::Healthy)
        })
        .await;
    assert!(s.takes_traffic(), "{s:?}");
    let s = cluster
        .wait(&sick, "restarted for Docker's unhealthy", |s| {
            s.restarts >= 1
        })
        .await;
    assert_eq!(
        s.message, "restarted: unhealthy (HEALTHCHECK: exit code 2: sick)",
        "{s:?}"
    );
    let s = cluster
        .wait(&plain, "running", |s| s.state == ReplicaState::Running)
        .await;
    assert_eq!(s.health, None, "no check at all: {s:?}");
}
