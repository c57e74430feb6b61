//! Deploy history on the real Docker engine (the API and the scheduler in
//! this process, a real `lb node`, see `common`): each new generation is a
//! deploy with what caused it and who; the scheduler settles it
//! `rolled_out` once its replicas run, `halted` when the new version fails
//! (the old one keeps serving), and a deploy overtaken by a newer one is
//! `superseded`. The service answers which version is live and which is
//! coming.

mod common;

use std::time::{Duration, Instant};

use common::{sleeper, Cluster};
use serde_json::{json, Value};

const SVC: &str = "/projects/demo/services/web";

/// The service's deploys, newest first.
async fn deploys(c: &Cluster) -> Vec<Value> {
    let list = c.call("GET", &format!("{SVC}/deploys"), Value::Null).await;
    list["items"].as_array().unwrap().clone()
}

/// Waits until the deploys satisfy `want`.
async fn wait_deploys(
    c: &Cluster,
    what: &str,
    limit: Duration,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let list = deploys(c).await;
        if want(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "deploys not {what} within {limit:?}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Changes the service's spec with a merge patch.
async fn patch(c: &Cluster, patch: Value) {
    c.call("PATCH", SVC, patch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_generation_is_a_deploy_settled_by_what_its_replicas_do() {
    let mut c = Cluster::start().await;
    let _node = c.node("n1").await;
    c.call("POST", "/projects/demo/services", sleeper("web", 2))
        .await;

    // The first deploy: created by the user, rolled out once both run.
    let list = wait_deploys(&c, "the first rolled out", Duration::from_secs(60), |l| {
        l.len() == 1 && l[0]["outcome"] == "rolled_out"
    })
    .await;
    assert_eq!(list[0]["cause"], "created");
    assert_eq!(list[0]["by"], "alice");
    assert_eq!(list[0]["generation"], 1);
    assert!(list[0]["finished"].as_i64().unwrap() >= list[0]["started"].as_i64().unwrap());
    let svc = c.call("GET", SVC, Value::Null).await;
    assert_eq!(svc["status"]["live"]["generation"], 1, "{svc:#}");
    assert!(svc["status"].get("coming").is_none(), "{svc:#}");

    // A spec change: a second deploy, rolled out; the first stays as it
    // ended.
    patch(&c, json!({"env": {"V": "2"}})).await;
    let list = wait_deploys(
        &c,
        "the spec change rolled out",
        Duration::from_secs(60),
        |l| l.len() == 2 && l[0]["outcome"] == "rolled_out",
    )
    .await;
    assert_eq!(list[0]["cause"], "spec change");
    assert_eq!(list[0]["generation"], 2);
    assert_eq!(list[1]["outcome"], "rolled_out");

    // Two changes at once: the first is superseded by the second, which
    // rolls out.
    patch(&c, json!({"env": {"V": "3"}})).await;
    patch(&c, json!({"env": {"V": "4"}})).await;
    let list = wait_deploys(
        &c,
        "the last of two rolled out",
        Duration::from_secs(60),
        |l| l.len() == 4 && l[0]["outcome"] == "rolled_out",
    )
    .await;
    assert_eq!(list[1]["outcome"], "superseded", "{list:#?}");
    assert_eq!(list[1]["generation"], 3);
    assert!(
        list[1]["reason"]
            .as_str()
            .unwrap()
            .contains("spec change by alice"),
        "{list:#?}"
    );

    // A new version that exits at once: the rollout halts, the deploy says
    // why, the service names the live version and the one that did not
    // come.
    patch(
        &c,
        json!({"command": ["/bin/busybox", "sh", "-c", "echo bad; exit 4"]}),
    )
    .await;
    let list = wait_deploys(
        &c,
        "the failing one halted",
        Duration::from_secs(120),
        |l| l.len() == 5 && l[0]["outcome"] == "halted",
    )
    .await;
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rollout halted"),
        "{list:#?}"
    );
    let svc = c.call("GET", SVC, Value::Null).await;
    assert_eq!(svc["status"]["live"]["generation"], 4, "{svc:#}");
    assert_eq!(svc["status"]["coming"]["generation"], 5, "{svc:#}");
    assert_eq!(svc["status"]["coming"]["outcome"], "halted", "{svc:#}");
    // The old version kept serving.
    let replicas = c.replicas("web").await;
    let old_running = replicas
        .iter()
        .filter(|r| r["generation"] == 4 && r["state"] == "running")
        .count();
    assert!(old_running >= 1, "{replicas:#?}");

    // Another user sees none of it.
    c.call(
        "POST",
        "/auth/signup",
        json!({"username": "mallory", "password": "a long password"}),
    )
    .await;
    let login: Value = c
        .client
        .post(format!("{}/api/v1/auth/login", c.api))
        .json(&json!({"username": "mallory", "password": "a long password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = login["token"].as_str().unwrap();
    let status = c
        .client
        .get(format!("{}/api/v1{SVC}/deploys", c.api))
        .bearer_auth(other)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}
