//! Tenants isolated below the API (issue 16), played as a hostile user would
//! on a real `lb up` with the real Docker engine: replicas run confined
//! (capabilities dropped, pids and open-files limits, rotated logs,
//! no-new-privileges, optional read-only root), and the data dir with the
//! cluster's keys is private to lb's user, also after someone widened it.
//! Needs Docker and Debian's busybox-static (see tests/README.md).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LB: &str = env!("CARGO_BIN_EXE_lb");

/// A running `lb up`, killed on drop, with the containers of its node
/// removed.
struct Up {
    child: Child,
    api: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lb up` on `data` and waits for its "lb is up" line.
// The child is waited for by `Up`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start(data: &Path) -> Up {
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
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!("lb up printed no URL within 30 s: {stderr}");
        };
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/');
            return Up {
                api: format!("{url}/api/v1"),
                child,
                stderr: Some(stderr),
            };
        }
    }
}

impl Up {
    /// SIGTERM, waits for the exit, and returns what lb wrote to stderr.
    fn stop(mut self) -> String {
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
struct User {
    api: String,
    token: String,
    client: reqwest::Client,
}

impl User {
    async fn sign_up(api: &str, name: &str) -> Self {
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

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, String) {
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
    async fn running(&self, project: &str, service: &str, count: usize) -> Vec<String> {
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
fn container_of(replica: &str) -> String {
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

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker exec` without failing the test: (exit code, stdout + stderr).
fn exec(id: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", id, "/bin/busybox", "sh", "-c", script])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Removes the containers of the replicas given, also when the test fails.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

#[test]
fn replicas_run_confined() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cleanup = Containers(Vec::new());
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "tenant").await;
        assert_eq!(user.call("POST", "/projects", json!({"name": "demo"})).await.0, 201);
        // Capabilities beyond the allowed list and pids beyond the cluster
        // maximum are refused, naming the field.
        for (extra, field) in [
            (json!({"cap_add": ["NET_RAW", "SYS_ADMIN"]}), "cap_add[1]"),
            // One more than lb_model::MAX_PIDS.
            (json!({"pids": 16385}), "pids"),
        ] {
            let mut spec = json!({"name": "bad", "image": image});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (status, body) = user.call("POST", "/projects/demo/services", spec).await;
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!((status, body["error"]["field"].as_str()), (400, Some(field)), "{body}");
        }
        let spec = json!({"name": "web", "image": image, "memory": 512,
            "command": ["/bin/busybox", "sh", "-c", "echo hello-log; exec /bin/busybox sleep 3600"]});
        assert_eq!(user.call("POST", "/projects/demo/services", spec).await.0, 201);
        let spec = json!({"name": "ro", "image": image, "memory": 32, "read_only": true,
            "cap_add": ["NET_RAW"], "pids": 64,
            "command": ["/bin/busybox", "sleep", "3600"]});
        assert_eq!(user.call("POST", "/projects/demo/services", spec).await.0, 201);
        let web = user.running("demo", "web", 1).await.remove(0);
        cleanup.0.push(web.clone());
        let ro = user.running("demo", "ro", 1).await.remove(0);
        cleanup.0.push(ro.clone());

        // What Docker was told.
        let inspect: Value = serde_json::from_str(&docker(&["inspect", &web])).unwrap();
        let host = &inspect[0]["HostConfig"];
        for cap in ["NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP"] {
            assert!(
                host["CapDrop"].as_array().unwrap().iter().any(|c| c == cap || c == &format!("CAP_{cap}")),
                "{cap} not dropped: {}",
                host["CapDrop"]
            );
        }
        assert_eq!(host["PidsLimit"], 1024);
        assert_eq!(host["Privileged"], false);
        assert_ne!(host["NetworkMode"], "host");
        assert!(host["Binds"].as_array().is_none_or(|b| b.is_empty()), "{}", host["Binds"]);
        assert!(
            host["SecurityOpt"].as_array().unwrap().iter().any(|o| o == "no-new-privileges:true"),
            "{}",
            host["SecurityOpt"]
        );
        assert_eq!(
            host["Ulimits"],
            json!([{"Name": "nofile", "Soft": 16384, "Hard": 16384}])
        );
        assert_eq!(host["LogConfig"]["Type"], "json-file");
        assert_eq!(host["LogConfig"]["Config"]["max-size"], "10m");
        assert_eq!(host["LogConfig"]["Config"]["max-file"], "3");
        assert_eq!(host["ReadonlyRootfs"], false);

        // Logs still come through the node's log streaming.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, logs) = user
                .call("GET", "/projects/demo/services/web/logs?tail=10", Value::Null)
                .await;
            if status == 200 && logs.contains("hello-log") {
                break;
            }
            assert!(Instant::now() < deadline, "no logs through lb: {status} {logs}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // No device nodes (MKNOD dropped), root or not.
        let (code, out) = exec(&web, "/bin/busybox mknod /null2 c 1 3");
        assert_ne!(code, 0, "mknod worked in a replica: {out}");

        // A fork bomb stops at the pids limit: of 1100 sleeps, not all start.
        let (code, out) = exec(
            &web,
            "i=0; while [ $i -lt 1100 ]; do /bin/busybox sleep 600 & i=$((i+1)); echo $i > /n; done",
        );
        let (_, started) = exec(&web, "/bin/busybox cat /n");
        let started: u32 = started.trim().parse().unwrap_or(0);
        assert!(
            code != 0 && started < 1100,
            "1100 processes started in a replica (exit {code}, {started} started): {out}"
        );
        assert!(started > 100, "too few processes started: {started}: {out}");

        // The read-only service: its options, its root and its /tmp.
        let inspect: Value = serde_json::from_str(&docker(&["inspect", &ro])).unwrap();
        let host = &inspect[0]["HostConfig"];
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["PidsLimit"], 64);
        assert!(host["Tmpfs"]["/tmp"].is_string(), "{}", host["Tmpfs"]);
        let added = host["CapAdd"].as_array().unwrap();
        assert!(added.iter().any(|c| c == "NET_RAW" || c == "CAP_NET_RAW"), "{added:?}");
        let (code, _) = exec(&ro, "echo x > /x");
        assert_ne!(code, 0, "the read-only root was written");
        let (code, out) = exec(&ro, "echo x > /tmp/x && /bin/busybox cat /tmp/x");
        assert_eq!((code, out.trim()), (0, "x"));
    });
    up.stop();
}

/// Every file and directory under `root` with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.clone(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn assert_private(root: &Path) {
    let all = modes(root);
    assert!(all.len() > 3, "the data dir is nearly empty: {all:?}");
    let open: Vec<_> = all
        .iter()
        .filter(|(_, mode, is_dir)| {
            let want = if *is_dir { 0o700 } else { 0o600 };
            mode & 0o077 != 0 || (*is_dir && *mode != want)
        })
        .map(|(path, mode, _)| format!("{} {mode:04o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_data_dir_is_private_and_stays_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&data);
    // The local node saves its credential shortly after the API is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("node/node.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the local node saved no credential"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_private(&data);
    up.stop();

    // Someone widens the store, the registry and the data dir itself.
    let store = data.join(lb_store::embedded::FILE_NAME);
    assert!(store.exists(), "no store file at {}", store.display());
    set_mode(&store, 0o644);
    set_mode(&data, 0o755);
    let registry = modes(&data)
        .into_iter()
        .find(|(path, _, is_dir)| *is_dir && path.ends_with("sha256"))
        .map(|(path, _, _)| path)
        .expect("a registry blob directory");
    set_mode(&registry, 0o777);
    let stray = data.join("stray");
    std::fs::write(&stray, "x").unwrap();
    set_mode(&stray, 0o666);

    let up = start(&data);
    assert_private(&data);
    let stderr = up.stop();
    assert!(
        stderr.contains("readable by others"),
        "no warning about the widened files: {stderr}"
    );
}
