//! The ingress with real parts: the API computing routes over the embedded
//! store, `lb node` processes on the real Docker engine (one of them an
//! ingress node fed over its channel), lb's ingress in this process, and
//! busybox `httpd` replicas answering through both.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{running, Cluster, IMAGE};
use serde_json::{json, Value};

/// A free local port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// lb's ingress in this process, following the API's route table.
async fn local_ingress(cluster: &Cluster) -> SocketAddr {
    let config = lb_ingress::Config {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let metrics = lb_ingress::Metrics::new(&prometheus::Registry::new()).unwrap();
    let running = lb_ingress::serve(
        config,
        cluster.ctx.routes.subscribe(),
        metrics,
        std::future::pending(),
    )
    .await
    .unwrap();
    running.http.unwrap()
}

/// A GET of `path` at `host` through the ingress at `ingress`: status,
/// `Retry-After`, body (status 0: no answer).
async fn get(ingress: SocketAddr, host: &str, path: &str) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder()
        .resolve(host, ingress)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match client
        .get(format!("http://{host}:{}{path}", ingress.port()))
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (status, retry, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, None, e.to_string()),
    }
}

/// Polls until `path` at `host` answers 200 through `ingress`.
async fn until_served(ingress: SocketAddr, host: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(ingress, host, path).await;
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} through {ingress}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A web service: busybox httpd on 8080 serving the image's index.html and
/// `/id`, the container's host name.
fn web(name: &str, replicas: u32, domains: &[&str]) -> Value {
    json!({"name": name, "image": IMAGE, "replicas": replicas, "memory": 16, "cpu": 0.1,
        "ports": [{"container": 8080}], "domains": domains,
        "command": ["/bin/busybox", "sh", "-c",
            "/bin/busybox hostname > /www/id; exec /bin/busybox httpd -f -p 8080 -h /www"]})
}

/// A call as any user: status and body.
async fn call_as(
    cluster: &Cluster,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut req = cluster
        .client
        .request(
            method.parse().unwrap(),
            format!("{}/api/v1{path}", cluster.api),
        )
        .bearer_auth(token);
    if !body.is_null() {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sign_up(cluster: &Cluster, username: &str) -> String {
    let body = json!({"username": username, "password": "password-1"});
    let url = |p: &str| format!("{}/api/v1/auth/{p}", cluster.api);
    cluster
        .client
        .post(url("signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let login: Value = cluster
        .client
        .post(url("login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn domains_reach_replicas_through_every_ingress() {
    let mut cluster =
        Cluster::start_with(|c| c.ingress.base_domain = Some("apps.test".into())).await;
    let _a = cluster.node("a").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _b = cluster
        .node_with("b", &["--ingress", "--http-listen", &listen])
        .await;
    let node_ingress: SocketAddr = listen.parse().unwrap();
    let local = local_ingress(&cluster).await;

    let view = cluster
        .call(
            "POST",
            "/projects/demo/services",
            web("web", 2, &["web.example.test"]),
        )
        .await;
    assert_eq!(
        view["urls"],
        json!([
            "http://web.example.test/",
            "http://web-demo-alice.apps.test/"
        ]),
        "{view}"
    );
    cluster
        .wait("web", "running", Duration::from_secs(60), |r| {
            running(r) == 2
        })
        .await;

    // Through the in-process ingress and the ingress node, by the domain and
    // by the generated name: both replicas answer.
    for ingress in [local, node_ingress] {
        for host in ["web.example.test", "web-demo-alice.apps.test"] {
            assert_eq!(until_served(ingress, host, "/").await, "hello from lb\n");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = std::collections::BTreeSet::new();
            while seen.len() < 2 {
                let (status, _, body) = get(ingress, host, "/id").await;
                if status == 200 {
                    seen.insert(body);
                }
                assert!(
                    Instant::now() < deadline,
                    "{host} via {ingress}: only {seen:?}"
                );
            }
        }
    }

    // An unknown host: 404 with a page.
    let (status, _, body) = get(local, "nobody.example.test", "/").await;
    assert_eq!(status, 404, "{body}");

    // Another user cannot take the domain, nor a wildcard over it; bad
    // input names the field.
    let bob = sign_up(&cluster, "bob").await;
    call_as(
        &cluster,
        &bob,
        "POST",
        "/projects",
        json!({"name": "other"}),
    )
    .await;
    let (status, body) = call_as(
        &cluster,
        &bob,
        "POST",
        "/projects/other/services",
        web("copy", 1, &["web.example.test"]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web.example.test"),
        "{body}"
    );
    let (status, body) = call_as(
        &cluster,
        &bob,
        "POST",
        "/projects/other/services",
        web("wild", 1, &["*.example.test"]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call_as(
        &cluster,
        &bob,
        "POST",
        "/projects/other/services",
        web("bad", 1, &["Not A Domain"]),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("domains[0]")),
        "{body}"
    );
    let mut spec = web("port", 1, &["port.example.test"]);
    spec["ingress_port"] = json!(9999);
    let (status, body) = call_as(&cluster, &bob, "POST", "/projects/other/services", spec).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("ingress_port")),
        "{body}"
    );
    let (status, body) = call_as(
        &cluster,
        &bob,
        "POST",
        "/projects/other/services",
        web("under", 1, &["x.apps.test"]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Nothing of the refused services was written.
    let (_, list) = call_as(
        &cluster,
        &bob,
        "GET",
        "/projects/other/services",
        Value::Null,
    )
    .await;
    assert_eq!(list["total"], 0, "{list}");

    // Released with its service, the domain can be claimed again.
    cluster
        .call("DELETE", "/projects/demo/services/web", Value::Null)
        .await;
    let (status, body) = call_as(
        &cluster,
        &bob,
        "POST",
        "/projects/other/services",
        web("copy", 0, &["web.example.test"]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // With no replica: 503 and when to come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, retry, body) = get(local, "web.example.test", "/").await;
        if status == 503 {
            assert!(retry.is_some(), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rollout done: `replicas` replicas, all of `generation`, all running.
fn rolled_out(replicas: &[Value], generation: u64, count: usize) -> bool {
    replicas.len() == count
        && running(replicas) == count
        && replicas
            .iter()
            .all(|r| r["generation"].as_u64() == Some(generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_and_a_rollback_lose_no_request() {
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _b = cluster
        .node_with("b", &["--ingress", "--http-listen", &listen])
        .await;
    let ingress: SocketAddr = listen.parse().unwrap();
    let mut spec = web("web", 2, &["web.example.test"]);
    spec["env"] = json!({"VERSION": "0"});
    let first = spec.clone();
    cluster
        .call("POST", "/projects/demo/services", spec.clone())
        .await;
    cluster
        .wait("web", "running", Duration::from_secs(60), |r| {
            running(r) == 2
        })
        .await;
    until_served(ingress, "web.example.test", "/").await;

    // Load: 8 clients in a loop through the ingress node.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(ingress, "web.example.test", "/").await {
                    (200, _, body) if body == "hello from lb\n" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    (status, _, body) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{status} {}", body.trim())),
                }
            }
        }));
    }

    // Five deploys (a new generation each), then back to the first spec.
    for version in 1..=6 {
        let next = if version == 6 {
            first.clone()
        } else {
            let mut next = spec.clone();
            next["env"] = json!({"VERSION": version.to_string()});
            next
        };
        let view = cluster
            .call("PUT", "/projects/demo/services/web", next)
            .await;
        let generation = view["status"]["generation"].as_u64().unwrap();
        cluster
            .wait("web", "rolled out", Duration::from_secs(90), |r| {
                rolled_out(r, generation, 2)
            })
            .await;
        // The ingress has the new routes once the replicas run.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let served = ok.load(Ordering::Relaxed);
    println!(
        "served {served} requests across 6 rollouts; {} failed",
        failures.len()
    );
    assert!(served > 100, "only {served} requests served");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(10)]
    );
}
