//! A crash-looping service's last output and exit code (`lbc logs`, and
//! the API's `GET .../logs` without `replica`), `lbc deploys` after a create
//! and an update, ports and shell lines shown as given, and
//! `--max-unavailable`, against a real `lb up` running busybox replicas on
//! the real Docker engine.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{wait_for, Up};
use serde_json::Value;

/// A host port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /api/v1{path}` with `token`: status, headers, body.
fn api_get(up: &Up, token: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}/api/v1{path}", up.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    })
}

/// The row of `name` in a table.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table}"))
}

#[test]
fn crash_logs_deploy_history_ports_and_commands() {
    let image = lb_testing::busybox_image();
    let up = Up::start();
    up.ok(&["project", "create", "app"]);
    up.ok(&["project", "use", "app"]);

    // A service that crashes at once: its last output and exit code.
    up.ok(&[
        "service",
        "create",
        "boom",
        "--image",
        image,
        "-m",
        "16",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo boom; exit 3",
    ]);
    let mut ls = String::new();
    wait_for("boom crash-looping", Duration::from_secs(90), || {
        ls = up.ok(&["service", "ls"]);
        row(&ls, "boom").contains("crash_looping")
    });
    eprintln!("lbc service ls:\n{ls}");
    let logs = up.ok(&["logs", "boom"]);
    eprintln!("lbc logs boom:\n{logs}");
    assert!(logs.lines().any(|l| l == "boom"), "{logs}");
    let last = logs.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("replica ") && last.contains("exited with code 3"),
        "the exit after the output: {logs}"
    );
    // With timestamps: each output line starts with its RFC 3339 time.
    let stamped = up.ok(&["logs", "--timestamps", "boom"]);
    let line = stamped
        .lines()
        .find(|l| l.ends_with(" boom"))
        .unwrap_or_else(|| panic!("a stamped boom line in {stamped}"));
    let (time, _) = line.split_once(' ').unwrap();
    assert!(
        time.len() >= 20 && time.as_bytes()[4] == b'-' && time.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(stamped.contains("exited with code 3"), "{stamped}");
    let status = up.ok(&["status", "boom"]);
    assert!(status.contains("crash_looping"), "{status}");

    // The API without `replica`: no running replica, so the last output of
    // the one that ended, with its exit code in a header.
    let token = up.ok(&["token", "create", "test"]).trim().to_owned();
    let (code, headers, body) = api_get(&up, &token, "/projects/app/services/boom/logs");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("boom"), "{body}");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-lb-exit-code"), "3", "{headers:?}");
    let replica = up.json(&["replicas", "boom"])["items"][0]["id"].clone();
    assert_eq!(Value::from(header("x-lb-replica")), replica, "{headers:?}");
    assert!(!header("x-lb-replica-state").is_empty(), "{headers:?}");
    // A service with no replica at all: still 422.
    up.ok(&["service", "create", "none", "--image", image, "-r", "0"]);
    let (code, _, body) = api_get(&up, &token, "/projects/app/services/none/logs");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("has no replica"), "{body}");

    // Ports and --max-unavailable as given; a create and an update at once:
    // the first deploy superseded, the second rolled out.
    let port = free_port();
    let published = format!("{port}:80");
    up.ok(&[
        "service",
        "create",
        "web",
        "--image",
        image,
        "-m",
        "16",
        "-p",
        &published,
        "-p",
        "53/udp",
        "--max-unavailable",
        "2",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    up.ok(&["service", "update", "web", "-e", "V=2"]);
    let get = up.ok(&["service", "get", "web"]);
    eprintln!("lbc service get web:\n{get}");
    let field = |name: &str| {
        get.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} in {get}"))
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_owned()
    };
    assert_eq!(field("Ports"), format!("{published},53/udp"));
    assert_eq!(field("Max unavailable"), "2");
    assert_eq!(
        field("Command"),
        "/bin/busybox sh -c 'trap '\\''exit 0'\\'' TERM; while true; do sleep 1; done'"
    );
    up.fails(&["service", "update", "web", "--max-unavailable", "0"], 2);
    let mut deploys = Value::Null;
    wait_for("generation 2 rolled out", Duration::from_secs(90), || {
        deploys = up.json(&["deploys", "web"]);
        deploys["items"][0]["outcome"] == "rolled_out"
    });
    let items = deploys["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{deploys}");
    assert_eq!(items[0]["generation"], 2, "{deploys}");
    assert_eq!(items[0]["cause"], "spec change", "{deploys}");
    assert_eq!(items[1]["generation"], 1, "{deploys}");
    assert_eq!(items[1]["outcome"], "superseded", "{deploys}");
    assert_eq!(items[1]["cause"], "created", "{deploys}");
    assert_eq!(deploys["live"], 2, "{deploys}");
    let table = up.ok(&["deploys", "web"]);
    eprintln!("lbc deploys web:\n{table}");
    assert!(table.starts_with("GEN"), "{table}");
    let two = row(&table, "2");
    assert!(
        two.contains("live") && two.contains("rolled_out") && two.contains("admin"),
        "{table}"
    );
    assert!(row(&table, "1").contains("superseded"), "{table}");
    let status = up.ok(&["status", "web"]);
    eprintln!("lbc status web:\n{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Live:") && l.contains("generation 2 (spec change, by admin)")),
        "{status}"
    );
    assert!(!status.contains("Coming:"), "{status}");
    up.wait_running("web", 1);
    let replicas = up.ok(&["replicas", "web"]);
    assert!(
        replicas.contains(&format!("{published},")) && replicas.contains(":53/udp"),
        "HOST:CONTAINER[/udp] in {replicas}"
    );

    // A shell line is shown as the line.
    up.ok(&[
        "service",
        "create",
        "shell",
        "--image",
        image,
        "-r",
        "0",
        "--",
        "/bin/sh",
        "-c",
        "echo \"a b\" | wc -c",
    ]);
    let get = up.ok(&["service", "get", "shell"]);
    assert!(
        get.lines()
            .any(|l| l.starts_with("Command:") && l.ends_with(" echo \"a b\" | wc -c")),
        "{get}"
    );
}
