//! Streams a user opens to a replica: logs that follow (chunked text, or a
//! websocket) and interactive exec (a websocket). The node does the work;
//! this side checks the caller, picks the replica and relays bytes.
//!
//! Websocket framing, both routes: binary frames carry bytes, text frames
//! carry JSON control messages. Logs send raw output. Exec expects a first
//! text frame `{"command", "tty", "stdin", "replica", "cols", "rows"}`, then
//! binary `0x00` + stdin, and text `{"resize": {"cols", "rows"}}` or
//! `{"close_stdin": true}`; it answers binary `0x01` + stdout and `0x02` +
//! stderr, then one text `{"exit_code": n}` or `{"error": {...}}`, then
//! closes.

use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use lb_model::protocol::{FromNode, StreamInput, StreamKind};
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

use super::services::LogsQuery;
use super::Response;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::ops::replicas::{check_command, check_tail, target as stream_target};
use crate::ops::resolve::{self, LoadedService};
use crate::streams::Session;

/// How long an exec websocket may wait for its first message.
const START_WITHIN: Duration = Duration::from_secs(30);

/// `GET .../logs?follow=true` over HTTP: the output as a chunked text body
/// that ends when the container stops or the client hangs up.
pub async fn follow_text(
    ctx: &Ctx,
    node: &str,
    replica: &str,
    tail: u32,
    timestamps: bool,
) -> Result<Response> {
    let kind = StreamKind::Logs {
        tail,
        follow: true,
        timestamps,
    };
    let session = ctx.streams.open(node, replica, kind).await?;
    let body = futures::stream::unfold(Some(session), |session| async move {
        let mut session = session?;
        match session.output.recv().await {
            Some(FromNode::Output { data, .. }) => {
                Some((Ok::<_, std::convert::Infallible>(data), Some(session)))
            }
            Some(FromNode::End {
                error: Some(error), ..
            }) => Some((Ok(format!("\nlb: {error}\n").into_bytes()), None)),
            _ => None,
        }
    });
    let mut reply = Response::new(warp::hyper::Body::wrap_stream(body));
    reply.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(reply)
}

/// `GET .../logs` upgraded to a websocket.
pub async fn logs_ws(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    query: LogsQuery,
    ws: Ws,
) -> Result<Response> {
    let tail = check_tail(query.tail)?;
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    let (replica, node) = stream_target(&ctx, &loaded, query.replica.as_deref()).await?;
    let kind = StreamKind::Logs {
        tail,
        follow: query.follow.unwrap_or(false),
        timestamps: query.timestamps.unwrap_or(false),
    };
    let session = ctx.streams.open(&node, &replica, kind).await?;
    Ok(ws
        .on_upgrade(move |socket| {
            let (tx, rx) = socket.split();
            relay(session, tx, rx, false)
        })
        .into_response())
}

/// The first message of an exec websocket.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecStart {
    command: Vec<String>,
    #[serde(default)]
    tty: bool,
    #[serde(default = "yes")]
    stdin: bool,
    #[serde(default)]
    replica: Option<String>,
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

fn yes() -> bool {
    true
}

/// A control message on an exec websocket.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    #[serde(default)]
    resize: Option<Size>,
    #[serde(default)]
    close_stdin: bool,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    cols: u16,
    rows: u16,
}

/// `GET .../exec` upgraded to a websocket: checks the caller may reach the
/// service before upgrading, then runs the session.
pub async fn exec_ws(ctx: Ctx, caller: Caller, p: String, s: String, ws: Ws) -> Result<Response> {
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let (mut tx, mut rx) = socket.split();
            match start_exec(&ctx, &loaded, &mut rx).await {
                Ok(session) => relay(session, tx, rx, true).await,
                Err(err) => {
                    let _ = tx.send(Message::text(err.body().to_string())).await;
                    let _ = tx.send(Message::close()).await;
                }
            }
        })
        .into_response())
}

/// Reads the first message and opens the stream it asks for.
async fn start_exec(
    ctx: &Ctx,
    loaded: &LoadedService,
    rx: &mut SplitStream<WebSocket>,
) -> Result<Session> {
    let first = match tokio::time::timeout(START_WITHIN, rx.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(_) => {
            return Err(ApiError::bad_request(
                "the connection closed before a command",
            ))
        }
        Err(_) => {
            return Err(ApiError::bad_request(format!(
                "no command within {} s: send {{\"command\": [...]}} first",
                START_WITHIN.as_secs()
            )))
        }
    };
    let Ok(text) = first.to_str() else {
        return Err(ApiError::bad_request(
            "the first message must be a JSON text frame: {\"command\": [...], \"tty\": true}",
        ));
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let start: ExecStart = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ApiError::invalid(field, e.inner().to_string())
    })?;
    check_command(&start.command)?;
    let (replica, node) = stream_target(ctx, loaded, start.replica.as_deref()).await?;
    let kind = StreamKind::Exec {
        command: start.command,
        tty: start.tty,
        stdin: start.stdin,
        cols: start.cols,
        rows: start.rows,
        env: Vec::new(),
    };
    ctx.streams.open(&node, &replica, kind).await
}

/// Relays a stream to a user's websocket until either side ends. `exec`
/// adds the channel byte to output and takes input.
async fn relay(
    mut session: Session,
    mut tx: SplitSink<WebSocket, Message>,
    mut rx: SplitStream<WebSocket>,
    exec: bool,
) {
    loop {
        tokio::select! {
            output = session.output.recv() => {
                let message = match output {
                    Some(FromNode::Output { channel, mut data, .. }) => {
                        if exec {
                            data.insert(0, channel);
                        }
                        if tx.send(Message::binary(data)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(FromNode::End { exit_code, error, .. }) => match (error, exit_code) {
                        (Some(error), _) => ApiError::unprocessable(error).body(),
                        (None, Some(code)) => serde_json::json!({"exit_code": code}),
                        (None, None) => serde_json::json!({"end": true}),
                    },
                    _ => ApiError::unavailable(
                        "the stream was cut off: the node went away or this connection read too slowly",
                    )
                    .body(),
                };
                let _ = tx.send(Message::text(message.to_string())).await;
                let _ = tx.send(Message::close()).await;
                return;
            }
            incoming = rx.next() => {
                let message = match incoming {
                    Some(Ok(message)) if !message.is_close() => message,
                    _ => return,
                };
                if !exec {
                    continue;
                }
                let input = if message.is_binary() {
                    match message.as_bytes().split_first() {
                        Some((0, data)) => StreamInput::Stdin { data: data.to_vec() },
                        _ => continue,
                    }
                } else if let Ok(text) = message.to_str() {
                    match serde_json::from_str::<Control>(text) {
                        Ok(Control { resize: Some(size), .. }) => StreamInput::Resize { cols: size.cols, rows: size.rows },
                        Ok(Control { close_stdin: true, .. }) => StreamInput::CloseStdin,
                        _ => {
                            let err = ApiError::bad_request(format!(
                                "unknown control message {text:?}: send {{\"resize\": {{\"cols\", \"rows\"}}}} or {{\"close_stdin\": true}}"
                            ));
                            let _ = tx.send(Message::text(err.body().to_string())).await;
                            let _ = tx.send(Message::close()).await;
                            return;
                        }
                    }
                } else {
                    continue;
                };
                if session.input(input).await.is_err() {
                    return;
                }
            }
        }
    }
}
