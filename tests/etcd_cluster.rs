//! `lb up` on a real three-member etcd cluster (`--etcd e1,e2,e3`) with its
//! local node on the real Docker engine, while a client creates services
//! without pause and counts the creations lb acknowledged. Each fault in
//! turn — one member killed, the leader killed, one member frozen (SIGSTOP:
//! a member cut off, see `lb_testing::etcd_cluster`), and the whole cluster
//! restarted — and after each: every acknowledged service is there, a new
//! service is placed and runs, and no replica has two containers.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_testing::etcd_cluster::EtcdCluster;
use serde_json::{json, Value};

const LB: &str = env!("CARGO_BIN_EXE_lb");

struct Up {
    child: Child,
    url: String,
    #[allow(dead_code)] // keeps the reader thread alive with the child
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::zombie_processes)] // waited for by Up's Drop
fn start(etcd: &str, dir: &std::path::Path) -> Up {
    let child = Command::new(LB)
        .args(["up", "--listen", "127.0.0.1:0", "--etcd", etcd])
        .args(["--node-grace", "5s", "--data-dir"])
        .arg(dir)
        .env_remove("LB_LISTEN")
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lb up");
    wait_up(child, "lb up")
}

/// Waits (60 s) for a started `lb up`/`lb api` to print its URL.
fn wait_up(mut child: Child, what: &str) -> Up {
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} printed no URL within 60 s: {}",
                stderr.join().unwrap_or_default()
            );
        };
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest.split_whitespace().next().unwrap();
            return Up {
                child,
                url: format!("{}/api/v1", url.trim_end_matches('/')),
                stderr: Some(stderr),
            };
        }
    }
}

/// The REST client of the test.
#[derive(Clone)]
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn login(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let body: Value = http
            .post(format!("{url}/auth/login"))
            .json(&json!({"username": "admin", "password": "admin-password-1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let api = Self {
            url: url.to_owned(),
            token: body["token"].as_str().expect("a token").to_owned(),
            http,
        };
        api.call("POST", "/projects", json!({"name": "demo"}))
            .await
            .expect("create the project");
        api
    }

    /// One request: the answer, or why there was none (status or error).
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{status} {value}"))
        }
    }

    /// `call`, retried until it succeeds (at most `limit`).
    async fn must(&self, method: &str, path: &str, body: Value, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            match self.call(method, path, body.clone()).await {
                Ok(value) => return value,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "{method} {path}: not answered within {limit:?}: {err}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn sleeper(name: &str, replicas: u32) -> Value {
    json!({"name": name, "image": lb_testing::busybox_image(), "replicas": replicas,
        "memory": 16, "cpu": 0.05, "command": ["/bin/busybox", "sleep", "3600"]})
}

/// What the writer did: services acknowledged, and failed attempts.
#[derive(Default)]
struct Written {
    acked: Mutex<Vec<String>>,
    failed: AtomicUsize,
}

/// Creates services `w-<n>` (no replicas: the point is the write) one after
/// another until `stop`, each acknowledged one recorded.
async fn writer(api: Api, written: Arc<Written>, stop: Arc<AtomicBool>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w-{n}");
        match api
            .call("POST", "/projects/demo/services", sleeper(&name, 0))
            .await
        {
            Ok(_) => {
                written.acked.lock().unwrap().push(name);
                n += 1;
            }
            // A create whose answer was lost may have been applied; its
            // retry then gets 409. Either way the name is not reused.
            Err(err) => {
                written.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("write {name}: {err}");
                n += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks after a fault: every acknowledged service is stored; a new
/// service `name` is placed and running; no replica has two containers.
async fn check(api: &Api, written: &Written, name: &str) {
    let acked = written.acked.lock().unwrap().clone();
    let list = api
        .must(
            "GET",
            "/projects/demo/services?limit=1000",
            Value::Null,
            Duration::from_secs(30),
        )
        .await;
    let stored: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| !stored.contains(&n.as_str()))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    api.must(
        "POST",
        "/projects/demo/services",
        sleeper(name, 2),
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replicas = api
            .must(
                "GET",
                &format!("/projects/demo/services/{name}/replicas"),
                Value::Null,
                Duration::from_secs(30),
            )
            .await;
        let running = replicas["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "running")
            .count();
        if running == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not placed and running within 60 s: {replicas}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_no_duplicate_containers();
}

/// No replica id labels two containers (of any test: ids are unique).
fn assert_no_duplicate_containers() {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", "label=lb.replica"])
        .args(["--format", "{{.Label \"lb.replica\"}}"])
        .output()
        .expect("docker ps");
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a replica with two containers");
}

/// The ids of lb's nodes (the local node's).
async fn node_ids(api: &Api) -> Vec<String> {
    let nodes = api
        .call("GET", "/nodes", Value::Null)
        .await
        .unwrap_or_default();
    nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| node["id"].as_str().map(str::to_owned))
        .collect()
}

/// Removes the containers of the nodes `ids`: after their node stopped,
/// which would otherwise start them again.
fn remove_containers(ids: &[String]) {
    for id in ids {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=lb.node={id}")])
            .output()
            .expect("docker ps");
        for container in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_rides_through_etcd_member_faults_and_a_full_restart() {
    lb_testing::busybox_image();
    let mut cluster = EtcdCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let up = start(&cluster.endpoints_flag(), dir.path());
    let api = Api::login(&up.url).await;
    let written = Arc::new(Written::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(writer(api.clone(), written.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    check(&api, &written, "before").await;

    let mut figures = Vec::new();
    let mut report = |what: &str, written: &Written| {
        let line = format!(
            "{what}: {} writes acknowledged so far, {} failed attempts",
            written.acked.lock().unwrap().len(),
            written.failed.load(Ordering::Relaxed)
        );
        eprintln!("{line}");
        figures.push(line);
    };

    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    check(&api, &written, "member-killed").await;
    report("one member killed", &written);
    cluster.start_member(victim).await;

    let leader = cluster.leader().await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    check(&api, &written, "leader-killed").await;
    report("leader killed", &written);
    cluster.start_member(leader).await;

    let frozen = cluster.leader().await;
    cluster.freeze(frozen);
    tokio::time::sleep(Duration::from_secs(3)).await;
    check(&api, &written, "member-frozen").await;
    report("leader frozen (SIGSTOP)", &written);
    cluster.thaw(frozen).await;

    cluster.restart_all().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    check(&api, &written, "after-restart").await;
    report("full etcd restart", &written);

    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    check(&api, &written, "at-end").await;
    eprintln!("figures:\n{}", figures.join("\n"));
    let nodes = node_ids(&api).await;
    drop(up);
    remove_containers(&nodes);
}

/// Starts `lb api` on `etcd`, listening on `listen`.
#[allow(clippy::zombie_processes)] // waited for by Up's Drop
fn start_api(etcd: &str, listen: &str) -> Up {
    let child = Command::new(LB)
        .args(["api", "--listen", listen, "--etcd", etcd, "--no-acme"])
        .env_remove("LB_LISTEN")
        .env("LB_ADMIN_PASSWORD", "admin-password-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lb api");
    wait_up(child, "lb api")
}

impl Up {
    /// SIGTERM, and waits (at most 20 s) for the exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "lb api did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A round-robin TCP forwarder: each connection goes to the next backend
/// that accepts it (a stopped one is skipped), bytes copied both ways.
async fn forwarder(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let mut outbound = None;
            for i in 0..backends.len() {
                let backend = &backends[(next + i) % backends.len()];
                if let Ok(stream) = tokio::net::TcpStream::connect(backend).await {
                    outbound = Some(stream);
                    break;
                }
            }
            next += 1;
            if let Some(mut outbound) = outbound {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        }
    });
    format!("http://{addr}/api/v1")
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_apis_loses_no_request() {
    let cluster = EtcdCluster::start().await;
    let etcd = cluster.endpoints_flag();
    let addrs = [free_addr(), free_addr()];
    let mut apis = [
        Some(start_api(&etcd, &addrs[0])),
        Some(start_api(&etcd, &addrs[1])),
    ];
    let front = forwarder(addrs.to_vec()).await;
    let api = Api::login(&front).await;
    let stop = Arc::new(AtomicBool::new(false));
    // The client: reads and writes in a loop, each request retried once.
    let counts = Arc::new((
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ));
    let client = {
        let (api, stop, counts) = (api.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (method, path, body) = if n % 2 == 0 {
                    ("GET", "/projects/demo/services".to_owned(), Value::Null)
                } else {
                    let spec = sleeper(&format!("r-{n}"), 0);
                    ("POST", "/projects/demo/services".to_owned(), spec)
                };
                n += 1;
                let first = api.call(method, &path, body.clone()).await;
                let result = match first {
                    Ok(v) => Ok(v),
                    Err(err) => {
                        counts.1.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{method} {path}: {err}; retrying once");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match api.call(method, &path, body).await {
                            // The first try was applied, its answer lost.
                            Err(e) if method == "POST" && e.starts_with("409") => Ok(Value::Null),
                            other => other,
                        }
                    }
                };
                match result {
                    Ok(_) => counts.0.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        eprintln!("{method} {path}: failed after a retry: {err}");
                        counts.2.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    for round in 0..2 {
        for (i, slot) in apis.iter_mut().enumerate() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let old = slot.take().unwrap();
            let status = tokio::task::spawn_blocking(move || old.terminate())
                .await
                .unwrap();
            assert!(status.success(), "lb api {i} exits 0 on SIGTERM: {status}");
            *slot = Some(start_api(&etcd, &addrs[i]));
            eprintln!("round {round}: api {i} restarted");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let (ok, retried, failed) = (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
        counts.2.load(Ordering::Relaxed),
    );
    eprintln!("rolling restart: {ok} requests answered, {retried} retried, {failed} failed");
    assert!(ok > 50, "the client kept going: {ok} requests");
    assert_eq!(failed, 0, "no request failed beyond its one retry");
}
