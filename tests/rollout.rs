//! Rollouts that finish and states that tell the truth, on a real `lb up`
//! and the real Docker engine (issue 19, parts 1 and 3): a node whose CPUs
//! its service reserves entirely deploys a new image and rolls back to the
//! old one; a service on a fixed host port rolls out stop-first, never two
//! containers running at once; and the service's `status` answered by the
//! API says `running`, `deploying n/m`, `crash_looping` with the exit code,
//! `pending` with the scheduler's reason, `paused` and `no image yet`, and
//! `degraded` when one of two replicas keeps crashing beside one that runs.
//! Needs Docker and Debian's busybox-static (see tests/README.md).

#[allow(dead_code, unused_imports)]
#[path = "isolation/harness.rs"]
mod harness;

use harness::*;

/// A second name for the test image: a new version to deploy.
fn second_image() -> String {
    let image = lb_testing::busybox_image();
    let tag = "lb-test-busybox:rollout-2";
    docker(&["tag", image, tag]);
    tag.to_owned()
}

async fn service(user: &User, name: &str) -> Value {
    let (status, body) = user
        .call(
            "GET",
            &format!("/projects/roll/services/{name}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the service (60 s) until `done` holds, calling `watch` on every
/// view on the way; answers the last view.
async fn until(
    user: &User,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
    mut watch: impl FnMut(&Value),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let svc = service(user, name).await;
        watch(&svc);
        if done(&svc) {
            return svc;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {what} within 60 s: {}",
            svc["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every replica of the current generation, placed, and the state running.
fn rolled_out(svc: &Value) -> bool {
    svc["status"]["state"] == "running"
        && svc["status"]["replicas"]["ready"] == svc["spec"]["replicas"]
        && svc["status"]["replicas"]["total"] == svc["spec"]["replicas"]
}

/// The containers of a service running now, by Docker.
fn running_containers(sid: &str) -> usize {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=lb.service={sid}"),
        "--filter",
        "status=running",
    ])
    .split_whitespace()
    .count()
}

async fn create(user: &User, spec: Value) -> Value {
    let (status, body) = user.call("POST", "/projects/roll/services", spec).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn patch(user: &User, name: &str, body: Value) {
    let (status, text) = user
        .call("PATCH", &format!("/projects/roll/services/{name}"), body)
        .await;
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_fully_reserved_node_deploys_and_rolls_back() {
    let image = lb_testing::busybox_image();
    let second = second_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The node's CPUs, once it has joined and said what it has.
        let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let cpus = loop {
            let (_, nodes) = admin.call("GET", "/nodes", Value::Null).await;
            let nodes: Value = serde_json::from_str(&nodes).unwrap();
            match nodes["items"][0]["capacity"]["cpus"].as_f64() {
                Some(cpus) if cpus > 0.0 => break cpus,
                _ => assert!(Instant::now() < deadline, "no node within 30 s: {nodes}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let user = User::sign_up(&up.api, "roller").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "roll"}))
            .await;
        assert_eq!(status, 201, "{body}");
        // Two replicas reserve every CPU of the node: no room to surge.
        let spec = json!({"name": "web", "image": image, "replicas": 2, "cpu": cpus / 2.0,
            "memory": 16, "stop_timeout": 1, "command": ["/bin/busybox", "sleep", "3600"]});
        let created = create(&user, spec).await;
        assert_eq!(created["spec"]["cpu"].as_f64(), Some(cpus / 2.0));
        until(&user, "web", "running", rolled_out, |_| {}).await;

        // Deploy, then roll back: each completes, one replica down at most.
        for (version, image) in [(2, second.as_str()), (3, image)] {
            patch(&user, "web", json!({"image": image})).await;
            let mut labels = Vec::new();
            let svc = until(
                &user,
                "web",
                "rolled out",
                |svc| svc["status"]["generation"] == version && rolled_out(svc),
                |svc| {
                    let label = svc["status"]["label"].as_str().unwrap_or("").to_owned();
                    assert!(
                        svc["status"]["replicas"]["running"].as_u64().unwrap_or(0) >= 1
                            || label.starts_with("deploying 0/"),
                        "never below replicas - 1 serving: {}",
                        svc["status"]
                    );
                    if labels.last() != Some(&label) {
                        labels.push(label);
                    }
                },
            )
            .await;
            assert!(
                labels.iter().any(|l| l.starts_with("deploying ")),
                "the rollout showed as deploying n/m: {labels:?}"
            );
            assert_eq!(svc["status"]["label"], "running", "{labels:?}");
            let (_, list) = user
                .call("GET", "/projects/roll/services/web/replicas", Value::Null)
                .await;
            let list: Value = serde_json::from_str(&list).unwrap();
            let items = list["items"].as_array().unwrap();
            assert_eq!(items.len(), 2, "{list}");
            assert!(
                items
                    .iter()
                    .all(|r| r["generation"] == version && r["state"] == "running"),
                "{list}"
            );
        }
    });
    drop(up);
}

/// The service's deploys, newest first.
async fn deploys(user: &User, name: &str) -> Vec<Value> {
    let (status, body) = user
        .call(
            "GET",
            &format!("/projects/roll/services/{name}/deploys"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Polls the service's deploys (60 s) until the one of `generation` has
/// settled; answers the list. With `serving`, Docker's running containers
/// of `sid` are checked on the way: never none.
async fn until_settled(
    user: &User,
    name: &str,
    (sid, serving): (&str, bool),
    generation: u64,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !serving || running_containers(sid) >= 1,
            "{name}: no container running during the rollout of generation {generation}"
        );
        let list = deploys(user, name).await;
        let settled = list
            .iter()
            .find(|d| d["generation"] == generation)
            .is_some_and(|d| d["outcome"] != "in_progress");
        if settled {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: generation {generation} not settled within 60 s: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queues a build of the service and waits (120 s) for it to end.
async fn build(user: &User, name: &str) -> Value {
    let path = format!("/projects/roll/services/{name}/builds");
    let (status, body) = user.call("POST", &path, json!({})).await;
    assert_eq!(status, 201, "{body}");
    let n = serde_json::from_str::<Value>(&body).unwrap()["number"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = user.call("GET", &format!("{path}/{n}"), Value::Null).await;
        let build: Value = serde_json::from_str(&body).unwrap();
        if ["succeeded", "failed", "canceled"].contains(&build["status"].as_str().unwrap_or("")) {
            assert_eq!(build["status"], "succeeded", "{build}");
            return build;
        }
        assert!(Instant::now() < deadline, "build {n} did not end: {build}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The commit checked out in `dir`.
fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds from git on a node whose CPUs the service reserves entirely, and
/// rolls back through the API's rollback (not a new image by hand): each
/// generation is a deploy with its cause and who, settled `rolled_out`,
/// with a container running all along.
#[test]
fn a_fully_reserved_node_rolls_back_to_an_earlier_build() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(&dir.path().join("git"));
    let dockerfile = format!(
        "FROM {image}\nCOPY version /version\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
    );
    repo.commit(
        &[("Dockerfile", dockerfile.as_bytes()), ("version", b"one\n")],
        "version one",
    );
    let first = head(&repo.work);
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = User::log_in_as(&up.api, "admin", "admin-password").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let cpus = loop {
            let (_, nodes) = admin.call("GET", "/nodes", Value::Null).await;
            let nodes: Value = serde_json::from_str(&nodes).unwrap();
            match nodes["items"][0]["capacity"]["cpus"].as_f64() {
                Some(cpus) if cpus > 0.0 => break cpus,
                _ => assert!(Instant::now() < deadline, "no node within 30 s: {nodes}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let user = User::sign_up(&up.api, "builder").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "roll"}))
            .await;
        assert_eq!(status, 201, "{body}");
        // Two replicas reserve every CPU of the node: no room to surge.
        let created = create(
            &user,
            json!({"name": "app", "replicas": 2, "cpu": cpus / 2.0, "memory": 16,
                "stop_timeout": 1, "source": {"url": repo.url, "branch": "main"}}),
        )
        .await;
        let sid = created["id"].as_str().unwrap().to_owned();

        // Build #1: its deploy, by the user who asked, rolls out.
        let one = build(&user, "app").await;
        assert_eq!(one["by"], "builder", "{one}");
        let generation = service(&user, "app").await["status"]["generation"]
            .as_u64()
            .unwrap();
        let list = until_settled(&user, "app", (&sid, false), generation).await;
        assert_eq!(
            list[0]["cause"],
            format!("build #1 (commit {})", &first[..7]),
            "{list:#?}"
        );
        assert_eq!(
            (&list[0]["by"], &list[0]["outcome"]),
            (&json!("builder"), &json!("rolled_out")),
            "{list:#?}"
        );

        // Build #2 of a new commit: its deploy names it; the log says it
        // rolls out, and it does, on the full node.
        repo.commit(&[("version", b"two\n")], "version two");
        let second = head(&repo.work);
        let two = build(&user, "app").await;
        assert_eq!(two["commit"], second.as_str(), "{two}");
        assert_ne!(two["digest"], one["digest"]);
        let generation = service(&user, "app").await["status"]["generation"]
            .as_u64()
            .unwrap();
        let (_, log) = user
            .call(
                "GET",
                "/projects/roll/services/app/builds/2/logs",
                Value::Null,
            )
            .await;
        assert!(
            log.contains(&format!("rolling out generation {generation} with ")),
            "{log}"
        );
        let list = until_settled(&user, "app", (&sid, true), generation).await;
        assert_eq!(list[0]["generation"], generation, "{list:#?}");
        assert_eq!(
            list[0]["cause"],
            format!("build #2 (commit {})", &second[..7]),
            "{list:#?}"
        );
        assert_eq!(
            (&list[0]["by"], &list[0]["outcome"]),
            (&json!("builder"), &json!("rolled_out")),
            "{list:#?}"
        );

        // Roll back to build #1 through the API.
        let (status, body) = user
            .call(
                "POST",
                "/projects/roll/services/app/rollback",
                json!({"build": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let svc: Value = serde_json::from_str(&body).unwrap();
        let digest = one["digest"].as_str().unwrap();
        assert!(
            svc["spec"]["image"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{digest}")),
            "{svc}"
        );
        let rollback = svc["status"]["generation"].as_u64().unwrap();
        assert_eq!(rollback, generation + 1, "{svc}");
        let list = until_settled(&user, "app", (&sid, true), rollback).await;
        assert_eq!(list[0]["generation"], rollback, "{list:#?}");
        assert_eq!(list[0]["cause"], "rollback to build #1", "{list:#?}");
        assert_eq!(
            (&list[0]["by"], &list[0]["outcome"]),
            (&json!("builder"), &json!("rolled_out")),
            "{list:#?}"
        );
        assert!(
            ["superseded", "rolled_out"].contains(&list[1]["outcome"].as_str().unwrap()),
            "{list:#?}"
        );
        assert!(
            list[1]["cause"].as_str().unwrap().starts_with("build #2 "),
            "{list:#?}"
        );
        let svc = until(&user, "app", "rolled out", rolled_out, |_| {}).await;
        assert_eq!(svc["status"]["live"]["generation"], rollback, "{svc:#}");

        // Every replica runs build #1's image, by the API and by Docker.
        let (_, list) = user
            .call("GET", "/projects/roll/services/app/replicas", Value::Null)
            .await;
        let list: Value = serde_json::from_str(&list).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        assert!(
            items.iter().all(|r| r["generation"] == rollback
                && r["state"] == "running"
                && r["image"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(&format!("@{digest}")))),
            "{list}"
        );
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=lb.service={sid}"),
            "--filter",
            "status=running",
        ]);
        let images: Vec<String> = ids
            .split_whitespace()
            .map(|id| {
                docker(&["inspect", "-f", "{{.Config.Image}}", id])
                    .trim()
                    .to_owned()
            })
            .collect();
        assert_eq!(images.len(), 2, "{images:?}");
        assert!(
            images.iter().all(|i| i.ends_with(&format!("@{digest}"))),
            "{images:?}"
        );
    });
    drop(up);
}

#[test]
fn a_fixed_host_port_rolls_out_stop_first() {
    let image = lb_testing::busybox_image();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "porter").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "roll"}))
            .await;
        assert_eq!(status, 201, "{body}");
        // httpd as PID 1 ignores SIGTERM: a short grace keeps the stops
        // short.
        let spec = json!({"name": "web", "image": image, "memory": 16, "stop_timeout": 1,
            "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
            "ports": [{"container": 8080, "host": port}]});
        let created = create(&user, spec).await;
        let sid = created["id"].as_str().unwrap().to_owned();
        until(&user, "web", "running", rolled_out, |_| {}).await;
        for version in [2, 3] {
            patch(
                &user,
                "web",
                json!({"env": {"VERSION": version.to_string()}}),
            )
            .await;
            let mut most = 0;
            let mut reasons = Vec::new();
            until(
                &user,
                "web",
                "rolled out",
                |svc| svc["status"]["generation"] == version && rolled_out(svc),
                |svc| {
                    most = most.max(running_containers(&sid));
                    let detail = svc["status"]["detail"].as_str().unwrap_or("").to_owned();
                    if detail.contains("waiting") && !reasons.contains(&detail) {
                        reasons.push(detail);
                    }
                },
            )
            .await;
            assert!(most <= 1, "two containers ran on host port {port}");
            // While the old replica stopped (a second's grace), the service
            // said what the new one waits for.
            assert!(
                reasons.iter().any(|r| r.contains("waiting for it to stop")),
                "the stop-first reason was shown: {reasons:?}"
            );
        }
        // It serves on the port.
        let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello from lb\n");
    });
    drop(up);
}

#[test]
fn the_api_states_what_services_do() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "stater").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "roll"}))
            .await;
        assert_eq!(status, 201, "{body}");

        // No image: a source never built.
        create(
            &user,
            json!({"name": "src", "source": {"url": "https://example.com/app.git"}}),
        )
        .await;
        let svc = until(
            &user,
            "src",
            "no image yet",
            |s| s["status"]["state"] == "no_image",
            |_| {},
        )
        .await;
        assert_eq!(svc["status"]["label"], "no image yet", "{}", svc["status"]);

        // Crash-looping: the exit code shows.
        create(
            &user,
            json!({"name": "crash", "image": image, "memory": 16,
                "command": ["/bin/busybox", "sh", "-c", "echo bye; exit 3"]}),
        )
        .await;
        let svc = until(
            &user,
            "crash",
            "crash_looping",
            |s| s["status"]["state"] == "crash_looping",
            |s| assert_ne!(s["status"]["state"], "running", "{}", s["status"]),
        )
        .await;
        assert_eq!(svc["status"]["exit_code"], 3, "{}", svc["status"]);
        assert_eq!(svc["status"]["oom_killed"], false);
        assert!(
            svc["status"]["detail"]
                .as_str()
                .unwrap()
                .contains("exited with code 3"),
            "{}",
            svc["status"]
        );

        // Pending: no node has the room, and the scheduler says so.
        create(
            &user,
            json!({"name": "big", "image": image, "cpu": 1000,
                "command": ["/bin/busybox", "sleep", "3600"]}),
        )
        .await;
        let svc = until(
            &user,
            "big",
            "pending",
            |s| s["status"]["state"] == "pending",
            |_| {},
        )
        .await;
        let detail = svc["status"]["detail"].as_str().unwrap();
        assert!(detail.contains("CPU"), "the scheduler's reason: {detail}");

        // Running, then paused.
        create(
            &user,
            json!({"name": "ok", "image": image, "memory": 16,
                "command": ["/bin/busybox", "sleep", "3600"]}),
        )
        .await;
        let svc = until(&user, "ok", "running", rolled_out, |_| {}).await;
        assert_eq!(svc["status"]["detail"], "", "{}", svc["status"]);
        let (status, _) = user
            .call("POST", "/projects/roll/services/ok/pause", json!({}))
            .await;
        assert_eq!(status, 200);
        until(
            &user,
            "ok",
            "paused",
            |s| s["status"]["label"] == "paused",
            |_| {},
        )
        .await;

        // The list answers the same states.
        let (_, list) = user
            .call("GET", "/projects/roll/services", Value::Null)
            .await;
        let list: Value = serde_json::from_str(&list).unwrap();
        let mut states: Vec<(String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["status"]["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        states.sort();
        assert_eq!(
            states,
            [
                ("big".into(), "pending".into()),
                ("crash".into(), "crash_looping".into()),
                ("ok".into(), "paused".into()),
                ("src".into(), "no_image".into()),
            ]
        );
    });
    drop(up);
}

/// Removes a Docker volume when dropped (lb keeps a service's volumes on
/// purpose, so the test removes the one it made, also when it fails).
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn one_crashing_replica_beside_one_running_is_degraded() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    // Declared before `up`: dropped after it, once no container uses it.
    let mut volume = Volume(String::new());
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "halfer").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "roll"}))
            .await;
        assert_eq!(status, 201, "{body}");

        // Both replicas share the service's volume on the one node: the
        // first to make the directory holds it and runs, the other exits
        // with code 4 on every start.
        let svc = create(
            &user,
            json!({"name": "half", "image": image, "memory": 16, "replicas": 2,
                "volumes": [{"name": "lock", "path": "/lock"}],
                "command": ["/bin/busybox", "sh", "-c",
                    "mkdir /lock/held || exit 4; trap 'exit 0' TERM; while true; do sleep 1; done"]}),
        )
        .await;
        let sid = svc["id"].as_str().unwrap().to_owned();
        volume.0 = format!("lb-{}-lock", sid.to_lowercase());

        let svc = until(
            &user,
            "half",
            "degraded",
            |s| s["status"]["state"] == "degraded",
            |s| assert_ne!(s["status"]["state"], "running", "{}", s["status"]),
        )
        .await;
        eprintln!("half: {}", svc["status"]);
        assert_eq!(svc["status"]["label"], "degraded", "{}", svc["status"]);
        assert_eq!(svc["status"]["replicas"]["ready"], 1, "{}", svc["status"]);
        assert_eq!(svc["status"]["exit_code"], 4, "{}", svc["status"]);
        let detail = svc["status"]["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.starts_with("1/2 running; replica ") && detail.contains("exited with code 4"),
            "{detail}"
        );

        // The replica the reason names is the one that crashes; the other
        // runs and never restarted.
        let (status, body) = user
            .call("GET", "/projects/roll/services/half/replicas", Value::Null)
            .await;
        assert_eq!(status, 200, "{body}");
        let replicas: Value = serde_json::from_str(&body).unwrap();
        let items = replicas["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{replicas}");
        let (named, other): (Vec<&Value>, Vec<&Value>) = items
            .iter()
            .partition(|r| detail.contains(r["id"].as_str().unwrap()));
        assert_eq!(named.len(), 1, "one replica named in {detail}: {replicas}");
        assert_eq!(other[0]["state"], "running", "{replicas}");
        assert_eq!(other[0]["restarts"], 0, "{replicas}");
        assert!(
            named[0]["state"] == "exited" || named[0]["restarts"].as_u64() > Some(0),
            "{replicas}"
        );

        // The list answers the same state.
        let (_, list) = user
            .call("GET", "/projects/roll/services", Value::Null)
            .await;
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["items"][0]["name"], "half", "{list}");
        assert_eq!(list["items"][0]["status"]["state"], "degraded", "{list}");
    });
    drop(up);
}
