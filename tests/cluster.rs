//! The scheduler with real parts: an API server and the scheduler over the
//! embedded store, and `lb node` processes (the real binary) on the real
//! Docker engine; services created through the REST API as a user would.
//! The harness is in `common/`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{running, sleeper, Cluster};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_spread_and_a_misfit_stays_pending_with_a_reason() {
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let _b = cluster.node("b").await;
    cluster
        .call("POST", "/projects/demo/services", sleeper("web", 2))
        .await;
    let replicas = cluster
        .wait(
            "web",
            "running on two nodes",
            Duration::from_secs(30),
            |r| running(r) == 2,
        )
        .await;
    assert_ne!(
        replicas[0]["node"], replicas[1]["node"],
        "spread across the two nodes"
    );

    // More memory than any node has: pending, and the API says why.
    let mut huge = sleeper("huge", 1);
    huge["memory"] = json!(1_048_576);
    cluster.call("POST", "/projects/demo/services", huge).await;
    let pending = cluster
        .wait(
            "huge",
            "pending with a reason",
            Duration::from_secs(10),
            |r| {
                r.len() == 1
                    && r[0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("no node has 1048576 MiB free")
            },
        )
        .await;
    assert_eq!(pending[0]["state"], "pending");
    assert!(pending[0]["node"].is_null());

    // A node selector pins replicas to a zone.
    let mut pinned = sleeper("pinned", 2);
    pinned["node_selector"] = json!({"zone": "b"});
    cluster
        .call("POST", "/projects/demo/services", pinned)
        .await;
    let r = cluster
        .wait("pinned", "running", Duration::from_secs(30), |r| {
            running(r) == 2
        })
        .await;
    assert_eq!(r[0]["node"], r[1]["node"]);
    assert_eq!(r[0]["node"].as_str(), Some(_b.id.as_str()));

    // Scale down removes the newest first.
    cluster
        .call(
            "POST",
            "/projects/demo/services/web/scale",
            json!({"replicas": 3}),
        )
        .await;
    let three = cluster
        .wait("web", "three running", Duration::from_secs(30), |r| {
            running(r) == 3
        })
        .await;
    let oldest: Vec<Value> = replicas.iter().map(|r| r["id"].clone()).collect();
    cluster
        .call(
            "POST",
            "/projects/demo/services/web/scale",
            json!({"replicas": 2}),
        )
        .await;
    let two = cluster
        .wait("web", "back to two", Duration::from_secs(30), |r| {
            r.len() == 2
        })
        .await;
    let kept: Vec<Value> = two.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(kept, oldest, "the newest of {three:#?} went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_nodes_replicas_run_elsewhere() {
    let mut cluster = Cluster::start().await;
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    cluster
        .call("POST", "/projects/demo/services", sleeper("web", 2))
        .await;
    cluster
        .wait("web", "running", Duration::from_secs(30), |r| {
            running(r) == 2
        })
        .await;
    let lost = a.id.clone();
    let died = Instant::now();
    a.kill().await;
    let moved = cluster
        .wait(
            "web",
            "moved to the live node",
            Duration::from_secs(30),
            |r| running(r) == 2 && r.iter().all(|x| x["node"].as_str() == Some(b.id.as_str())),
        )
        .await;
    let took = died.elapsed();
    eprintln!("replacement running {took:?} after the node died (grace 2 s)");
    assert!(moved.iter().all(|r| r["node"] != lost.as_str()));
    assert!(took < Duration::from_secs(15), "replacement took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_keeps_the_count_and_a_failing_version_halts() {
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let _b = cluster.node("b").await;
    cluster
        .call("POST", "/projects/demo/services", sleeper("web", 2))
        .await;
    cluster
        .wait("web", "running", Duration::from_secs(30), |r| {
            running(r) == 2
        })
        .await;

    // A new version: never fewer than two running while it rolls out.
    cluster
        .call(
            "PATCH",
            "/projects/demo/services/web",
            json!({"env": {"VERSION": "2"}}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut min_running = usize::MAX;
    loop {
        let r = cluster.replicas("web").await;
        min_running = min_running.min(running(&r));
        if r.len() == 2 && running(&r) == 2 && r.iter().all(|x| x["generation"] == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {r:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        min_running >= 2,
        "running replicas fell to {min_running} during the rollout"
    );

    // A version that cannot run: the rollout stops, the old ones keep serving.
    cluster
        .call(
            "PATCH",
            "/projects/demo/services/web",
            json!({"command": ["/bin/busybox", "false"]}),
        )
        .await;
    let r = cluster
        .wait(
            "web",
            "a failing new replica",
            Duration::from_secs(30),
            |r| {
                r.iter()
                    .any(|x| x["generation"] == 3 && x["restarts"].as_u64().unwrap_or(0) >= 1)
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r2 = cluster.replicas("web").await;
    let old_running = r2
        .iter()
        .filter(|x| x["generation"] == 2 && x["state"] == "running")
        .count();
    assert_eq!(old_running, 2, "old replicas keep serving: {r2:#?}");
    assert_eq!(
        r2.iter().filter(|x| x["generation"] == 3).count(),
        1,
        "halted after one new replica: {r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_exec_pause_resume_and_restart_reach_the_containers() {
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let mut spec = sleeper("web", 2);
    spec["command"] = json!([
        "/bin/busybox",
        "sh",
        "-c",
        "echo started $GREETING; exec /bin/busybox sleep 3600"
    ]);
    spec["env"] = json!({"GREETING": "hello"});
    cluster.call("POST", "/projects/demo/services", spec).await;
    let replicas = cluster
        .wait("web", "running", Duration::from_secs(30), |r| {
            running(r) == 2
        })
        .await;

    // Logs, as text.
    let url = format!(
        "{}/api/v1/projects/demo/services/web/logs?tail=10",
        cluster.api
    );
    // Running is reported as the container starts: its first line may be a
    // moment behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = cluster
            .client
            .get(&url)
            .bearer_auth(&cluster.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !logs.trim().is_empty() || std::time::Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logs.trim(), "started hello");

    // One-off exec: output and exit codes.
    let out = cluster
        .call(
            "POST",
            "/projects/demo/services/web/exec",
            json!({"command": ["/bin/busybox", "echo", "ok"]}),
        )
        .await;
    assert_eq!(out, json!({"exit_code": 0, "stdout": "ok\n", "stderr": ""}));
    let rid = replicas[1]["id"].as_str().unwrap();
    let body =
        json!({"command": ["/bin/busybox", "sh", "-c", "echo oops >&2; exit 7"], "replica": rid});
    let out = cluster
        .call("POST", "/projects/demo/services/web/exec", body)
        .await;
    assert_eq!(
        (out["exit_code"].as_i64(), out["stderr"].as_str()),
        (Some(7), Some("oops\n"))
    );

    // Pause stops every container and keeps the count; resume starts them.
    cluster
        .call("POST", "/projects/demo/services/web/pause", Value::Null)
        .await;
    let paused = cluster
        .wait("web", "stopped", Duration::from_secs(30), |r| {
            r.len() == 2 && r.iter().all(|x| x["state"] == "exited")
        })
        .await;
    let ids: Vec<String> = paused
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=lb.replica={id}")])
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "a paused replica's container still runs"
        );
    }
    cluster
        .call("POST", "/projects/demo/services/web/resume", Value::Null)
        .await;
    cluster
        .wait("web", "running again", Duration::from_secs(30), |r| {
            running(r) == 2
        })
        .await;

    // Restart: every replica gets a new container, one at a time.
    let before = container_ids(&ids);
    cluster
        .call("POST", "/projects/demo/services/web/restart", Value::Null)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = container_ids(&ids);
        if now.iter().zip(&before).all(|(a, b)| a != b)
            && running(&cluster.replicas("web").await) == 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every replica restarted: {before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn container_ids(replicas: &[String]) -> Vec<String> {
    replicas
        .iter()
        .map(|id| {
            let out = Command::new("docker")
                .args(["ps", "-q", "--filter", &format!("label=lb.replica={id}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect()
}

/// A websocket to a stream route, as the caller.
async fn stream_socket(
    cluster: &Cluster,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/v1{path}", cluster.api).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", cluster.token).parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Reads an exec websocket until `want` holds for the output so far, or the
/// control message that ends it; answers (output, final control message).
async fn read_exec<S>(socket: &mut S, want: impl Fn(&str) -> bool) -> (String, Option<Value>)
where
    S: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use futures::StreamExt;
    let mut output = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no more output within 20 s; so far {output:?}"));
        match next {
            Some(Ok(WsMessage::Binary(data))) => {
                assert!(
                    matches!(data.first(), Some(1 | 2)),
                    "channel byte: {data:?}"
                );
                output.push_str(&String::from_utf8_lossy(&data[1..]));
                if want(&output) {
                    return (output, None);
                }
            }
            Some(Ok(WsMessage::Text(text))) => {
                return (output, Some(serde_json::from_str(&text).unwrap()))
            }
            Some(Ok(_)) => {}
            other => panic!("exec stream ended without an exit code: {other:?}; {output:?}"),
        }
    }
}

use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_follow_and_interactive_exec_over_websockets() {
    use futures::{SinkExt, StreamExt};
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let mut spec = sleeper("ticker", 1);
    spec["command"] = json!([
        "/bin/busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); /bin/busybox sleep 0.2; done"
    ]);
    cluster.call("POST", "/projects/demo/services", spec).await;
    cluster
        .wait("ticker", "running", Duration::from_secs(30), |r| {
            running(r) == 1
        })
        .await;

    // Logs over a websocket: the tail, then lines written after connecting.
    let mut socket = stream_socket(
        &cluster,
        "/projects/demo/services/ticker/logs?tail=1&follow=true",
    )
    .await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while text.lines().count() < 6 {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(WsMessage::Binary(data)))) => text.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("log stream: {other:?} after {text:?}"),
        }
    }
    let numbers: Vec<u64> = text
        .lines()
        .map(|l| l.trim_start_matches("tick ").parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the tail then every new line, in order: {text:?}"
    );
    drop(socket);

    // Logs that follow over plain HTTP: a chunked body that keeps coming.
    let url = format!(
        "{}/api/v1/projects/demo/services/ticker/logs?tail=0&follow=true",
        cluster.api
    );
    let mut resp = cluster
        .client
        .get(&url)
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    while body.lines().count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("followed logs stalled")
            .unwrap()
            .expect("followed logs ended");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.starts_with("tick "), "{body:?}");
    drop(resp);

    // Interactive, no TTY: stdin in, stdout out, end of input, exit code.
    let mut exec = stream_socket(&cluster, "/projects/demo/services/ticker/exec").await;
    let start = json!({"command": ["/bin/busybox", "cat"], "stdin": true});
    exec.send(WsMessage::Text(start.to_string())).await.unwrap();
    let mut stdin = vec![0u8];
    stdin.extend_from_slice(b"hello\n");
    exec.send(WsMessage::Binary(stdin)).await.unwrap();
    let (output, end) = read_exec(&mut exec, |o| o.contains("hello\n")).await;
    assert_eq!((output.as_str(), end), ("hello\n", None));
    let close = json!({"close_stdin": true});
    exec.send(WsMessage::Text(close.to_string())).await.unwrap();
    let (_, end) = read_exec(&mut exec, |_| false).await;
    assert_eq!(end, Some(json!({"exit_code": 0})));

    // With a TTY: the terminal size as asked, a resize, the exit code.
    let mut tty = stream_socket(&cluster, "/projects/demo/services/ticker/exec").await;
    let start = json!({"command": ["/bin/busybox", "sh"], "tty": true, "cols": 100, "rows": 30});
    tty.send(WsMessage::Text(start.to_string())).await.unwrap();
    let type_in = |text: &str| {
        let mut frame = vec![0u8];
        frame.extend_from_slice(text.as_bytes());
        WsMessage::Binary(frame)
    };
    tty.send(type_in("/bin/busybox stty size\n")).await.unwrap();
    let (output, _) = read_exec(&mut tty, |o| o.contains("30 100")).await;
    assert!(output.contains("30 100"), "{output:?}");
    let resize = json!({"resize": {"cols": 120, "rows": 40}});
    tty.send(WsMessage::Text(resize.to_string())).await.unwrap();
    tty.send(type_in("/bin/busybox stty size; exit 3\n"))
        .await
        .unwrap();
    let (output, end) = read_exec(&mut tty, |_| false).await;
    assert!(output.contains("40 120"), "{output:?}");
    assert_eq!(end, Some(json!({"exit_code": 3})));

    // A bad first message: a clear error naming the field, then the end.
    let mut bad = stream_socket(&cluster, "/projects/demo/services/ticker/exec").await;
    bad.send(WsMessage::Text(r#"{"command": "ls"}"#.into()))
        .await
        .unwrap();
    let (_, end) = read_exec(&mut bad, |_| false).await;
    let end = end.unwrap();
    assert_eq!(
        (
            end["error"]["code"].as_str(),
            end["error"]["field"].as_str()
        ),
        (Some("invalid"), Some("command")),
        "{end}"
    );

    // Another user reaches neither stream: 404 before any upgrade.
    let body = json!({"username": "mallory", "password": "password-2"});
    let base = format!("{}/api/v1", cluster.api);
    cluster
        .client
        .post(format!("{base}/auth/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let login: Value = cluster
        .client
        .post(format!("{base}/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["logs?follow=true", "exec"] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{base}/projects/demo/services/ticker/{path}").replacen("http", "ws", 1);
        let mut request = url.clone().into_client_request().unwrap();
        let header = format!("Bearer {}", login["token"].as_str().unwrap());
        request
            .headers_mut()
            .insert("authorization", header.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 404, "{url}")
            }
            other => panic!("{url}: another user's stream opened: {other:?}"),
        }
        let anonymous = tokio_tungstenite::connect_async(url.as_str()).await;
        assert!(
            matches!(&anonymous, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
            "{url}: {anonymous:?}"
        );
    }
}

/// Two API instances on one store: the node's channel lands on the first;
/// logs and exec asked of the second reach it through the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_reach_a_node_held_by_another_api_instance() {
    use futures::{SinkExt, StreamExt};
    let mut cluster = Cluster::start().await;
    let _a = cluster.node("a").await;
    let mut spec = sleeper("ticker", 1);
    spec["command"] = json!([
        "/bin/busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); /bin/busybox sleep 0.2; done"
    ]);
    cluster.call("POST", "/projects/demo/services", spec).await;
    cluster
        .wait("ticker", "running", Duration::from_secs(30), |r| {
            running(r) == 1
        })
        .await;

    // A second API instance over the same store.
    let config = lb_api::Config::new("127.0.0.1:0".parse().unwrap(), lb_api::server::Signup::Open);
    let second = lb_api::Server::bind(&config, cluster.store.clone(), std::future::pending())
        .await
        .unwrap();
    let other = format!("http://{}", second.addr());
    tokio::spawn(second.run());
    let first = std::mem::replace(&mut cluster.api, other.clone());

    // One-off exec and logs through the second instance.
    let out = cluster
        .call(
            "POST",
            "/projects/demo/services/ticker/exec",
            json!({"command": ["/bin/busybox", "echo", "forwarded"]}),
        )
        .await;
    assert_eq!(out["stdout"], "forwarded\n", "{out}");
    let logs = cluster
        .client
        .get(format!(
            "{other}/api/v1/projects/demo/services/ticker/logs?tail=2"
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(logs.starts_with("tick "), "{logs:?}");

    // Following logs and an interactive exec, over websockets to the second.
    let mut socket = stream_socket(
        &cluster,
        "/projects/demo/services/ticker/logs?tail=0&follow=true",
    )
    .await;
    let mut text = String::new();
    while text.lines().count() < 3 {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Ok(Some(Ok(WsMessage::Binary(data)))) => text.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("forwarded log stream: {other:?} after {text:?}"),
        }
    }
    drop(socket);
    let mut exec = stream_socket(&cluster, "/projects/demo/services/ticker/exec").await;
    let start = json!({"command": ["/bin/busybox", "sh", "-c", "read x; echo got $x; exit 4"]});
    exec.send(WsMessage::Text(start.to_string())).await.unwrap();
    exec.send(WsMessage::Binary(b"\x00hello\n".to_vec()))
        .await
        .unwrap();
    let (output, end) = read_exec(&mut exec, |_| false).await;
    assert_eq!(
        (output.as_str(), end),
        ("got hello\n", Some(json!({"exit_code": 4})))
    );

    // The internal routes refuse anyone without the cluster secret.
    let resp = cluster
        .client
        .post(format!("{first}/api/v1/internal/ask"))
        .bearer_auth(&cluster.token)
        .json(&json!({"node": "x", "message": {"command": "logs", "data": {"request": "r", "replica": "r", "tail": 1}}, "limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
