//! The harness of lbc's end-to-end tests: a real `lb up` (the binary built
//! beside `lbc`) on free ports with a temp data dir, and the real `lbc` run
//! with its own HOME so the user's config is never touched.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The admin's password in every test.
pub const ADMIN_PASSWORD: &str = "admin password 123";

/// The `lbc` binary under test.
pub fn lbc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lbc"))
}

/// The `lb` binary beside it (`cargo build -p lb` or a workspace run builds it).
pub fn lb_bin() -> PathBuf {
    let lb = lbc_bin().with_file_name("lb");
    assert!(
        lb.exists(),
        "{} is missing: build the server first (`cargo build -p lb`, or run the \
         tests with `cargo nextest run --workspace`)",
        lb.display()
    );
    lb
}

/// A running `lb up` and a HOME for lbc.
pub struct Up {
    child: Child,
    /// The API's base URL.
    pub url: String,
    /// Temp dir holding the data dir and HOME.
    pub dir: tempfile::TempDir,
    /// Node ids seen, whose containers are removed at the end.
    nodes: std::cell::RefCell<Vec<String>>,
}

impl Drop for Up {
    /// Stops lb and removes the containers its node started (they outlive
    /// lb by design).
    fn drop(&mut self) {
        self.remember_nodes();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for node in self.nodes.borrow().iter() {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=lb.node={node}")])
                .output();
            if let Ok(out) = out {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
        // Its node's iptables chains and (now unused) project networks.
        let _ = Command::new(lb_bin())
            .args(["node", "uninstall", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .output();
    }
}

impl Up {
    /// Starts `lb up` and waits for its "lb is up" line and a live node.
    // The child is waited for by Drop, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start() -> Up {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut child = Command::new(lb_bin())
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--registry-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("LB_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("LB_ETCD")
            .env_remove("LB_DATA_DIR")
            .env_remove("LB_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lb up");
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            // Drain it, so lb never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("lb up printed no URL within 60 s")
                });
            if let Some(rest) = line.strip_prefix("lb is up: ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .to_owned();
            }
        };
        let up = Up {
            child,
            url,
            dir,
            nodes: Default::default(),
        };
        up.login_admin();
        wait_for("a live node", Duration::from_secs(30), || {
            let nodes = up.json(&["node", "ls"]);
            nodes["items"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["alive"] == true))
        });
        up.remember_nodes();
        up
    }

    fn remember_nodes(&self) {
        if let Ok(out) = self.lbc(&["node", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let mut nodes = self.nodes.borrow_mut();
                if !nodes.iter().any(|n| n == id) {
                    nodes.push(id.to_owned());
                }
            }
        }
    }

    /// The HOME lbc runs with.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The config file lbc writes.
    pub fn config_file(&self) -> PathBuf {
        self.home().join(".config/lbc/config.toml")
    }

    /// An `lbc` command with this test's HOME and no LB_* from outside.
    pub fn lbc(&self, args: &[&str]) -> Command {
        lbc_in(&self.home(), args)
    }

    /// Runs lbc with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    /// Runs lbc with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        run_with_stdin(self.lbc(args), input)
    }

    /// Runs lbc, asserts success, answers stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lbc {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs lbc with `-o json`, answers the parsed stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        // Before the arguments: a `--` among them ends the flags.
        let mut all = vec!["-o", "json"];
        all.extend(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("lbc {args:?}: {e}: {text}"))
    }

    /// Runs lbc, asserts it fails with `code` and one line on stderr naming
    /// the problem; answers that line.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        expect_failure(self.run(args), args, code)
    }

    /// Logs in as admin in the current context.
    pub fn login_admin(&self) {
        let out = self.run_stdin(
            &[
                "login",
                "--api",
                &self.url,
                "-u",
                "admin",
                "--password-stdin",
            ],
            ADMIN_PASSWORD,
        );
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until every wanted replica of a service runs; answers them.
    pub fn wait_running(&self, service: &str, count: usize) -> Vec<Value> {
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.json(&["replicas", service]);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let running = items.iter().filter(|r| r["state"] == "running").count();
            if running == count && items.len() == count {
                return items;
            }
            assert!(
                Instant::now() < deadline,
                "{service} did not get {count} running replicas in 60 s: {last}"
            );
            last = list;
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// An `lbc` command with `home` as HOME and no LB_* or XDG_CONFIG_HOME from outside.
pub fn lbc_in(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(lbc_bin());
    cmd.args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("LB_API")
        .env_remove("LB_TOKEN")
        .env_remove("LB_CONTEXT")
        .env_remove("LB_PROJECT")
        .env_remove("NO_COLOR");
    cmd
}

/// Runs a command with `input` on stdin; a hang fails after 60 s.
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lbc");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("lbc {:?} hung for 60 s", cmd.get_args().collect::<Vec<_>>());
        }
    }
}

/// Asserts a failure with `code` and exactly one line on stderr.
pub fn expect_failure(out: Output, args: &[&str], code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "lbc {args:?}: want exit {code}, stderr: {stderr}, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "lbc {args:?}: want one line on stderr, got {stderr:?}"
    );
    assert!(
        stderr.starts_with("lbc: error: ") || stderr.starts_with("error: "),
        "lbc {args:?}: {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end().to_owned()
}

/// Polls `check` until it holds; fails with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
