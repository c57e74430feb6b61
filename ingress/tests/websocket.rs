//! A websocket through the ingress: a tokio-tungstenite echo server as the
//! replica, a tokio-tungstenite client talking to the ingress.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_websocket_is_proxied_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    let ingress = Ingress::start(table(vec![route("ws", &["ws.test"], &[replica])])).await;

    let stream = tokio::net::TcpStream::connect(ingress.http).await.unwrap();
    let (mut ws, response) = within(
        10,
        "websocket handshake",
        tokio_tungstenite::client_async("ws://ws.test/chat", stream),
    )
    .await
    .expect("handshake through the ingress");
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        let text = format!("hello {i}");
        ws.send(Message::Text(text.clone())).await.unwrap();
        let echoed = within(10, "echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::Text(text));
    }
    ws.send(Message::Binary(vec![0, 1, 2, 255])).await.unwrap();
    let echoed = within(10, "binary echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::Binary(vec![0, 1, 2, 255]));
    ws.close(None).await.unwrap();
    assert_eq!(requests(&ingress.registry, "demo/ws", "1xx"), 1);
}
