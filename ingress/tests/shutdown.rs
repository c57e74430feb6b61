//! Graceful shutdown: the listener closes at once, a request in flight
//! still gets its answer, then the ingress ends.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::{mpsc, Mutex};

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_requests_in_flight() {
    let (arrived_tx, mut arrived) = mpsc::channel::<()>(1);
    let (release_tx, release) = mpsc::channel::<()>(1);
    let release = Arc::new(Mutex::new(release));
    let replica = upstream(move |_req| {
        let arrived_tx = arrived_tx.clone();
        let release = release.clone();
        async move {
            let _ = arrived_tx.send(()).await;
            release.lock().await.recv().await;
            text("finished")
        }
    })
    .await;
    let mut ingress = Ingress::start(table(vec![route("web", &["app.test"], &[replica])])).await;
    let url = ingress.url("/");
    let in_flight = tokio::spawn(async move { curl(&["-H", "Host: app.test", &url]).await });
    within(10, "the request reaching the replica", arrived.recv()).await;

    ingress.shutdown();
    let addr = ingress.http;
    within(10, "the listener to close", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    release_tx.send(()).await.unwrap();
    let r = within(20, "the request in flight", in_flight)
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "finished"), "{r:?}");
    within(20, "the ingress to end", ingress.wait()).await;
}
