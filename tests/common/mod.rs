//! The harness of the cluster tests: an API server and the scheduler over
//! the embedded store in this process, and `lb node` processes (the real
//! binary) on the real Docker engine; services created through the REST
//! API as a user would.

#![allow(dead_code)] // each test binary uses a part of it

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_api::server::Signup;
use lb_model::keys::Keys;
use lb_store::embedded::EmbeddedStore;
use lb_store::Shared;
use serde_json::{json, Value};

pub const IMAGE: &str = "lb-test-busybox:1";

/// A running `lb node` process.
pub struct Node {
    pub id: String,
    pub child: std::process::Child,
}

impl Node {
    /// SIGKILL: the node dies without a word.
    pub async fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub store: Shared,
    pub keys: Keys,
    pub api: String,
    pub token: String,
    /// The admin's token: `/nodes` routes are the admin's.
    pub admin_token: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<String>,
    pub stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The API server's shared state (its route table, its store).
    pub ctx: lb_api::context::Ctx,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for node in &self.nodes {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=lb.node={node}")])
                .output()
                .unwrap();
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        // The nodes' iptables chains and (now unused) project networks: each
        // node's data dir is named after it in the cluster's dir.
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                if entry.path().join("node.json").exists() {
                    let _ = Command::new(env!("CARGO_BIN_EXE_lb"))
                        .args(["node", "uninstall", "--data-dir"])
                        .arg(entry.path())
                        .output();
                }
            }
        }
    }
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with API settings changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut lb_api::Config)) -> Self {
        Self::start_graced(Duration::from_secs(2), configure).await
    }

    /// Starts with the scheduler's node grace and API settings changed by
    /// `configure`.
    pub async fn start_graced(
        node_grace: Duration,
        configure: impl FnOnce(&mut lb_api::Config),
    ) -> Self {
        lb_testing::busybox_image();
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let mut config = lb_api::Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
        configure(&mut config);
        lb_api::accounts::ensure_admin(store.as_ref(), &config.keys, Some("admin-password".into()))
            .await
            .unwrap();
        let mut stops = Vec::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let server = lb_api::Server::bind(&config, store.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let api = format!("http://{}", server.addr());
        let ctx = server.context().clone();
        tokio::spawn(server.run());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let scheduler = lb_scheduler::Config {
            node_grace,
            ..Default::default()
        };
        tokio::spawn(lb_scheduler::run(store.clone(), scheduler, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let body = json!({"username": "alice", "password": "password-1"});
        client
            .post(format!("{api}/api/v1/auth/signup"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let login: Value = client
            .post(format!("{api}/api/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().unwrap().to_owned();
        // Nodes are the admin's to read.
        let admin: Value = client
            .post(format!("{api}/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": "admin-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let admin_token = admin["token"].as_str().unwrap().to_owned();
        let cluster = Cluster {
            store,
            keys: Keys::default(),
            api,
            token,
            admin_token,
            client,
            dir,
            nodes: Vec::new(),
            stops,
            ctx,
        };
        cluster
            .call("POST", "/projects", json!({"name": "demo"}))
            .await;
        cluster
    }

    pub async fn node(&mut self, name: &str) -> Node {
        self.node_with(name, &[]).await
    }

    /// Starts an `lb node` with extra flags.
    pub async fn node_with(&mut self, name: &str, extra: &[&str]) -> Node {
        let (token, _) =
            lb_api::handlers::nodes::issue_join_token(self.store.as_ref(), &self.keys, 600)
                .await
                .unwrap();
        let data: PathBuf = self.dir.path().join(name);
        let config = lb_node::Config {
            api: self.api.clone(),
            join_token: Some(token),
            name: Some(format!(
                "{name}-{}",
                &lb_model::ids::new_id().to_lowercase()[18..]
            )),
            labels: vec![("zone".into(), name.into())],
            data_dir: data.clone(),
            address: None,
            port_range: 30000..=32767,
            routes: None,
            disk: Default::default(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb"));
        cmd.args([
            "node",
            "--api",
            &config.api,
            "--name",
            config.name.as_deref().unwrap(),
        ])
        .args([
            "--join-token",
            config.join_token.as_deref().unwrap(),
            "--label",
            &format!("zone={name}"),
        ])
        .arg("--data-dir")
        .arg(&config.data_dir)
        .args(extra)
        .env_remove("LB_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        #[allow(clippy::zombie_processes)] // waited for by Node's Drop
        let mut child = cmd.spawn().expect("start lb node");
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            if let Ok(bytes) = std::fs::read(data.join("node.json")) {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                break v["id"].as_str().unwrap().to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node {name} exited: {status}");
            }
            assert!(Instant::now() < deadline, "node {name} did not join");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Wait until it is alive and has told its capacity.
        loop {
            let node = self.call("GET", &format!("/nodes/{id}"), Value::Null).await;
            if node["alive"] == true && node["capacity"]["memory"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "node {name} not alive: {node}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.nodes.push(id.clone());
        Node { id, child }
    }

    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/api/v1{path}", self.api);
        let mut req = self
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(if path.starts_with("/nodes") {
                &self.admin_token
            } else {
                &self.token
            });
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    pub async fn replicas(&self, service: &str) -> Vec<Value> {
        let list = self
            .call(
                "GET",
                &format!("/projects/demo/services/{service}/replicas"),
                Value::Null,
            )
            .await;
        list["items"].as_array().unwrap().clone()
    }

    /// Waits until the replicas satisfy `want`.
    pub async fn wait(
        &self,
        service: &str,
        what: &str,
        limit: Duration,
        want: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let replicas = self.replicas(service).await;
            if want(&replicas) {
                return replicas;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: not {what} within {limit:?}: {replicas:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn running(replicas: &[Value]) -> usize {
    replicas.iter().filter(|r| r["state"] == "running").count()
}

pub fn sleeper(name: &str, replicas: u32) -> Value {
    json!({"name": name, "image": IMAGE, "replicas": replicas, "memory": 16, "cpu": 0.1,
        "command": ["/bin/busybox", "sleep", "3600"]})
}
