//! The events websocket over a real connection, on both backends.

mod common;

use std::time::Duration;

use common::{start, Api, Backend};
use futures::StreamExt;
use lb_model::keys::Keys;
use lb_store::StoreExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

both_backends!(
    snapshot_then_changes_filtered_per_user,
    resume_from_a_revision,
    compacted_revision_is_reported
);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(api: &Api, token: &str, query: &str) -> Socket {
    let url = format!(
        "{}/api/v1/events?{query}",
        api.base.replace("http://", "ws://")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade")
        .0
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no event within 10 s")
            .expect("socket open")
            .expect("socket message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Reads until an event satisfies `want`; fails on any event `forbid` flags.
async fn until(
    socket: &mut Socket,
    want: impl Fn(&Value) -> bool,
    forbid: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let event = next(socket).await;
        assert!(!forbid(&event), "an event the caller must not see: {event}");
        if want(&event) {
            return event;
        }
    }
}

async fn snapshot_then_changes_filtered_per_user(backend: Backend) {
    let api = start(backend).await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let p = api
        .call(
            "POST",
            "/api/v1/projects",
            Some(&alice),
            Some(json!({"name": "mine"})),
        )
        .await;
    let mine = p.body["id"].as_str().unwrap().to_owned();
    let q = api
        .call(
            "POST",
            "/api/v1/projects",
            Some(&bob),
            Some(json!({"name": "theirs"})),
        )
        .await;
    let theirs = q.body["id"].as_str().unwrap().to_owned();

    let mut socket = connect(&api, &alice, "").await;
    let snapshot = next(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    let items = snapshot["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|i| i["kind"] == "project" && i["id"] == mine.as_str()));
    assert!(
        !snapshot.to_string().contains(&theirs),
        "another user's project in the snapshot"
    );
    assert!(
        !snapshot.to_string().contains("password_hash"),
        "user records never appear"
    );
    assert!(
        !snapshot.to_string().contains("signing"),
        "settings never appear"
    );

    // Changes after the snapshot arrive, others' do not.
    api.call(
        "POST",
        "/api/v1/projects/theirs/services",
        Some(&bob),
        Some(json!({"name": "hidden", "image": "x"})),
    )
    .await;
    api.call(
        "POST",
        "/api/v1/projects/mine/services",
        Some(&alice),
        Some(json!({"name": "web", "image": "x"})),
    )
    .await;
    let forbid = |e: &Value| e.to_string().contains(&theirs) || e.to_string().contains("hidden");
    let event = until(&mut socket, |e| e["kind"] == "service_spec", forbid).await;
    assert_eq!(
        (event["type"].as_str(), event["project"].as_str()),
        (Some("put"), Some(mine.as_str()))
    );
    assert_eq!(event["object"]["name"], "web");
    assert!(event["revision"].as_i64().unwrap() > snapshot["revision"].as_i64().unwrap());

    // A project created after connecting becomes visible with everything in it.
    let r = api
        .call(
            "POST",
            "/api/v1/projects",
            Some(&alice),
            Some(json!({"name": "later"})),
        )
        .await;
    let later = r.body["id"].as_str().unwrap().to_owned();
    until(
        &mut socket,
        |e| e["kind"] == "project" && e["id"] == later.as_str(),
        forbid,
    )
    .await;
    api.call(
        "POST",
        "/api/v1/projects/later/services",
        Some(&alice),
        Some(json!({"name": "api", "image": "x"})),
    )
    .await;
    until(
        &mut socket,
        |e| e["kind"] == "service" && e["project"] == later.as_str(),
        forbid,
    )
    .await;
    // Deletes arrive as deletes.
    api.call("DELETE", "/api/v1/projects/later", Some(&alice), None)
        .await;
    let gone = until(
        &mut socket,
        |e| e["type"] == "delete" && e["kind"] == "project",
        forbid,
    )
    .await;
    assert_eq!(gone["id"], later.as_str());

    // Nodes are visible to every user.
    let keys = Keys::default();
    api.store.put(&keys.node_meta("N1"), json!({"id": "N1", "name": "n1", "capacity": {"cpus": 2.0, "memory": 1024}, "created": 1}).to_string().into_bytes()).await.unwrap();
    until(
        &mut socket,
        |e| e["kind"] == "node" && e["id"] == "N1",
        forbid,
    )
    .await;

    // An admin sees everyone's projects.
    let admin = api.admin().await;
    let mut all = connect(&api, &admin, "").await;
    let snapshot = next(&mut all).await;
    assert!(snapshot.to_string().contains(&theirs) && snapshot.to_string().contains(&mine));

    // Without credentials there is no websocket.
    let url = format!("{}/api/v1/events", api.base.replace("http://", "ws://"));
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    socket.close(None).await.unwrap();
}

async fn resume_from_a_revision(backend: Backend) {
    let api = start(backend).await;
    let alice = api.user("alice").await;
    api.call(
        "POST",
        "/api/v1/projects",
        Some(&alice),
        Some(json!({"name": "demo"})),
    )
    .await;
    let mut socket = connect(&api, &alice, "").await;
    let snapshot = next(&mut socket).await;
    let from = snapshot["revision"].as_i64().unwrap() + 1;
    socket.close(None).await.unwrap();
    // Missed while disconnected:
    for name in ["a", "b", "c"] {
        api.call(
            "POST",
            "/api/v1/projects/demo/services",
            Some(&alice),
            Some(json!({"name": name, "image": "x"})),
        )
        .await;
    }
    // The access token may also come in the query, as browsers need.
    let url = format!(
        "{}/api/v1/events?revision={from}&access_token={alice}",
        api.base.replace("http://", "ws://")
    );
    let (mut resumed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut names = Vec::new();
    while names.len() < 3 {
        let event = next(&mut resumed).await;
        assert_ne!(event["type"], "snapshot", "a resume sends no snapshot");
        if event["kind"] == "service_spec" {
            names.push(event["object"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(names, ["a", "b", "c"]);
}

async fn compacted_revision_is_reported(backend: Backend) {
    let api = start(backend).await;
    let alice = api.user("alice").await;
    for name in ["a", "b", "c"] {
        api.call(
            "POST",
            "/api/v1/projects",
            Some(&alice),
            Some(json!({"name": name})),
        )
        .await;
    }
    let current = api.store.revision().await.unwrap();
    api.store.compact(current).await.unwrap();
    let mut socket = connect(&api, &alice, "revision=2").await;
    let event = next(&mut socket).await;
    assert_eq!(
        (event["type"].as_str(), event["code"].as_str()),
        (Some("error"), Some("compacted")),
        "{event}"
    );
}
