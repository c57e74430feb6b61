//! The build worker with real parts: an API server and the builder with its
//! registry in this process, the machine's Docker engine, and a git
//! repository served over dumb HTTP (`python3 -m http.server`). A template
//! build whose rebuild after a code-only change reuses the dependency layer,
//! its logs followed over the websocket, and a build over the context limit.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lb_api::server::Signup;
use lb_store::embedded::EmbeddedStore;
use lb_store::Shared;
use serde_json::{json, Value};

/// A base image with a shell and a fake `pip` that says what it installs
/// and takes its time, like the real one: enough for the Python template.
fn python_like_base() -> String {
    let busybox = lb_testing::busybox_image();
    let name = "lb-test-python-like:1";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {busybox}\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN printf '#!/bin/sh\\necho pip-installing \"$@\"\\nsleep 1\\n' > /bin/pip && chmod +x /bin/pip\n"
        ),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", name])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    name.to_owned()
}

struct Setup {
    api: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(base_images: &[(&str, &str)], max_context: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(
            EmbeddedStore::open_dir(&dir.path().join("store"))
                .await
                .unwrap(),
        );
        let config = lb_api::Config::new("127.0.0.1:0".parse().unwrap(), Signup::Open);
        let server = lb_api::Server::bind(&config, store.clone(), std::future::pending())
            .await
            .unwrap();
        let api = format!("http://{}", server.addr());
        tokio::spawn(server.run());
        let builder = lb_builder::Config {
            keys: Default::default(),
            registry_listen: "127.0.0.1:0".parse().unwrap(),
            registry_address: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            api: api.clone(),
            concurrency: 2,
            build_memory: 256,
            build_timeout: Duration::from_secs(120),
            keep_images: 3,
            max_context,
            base_images: base_images
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            housekeeping: Default::default(),
        };
        let bound = lb_builder::bind(store, &builder).await.unwrap();
        tokio::spawn(lb_builder::run(bound, std::future::pending()));
        let client = reqwest::Client::new();
        let creds = json!({"username": "alice", "password": "alice-password"});
        client
            .post(format!("{api}/api/v1/auth/signup"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        let login: Value = client
            .post(format!("{api}/api/v1/auth/login"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Setup {
            api,
            token: login["token"].as_str().unwrap().to_owned(),
            client,
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .client
            .request(
                method.parse().unwrap(),
                format!("{}/api/v1{path}", self.api),
            )
            .bearer_auth(&self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn wait_build(&self, service: &str, n: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, build) = self
                .call(
                    "GET",
                    &format!("/projects/demo/services/{service}/builds/{n}"),
                    Value::Null,
                )
                .await;
            if ["succeeded", "failed", "canceled"].contains(&build["status"].as_str().unwrap_or(""))
            {
                return build;
            }
            assert!(Instant::now() < deadline, "build {n} did not end: {build}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn log(&self, service: &str, n: u64) -> String {
        self.client
            .get(format!(
                "{}/api/v1/projects/demo/services/{service}/builds/{n}/logs",
                self.api
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn template_rebuild_reuses_dependencies_and_logs_follow_live() {
    let base = python_like_base();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(dir.path());
    // Docker's cache outlives test runs: dependencies unique to this run.
    let run = lb_model::ids::new_id();
    let requirements = format!("flask==3.0 # {run}\n");
    repo.commit(
        &[
            ("requirements.txt", requirements.as_bytes()),
            ("app.py", b"print('one')\n"),
        ],
        "one",
    );
    let s = Setup::start(&[("python", &base)], 64 << 20).await;
    s.call("POST", "/projects", json!({"name": "demo"})).await;
    let spec = json!({"name": "api", "replicas": 0, "source": {"url": repo.url, "branch": "main",
        "build": {"kind": "template", "language": "python", "framework": "flask"}}});
    assert_eq!(s.call("POST", "/projects/demo/services", spec).await.0, 201);

    // Build 1, followed over the websocket from its start to its end.
    assert_eq!(
        s.call("POST", "/projects/demo/services/api/builds", json!({}))
            .await
            .0,
        201
    );
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/v1/projects/demo/services/api/builds/1/logs", s.api)
        .replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut streamed = Vec::new();
    let end = loop {
        use tokio_tungstenite::tungstenite::Message;
        match tokio::time::timeout(Duration::from_secs(120), socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => streamed.extend_from_slice(&data),
            Ok(Some(Ok(Message::Text(text)))) => {
                break serde_json::from_str::<Value>(&text).unwrap()
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("build log stream: {other:?}"),
        }
    };
    let streamed = String::from_utf8_lossy(&streamed).into_owned();
    assert_eq!(
        end,
        json!({"status": "succeeded"}),
        "build 1: {}\n{streamed}",
        s.wait_build("api", 1).await
    );
    assert_eq!(
        streamed,
        s.log("api", 1).await,
        "the websocket carried the whole log"
    );
    assert!(streamed.contains("pip-installing install"), "{streamed}");
    let build = s.wait_build("api", 1).await;
    let steps: Vec<&str> = build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "cloning",
            "preparing",
            "installing_dependencies",
            "building",
            "pushing"
        ],
        "{build}"
    );

    // A code-only change: the dependency layer comes from the cache.
    repo.commit(&[("app.py", b"print('two')\n")], "two");
    s.call("POST", "/projects/demo/services/api/builds", Value::Null)
        .await;
    let build = s.wait_build("api", 2).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        s.log("api", 2).await
    );
    let log = s.log("api", 2).await;
    assert!(log.contains("Using cache"), "{log}");
    assert!(
        !log.contains("pip-installing"),
        "dependencies installed again:\n{log}"
    );
    // A dependency change installs again.
    let requirements = format!("flask==3.1 # {run}\n");
    repo.commit(&[("requirements.txt", requirements.as_bytes())], "three");
    s.call("POST", "/projects/demo/services/api/builds", Value::Null)
        .await;
    let build = s.wait_build("api", 3).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        s.log("api", 3).await
    );
    assert!(s.log("api", 3).await.contains("pip-installing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_context_and_an_unknown_template_fail_with_the_cause() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = lb_testing::GitRepo::serve(dir.path());
    let big = vec![7u8; 3 << 20];
    repo.commit(
        &[
            (
                "Dockerfile",
                format!("FROM {image}\nCOPY big /big\n").as_bytes(),
            ),
            ("big", &big),
        ],
        "big",
    );
    let s = Setup::start(&[], 1 << 20).await;
    s.call("POST", "/projects", json!({"name": "demo"})).await;
    let spec = json!({"name": "big", "replicas": 0, "source": {"url": repo.url, "branch": "main"}});
    assert_eq!(s.call("POST", "/projects/demo/services", spec).await.0, 201);
    s.call("POST", "/projects/demo/services/big/builds", Value::Null)
        .await;
    let build = s.wait_build("big", 1).await;
    assert_eq!(build["status"], "failed");
    assert!(
        build["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1 MiB"),
        "{build}"
    );
    assert!(build["digest"].is_null() && build["image"].is_null());

    let spec = json!({"name": "odd", "replicas": 0, "source": {"url": repo.url, "branch": "main",
        "build": {"kind": "template", "language": "cobol", "framework": "cics"}}});
    assert_eq!(s.call("POST", "/projects/demo/services", spec).await.0, 201);
    s.call("POST", "/projects/demo/services/odd/builds", Value::Null)
        .await;
    let build = s.wait_build("odd", 1).await;
    assert_eq!(build["status"], "failed");
    assert!(
        build["message"]
            .as_str()
            .unwrap()
            .contains("no template for"),
        "{build}"
    );

    // A service without a source cannot be built.
    let spec = json!({"name": "plain", "image": image});
    s.call("POST", "/projects/demo/services", spec).await;
    let (status, body) = s
        .call("POST", "/projects/demo/services/plain/builds", Value::Null)
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s
        .call(
            "POST",
            "/projects/demo/services/big/builds",
            json!({"commit": "not-hex"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("commit")),
        "{body}"
    );
}
