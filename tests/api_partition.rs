//! An API instance cut off from the store: two `lb api` processes (the real
//! binary), each in its own network namespace joined to the test's bridge
//! (`lb_testing::netns`), share one etcd that listens on the bridge, with an
//! `lb scheduler` beside them; one `lb node --api A,B` connects to A, the
//! first named. The scheduler and the node run in the test's own namespace
//! (it reaches the others over the bridge; traffic between two namespaces
//! would cross the host's FORWARD chain, which Docker sets to DROP).
//!
//! A is cut off from etcd alone (an iptables DROP in A's namespace of the
//! packets to and from etcd's port: its TCP connections stay open and fall
//! silent) while the node still reaches it. A cannot renew the node's lease
//! and drops the channel; the node goes on with B. The test checks that
//! the node is connected to B and alive (B's `GET /nodes`) within a bound,
//! that the replica it held kept running in the same container, that a
//! service created through B gets a replica running on the node, and after
//! the heal that nothing runs twice and a service created through A runs
//! too.
//!
//! Needs root (network namespaces, iptables), Docker, Debian's `etcd` and
//! busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_model::keys::Keys;
use lb_store::etcd::EtcdStore;
use lb_store::Shared;
use lb_testing::netns::{Host, Net};
use serde_json::{json, Value};

const LB: &str = env!("CARGO_BIN_EXE_lb");
/// The port each `lb api` listens on, in its own namespace.
const API_PORT: u16 = 2967;
/// How long the node may take to be connected to B and alive there after
/// A is cut off: A notices at its next lease renewal (every 3.3 s, giving
/// up after 5 s), the node when A falls silent (3 s).
const SWITCH_LIMIT: Duration = Duration::from_secs(20);
/// How long A may take to end the node's channel itself (its renewal gives
/// up after 5 s, its revoke of the lease after 5 s more).
const DROP_LIMIT: Duration = Duration::from_secs(25);

/// A child process killed on drop.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn spawn(name: &str, mut command: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        command
            .env_remove("LB_ETCD")
            .env_remove("LB_DATA_DIR")
            .env_remove("LB_API")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        #[allow(clippy::zombie_processes)] // waited for by Drop
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "{}'s log:\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}); {}", self.name, self.tail());
        }
    }
}

/// etcd listening on the bridge's host side.
fn etcd(ip: &str, dir: &Path) -> (Process, String) {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://{ip}:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut command = Command::new(std::env::var("LB_TEST_ETCD").unwrap_or_else(|_| "etcd".into()));
    command
        .args(["--name", "s0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &url])
        .args(["--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("s0={peer_url}")]);
    (Process::spawn("etcd", command, dir), url)
}

/// Cuts `host` off from etcd at `etcd` (`ip:port`), or heals that cut:
/// packets to and from etcd's port dropped in the host's namespace, every
/// other packet passes.
fn cut_from_etcd(host: &Host, etcd: &str, op: &str) {
    let (ip, port) = etcd.rsplit_once(':').unwrap();
    for rule in [
        ["OUTPUT", "-d", ip, "--dport", port],
        ["INPUT", "-s", ip, "--sport", port],
    ] {
        let (chain, addr, ip, side, port) = (rule[0], rule[1], rule[2], rule[3], rule[4]);
        let out = Command::new("ip")
            .args(["netns", "exec", &host.netns, "iptables", "-w", op, chain])
            .args([addr, ip, "-p", "tcp", side, port, "-j", "DROP"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables {op} {chain}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The admin's calls to one API instance.
struct Api {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    /// Waits (20 s) until the instance at `base` answers, and logs in.
    async fn connect(base: &str, process: &mut Process) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            process.assert_running();
            assert!(
                Instant::now() < deadline,
                "{base} not up within 20 s; {}",
                process.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = format!("{base}/api/v1");
        let login: Value = client
            .post(format!("{url}/auth/login"))
            .json(&json!({"username": "admin", "password": "admin-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"]
            .as_str()
            .unwrap_or_else(|| panic!("admin login at {url}: {login}"))
            .to_owned();
        Self { url, token, client }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.json().await.unwrap_or(Value::Null),
            ),
            Err(err) => (0, json!(err.to_string())),
        }
    }

    /// Creates a service of one sleeper (killed at once when stopped).
    async fn service(&self, name: &str) {
        let (status, body) = self.try_service(name).await;
        assert_eq!(status, 201, "create {name} at {}: {body}", self.url);
    }

    /// Asks to create a service of one sleeper; answers the status and body.
    async fn try_service(&self, name: &str) -> (u16, Value) {
        let spec = json!({"name": name, "image": lb_testing::busybox_image(), "replicas": 1,
            "memory": 16, "cpu": 0.1, "stop_timeout": 1,
            "command": ["/bin/busybox", "sleep", "3600"]});
        self.call("POST", "/projects/demo/services", spec).await
    }

    /// Waits until service `name`'s replica runs on `node`; answers how long.
    async fn running_on(&self, name: &str, node: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let path = format!("/projects/demo/services/{name}/replicas");
            let (_, list) = self.call("GET", &path, Value::Null).await;
            let running = list["items"].as_array().is_some_and(|items| {
                items.len() == 1
                    && items[0]["state"] == "running"
                    && items[0]["node"].as_str() == Some(node)
            });
            if running {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{name}: no replica running on {node} within {limit:?} (asked {}): {list}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this instance's `GET /nodes` shows `node` alive.
    async fn alive(&self, node: &str) -> bool {
        let (_, list) = self.call("GET", "/nodes", Value::Null).await;
        list["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|n| n["id"].as_str() == Some(node) && n["alive"] == true)
        })
    }
}

/// The running containers of `node`, by their label.
fn containers(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=lb.node={node}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The containers of the node of a data dir, removed when the test ends
/// (also on failure, after the node: made before it), then its firewall
/// chains (`lb node uninstall`).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let id = std::fs::read(self.0.join("node.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        let Some(id) = id else { return };
        for id in containers_all(&id) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        let _ = Command::new(LB)
            .args(["node", "uninstall", "--data-dir"])
            .arg(&self.0)
            .output();
    }
}

/// Every container of `node`, running or not.
fn containers_all(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.node={node}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// How many lines of the node's log say it connected to the API at `ip`.
fn connections(node: &Process, ip: &str) -> usize {
    let at = format!("//{ip}:{API_PORT}/");
    node.log()
        .lines()
        .filter(|l| l.contains("connected to the API") && l.contains(&at))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_an_api_cut_off_from_the_store_for_another() {
    lb_testing::busybox_image();
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut etcd, etcd_url) = etcd(&net.host_ip(), dir.path());
    let store: Shared = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(std::slice::from_ref(&etcd_url)).await {
                Ok(store) => break Arc::new(store),
                Err(err) => {
                    etcd.assert_running();
                    assert!(Instant::now() < deadline, "etcd did not start: {err}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let keys = Keys::default();
    lb_api::accounts::ensure_admin(store.as_ref(), &keys, Some("admin-password".into()))
        .await
        .unwrap();

    // Two API instances, each in its namespace, and the scheduler.
    let (host_a, host_b) = (net.host("a"), net.host("b"));
    let api_process = |name: &str, host: &Host| {
        let mut command = host.command(LB);
        command
            .args(["api", "--etcd", &etcd_url, "--no-acme"])
            .args(["--listen", &format!("{}:{API_PORT}", host.ip)])
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .env("LB_LOG", "info");
        Process::spawn(name, command, dir.path())
    };
    let mut process_a = api_process("api-a", &host_a);
    let mut process_b = api_process("api-b", &host_b);
    let mut scheduler = {
        let mut command = Command::new(LB);
        command
            .args(["scheduler", "--etcd", &etcd_url, "--node-grace", "10s"])
            .arg("--data-dir")
            .arg(dir.path().join("scheduler"))
            .env("LB_LOG", "info");
        Process::spawn("scheduler", command, dir.path())
    };
    let base_a = format!("http://{}:{API_PORT}", host_a.ip);
    let base_b = format!("http://{}:{API_PORT}", host_b.ip);
    let a = Api::connect(&base_a, &mut process_a).await;
    let b = Api::connect(&base_b, &mut process_b).await;
    let (status, body) = a.call("POST", "/projects", json!({"name": "demo"})).await;
    assert_eq!(status, 201, "create the project: {body}");

    // The node, told of both instances, joins and connects through A.
    let (token, _) = lb_api::handlers::nodes::issue_join_token(store.as_ref(), &keys, 600)
        .await
        .unwrap();
    let node_dir = dir.path().join("node");
    let _cleanup = Cleanup(node_dir.clone());
    let mut node = {
        let mut command = Command::new(LB);
        command
            .args(["node", "--api", &format!("{base_a},{base_b}")])
            .args(["--name", "n1", "--join-token", &token])
            .arg("--data-dir")
            .arg(&node_dir)
            .env("LB_LOG", "info");
        Process::spawn("node", command, dir.path())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Ok(bytes) = std::fs::read(node_dir.join("node.json")) {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            break v["id"].as_str().unwrap().to_owned();
        }
        node.assert_running();
        assert!(
            Instant::now() < deadline,
            "the node did not join; {}\n{}",
            node.tail(),
            process_a.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    a.service("before").await;
    a.running_on("before", &id, Duration::from_secs(30)).await;
    assert_eq!(connections(&node, &host_a.ip), 1, "{}", node.tail());
    assert_eq!(connections(&node, &host_b.ip), 0, "{}", node.tail());
    let held = containers(&id);
    assert_eq!(held.len(), 1, "the node runs one container: {held:?}");

    // A is cut off from etcd, not from the node: it drops the channel and
    // the node goes on with B.
    let etcd_addr = etcd_url.trim_start_matches("http://").to_owned();
    let cut = Instant::now();
    cut_from_etcd(&host_a, &etcd_addr, "-I");
    loop {
        if connections(&node, &host_b.ip) > 0 && b.alive(&id).await {
            break;
        }
        assert!(
            cut.elapsed() < SWITCH_LIMIT,
            "the node is not connected to B and alive there within {SWITCH_LIMIT:?}; {}\n{}",
            node.tail(),
            process_a.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let switched = cut.elapsed();
    // A ends the channel too (the node may have left first: A stops
    // pinging while its renewal waits for the store).
    while !process_a.log().contains("node channel ended") {
        assert!(
            cut.elapsed() < DROP_LIMIT,
            "A did not end the node's channel within {DROP_LIMIT:?}; {}",
            process_a.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dropped = cut.elapsed();

    // A service created through B runs on the node; the one it held never
    // stopped.
    b.service("after").await;
    let placed = b.running_on("after", &id, Duration::from_secs(30)).await;
    let now = containers(&id);
    assert!(
        now.contains(&held[0]),
        "the replica held before the cut was replaced: {held:?} then {now:?}; {}",
        node.tail()
    );
    assert_eq!(now.len(), 2, "two services, two containers: {now:?}");

    // Heal: A serves again (a service created through it runs on the node,
    // still connected to B), nothing runs twice, the node stays alive.
    cut_from_etcd(&host_a, &etcd_addr, "-D");
    let healed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A request that timed out may have been applied: 409 is created.
        let (status, body) = a.try_service("healed").await;
        if status == 201 || status == 409 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A does not create a service within 30 s of the heal: {status} {body}; {}",
            process_a.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = healed.elapsed();
    a.running_on("healed", &id, Duration::from_secs(30)).await;
    let watch_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < watch_until {
        let now = containers(&id);
        assert_eq!(
            now.len(),
            3,
            "after the heal, three services run one container each: {now:?}"
        );
        assert!(b.alive(&id).await, "the node is lost after the heal");
        for p in [&mut process_a, &mut process_b, &mut scheduler, &mut node] {
            p.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        connections(&node, &host_b.ip),
        1,
        "the node kept its channel to B; {}",
        node.tail()
    );
    eprintln!(
        "api partition: node connected to B and alive {switched:.1?} after A was cut off \
         (A ended the channel after {dropped:.1?}); a service created through B \
         running on it after {placed:.1?}; A creating services again {served:.1?} after \
         the heal"
    );
    drop(node);
}
