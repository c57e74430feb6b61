//! A stack (issue 18, the testausdeploy flow): a service whose source names
//! the docker-compose file of its repository. On a real `lb up`, with a
//! real git repository served over HTTP and the real Docker engine: a
//! build of the stack reads the file, the API applies it (an `image:`
//! service and a `build: .` service created, the latter built from the same
//! repository at the same commit and run), a new commit changing the file
//! and the code updates both, and a file with a key lb cannot honour fails
//! the apply, named on the build record and in its log, changing nothing.
//! Needs Docker and Debian's busybox-static (see tests/README.md).

#[allow(dead_code, unused_imports)]
#[path = "isolation/harness.rs"]
mod harness;

use harness::*;

fn compose(mode: &str, web_extra: &str) -> String {
    format!(
        r#"services:
  base:
    image: {image}
    command: /bin/busybox sleep 3600
    environment: {{MODE: {mode}}}
    deploy: {{resources: {{limits: {{memory: 32M}}}}}}
  web:
    build: .
    command: ["/bin/busybox", "sleep", "3600"]
    env_file: web.env
    depends_on: [base]
    deploy: {{resources: {{limits: {{memory: 32M}}}}}}
{web_extra}"#,
        image = lb_testing::busybox_image()
    )
}

fn dockerfile() -> String {
    format!(
        "FROM {}\nCOPY version.txt /version.txt\n",
        lb_testing::busybox_image()
    )
}

/// `GET` as JSON, asserting 200.
async fn get(user: &User, path: &str) -> Value {
    let (status, body) = user.call("GET", path, Value::Null).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (150 s) until `ready` holds for build `number` of a service.
async fn wait_build(user: &User, service: &str, number: u64, ready: fn(&Value) -> bool) -> Value {
    let path = format!("/projects/shop/services/{service}/builds/{number}");
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let (status, body) = user.call("GET", &path, Value::Null).await;
        let record: Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && ready(&record) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{service} build {number} not ready within 150 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Builds the stack; answers its record once applied (or failed) and its
/// log.
async fn build_stack(user: &User, number: u64) -> (Value, String) {
    let (status, body) = user
        .call("POST", "/projects/shop/services/stack/builds", json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let queued: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queued["number"], number, "{queued}");
    let record = wait_build(user, "stack", number, |b| {
        b["status"] == "failed" || b["applied"]["finished"].is_i64()
    })
    .await;
    let (_, log) = user
        .call(
            "GET",
            &format!("/projects/shop/services/stack/builds/{number}/logs"),
            Value::Null,
        )
        .await;
    (record, log)
}

/// Each service's name and revision.
async fn revisions(user: &User) -> Vec<(String, i64)> {
    let list = get(user, "/projects/shop/services").await;
    let mut out: Vec<(String, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits (90 s) until the one replica of `service` runs a container for
/// which `check` holds; answers it.
async fn running_where(user: &User, service: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let containers = user.running("shop", service, 1).await;
        if check(&containers[0]) {
            return containers[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{service}: no replica as expected within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A container's environment ("" when it is gone: a rollout replaced it).
fn env_of(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Env}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn version_of(container: &str) -> String {
    exec(container, "cat /version.txt").1.trim().to_owned()
}

#[test]
fn a_stack_deploys_its_repositorys_compose_file() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let repo = lb_testing::GitRepo::serve(&dir.path().join("git"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cleanup = Containers(Vec::new());
    let mut images = Vec::new();
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "stacker").await;
        let (status, body) = user
            .call("POST", "/projects", json!({"name": "shop"}))
            .await;
        assert_eq!(status, 201, "{body}");
        repo.commit(
            &[
                ("docker-compose.yml", compose("one", "").as_bytes()),
                ("web.env", b"GREETING=hello\n"),
                ("Dockerfile", dockerfile().as_bytes()),
                ("version.txt", b"v1\n"),
            ],
            "first",
        );

        // A stack runs nothing itself: one replica is refused, naming it.
        let source = json!({"url": repo.url, "branch": "main", "compose": "docker-compose.yml"});
        let (status, body) = user
            .call(
                "POST",
                "/projects/shop/services",
                json!({"name": "stack", "source": source}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["field"], "replicas", "{body}");
        let (status, body) = user
            .call(
                "POST",
                "/projects/shop/services",
                json!({"name": "stack", "replicas": 0, "source": source}),
            )
            .await;
        assert_eq!(status, 201, "{body}");

        // Built: the file read (no image), applied, web built at its commit.
        let (stack, log) = build_stack(&user, 1).await;
        assert_eq!(stack["status"], "succeeded", "{stack}\n{log}");
        assert!(stack["image"].is_null(), "{stack}");
        assert!(
            stack["message"]
                .as_str()
                .unwrap()
                .starts_with("read docker-compose.yml"),
            "{stack}"
        );
        assert_eq!(stack["stack"]["env_files"]["web.env"], "GREETING=hello\n");
        let applied = &stack["applied"];
        assert!(applied["error"].is_null(), "{stack}\n{log}");
        assert_eq!(applied["done"], json!(["created base", "created web"]));
        assert_eq!(applied["builds"], json!(["web #1"]));
        assert!(log.contains("stack: created web"), "{log}");
        assert!(log.contains("stack: build web #1 queued"), "{log}");
        let web = wait_build(&user, "web", 1, |b| {
            ["succeeded", "failed"].contains(&b["status"].as_str().unwrap_or(""))
        })
        .await;
        assert_eq!(web["status"], "succeeded", "{web}");
        assert_eq!(web["commit"], stack["commit"]);
        assert_eq!(web["by"], "stack stack build #1");
        images.push(web["image"].as_str().unwrap().to_owned());
        let base = running_where(&user, "base", |c| env_of(c).contains("MODE=one")).await;
        cleanup.0.push(base);
        let container = running_where(&user, "web", |c| version_of(c) == "v1").await;
        cleanup.0.push(container.clone());
        assert!(
            env_of(&container).contains("GREETING=hello"),
            "the env_file"
        );
        let spec = get(&user, "/projects/shop/services/web").await;
        assert_eq!(spec["spec"]["source"]["url"], repo.url.as_str());
        assert_eq!(
            get(&user, "/projects/shop/services/stack/replicas").await["items"],
            json!([]),
            "the stack runs nothing"
        );

        // A new commit: the file and the code changed, both roll out.
        repo.commit(
            &[
                ("docker-compose.yml", compose("two", "").as_bytes()),
                ("version.txt", b"v2\n"),
            ],
            "second",
        );
        let (stack, log) = build_stack(&user, 2).await;
        let applied = &stack["applied"];
        assert!(applied["error"].is_null(), "{stack}\n{log}");
        assert_eq!(applied["done"], json!(["updated base"]), "{stack}");
        assert_eq!(applied["builds"], json!(["web #2"]));
        let web = wait_build(&user, "web", 2, |b| {
            ["succeeded", "failed"].contains(&b["status"].as_str().unwrap_or(""))
        })
        .await;
        assert_eq!(web["status"], "succeeded", "{web}");
        images.push(web["image"].as_str().unwrap().to_owned());
        let base = running_where(&user, "base", |c| env_of(c).contains("MODE=two")).await;
        cleanup.0.push(base);
        let container = running_where(&user, "web", |c| version_of(c) == "v2").await;
        cleanup.0.push(container);

        // A key lb cannot honour: the apply fails naming it, nothing changes.
        let before = revisions(&user).await;
        repo.commit(
            &[(
                "docker-compose.yml",
                compose("three", "    privileged: true\n").as_bytes(),
            )],
            "bad",
        );
        let (stack, log) = build_stack(&user, 3).await;
        assert_eq!(
            stack["status"], "succeeded",
            "the build read the file: {stack}"
        );
        let error = stack["applied"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("services.web.privileged"), "{stack}");
        assert_eq!(stack["applied"]["done"], json!([]));
        assert!(log.contains("services.web.privileged"), "{log}");
        assert_eq!(
            revisions(&user).await,
            before,
            "a refused file changed a service"
        );
        let builds = get(&user, "/projects/shop/services/web/builds").await;
        assert_eq!(builds["total"], 2, "no build of web started: {builds}");
    });
    drop(cleanup);
    up.stop();
    for image in images {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    }
}
