//! What the isolation tests share: a running `lb up`, signed-up users, and
//! the Docker engine's view of replicas.

pub use std::io::{BufRead, BufReader, Read};
pub use std::os::unix::fs::PermissionsExt;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Stdio};
pub use std::sync::mpsc;
pub use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

const LB: &str = env!("CARGO_BIN_EXE_lb");

/// A running `lb up`, killed on drop, with the containers of its node
/// removed and then its firewall chains and networks (`lb node
/// uninstall`), so runs leave nothing in iptables.
pub struct Up {
    child: Child,
    pub api: String,
    /// The registry's host:port, as `lb up` printed it.
    pub registry: String,
    /// The data dir.
    pub data: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        stop_and_clean(&mut self.child, &self.data);
    }
}

/// The id of the node of `lb up`'s data dir, from its credential file.
pub fn node_id(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("node").join("node.json")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value["id"].as_str().map(str::to_owned)
}

/// Runs `lb node uninstall --data-dir <data>`.
pub fn uninstall(data: &Path) -> std::process::Output {
    Command::new(LB)
        .args(["node", "uninstall", "--data-dir"])
        .arg(data)
        .output()
        .expect("run lb node uninstall")
}

/// Starts `lb up` on `data` and waits for its "lb is up" line.
// The child is waited for by `Up`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn start(data: &Path) -> Up {
    start_with(data, &[])
}

/// [`start`] with more (or overriding) environment variables.
#[allow(clippy::zombie_processes)]
pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Up {
    let mut child = Command::new(LB)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        // ... and each ingress.
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password")
        .env("LB_LOG", "warn")
        // Tests run side by side: no ingress on fixed ports.
        .env("LB_NO_INGRESS", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lb up");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut registry = String::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!("lb up printed no URL within 30 s: {stderr}");
        };
        if let Some(rest) = line.strip_prefix("registry: ") {
            registry = rest.trim().to_owned();
        }
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/');
            return Up {
                api: format!("{url}/api/v1"),
                registry,
                data: data.to_owned(),
                child,
                stderr: Some(stderr),
            };
        }
    }
}

impl Up {
    /// SIGTERM, waits for the exit, and returns what lb wrote to stderr.
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "lb did not stop within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stderr.take().unwrap().join().unwrap()
    }
}

/// A signed-up user's API calls.
pub struct User {
    api: String,
    token: String,
    client: reqwest::Client,
}

impl User {
    pub async fn sign_up(api: &str, name: &str) -> Self {
        let client = reqwest::Client::new();
        let creds = json!({"username": name, "password": "password-1"});
        let status = client
            .post(format!("{api}/auth/signup"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
        let login: Value = client
            .post(format!("{api}/auth/login"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            api: api.to_owned(),
            token: login["token"].as_str().unwrap().to_owned(),
            client,
        }
    }

    /// Logs in as an existing user (password `password-1`).
    #[allow(dead_code)] // tests/backup.rs
    pub async fn log_in(api: &str, name: &str) -> Self {
        let client = reqwest::Client::new();
        let login: Value = client
            .post(format!("{api}/auth/login"))
            .json(&json!({"username": name, "password": "password-1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login: {login}"));
        Self {
            api: api.to_owned(),
            token: token.to_owned(),
            client,
        }
    }

    /// Logs in an existing user (the admin is `admin` / `admin-password`).
    pub async fn log_in_as(api: &str, name: &str, password: &str) -> Self {
        let client = reqwest::Client::new();
        let login: Value = client
            .post(format!("{api}/auth/login"))
            .json(&json!({"username": name, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            api: api.to_owned(),
            token: login["token"].as_str().expect("logged in").to_owned(),
            client,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Value) -> (u16, String) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Waits (90 s) for the service's replicas to run; returns their
    /// container ids.
    pub async fn running(&self, project: &str, service: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let path = format!("/projects/{project}/services/{service}/replicas");
            let (_, list) = self.call("GET", &path, Value::Null).await;
            let list: Value = serde_json::from_str(&list).unwrap_or_default();
            let running: Vec<&Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["state"] == "running")
                .collect();
            if running.len() == count {
                return running
                    .iter()
                    .map(|r| container_of(r["id"].as_str().unwrap()))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{service}: replicas not running within 90 s: {list}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The container of a replica, by its label.
pub fn container_of(replica: &str) -> String {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=lb.replica={replica}"),
    ]);
    let id = out.trim().to_owned();
    assert!(!id.is_empty(), "no container for replica {replica}");
    id
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker exec` without failing the test: (exit code, stdout + stderr).
pub fn exec(id: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", id, "/bin/busybox", "sh", "-c", script])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Removes the containers of the replicas given, also when the test fails.
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// A registry token for `scope` (`repository:<project>/<service>:<actions>`),
/// asked of the API at `api` as `user` with `password`, as `docker login`
/// would.
pub async fn registry_token(api: &str, user: &str, password: &str, scope: &str) -> String {
    let token: Value = reqwest::Client::new()
        .get(format!("{api}/registry/token"))
        .query(&[("service", "lb-registry"), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["token"]
        .as_str()
        .expect("a registry token")
        .to_owned()
}

/// Kills `child` (an `lb up` or `lb node` whose data dir is `data`), then
/// removes its node's containers (which a running node would put back) and
/// its chains and networks (`lb node uninstall`).
pub fn stop_and_clean(child: &mut Child, data: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    let Some(node) = node_id(data) else {
        return;
    };
    if let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.node={node}")])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
    let out = uninstall(data);
    if !out.status.success() && !std::thread::panicking() {
        panic!(
            "lb node uninstall failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
