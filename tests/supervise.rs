//! Supervised roles in `lb up`: a role that panics is logged with its cause,
//! shown down in `/readyz` (503), restarted with backoff and shown running
//! again. The panic comes from the test hook `LB_TEST_PANIC_ROLE=<role>:<n>`
//! (the first `n` starts of that role panic, as a bug in it would), or for
//! the builder's inner build worker from `LB_TEST_PANIC_BUILD_WORKER=<n>`
//! (the worker panics as it starts, `n` times): the builder role ends with
//! "the build worker stopped" and is restarted, and builds run after.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LB: &str = env!("CARGO_BIN_EXE_lb");

struct Up {
    child: Child,
    url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lb up` (embedded store, no local node) with `panic_role` set and
/// waits for its "lb is up" line.
fn start(panic_role: &str, dir: &std::path::Path) -> Up {
    start_with(&[("LB_TEST_PANIC_ROLE", panic_role)], dir)
}

/// Starts `lb up` (embedded store, no local node) with `env` set and waits
/// for its "lb is up" line.
#[allow(clippy::zombie_processes)] // waited for by Up's Drop
fn start_with(env: &[(&str, &str)], dir: &std::path::Path) -> Up {
    let mut child = Command::new(LB)
        .args(["up", "--listen", "127.0.0.1:0", "--no-node", "--data-dir"])
        .arg(dir)
        .env_remove("LB_ETCD")
        .env_remove("LB_LISTEN")
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password-1")
        .env_remove("LB_TEST_PANIC_ROLE")
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
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("lb up printed no URL within 30 s");
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest.split_whitespace().next().unwrap();
            return Up {
                child,
                url: url.trim_end_matches('/').to_owned(),
                stderr: Some(stderr),
            };
        }
    }
}

impl Up {
    async fn readyz(&self) -> (u16, String) {
        match reqwest::get(format!("{}/readyz", self.url)).await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ),
            Err(err) => (0, err.to_string()),
        }
    }

    /// Polls `/readyz` until `want` holds, failing after `limit`.
    async fn wait_ready(&self, what: &str, limit: Duration, want: impl Fn(u16, &str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.readyz().await;
            if want(status, &body) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not {what} within {limit:?}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops lb (SIGTERM) and answers its stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "lb up did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stderr.take().unwrap().join().unwrap()
    }
}

#[tokio::test]
async fn a_panicking_builder_is_shown_down_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // Three panics in a row: down for about 1 + 2 + 4 s of backoff.
    let up = start("builder:3", dir.path());
    up.wait_ready("down for the builder", Duration::from_secs(10), |s, b| {
        s == 503 && b.contains("builder: down") && b.contains("panics at start")
    })
    .await;
    up.wait_ready("ready again", Duration::from_secs(40), |s, b| {
        s == 200 && b.contains("builder: running") && b.contains("scheduler: running")
    })
    .await;
    let log = up.stop();
    assert!(
        log.contains("LB_TEST_PANIC_ROLE: builder panics at start"),
        "the cause is logged: {log}"
    );
    assert_eq!(
        log.matches("restarting in").count(),
        3,
        "three restarts with backoff: {log}"
    );
}

#[tokio::test]
async fn a_panicking_scheduler_is_restarted_and_still_places() {
    let dir = tempfile::tempdir().unwrap();
    let up = start("scheduler", dir.path());
    // The first start panics at once and the restart comes after a 1 s
    // backoff; readiness says "running" before the panic as well, so give
    // the restart its time first.
    tokio::time::sleep(Duration::from_secs(4)).await;
    up.wait_ready("ready", Duration::from_secs(20), |s, b| {
        s == 200 && b.contains("scheduler: running")
    })
    .await;
    let log = up.stop();
    assert!(
        log.contains("scheduler") && log.contains("restarting in"),
        "the scheduler's failure is logged: {log}"
    );
}

/// Logs in as the admin; answers a client and the bearer token.
async fn admin(url: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "admin-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("admin login").to_owned();
    (client, token)
}

#[tokio::test]
async fn a_dead_build_worker_restarts_the_builder_and_builds_run_after() {
    let base = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    // The worker dies as it starts, twice: the builder role ends with the
    // worker's panic as its cause and is started again (1 s, then 2 s).
    let up = start_with(
        &[("LB_TEST_PANIC_BUILD_WORKER", "2")],
        &dir.path().join("data"),
    );
    up.wait_ready("down for the builder", Duration::from_secs(10), |s, b| {
        s == 503
            && b.contains("builder: down")
            && b.contains("the build worker stopped")
            && b.contains("LB_TEST_PANIC_BUILD_WORKER")
    })
    .await;
    up.wait_ready("ready again", Duration::from_secs(30), |s, b| {
        s == 200 && b.contains("builder: running")
    })
    .await;

    // A build after the restarts is claimed and succeeds.
    let repo = lb_testing::GitRepo::serve(&dir.path().join("git"));
    let dockerfile = format!("FROM {base}\nRUN [\"/bin/busybox\", \"true\"]\n");
    repo.commit(&[("Dockerfile", dockerfile.as_bytes())], "first");
    let (client, token) = admin(&up.url).await;
    let api = format!("{}/api/v1", up.url);
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let status = post("/projects", serde_json::json!({"name": "demo"}))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201, "create the project");
    let spec = serde_json::json!({"name": "app", "replicas": 0,
        "source": {"url": repo.url, "branch": "main"}});
    let status = post("/projects/demo/services", spec)
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201, "create the service");
    let resp = post("/projects/demo/services/app/builds", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "start a build");
    let number = resp.json::<serde_json::Value>().await.unwrap()["number"]
        .as_u64()
        .expect("the build's number");
    let deadline = Instant::now() + Duration::from_secs(120);
    let record = loop {
        let record: serde_json::Value = client
            .get(format!("{api}/projects/demo/services/app/builds/{number}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let status = record["status"].as_str().unwrap_or_default();
        if ["succeeded", "failed", "canceled"].contains(&status) {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "build {number} did not end within 120 s: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record["status"], "succeeded", "{record}");
    let image = record["image"].as_str().unwrap_or_default().to_owned();
    let log = up.stop();
    if !image.is_empty() {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    }
    assert!(
        log.contains("the build worker stopped: panicked"),
        "the cause is logged: {log}"
    );
    assert_eq!(
        log.matches("restarting in").count(),
        2,
        "two restarts with backoff: {log}"
    );
}
