//! `--min-free-disk` end to end: a real `lb node` asked to keep more free
//! disk than any disk has says so in its status, the scheduler gives it no
//! replica and the pending reason names it; a node without the flag takes
//! the replica. The harness is in `common/`.

mod common;

use std::time::{Duration, Instant};

use common::{running, sleeper, Cluster};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_below_min_free_disk_gets_no_replicas_and_says_why() {
    let mut cluster = Cluster::start().await;
    let full = cluster
        .node_with("full", &["--min-free-disk", "100%"])
        .await;

    // Its status says so (the first heartbeat comes within 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let node = cluster
            .call("GET", &format!("/nodes/{}", full.id), Value::Null)
            .await;
        if node["status"]["low_disk"].is_string() {
            break node["status"].clone();
        }
        assert!(Instant::now() < deadline, "no low_disk in {node}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["min_free_disk"], "100%");
    let low = status["low_disk"].as_str().unwrap();
    assert!(low.contains("below --min-free-disk 100%"), "{low}");

    cluster
        .call("POST", "/projects/demo/services", sleeper("web", 1))
        .await;
    let pending = cluster
        .wait(
            "web",
            "pending with the disk reason",
            Duration::from_secs(15),
            |r| {
                r.len() == 1
                    && r[0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("below --min-free-disk 100%")
            },
        )
        .await;
    assert_eq!(pending[0]["state"], "pending");
    let message = pending[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("node full-"),
        "the reason names the node: {message}"
    );

    // A node with room takes it.
    let _roomy = cluster.node("roomy").await;
    cluster
        .wait(
            "web",
            "running on the other node",
            Duration::from_secs(30),
            |r| running(r) == 1,
        )
        .await;
    drop(full);
}
