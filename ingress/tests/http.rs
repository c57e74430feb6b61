//! The plain HTTP path against real sockets: hyper upstreams on 127.0.0.1,
//! the ingress on port 0, `curl` (HTTP/1.1 and h2c) as the client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use lb_ingress::Config;

#[tokio::test]
async fn requests_reach_the_route_of_their_host_with_forwarded_headers() {
    let web = echo("web").await;
    let api = echo("api").await;
    let ingress = Ingress::start(table(vec![
        route("web", &["app.test"], &[web]),
        route("api", &["*.api.test"], &[api]),
    ]))
    .await;

    let r = curl(&[
        "-H",
        "Host: APP.test:80",
        "-H",
        "X-Forwarded-For: 10.9.9.9",
        "-H",
        "Connection: x-drop-me",
        "-H",
        "X-Drop-Me: secret",
        &ingress.url("/path?q=1"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.body.to_lowercase();
    assert!(seen.starts_with("web\nget /path?q=1\n"), "{seen}");
    assert!(seen.contains("host: app.test:80\n"), "Host kept: {seen}");
    assert!(
        seen.contains("x-forwarded-for: 10.9.9.9, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: app.test:80\n"), "{seen}");
    assert!(
        !seen.contains("x-drop-me"),
        "hop-by-hop header forwarded: {seen}"
    );

    let r = curl(&["-H", "Host: v1.api.test", &ingress.url("/")]).await;
    assert!(r.body.starts_with("api\n"), "{r:?}");

    // h2c with prior knowledge: the :authority routes, the replica still
    // gets a Host header over HTTP/1.1.
    let url = format!("http://app.test:{}/h2", ingress.http.port());
    let resolve = format!("app.test:{}:127.0.0.1", ingress.http.port());
    let r = curl(&["--http2-prior-knowledge", "--resolve", &resolve, &url]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .to_lowercase()
            .contains(&format!("host: app.test:{}\n", ingress.http.port())),
        "{r:?}"
    );

    assert_eq!(requests(&ingress.registry, "demo/web", "2xx"), 2);
    assert_eq!(requests(&ingress.registry, "demo/api", "2xx"), 1);
}

#[tokio::test]
async fn an_unknown_host_gets_a_404_page_and_a_route_without_replicas_503() {
    let ingress = Ingress::start(table(vec![route("web", &["app.test"], &[])])).await;
    let r = curl(&["-H", "Host: nowhere.test", &ingress.url("/")]).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.contains("nowhere.test"), "{r:?}");

    let r = curl(&["-H", "Host: app.test", &ingress.url("/")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(requests(&ingress.registry, "-", "4xx"), 1);
    assert_eq!(requests(&ingress.registry, "demo/web", "5xx"), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_replica() {
    let up = echo("up").await;
    let down = closed_port().await;
    let ingress = Ingress::start(table(vec![route("web", &["app.test"], &[down, up])])).await;
    let url = ingress.url("/");
    let mut args = vec!["-H", "Host: app.test", "-w", "%{http_code}\n"];
    for _ in 0..50 {
        args.extend(["-o", "/dev/null", &url]);
    }
    let out = within(
        60,
        "50 requests",
        tokio::process::Command::new("curl")
            .arg("-s")
            .args(&args)
            .output(),
    )
    .await
    .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(codes.lines().count(), 50, "{codes}");
    assert!(codes.lines().all(|c| c == "200"), "failures: {codes}");
    assert_eq!(requests(&ingress.registry, "demo/web", "2xx"), 50);

    // Every replica down: 502 after the retry.
    let other = closed_port().await;
    ingress
        .routes
        .send_replace(table(vec![route("web", &["app.test"], &[down, other])]).into());
    let r = curl(&["-H", "Host: app.test", &url]).await;
    assert_eq!(r.status, 502, "{r:?}");
}

#[tokio::test]
async fn a_slow_replica_gets_504() {
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text("late")
    })
    .await;
    let config = Config {
        response_header_timeout: Duration::from_millis(300),
        ..test_config(false)
    };
    let ingress = Ingress::with(config, table(vec![route("web", &["app.test"], &[slow])])).await;
    let r = curl(&["-H", "Host: app.test", &ingress.url("/")]).await;
    assert_eq!(r.status, 504, "{r:?}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let counted = upstream(|req: hyper::Request<hyper::body::Incoming>| async move {
        match req.into_body().collect().await {
            Ok(b) => text(format!("got {}", b.to_bytes().len())),
            Err(e) => text(format!("error {e}")),
        }
    })
    .await;
    let config = Config {
        max_body: 1000,
        ..test_config(false)
    };
    let ingress = Ingress::with(config, table(vec![route("web", &["app.test"], &[counted])])).await;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let big = dir.path().join("big");
    std::fs::write(&small, vec![b'a'; 1000]).unwrap();
    std::fs::write(&big, vec![b'a'; 5000]).unwrap();
    let at = |p: &std::path::Path| format!("@{}", p.display());

    let r = curl(&[
        "-H",
        "Host: app.test",
        "--data-binary",
        &at(&small),
        &ingress.url("/"),
    ])
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "got 1000"), "{r:?}");
    let r = curl(&[
        "-H",
        "Host: app.test",
        "--data-binary",
        &at(&big),
        &ingress.url("/"),
    ])
    .await;
    assert_eq!(r.status, 413, "declared length: {r:?}");
    let r = curl(&[
        "-H",
        "Host: app.test",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at(&big),
        &ingress.url("/"),
    ])
    .await;
    assert_eq!(r.status, 413, "chunked: {r:?}");
}

#[tokio::test]
async fn bodies_stream_through_in_pieces_both_ways() {
    // The replica sends "first", then waits for the test's go before "second":
    // the client must see "first" before the replica finished.
    let (go_tx, go_rx) = tokio::sync::mpsc::channel::<()>(1);
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    let slow = upstream(move |_req| {
        let go_rx = go_rx.clone();
        async move {
            let (tx, rx) =
                futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
            tokio::spawn(async move {
                let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("first;"))));
                go_rx.lock().await.recv().await;
                let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("second"))));
            });
            hyper::Response::new(StreamBody::new(rx).boxed_unsync())
        }
    })
    .await;
    // The replica answers with the request body's first chunk as soon as it
    // has it, while the client still holds the rest.
    let first_chunk = upstream(|req: hyper::Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let first = loop {
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => break d,
                    Err(_) => continue,
                },
                _ => break Bytes::new(),
            }
        };
        text(format!("up got {}", String::from_utf8_lossy(&first)))
    })
    .await;
    let ingress = Ingress::start(table(vec![
        route("slow", &["slow.test"], &[slow]),
        route("up", &["up.test"], &[first_chunk]),
    ]))
    .await;

    let mut client = h1_client(ingress.http).await;
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", "slow.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = within(10, "response head", client.send_request(req))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within(
        10,
        "the first piece before the replica finished",
        body.frame(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    go_tx.send(()).await.unwrap();
    let rest = within(10, "the rest", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "second");

    // Upload: a client body whose second half is sent only after the
    // answer came back.
    let stream = tokio::net::TcpStream::connect(ingress.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, StreamBody<_>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
    tx.unbounded_send(Ok(Frame::data(Bytes::from("part-one"))))
        .unwrap();
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "up.test")
        .body(StreamBody::new(rx))
        .unwrap();
    let response = within(10, "answer before the upload ended", send.send_request(req))
        .await
        .unwrap();
    let got = within(10, "answer body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(got, "up got part-one");
    drop(tx);
}

#[tokio::test]
async fn acme_challenges_are_answered_on_every_host_before_routing() {
    let web = echo("web").await;
    let mut t = table(vec![route("web", &["app.test"], &[web])]);
    t.challenges
        .insert("tok123".into(), "tok123.thumbprint".into());
    let ingress = Ingress::start(t).await;
    for host in ["app.test", "unknown.test"] {
        let r = curl(&[
            "-H",
            &format!("Host: {host}"),
            &ingress.url("/.well-known/acme-challenge/tok123"),
        ])
        .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "tok123.thumbprint"),
            "{host}: {r:?}"
        );
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    let r = curl(&[
        "-H",
        "Host: app.test",
        &ingress.url("/.well-known/acme-challenge/nope"),
    ])
    .await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn https_redirect_applies_only_with_a_certificate() {
    let web = echo("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut redirected = route("web", &["app.test", "nocert.test"], &[web]);
    redirected.https_redirect = true;
    let mut t = table(vec![redirected]);
    t.certificates.push(certificate(dir.path(), &["app.test"]));
    t.challenges.insert("tok".into(), "tok.key".into());
    let ingress = Ingress::with(test_config(true), t).await;
    let https_port = ingress.https.unwrap().port();

    let r = curl(&["-H", "Host: app.test:8080", &ingress.url("/a/b?c=d")]).await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://app.test:{https_port}/a/b?c=d").as_str())
    );
    let r = curl(&[
        "-H",
        "Host: app.test",
        &ingress.url("/.well-known/acme-challenge/tok"),
    ])
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tok.key"),
        "challenge not redirected"
    );
    let r = curl(&["-H", "Host: nocert.test", &ingress.url("/")]).await;
    assert_eq!(r.status, 200, "no certificate, no redirect: {r:?}");
}

#[tokio::test]
async fn a_new_table_is_served_without_restart() {
    let one = echo("one").await;
    let two = echo("two").await;
    let ingress = Ingress::start(table(vec![])).await;
    let r = curl(&["-H", "Host: app.test", &ingress.url("/")]).await;
    assert_eq!(r.status, 404);
    ingress
        .routes
        .send_replace(table(vec![route("web", &["app.test"], &[one])]).into());
    let r = curl(&["-H", "Host: app.test", &ingress.url("/")]).await;
    assert!(r.body.starts_with("one\n"), "{r:?}");
    ingress
        .routes
        .send_replace(table(vec![route("web", &["app.test"], &[two])]).into());
    let r = curl(&["-H", "Host: app.test", &ingress.url("/")]).await;
    assert!(r.body.starts_with("two\n"), "{r:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = echo("web").await;
    let config = Config {
        idle_timeout: Duration::from_millis(500),
        ..test_config(false)
    };
    let ingress = Ingress::with(config, table(vec![route("web", &["app.test"], &[web])])).await;
    let mut stream = tokio::net::TcpStream::connect(ingress.http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer, then (the connection kept alive and idle) the server's close.
    within(10, "the server to close the idle connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
}
