//! A project applied from a file (issue 18): a compose file with three
//! services `PUT` to a real `lb up` as YAML, run on the real Docker engine
//! from the busybox test image; applied again unchanged (no record written:
//! the services' revisions stay and the events feed shows no change to the
//! project or its services), changed (a dry run first, then the rollout),
//! pruned; bad YAML and keys lb cannot honour named in the error. Needs
//! Docker and Debian's busybox-static (see tests/README.md).

#[allow(dead_code, unused_imports)]
#[path = "isolation/harness.rs"]
mod harness;

use futures::StreamExt;
use harness::*;

fn compose(image: &str, mode: &str, web_replicas: u32, with_api: bool) -> String {
    let mut text = format!(
        r#"
name: shop
services:
  web:
    image: {image}
    command: /bin/busybox httpd -f -p 8080 -h /www
    ports: ["8080"]
    environment: {{MODE: {mode}}}
    deploy: {{replicas: {web_replicas}, resources: {{limits: {{memory: 32M}}}}}}
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]
      interval: 2s
"#
    );
    if with_api {
        text.push_str("    depends_on: [api]\n");
        text.push_str(&format!(
            r#"  api:
    image: {image}
    command: ["/bin/busybox", "sleep", "3600"]
    volumes: ["api_data:/data"]
    depends_on: [db]
"#
        ));
    }
    text.push_str(&format!(
        r#"  db:
    image: {image}
    command: /bin/busybox sleep 3600
    restart: unless-stopped
volumes:
  api_data:
"#
    ));
    text
}

/// A raw `PUT .../apply` with a YAML body: (status, body).
async fn put(api: &str, token: &str, query: &str, yaml: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .put(format!("{api}/projects/shop/apply{query}"))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

async fn token(api: &str) -> String {
    let login: Value = reqwest::Client::new()
        .post(format!("{api}/auth/login"))
        .json(&json!({"username": "shopper", "password": "password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}

/// Each service's revision and generation, by name.
async fn revisions(user: &User) -> Vec<(String, i64, i64)> {
    let (status, body) = user
        .call("GET", "/projects/shop/services", Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let mut out: Vec<(String, i64, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["revision"].as_i64().unwrap(),
                s["status"]["generation"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The project's and its services' records changed at or after `from`, as
/// the events feed tells (replicas and their statuses left out: they are
/// the scheduler's and the node's).
async fn records_changed(api: &str, token: &str, from: i64) -> Vec<Value> {
    let ws = api.replacen("http", "ws", 1);
    let url = format!("{ws}/events?revision={from}&access_token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut changed = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, socket.next()).await {
        let Ok(tokio_tungstenite::tungstenite::Message::Text(text)) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(event["type"], "error", "{event}");
        if ["project", "service", "service_spec"].contains(&event["kind"].as_str().unwrap_or("")) {
            changed.push(event);
        }
    }
    changed
}

#[test]
fn a_compose_file_applied_reapplied_changed_and_pruned() {
    let image = lb_testing::busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let up = start(&dir.path().join("data"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cleanup = Containers(Vec::new());
    runtime.block_on(async {
        let user = User::sign_up(&up.api, "shopper").await;
        let token = token(&up.api).await;

        // Applied: the project made, services created after what they
        // depend on, all running.
        let file = compose(image, "one", 2, true);
        let (status, applied) = put(&up.api, &token, "", &file).await;
        assert_eq!(status, 200, "{applied}");
        assert_eq!(applied["created_project"], true, "{applied}");
        assert_eq!(
            applied["done"],
            json!(["created db", "created api", "created web"])
        );
        let mut api_containers = Vec::new();
        for (service, count) in [("web", 2), ("api", 1), ("db", 1)] {
            let containers = user.running("shop", service, count).await;
            if service == "api" {
                api_containers = containers.clone();
            }
            cleanup.0.extend(containers);
        }
        let (_, api) = user
            .call("GET", "/projects/shop/services/api", Value::Null)
            .await;
        let api: Value = serde_json::from_str(&api).unwrap();
        assert_eq!(
            api["spec"]["volumes"],
            json!([{"name": "api-data", "path": "/data"}])
        );

        // Applied again unchanged: nothing planned, nothing written.
        let before = revisions(&user).await;
        let (_, project) = user.call("GET", "/projects/shop", Value::Null).await;
        let project: Value = serde_json::from_str(&project).unwrap();
        let from = before
            .iter()
            .map(|(_, r, _)| *r)
            .chain(project["revision"].as_i64())
            .max()
            .unwrap()
            + 1;
        let (status, again) = put(&up.api, &token, "", &file).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            again["plan"]["unchanged"],
            json!(["api", "db", "web"]),
            "{again}"
        );
        assert_eq!(again["done"], json!([]), "{again}");
        assert_eq!(revisions(&user).await, before, "a record was rewritten");
        let changed = records_changed(&up.api, &token, from).await;
        assert!(
            changed.is_empty(),
            "written by an unchanged apply: {changed:?}"
        );

        // Changed: the dry run plans field by field and writes nothing.
        let file = compose(image, "two", 3, true);
        let (status, dry) = put(&up.api, &token, "?dry_run=true", &file).await;
        assert_eq!(status, 200, "{dry}");
        let update = &dry["plan"]["updates"][0];
        assert_eq!(update["name"], "web", "{dry}");
        let fields: Vec<&str> = update["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["env.MODE", "replicas"], "{dry}");
        assert_eq!(dry["done"], json!([]));
        assert_eq!(revisions(&user).await, before, "a dry run wrote");
        let (status, changed) = put(&up.api, &token, "", &file).await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["done"], json!(["updated web"]), "{changed}");
        // The feed that showed nothing above shows this write.
        let seen = records_changed(&up.api, &token, from).await;
        assert!(
            seen.iter().any(|e| e["kind"] == "service_spec"),
            "the update is not on the events feed: {seen:?}"
        );
        let after = revisions(&user).await;
        let web =
            |list: &[(String, i64, i64)]| list.iter().find(|s| s.0 == "web").cloned().unwrap();
        assert_eq!(
            web(&after).2,
            web(&before).2 + 1,
            "a new generation for the new env"
        );
        assert_eq!(
            after.iter().filter(|s| before.contains(s)).count(),
            2,
            "api and db untouched"
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let containers = user.running("shop", "web", 3).await;
            cleanup.0.extend(containers.clone());
            let envs: Vec<String> = containers
                .iter()
                .map(|c| docker(&["inspect", "-f", "{{.Config.Env}}", c]))
                .collect();
            if envs.iter().all(|e| e.contains("MODE=two")) {
                break;
            }
            assert!(Instant::now() < deadline, "web still runs {envs:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Pruned: api left out is kept without prune, deleted with it.
        let file = compose(image, "two", 3, false);
        let (status, kept) = put(&up.api, &token, "", &file).await;
        assert_eq!(status, 200, "{kept}");
        assert_eq!(kept["plan"]["kept"], json!(["api"]), "{kept}");
        assert_eq!(kept["done"], json!([]), "{kept}");
        let (status, pruned) = put(&up.api, &token, "?prune=true", &file).await;
        assert_eq!(status, 200, "{pruned}");
        assert_eq!(pruned["done"], json!(["deleted api"]), "{pruned}");
        let (status, _) = user
            .call("GET", "/projects/shop/services/api", Value::Null)
            .await;
        assert_eq!(status, 404);
        let deadline = Instant::now() + Duration::from_secs(60);
        for container in &api_containers {
            while !docker(&["ps", "-q", "--filter", &format!("id={container}")])
                .trim()
                .is_empty()
            {
                assert!(
                    Instant::now() < deadline,
                    "api's container {container} still runs"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }

        // Bad YAML: 400 naming line and column, nothing written.
        let (status, bad) = put(&up.api, &token, "?prune=true", "services:\n  web: [\n").await;
        assert_eq!(status, 400, "{bad}");
        let message = bad["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid YAML at line 3 column"),
            "{message}"
        );

        // Keys lb cannot honour: each one named, nothing written.
        let bad_file = file.replace(
            "    restart: unless-stopped\n",
            "    privileged: true\n    network_mode: host\n    volumes: ['/etc:/host-etc']\n",
        );
        let (status, bad) = put(&up.api, &token, "?prune=true", &bad_file).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(bad["error"]["field"], "services.db.network_mode", "{bad}");
        let message = bad["error"]["message"].as_str().unwrap();
        for key in [
            "services.db.privileged",
            "services.db.network_mode",
            "services.db.volumes[0]",
        ] {
            assert!(message.contains(key), "{key} not named: {message}");
        }
        let (status, _) = user
            .call("GET", "/projects/shop/services/db", Value::Null)
            .await;
        assert_eq!(status, 200, "the refused file deleted nothing");
    });
    drop(cleanup);
}
