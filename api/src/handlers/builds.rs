//! Build routes: queue one, list and read them, cancel one, read or follow
//! a build's log. The work is in [`crate::ops::builds`]; following a log
//! over a websocket is here.

use futures::{SinkExt, StreamExt};
use lb_model::{Build, BuildStatus};
use lb_store::{Event, StoreExt};
use warp::http::StatusCode;
use warp::ws::{Message, Ws};
use warp::Reply;

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::ops::builds::{self, read_log};
use crate::ops::resolve;

/// `POST .../builds`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// An exact commit to build (default: the branch head).
    #[serde(default)]
    pub commit: Option<String>,
}

/// `POST .../builds`: queues a build with the next number.
pub async fn create(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    body: BuildRequest,
) -> Result<Response> {
    let by = caller.user.username.clone();
    let build = builds::create(&ctx, &caller, (&p, &s), body.commit, &by).await?;
    Ok(json(StatusCode::CREATED, &build))
}

/// `GET .../builds`: newest first.
pub async fn list(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &builds::list(&ctx, &caller, &p, &s).await?,
    ))
}

/// `GET .../deploys`.
pub async fn deploys(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &builds::deploys(&ctx, &caller, &p, &s).await?,
    ))
}

/// `GET .../builds/{n}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &builds::get(&ctx, &caller, &p, &s, &n).await?,
    ))
}

/// `POST .../builds/{n}/cancel`: a build not yet ended becomes `canceled`.
pub async fn cancel(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &builds::cancel(&ctx, &caller, &p, &s, &n).await?,
    ))
}

/// `GET .../builds/{n}/logs`: the output so far, as text.
pub async fn logs(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    let (build, _) = builds::load(&ctx, &loaded, &n).await?;
    let (text, _, _) = read_log(&ctx, &loaded.pid, &loaded.meta.id, build.number).await?;
    Ok(warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8").into_response())
}

/// `GET .../builds/{n}/logs` upgraded to a websocket: the output so far,
/// then each chunk the builder appends as it appears (binary frames, from a
/// watch of the log's chunks and the build), then a text frame
/// `{"status": ...}` when the build ends, and the close.
pub async fn logs_ws(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    n: String,
    ws: Ws,
) -> Result<Response> {
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    let (build, _) = builds::load(&ctx, &loaded, &n).await?;
    let (pid, sid, number) = (loaded.pid.clone(), loaded.meta.id.clone(), build.number);
    Ok(ws
        .on_upgrade(move |socket| async move {
            let (mut tx, mut rx) = socket.split();
            let result = follow_log(&ctx, &pid, &sid, number, &mut tx, &mut rx).await;
            if let Err(e) = result {
                let body = ApiError::unavailable(e).body();
                let _ = tx.send(Message::text(body.to_string())).await;
            }
            let _ = tx.send(Message::close()).await;
        })
        .into_response())
}

/// Sends a build's log so far, then its new chunks as they are written,
/// then its final status; ends early when the client goes.
async fn follow_log<Tx, Rx>(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    number: u64,
    tx: &mut Tx,
    rx: &mut Rx,
) -> std::result::Result<(), String>
where
    Tx: futures::Sink<Message, Error = warp::Error> + Unpin,
    Rx: futures::Stream<Item = std::result::Result<Message, warp::Error>> + Unpin,
{
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let build_key = ctx.keys.build(pid, sid, number);
    let prefix = ctx.keys.build_log_prefix(pid, sid, number);
    let status = |value: &[u8]| {
        serde_json::from_slice::<Build>(value)
            .ok()
            .map(|b| b.status)
    };
    let ended =
        |status: BuildStatus| Message::text(serde_json::json!({"status": status}).to_string());
    // The log as of a revision, then every change after it: nothing is
    // missed, nothing sent twice (chunks are numbered).
    let (so_far, mut last, revision) = read_log(ctx, pid, sid, number)
        .await
        .map_err(|e| text(&e))?;
    let mut watch = ctx
        .store
        .watch(&ctx.keys.service_prefix(pid, sid), revision + 1)
        .await
        .map_err(|e| text(&e))?;
    if !so_far.is_empty() {
        tx.send(Message::binary(so_far))
            .await
            .map_err(|e| text(&e))?;
    }
    let done = ctx
        .store
        .get(&build_key)
        .await
        .map_err(|e| text(&e))?
        .and_then(|kv| status(&kv.value))
        .filter(|s| s.is_final());
    if let Some(done) = done {
        // Ended: whatever was appended since the read, then the status.
        let (kvs, _) = ctx.store.list(&prefix).await.map_err(|e| text(&e))?;
        for kv in kvs {
            let seq = ctx.keys.build_log_seq(&prefix, &kv.key);
            if seq.is_some() && seq > last {
                tx.send(Message::binary(kv.value))
                    .await
                    .map_err(|e| text(&e))?;
            }
        }
        tx.send(ended(done)).await.map_err(|e| text(&e))?;
        return Ok(());
    }
    loop {
        tokio::select! {
            changes = watch.next() => {
                let changes = match changes {
                    Some(Ok(changes)) => changes,
                    Some(Err(e)) => return Err(text(&e)),
                    None => return Err("watch ended".into()),
                };
                // In revision order, and within one in write order: the
                // builder writes a build's last output before its status.
                for event in changes.events {
                    let Event::Put(kv) = event else { continue };
                    if let Some(seq) = ctx.keys.build_log_seq(&prefix, &kv.key) {
                        if Some(seq) > last {
                            last = Some(seq);
                            if !kv.value.is_empty() {
                                tx.send(Message::binary(kv.value)).await.map_err(|e| text(&e))?;
                            }
                        }
                    } else if kv.key == build_key {
                        if let Some(done) = status(&kv.value).filter(|s| s.is_final()) {
                            tx.send(ended(done)).await.map_err(|e| text(&e))?;
                            return Ok(());
                        }
                    }
                }
            }
            incoming = rx.next() => {
                match incoming {
                    Some(Ok(m)) if !m.is_close() => {}
                    _ => return Ok(()),
                }
            }
        }
    }
}
