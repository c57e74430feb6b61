//! Routes other API instances call to reach a node whose channel this one
//! holds (see `crate::peers`). Authenticated with the cluster's internal
//! secret, never with a user's token (tag `internal` in the OpenAPI document).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lb_model::protocol::{FromNode, ToNode};
use warp::http::StatusCode;
use warp::ws::{Message, Ws};
use warp::Reply;

use super::{json, Response};
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::peers::{AskRequest, StreamRequest};

fn check(ctx: &Ctx, authorization: Option<&str>) -> Result<()> {
    match ctx.streams.peers() {
        Some(peers) if peers.authorized(authorization) => Ok(()),
        _ => Err(ApiError::unauthorized(
            "internal route: cluster secret required",
        )),
    }
}

/// `POST /internal/ask`: a one-off request to a node held here.
pub async fn ask(ctx: Ctx, authorization: Option<String>, body: AskRequest) -> Result<Response> {
    check(&ctx, authorization.as_deref())?;
    let limit = Duration::from_secs(body.limit.clamp(1, 3600));
    let answer = ctx
        .streams
        .ask_local(&body.node, body.message, limit)
        .await?;
    Ok(json(StatusCode::OK, &answer))
}

/// `GET /internal/stream`: a stream to a node held here, relayed as JSON
/// `ToNode` / `FromNode` text frames.
pub async fn stream(ctx: Ctx, authorization: Option<String>, ws: Ws) -> Result<Response> {
    check(&ctx, authorization.as_deref())?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let (mut tx, mut rx) = socket.split();
            let end = |error: String| FromNode::End {
                stream: String::new(),
                exit_code: None,
                error: Some(error),
            };
            let first = match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
                Ok(Some(Ok(m))) => m,
                _ => return,
            };
            let request = first
                .to_str()
                .ok()
                .and_then(|t| serde_json::from_str::<StreamRequest>(t).ok());
            let Some(request) = request else {
                let text = serde_json::to_string(&end("bad stream request".into())).unwrap_or_default();
                let _ = tx.send(Message::text(text)).await;
                return;
            };
            let mut session = match ctx
                .streams
                .open_local(&request.node, &request.replica, request.kind)
                .await
            {
                Ok(session) => session,
                Err(e) => {
                    let text = serde_json::to_string(&end(e.message)).unwrap_or_default();
                    let _ = tx.send(Message::text(text)).await;
                    return;
                }
            };
            loop {
                tokio::select! {
                    output = session.output.recv() => {
                        let message = output.unwrap_or_else(|| end("the stream was cut off: the node went away or the reader fell behind".into()));
                        let last = matches!(message, FromNode::End { .. });
                        let Ok(text) = serde_json::to_string(&message) else { return };
                        if tx.send(Message::text(text)).await.is_err() || last {
                            return;
                        }
                    }
                    incoming = rx.next() => {
                        let Some(Ok(message)) = incoming else { return };
                        let Ok(text) = message.to_str() else { continue };
                        match serde_json::from_str::<ToNode>(text) {
                            Ok(ToNode::Input { input, .. }) => {
                                if session.input(input).await.is_err() {
                                    return;
                                }
                            }
                            Ok(ToNode::Close { .. }) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }
            }
        })
        .into_response())
}
