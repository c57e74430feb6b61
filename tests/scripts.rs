//! End-to-end test of stored scripts on `lb up` and the real Docker engine:
//! a script runs inside running replicas as a second process (the
//! containers' start times do not change), gets its arguments and env,
//! answers its exit code and output, one replica or all; a missing
//! interpreter is named; the time limit kills the run; runs are recorded;
//! another user reaches none of it. A run on one replica streams over a
//! websocket (output as it comes, then its end) and is recorded; a bash
//! script (arrays, `[[ ]]`) runs in `lb_testing::bash_image` (busybox
//! and Debian's static bash) and is named missing in an image without
//! bash.
//!
//! The image is the busybox test image with busybox's applets installed
//! (`sh`, `sleep`, `ps` in PATH, as in any distribution image), built from
//! `lb_testing::busybox_image` without pulling. No image with python3 can
//! be pulled here: a second image adds Debian's own `/usr/bin/python3.11`,
//! the four libraries it links and its standard library (`/usr/lib/python3.11`
//! without tests) to it, so a python3 script runs for real; the first image
//! has no python3 and names it missing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};

const LB: &str = env!("CARGO_BIN_EXE_lb");
const IMAGE: &str = "lb-test-busybox-sh:1";
const PYTHON_IMAGE: &str = "lb-test-python:1";

/// A running `lb up`, killed when dropped, with the containers it started.
struct Up {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for id in containers("lb.replica") {
            let image = docker(&["inspect", "-f", "{{.Config.Image}}", &id]);
            // The node may have spelled the reference in full
            // (docker.io/library/...).
            if [IMAGE, PYTHON_IMAGE, lb_testing::bash_image()]
                .iter()
                .any(|i| image.trim().ends_with(i))
            {
                let _ = Command::new("docker").args(["rm", "-f", &id]).output();
            }
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers with a label (`key` or `key=value`).
fn containers(label: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label={label}")])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The busybox test image with its applets installed in /bin.
fn sh_image() -> &'static str {
    let base = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"),
    )
    .unwrap();
    docker(&["build", "-q", "-t", IMAGE, dir.path().to_str().unwrap()]);
    IMAGE
}

/// The sh image with Debian's python3 copied in (its binary, the libraries
/// `ldd` lists for it, its standard library).
fn python_image() -> &'static str {
    let dir = tempfile::tempdir().unwrap();
    let copy = r#"set -e
        root="$1/root"
        mkdir -p "$root/usr/bin" "$root/lib/x86_64-linux-gnu" "$root/lib64" "$root/usr/lib"
        cp /usr/bin/python3.11 "$root/usr/bin/"
        ln -s python3.11 "$root/usr/bin/python3"
        for l in libm.so.6 libz.so.1 libexpat.so.1 libc.so.6; do
            cp -L "/lib/x86_64-linux-gnu/$l" "$root/lib/x86_64-linux-gnu/"
        done
        cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
        tar -C /usr/lib --exclude=test --exclude=__pycache__ --exclude=idlelib             --exclude=tkinter --exclude=ensurepip -cf - python3.11 | tar -C "$root/usr/lib" -xf -
        printf 'FROM %s
COPY root/ /
' "$2" > "$1/Dockerfile""#;
    let out = Command::new("sh")
        .args(["-c", copy, "sh", dir.path().to_str().unwrap(), IMAGE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "copying Debian's python3 (python3.11-minimal, libpython3.11-stdlib): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker(&[
        "build",
        "-q",
        "-t",
        PYTHON_IMAGE,
        dir.path().to_str().unwrap(),
    ]);
    PYTHON_IMAGE
}

// The child is waited for by `Up`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start() -> Up {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(LB)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("LB_ETCD")
        .env_remove("LB_DATA_DIR")
        .env_remove("LB_LISTEN")
        .env("LB_REGISTRY_LISTEN", "127.0.0.1:0")
        .env("LB_HTTP_LISTEN", "127.0.0.1:0")
        .env("LB_ADMIN_PASSWORD", "admin-password")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lb up");
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
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
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("lb up printed no URL within 30 s")
            });
        if let Some(rest) = line.strip_prefix("lb is up: ") {
            let url = rest.split_whitespace().next().unwrap();
            return Up {
                url: url.trim_end_matches('/').to_owned(),
                child,
                _dir: dir,
            };
        }
    }
}

/// A signed-in user's client.
struct User {
    api: String,
    token: String,
    http: reqwest::Client,
}

impl User {
    async fn new(up: &Up, name: &str) -> User {
        let http = reqwest::Client::new();
        let api = format!("{}/api/v1", up.url);
        let creds = json!({"username": name, "password": "password-1"});
        let status = http
            .post(format!("{api}/auth/signup"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201, "signup of {name}");
        let login: Value = http
            .post(format!("{api}/auth/login"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        User {
            token: login["token"].as_str().unwrap().to_owned(),
            api,
            http,
        }
    }

    /// A request; answers the status, the ETag and the JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        (
            status,
            etag,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None, None).await;
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::POST, path, Some(body), None)
            .await;
        (status, body)
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::PUT, path, Some(body), None)
            .await;
        (status, body)
    }
}

/// When a replica's container started, from Docker.
fn started_at(replica: &str) -> String {
    let ids = containers(&format!("lb.replica={replica}"));
    assert_eq!(ids.len(), 1, "one container of replica {replica}: {ids:?}");
    docker(&["inspect", "-f", "{{.State.StartedAt}}", &ids[0]])
        .trim()
        .to_owned()
}

async fn running_replicas(user: &User, service: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = user.get(&format!("{service}/replicas")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let running: Vec<String> = items
            .iter()
            .filter(|r| r["state"] == "running")
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        if running.len() == count && items.len() == count {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{count} running replicas not reached in 60 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn scripts_run_in_live_replicas_without_restarting_them() {
    let image = sh_image();
    let python = python_image();
    let bash_image = lb_testing::bash_image();
    let up = start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let alice = User::new(&up, "alice").await;
        let bob = User::new(&up, "bob").await;
        let (status, project) = alice.post("/projects", json!({"name": "demo"})).await;
        assert_eq!(status, 201, "{project}");
        let pid = project["id"].as_str().unwrap().to_owned();
        let spec = json!({"name": "web", "image": image, "replicas": 2, "memory": 16,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]});
        let (status, body) = alice.post("/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{body}");
        let service = "/projects/demo/services/web";
        let replicas = running_replicas(&alice, service, 2).await;
        let before: Vec<String> = replicas.iter().map(|r| started_at(r)).collect();

        // Stored: created, read with its ETag, replaced only at that revision.
        let script = "/projects/demo/scripts/hello";
        let body = "echo \"args: $*\"\necho \"env: $GREETING\"\necho \"run: ${LB_SCRIPT_RUN:+set}\"\necho oops >&2\nexit 3\n";
        let hello = json!({"interpreter": "sh", "body": body, "args": ["default"],
            "env": {"GREETING": "hi there"}, "timeout": 30});
        let (status, created) = alice.put(script, hello.clone()).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["name"], "hello");
        let (status, etag, got) = alice.call(reqwest::Method::GET, script, None, None).await;
        assert_eq!(status, 200);
        assert_eq!(got["body"], body);
        let etag = etag.expect("an ETag");
        let (status, _, _) = alice
            .call(reqwest::Method::PUT, script, Some(hello.clone()), Some("\"1\""))
            .await;
        assert_eq!(status, 409, "a stale If-Match is refused");
        let (status, _, _) = alice
            .call(reqwest::Method::PUT, script, Some(hello.clone()), Some(&etag))
            .await;
        assert_eq!(status, 200, "the current revision replaces it");
        let (_, list) = alice.get("/projects/demo/scripts").await;
        assert_eq!(list["items"][0]["name"], "hello", "{list}");

        // Bad input names its field.
        for (bad, field) in [
            (json!({"interpreter": "perl", "body": "x"}), "interpreter"),
            (json!({"body": "x".repeat(256 * 1024 + 1)}), "body"),
            (json!({"body": "x", "timeout": 0}), "timeout"),
            (json!({"body": "x", "env": {"A-B": "1"}}), "env.A-B"),
        ] {
            let (status, answer) = alice.put("/projects/demo/scripts/bad", bad).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }

        // One replica: args, env, exit code, both streams.
        let run = format!("{service}/scripts/hello/run");
        let (status, answer) = alice.post(&run, json!({"args": ["a b", "$(c)"]})).await;
        assert_eq!(status, 200, "{answer}");
        let one = &answer["replicas"][0];
        assert_eq!(answer["replicas"].as_array().unwrap().len(), 1);
        assert_eq!(one["exit_code"], 3, "{answer}");
        let stdout = one["stdout"].as_str().unwrap();
        assert!(stdout.contains("args: a b $(c)\n"), "{stdout}");
        assert!(stdout.contains("env: hi there\n"), "{stdout}");
        assert!(stdout.contains("run: set\n"), "{stdout}");
        assert_eq!(one["stderr"], "oops\n");
        assert!(one["duration_ms"].as_u64().is_some());
        // The default args, on a named replica.
        let (_, answer) = alice
            .post(&run, json!({"replica": replicas[1]}))
            .await;
        assert_eq!(answer["replicas"][0]["replica"], replicas[1].as_str());
        assert!(answer["replicas"][0]["stdout"]
            .as_str()
            .unwrap()
            .contains("args: default\n"));

        // Every replica, in parallel.
        let ok = json!({"interpreter": "sh", "body": "hostname; sleep 1; echo done"});
        assert_eq!(alice.put("/projects/demo/scripts/ok", ok).await.0, 201);
        let t0 = Instant::now();
        let (status, answer) = alice
            .post(&format!("{service}/scripts/ok/run"), json!({"replica": "all"}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let all = answer["replicas"].as_array().unwrap();
        assert_eq!(all.len(), 2, "{answer}");
        let mut hosts = Vec::new();
        for r in all {
            assert_eq!(r["exit_code"], 0, "{answer}");
            assert!(r["stdout"].as_str().unwrap().ends_with("done\n"));
            hosts.push(r["stdout"].as_str().unwrap().lines().next().unwrap().to_owned());
        }
        assert_ne!(hosts[0], hosts[1], "two containers ran it: {hosts:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(1900),
            "in parallel: {:?}",
            t0.elapsed()
        );

        // Streamed from one replica: the first line comes a second before
        // the end, stderr apart, then the end; the run is recorded.
        let streamed = json!({"interpreter": "sh",
            "body": "echo first; sleep 1; echo second >&2; echo \"args: $*\"; exit 4"});
        assert_eq!(alice.put("/projects/demo/scripts/streamed", streamed).await.0, 201);
        let ws = up.url.replacen("http", "ws", 1);
        let run_ws = |project: &str, query: &str, token: &str| {
            format!("{ws}/api/v1/projects/{project}/services/web/scripts/streamed/run?{query}access_token={token}")
        };
        let query = format!("replica={}&arg=a%20b&arg=%24c&", replicas[1]);
        let t0 = Instant::now();
        let (mut socket, _) = tokio_tungstenite::connect_async(run_ws("demo", &query, &alice.token))
            .await
            .expect("the run websocket opens");
        let (mut first, mut stdout, mut stderr, mut end) = (None, Vec::new(), Vec::new(), Value::Null);
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("the run stream stalled for 20 s");
            let Some(message) = message else { break };
            match message.expect("a websocket message") {
                Message::Binary(bytes) => match bytes.split_first() {
                    Some((1, data)) => {
                        first.get_or_insert_with(|| t0.elapsed());
                        stdout.extend_from_slice(data);
                    }
                    Some((2, data)) => stderr.extend_from_slice(data),
                    other => panic!("a frame without a channel byte: {other:?}"),
                },
                Message::Text(text) => end = serde_json::from_str(&text).unwrap(),
                Message::Close(_) => break,
                _ => {}
            }
        }
        let ended = t0.elapsed();
        let first = first.expect("stdout came");
        println!("script stream: first output after {first:?}, end after {ended:?}");
        assert!(
            first + Duration::from_millis(700) < ended,
            "the first line came as it was printed ({first:?}), not at the end ({ended:?})"
        );
        assert_eq!(String::from_utf8_lossy(&stdout), "first\nargs: a b $c\n");
        assert_eq!(String::from_utf8_lossy(&stderr), "second\n");
        assert_eq!(end["exit_code"], 4, "{end}");
        assert_eq!(end["replica"], replicas[1].as_str(), "{end}");
        assert!(end["duration_ms"].as_u64().unwrap() >= 1000, "{end}");
        assert!(end.get("stdout").is_none(), "the end carries no output: {end}");
        let (_, runs) = alice.get("/projects/demo/scripts/streamed/runs").await;
        assert_eq!(runs["items"][0]["id"], end["run"], "{runs}");
        assert_eq!(runs["items"][0]["replicas"][0]["exit_code"], 4, "{runs}");
        assert_eq!(runs["items"][0]["args"], json!(["a b", "$c"]), "{runs}");
        // Refused before the upgrade, as plain HTTP answers: "all" (a stream
        // is one replica), an unknown replica, and another user (404).
        let refused = |url: String| async move {
            match tokio_tungstenite::connect_async(url).await {
                Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
                Ok(_) => 101,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(refused(run_ws("demo", "replica=all&", &alice.token)).await, 400);
        assert_eq!(refused(run_ws("demo", "replica=NOPE&", &alice.token)).await, 404);
        assert_eq!(refused(run_ws(&pid, "", &bob.token)).await, 404);
        assert_eq!(refused(run_ws("demo", "", &bob.token)).await, 404);

        // A bash script (arrays, [[ ]]) in an image with bash; an image
        // without bash names it missing.
        let bash_body = "names=(\"$@\")\nif [[ ${#names[@]} -eq 2 && ${names[1]} == b* ]]; then\n  echo \"bash ${BASH_VERSINFO[0]}: ${names[*]}\"\nfi\nexit 6\n";
        let bash = json!({"interpreter": "bash", "body": bash_body});
        assert_eq!(alice.put("/projects/demo/scripts/bash", bash).await.0, 201);
        let (status, answer) = alice
            .post(&format!("{service}/scripts/bash/run"), json!({"args": ["a", "bee"]}))
            .await;
        assert_eq!(status, 422, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("interpreter bash not found"), "{message}");
        let spec = json!({"name": "sh", "image": bash_image, "replicas": 1, "memory": 16,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]});
        let (status, created) = alice.post("/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{created}");
        running_replicas(&alice, "/projects/demo/services/sh", 1).await;
        let (status, answer) = alice
            .post("/projects/demo/services/sh/scripts/bash/run", json!({"args": ["a", "bee"]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let r = &answer["replicas"][0];
        assert_eq!(r["exit_code"], 6, "{answer}");
        assert_eq!(r["stdout"], "bash 5: a bee\n", "{answer}");

        // A missing interpreter is named.
        let py = json!({"interpreter": "python3", "body": "print('hi')"});
        assert_eq!(alice.put("/projects/demo/scripts/py", py).await.0, 201);
        let (status, answer) = alice
            .post(&format!("{service}/scripts/py/run"), json!({}))
            .await;
        assert_eq!(status, 422, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("interpreter python3 not found"),
            "{message}"
        );

        // A python3 script, in an image that has python3.
        let spec = json!({"name": "py", "image": python, "replicas": 1, "memory": 64,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]});
        let (status, py_service) = alice.post("/projects/demo/services", spec).await;
        assert_eq!(status, 201, "{py_service}");
        running_replicas(&alice, "/projects/demo/services/py", 1).await;
        let py_body = "import os, sys\nprint('args', sys.argv[1:])\nprint('env', os.environ['GREETING'])\nprint('oops', file=sys.stderr)\nsys.exit(5)\n";
        let py_script = json!({"interpreter": "python3", "body": py_body, "env": {"GREETING": "hi"}});
        assert_eq!(alice.put("/projects/demo/scripts/pyok", py_script).await.0, 201);
        let (status, answer) = alice
            .post("/projects/demo/services/py/scripts/pyok/run", json!({"args": ["x y", "$z"]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let r = &answer["replicas"][0];
        assert_eq!(r["exit_code"], 5, "{answer}");
        assert_eq!(r["stdout"], "args ['x y', '$z']\nenv hi\n", "{answer}");
        assert_eq!(r["stderr"], "oops\n", "{answer}");

        // The time limit kills the run and what it started.
        let slow = json!({"interpreter": "sh", "body": "sleep 37; echo late", "timeout": 2});
        assert_eq!(alice.put("/projects/demo/scripts/slow", slow).await.0, 201);
        let t0 = Instant::now();
        let (status, answer) = alice
            .post(&format!("{service}/scripts/slow/run"), json!({"replica": replicas[0]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let r = &answer["replicas"][0];
        assert_eq!(r["timed_out"], true, "{answer}");
        assert!(r["exit_code"].is_null(), "{answer}");
        assert!(r["error"].as_str().unwrap().contains("killed"), "{answer}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let container = containers(&format!("lb.replica={}", replicas[0])).remove(0);
        let ps = docker(&["exec", &container, "ps", "-o", "pid,args"]);
        assert!(!ps.contains("sleep 37"), "the run's processes are gone: {ps}");

        // The containers were never restarted.
        let after: Vec<String> = replicas.iter().map(|r| started_at(r)).collect();
        assert_eq!(before, after, "container start times");
        let (_, list) = alice.get(&format!("{service}/replicas")).await;
        for r in list["items"].as_array().unwrap() {
            assert_eq!(r["restarts"], 0, "{list}");
        }

        // Runs are recorded, newest first.
        let (status, runs) = alice.get(&format!("{script}/runs")).await;
        assert_eq!(status, 200, "{runs}");
        let items = runs["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{runs}");
        assert_eq!(items[0]["by"], "alice");
        assert_eq!(items[0]["args"], json!(["default"]));
        assert_eq!(items[1]["args"], json!(["a b", "$(c)"]));
        assert_eq!(items[1]["replicas"][0]["exit_code"], 3);
        assert_eq!(items[1]["service"], "web");

        // Another user reaches none of it, by name or by id.
        for path in [
            format!("/projects/{pid}/scripts"),
            format!("/projects/{pid}/scripts/hello"),
            format!("/projects/{pid}/scripts/hello/runs"),
        ] {
            assert_eq!(bob.get(&path).await.0, 404, "{path}");
        }
        let (status, _) = bob
            .post(&format!("/projects/{pid}/services/web/scripts/hello/run"), json!({}))
            .await;
        assert_eq!(status, 404);
        let (status, _) = bob
            .put(&format!("/projects/{pid}/scripts/hello"), json!({"body": "x"}))
            .await;
        assert_eq!(status, 404);
        let (_, _, got) = alice.call(reqwest::Method::GET, script, None, None).await;
        assert_eq!(got["body"], body, "bob changed nothing");

        // Deleted with its runs.
        let (status, _, _) = alice
            .call(reqwest::Method::DELETE, script, None, None)
            .await;
        assert_eq!(status, 204);
        assert_eq!(alice.get(script).await.0, 404);
        assert_eq!(alice.get(&format!("{script}/runs")).await.0, 404);
        let (status, _) = alice.post(&run, json!({})).await;
        assert_eq!(status, 404);
    });
}
