//! End-to-end tests of `lb up`: the real binary on the embedded store and on
//! a real etcd, killed and restarted, and fed bad input.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lb_model::keys::Keys;
use lb_store::embedded::{EmbeddedStore, FILE_NAME};
use lb_store::{Store, StoreExt};
use lb_testing::EtcdServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const LB: &str = env!("CARGO_BIN_EXE_lb");

/// A running `lb up` and what it printed.
struct Up {
    child: Child,
    url: String,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    /// A failing test leaves no `lb` running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lb(args: &[&str]) -> Command {
    let mut cmd = Command::new(LB);
    cmd.args(args)
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .env_remove("LB_LISTEN")
        // Tests run side by side: each registry on a free port.
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        // ... and each ingress.
        .env("LB_HTTP_LISTEN", "127.0.0.1:0");
    cmd
}

/// Starts `lb up` with the given extra args and waits for its "lb is up" line.
// The child is waited for by `Up`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start(args: &[&str], admin_password: Option<&str>) -> Up {
    let mut cmd = lb(&["up", "--listen", "127.0.0.1:0"]);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match admin_password {
        Some(p) => cmd.env("LB_ADMIN_PASSWORD", p),
        None => cmd.env_remove("LB_ADMIN_PASSWORD"),
    };
    let mut child = cmd.spawn().expect("start lb up");
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
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("lb up printed no URL within 30 s; stdout so far: {lines:?}")
            });
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
            return Up {
                child,
                url,
                stdout: lines,
                stderr: Some(stderr),
            };
        }
    }
}

impl Up {
    fn get(&self, path: &str) -> u16 {
        let url = format!("{}{path}", self.url);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            reqwest::get(&url)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    }

    fn signal(mut self, signal: Signal) -> (std::process::ExitStatus, String) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(15));
        (status, self.stderr.take().unwrap().join().unwrap())
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("lb did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key and value, and the revision, of the embedded store in `dir`.
fn snapshot(dir: &Path) -> (Vec<(String, Vec<u8>, i64)>, i64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = EmbeddedStore::open_dir(dir)
            .await
            .expect("open the store after lb exited");
        let (kvs, _) = store.list("/").await.unwrap();
        let revision = store.revision().await.unwrap();
        (
            kvs.into_iter()
                .map(|kv| (kv.key, kv.value, kv.mod_revision))
                .collect(),
            revision,
        )
    })
}

#[test]
fn up_serves_health_creates_admin_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&["--data-dir", data.to_str().unwrap()], None);
    assert_eq!(up.get("/healthz"), 200);
    assert_eq!(up.get("/readyz"), 200);
    let password_line = up
        .stdout
        .iter()
        .find(|l| l.starts_with("created user admin with password: "));
    let password = password_line
        .expect("a generated admin password is printed")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 20);
    let (status, stderr) = up.signal(Signal::SIGTERM);
    assert!(
        status.success(),
        "graceful exit on SIGTERM: {status:?}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The password is kept only as an argon2 hash.
    let (kvs, _) = snapshot(&data);
    let keys = Keys::default();
    let (_, id, _) = kvs
        .iter()
        .find(|(k, _, _)| *k == keys.user_index("admin"))
        .expect("admin index");
    let id = String::from_utf8(id.clone()).unwrap();
    let (_, user, _) = kvs
        .iter()
        .find(|(k, _, _)| *k == keys.user(&id))
        .expect("admin record");
    let user: serde_json::Value = serde_json::from_slice(user).unwrap();
    assert_eq!(user["role"], "admin");
    let hash = user["password_hash"].as_str().unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&password));

    // A second start creates nothing and prints no password.
    let up = start(&["--data-dir", data.to_str().unwrap()], None);
    assert!(
        !up.stdout.iter().any(|l| l.contains("password")),
        "{:?}",
        up.stdout
    );
    up.signal(Signal::SIGTERM);
}

#[test]
fn sigkill_keeps_every_key_and_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No local node or scheduler: they write (heartbeats, the leader key)
    // between the two snapshots. The registry on one port both times: it
    // records its address, and writes only when that changes.
    let registry = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let up = start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--no-node",
            "--no-scheduler",
            "--registry-listen",
            &registry,
        ],
        Some("first-password"),
    );
    assert_eq!(up.get("/readyz"), 200);
    assert!(up.stdout.iter().any(|l| l.contains("LB_ADMIN_PASSWORD")));
    let (status, _) = up.signal(Signal::SIGKILL);
    assert!(!status.success());
    let before = snapshot(&data);
    assert!(
        !before.0.is_empty(),
        "the admin was written before lb reported up"
    );

    let up = start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--no-node",
            "--no-scheduler",
            "--registry-listen",
            &registry,
        ],
        Some("other-password"),
    );
    assert_eq!(up.get("/readyz"), 200);
    up.signal(Signal::SIGKILL);
    let after = snapshot(&data);
    assert_eq!(
        after, before,
        "same keys, values and revision after SIGKILL and restart"
    );
}

#[test]
fn up_on_etcd_leaves_the_admin_where_etcdctl_finds_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime.block_on(EtcdServer::start());
    let dir = tempfile::tempdir().unwrap();
    let up = start(
        &[
            "--etcd",
            &etcd.endpoint(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        Some("pw"),
    );
    assert_eq!(up.get("/readyz"), 200);
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            "/lb/index/users/admin",
            "--print-value-only",
        ])
        .output()
        .expect("run etcdctl (Debian's etcd-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(lb_model::ids::is_id(&id), "admin id {id:?}");
    assert!(
        !dir.path().join(FILE_NAME).exists(),
        "no embedded store when --etcd is given"
    );
    let (status, _) = up.signal(Signal::SIGINT);
    assert!(status.success());
    drop(etcd);
}

/// Runs `lb` expecting failure: answers its stderr, checked to name the
/// problem in one `lb: error:` line without a panic.
fn fails(cmd: &mut Command, expect: &str) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("lb: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains(expect),
        "{:?} should mention {expect:?}",
        errors[0]
    );
    stderr
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails(
        lb(&["up", "--data-dir", data_arg, "--listen", &addr]).env("LB_ADMIN_PASSWORD", "x"),
        &addr,
    );

    // The data dir held by a running lb.
    let up = start(&["--data-dir", data_arg], Some("x"));
    fails(
        &mut lb(&["up", "--data-dir", data_arg, "--listen", "127.0.0.1:0"]),
        "locked",
    );
    up.signal(Signal::SIGTERM);

    // A corrupt data file.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
    fails(
        &mut lb(&[
            "up",
            "--data-dir",
            bad.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]),
        FILE_NAME,
    );

    // A data dir that cannot be created (its parent is a file).
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    fails(
        &mut lb(&[
            "up",
            "--data-dir",
            under_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]),
        "plain-file",
    );

    // Unreachable etcd: nothing listens on the port we just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{free}");
    fails(
        &mut lb(&["up", "--etcd", &url, "--listen", "127.0.0.1:0"]),
        "cannot reach etcd",
    );

    // An invalid listen address is a usage error from clap.
    let out = lb(&["up", "--listen", "nonsense"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    // The registry's port in use: the builder says which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = taken.local_addr().unwrap().to_string();
    fails(
        &mut lb(&[
            "builder",
            "--data-dir",
            dir.path().join("s").to_str().unwrap(),
            "--registry-listen",
            &registry,
        ]),
        &format!("cannot listen on {registry} (registry)"),
    );
}

#[test]
fn help_describes_every_role() {
    let out = lb(&["--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for role in ["up", "api", "scheduler", "builder", "node"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(role)),
            "{role} in {help}"
        );
    }
}

/// What a newcomer does: `lb up`, sign up, create a project and a service,
/// and find its replicas answering on this machine.
#[test]
fn up_runs_a_created_service_on_its_local_node() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(
        &["--data-dir", data.to_str().unwrap()],
        Some("admin-password"),
    );
    let api = format!("{}/api/v1", up.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node_id = runtime.block_on(async {
        let client = reqwest::Client::new();
        let creds = serde_json::json!({"username": "newcomer", "password": "password-1"});
        assert_eq!(client.post(format!("{api}/auth/signup")).json(&creds).send().await.unwrap().status(), 201);
        let login: serde_json::Value =
            client.post(format!("{api}/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        let token = login["token"].as_str().unwrap().to_owned();
        let post = |path: &str, body: serde_json::Value| {
            client.post(format!("{api}{path}")).bearer_auth(&token).json(&body).send()
        };
        assert_eq!(post("/projects", serde_json::json!({"name": "demo"})).await.unwrap().status(), 201);
        let spec = serde_json::json!({"name": "web", "image": image, "replicas": 2, "memory": 16,
            "ports": [{"container": 8080}], "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]});
        assert_eq!(post("/projects/demo/services", spec).await.unwrap().status(), 201);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let list: serde_json::Value = client
                .get(format!("{api}/projects/demo/services/web/replicas"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = list["items"].as_array().unwrap();
            let running: Vec<_> = items.iter().filter(|r| r["state"] == "running").collect();
            if running.len() == 2 {
                for r in &running {
                    let host = r["ports"][0]["host"].as_u64().unwrap();
                    // Running is not yet listening: a moment of retries.
                    let url = format!("http://127.0.0.1:{host}/index.html");
                    let mut tries = 0;
                    let body = loop {
                        match reqwest::get(&url).await {
                            Ok(resp) => break resp.text().await.unwrap(),
                            Err(e) if tries < 50 => {
                                tries += 1;
                                eprintln!("{url}: {e}; again");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("{url}: {e}"),
                        }
                    };
                    assert_eq!(body, "hello from lb\n");
                }
                return running[0]["node"].as_str().unwrap().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "replicas not running within 60 s: {list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (status, stderr) = up.signal(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    // Stopping lb leaves the containers running; clean them up here.
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.node={node_id}")])
        .output()
        .unwrap();
    let ids = String::from_utf8_lossy(&ids.stdout).to_string();
    assert_eq!(ids.lines().count(), 2, "containers outlive lb: {ids}");
    for id in ids.lines() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}

/// From a git repository to replicas running the new image: build, deploy,
/// rebuild after a change, roll back, and the ways a build fails.
#[test]
fn builds_from_git_deploy_roll_back_and_fail_clearly() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(&dir.path().join("git"));
    let dockerfile = format!(
        "FROM {image}\nCOPY index.html /www/index.html\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    repo.commit(
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("index.html", b"version one\n"),
        ],
        "first version",
    );
    let data = dir.path().join("data");
    let up = start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--build-timeout",
            "120s",
        ],
        Some("admin-password"),
    );
    let api = format!("{}/api/v1", up.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node_id = runtime.block_on(async {
        let client = reqwest::Client::new();
        let creds = json!({"username": "builder-user", "password": "password-1"});
        client.post(format!("{api}/auth/signup")).json(&creds).send().await.unwrap();
        let login: Value = client.post(format!("{api}/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
        let token = login["token"].as_str().unwrap().to_owned();
        let call = |method: &str, path: &str, body: Value| {
            let mut req = client.request(method.parse().unwrap(), format!("{api}{path}")).bearer_auth(&token);
            if !body.is_null() {
                req = req.json(&body);
            }
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        assert_eq!(call("POST", "/projects", json!({"name": "demo"})).await.0, 201);
        // A local path is refused up front.
        let (status, body) = call("POST", "/projects/demo/services",
            json!({"name": "local", "source": {"url": "/etc", "branch": "main"}})).await;
        assert_eq!((status, body["error"]["field"].as_str()), (400, Some("source.url")), "{body}");
        let spec = json!({"name": "site", "replicas": 2, "memory": 16, "ports": [{"container": 8080}],
            "source": {"url": repo.url, "branch": "main"}});
        assert_eq!(call("POST", "/projects/demo/services", spec).await.0, 201);

        // Waits for a build to end; answers it.
        let wait_build = |n: u64| {
            let call = &call;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let (_, build) = call("GET", &format!("/projects/demo/services/site/builds/{n}"), Value::Null).await;
                    if ["succeeded", "failed", "canceled"].contains(&build["status"].as_str().unwrap_or("")) {
                        return build;
                    }
                    assert!(std::time::Instant::now() < deadline, "build {n} did not end: {build}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // Waits until both replicas serve `text`.
        let wait_serving = |text: &'static str| {
            let call = &call;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(90);
                loop {
                    let (_, list) = call("GET", "/projects/demo/services/site/replicas", Value::Null).await;
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let mut serving = 0;
                    for r in items.iter().filter(|r| r["state"] == "running") {
                        if let Some(host) = r["ports"][0]["host"].as_u64() {
                            if let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{host}/index.html")).await {
                                if resp.text().await.unwrap_or_default() == text {
                                    serving += 1;
                                }
                            }
                        }
                    }
                    if serving == 2 && items.len() == 2 {
                        return items[0]["node"].as_str().unwrap_or_default().to_owned();
                    }
                    assert!(std::time::Instant::now() < deadline, "replicas do not serve {text:?}: {list}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };

        // Build 1: every status in order, timed; the service runs it.
        let (status, queued) = call("POST", "/projects/demo/services/site/builds", json!({})).await;
        assert_eq!((status, queued["status"].as_str()), (201, Some("queued")), "{queued}");
        let build = wait_build(1).await;
        assert_eq!(build["status"], "succeeded", "{build}");
        let steps: Vec<&str> = build["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(steps, ["cloning", "preparing", "building", "pushing"], "{build}");
        assert!(build["steps"].as_array().unwrap().iter().all(|s| s["finished"].as_i64() >= s["started"].as_i64()));
        assert_eq!(build["message"], "first version");
        let digest = build["digest"].as_str().unwrap().to_owned();
        let (_, service) = call("GET", "/projects/demo/services/site", Value::Null).await;
        assert!(service["spec"]["image"].as_str().unwrap().ends_with(&format!("@{digest}")), "{service}");
        let node = wait_serving("version one\n").await;
        // Nodes pull from lb's registry with their own credential: drop the
        // image from Docker, restart, and the new containers pull it.
        let pinned = service["spec"]["image"].as_str().unwrap().to_owned();
        let tagged = build["image"].as_str().unwrap().to_owned();
        let out = Command::new("docker").args(["rmi", "-f", &tagged, &pinned]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(call("POST", "/projects/demo/services/site/restart", Value::Null).await.0, 200);
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !Command::new("docker").args(["image", "inspect", &pinned]).output().unwrap().status.success() {
            if std::time::Instant::now() > deadline {
                let (_, list) = call("GET", "/projects/demo/services/site/replicas", Value::Null).await;
                panic!("the node never pulled {pinned}: {list}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait_serving("version one\n").await;
        let logs = client.get(format!("{api}/projects/demo/services/site/builds/1/logs")).bearer_auth(&token)
            .send().await.unwrap().text().await.unwrap();
        assert!(logs.contains("commit ") && logs.contains("pushed "), "{logs}");

        // Build 2 after a change; then roll back to build 1.
        repo.commit(&[("index.html", b"version two\n")], "second version");
        call("POST", "/projects/demo/services/site/builds", Value::Null).await;
        assert_eq!(wait_build(2).await["status"], "succeeded");
        wait_serving("version two\n").await;
        let (status, _) = call("POST", "/projects/demo/services/site/rollback", json!({"build": 1})).await;
        assert_eq!(status, 200);
        wait_serving("version one\n").await;

        // A failing build step: failed, with the cause; the service keeps running.
        repo.commit(&[("Dockerfile", format!("FROM {image}\nRUN [\"/bin/busybox\", \"false\"]\n").as_bytes())], "broken");
        call("POST", "/projects/demo/services/site/builds", Value::Null).await;
        let build = wait_build(3).await;
        assert_eq!(build["status"], "failed", "{build}");
        assert!(build["message"].as_str().unwrap().contains("returned a non-zero code"), "{build}");
        wait_serving("version one\n").await;

        // A missing Dockerfile, then a missing branch.
        std::fs::remove_file(repo.work.join("Dockerfile")).unwrap();
        repo.commit(&[], "no dockerfile");
        call("POST", "/projects/demo/services/site/builds", Value::Null).await;
        let build = wait_build(4).await;
        assert!(build["message"].as_str().unwrap().contains("\"Dockerfile\" not found in the repository"), "{build}");
        call("PATCH", "/projects/demo/services/site", json!({"source": {"url": repo.url, "branch": "nope"}})).await;
        call("POST", "/projects/demo/services/site/builds", Value::Null).await;
        let build = wait_build(5).await;
        assert_eq!(build["status"], "failed");
        assert!(build["message"].as_str().unwrap().starts_with("cannot clone"), "{build}");

        // Cancel stops a long build at once.
        repo.commit(&[("Dockerfile", format!("FROM {image}\nRUN [\"/bin/busybox\", \"sleep\", \"60\"]\n").as_bytes())], "slow");
        call("PATCH", "/projects/demo/services/site", json!({"source": {"url": repo.url, "branch": "main"}})).await;
        call("POST", "/projects/demo/services/site/builds", Value::Null).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, b) = call("GET", "/projects/demo/services/site/builds/6", Value::Null).await;
            if b["status"] == "building" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never building: {b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, canceled) = call("POST", "/projects/demo/services/site/builds/6/cancel", Value::Null).await;
        assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
        let (status, _) = call("POST", "/projects/demo/services/site/builds/6/cancel", Value::Null).await;
        assert_eq!(status, 409, "an ended build cannot be canceled again");
        let (_, list) = call("GET", "/projects/demo/services/site/builds", Value::Null).await;
        assert_eq!(list["items"][0]["number"], 6, "newest first");
        node
    });
    drop(up);
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.node={node_id}")])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&ids.stdout).lines() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}

/// CPU time (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

/// An idle `lb up` (API, scheduler, builder, registry and local node, nothing
/// deployed) sleeps: over 10 s it uses well under 0.5 s of CPU, on the
/// embedded store and on etcd. Not a speed test: a busy loop anywhere (the
/// builder's queue loop once spun on a free permit) uses the whole 10 s.
fn idle_up_sleeps(args: &[&str]) {
    let up = start(args, Some("pw"));
    assert_eq!(up.get("/readyz"), 200);
    // Start-up work (the node joining, first passes) settles.
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_secs(up.child.id());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_secs(up.child.id()) - before;
    assert!(used < 0.5, "an idle lb up used {used:.2} s of CPU in 10 s");
    eprintln!("idle lb up {args:?}: {used:.2} s of CPU in 10 s");
}

#[test]
fn idle_up_sleeps_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    idle_up_sleeps(&["--data-dir", dir.path().to_str().unwrap()]);
}

#[test]
fn idle_up_sleeps_on_etcd() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime.block_on(EtcdServer::start());
    let dir = tempfile::tempdir().unwrap();
    idle_up_sleeps(&[
        "--etcd",
        &etcd.endpoint(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    drop(etcd);
}
