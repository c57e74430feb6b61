//! Builds of a service: queue one, list and read them, follow their logs,
//! cancel one. The builder (`lb_builder::worker`) does the work; this side
//! records the request and shows what the builder wrote.

use futures::{SinkExt, StreamExt};
use lb_model::{Build, BuildStatus};
use lb_store::{Compare, Event, Op, StoreExt, Txn};
use warp::http::StatusCode;
use warp::ws::{Message, Ws};
use warp::Reply;

use super::services::{resolve, Loaded};
use super::{decode, encode, json, Response};
use crate::accounts::now;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::models::List;

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
    if let Some(commit) = &body.commit {
        let ok = (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(ApiError::invalid(
                "commit",
                format!("{commit:?} is not a commit id (4 to 64 hex digits)"),
            ));
        }
    }
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    if loaded.spec.source.is_none() {
        return Err(ApiError::unprocessable(format!(
            "service {:?} has no source to build: set \"source\" (a git URL) first",
            loaded.meta.name
        )));
    }
    let (pid, sid) = (loaded.pid.clone(), loaded.meta.id.clone());
    for _ in 0..20 {
        let (kvs, _) = ctx.store.list(&ctx.keys.builds_prefix(&pid, &sid)).await?;
        let last = kvs
            .last()
            .and_then(|kv| kv.key.rsplit('/').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let number = last + 1;
        let build = Build {
            number,
            status: BuildStatus::Queued,
            commit: body.commit.clone(),
            image: None,
            digest: None,
            message: String::new(),
            steps: Vec::new(),
            created: now(),
            finished: None,
        };
        let key = ctx.keys.build(&pid, &sid, number);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), 0))
            .when(Compare::ModRevision(
                ctx.keys.service_meta(&pid, &sid),
                loaded.meta_revision,
            ))
            .then(Op::put(key, encode(&build)))
            .then(Op::put(
                ctx.keys.build_queued(&pid, &sid, number),
                Vec::new(),
            ));
        if ctx.store.txn(txn).await?.succeeded {
            return Ok(json(StatusCode::CREATED, &build));
        }
        // Another build took the number, or the service changed: again.
        let still = resolve(&ctx, &caller, &p, &s).await?;
        if still.meta_revision != loaded.meta_revision {
            return Box::pin(create(ctx, caller, p, s, body)).await;
        }
    }
    Err(ApiError::conflict(
        "too many builds queued at once: try again",
    ))
}

/// `GET .../builds`: newest first.
pub async fn list(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.builds_prefix(&loaded.pid, &loaded.meta.id))
        .await?;
    let mut items = kvs
        .iter()
        .map(decode::<Build>)
        .collect::<Result<Vec<_>>>()?;
    items.reverse();
    let total = items.len();
    Ok(json(StatusCode::OK, &List { items, total }))
}

async fn load(ctx: &Ctx, loaded: &Loaded, n: &str) -> Result<(Build, i64)> {
    let not_found = || {
        ApiError::not_found(format!(
            "build {n:?} of service {:?} not found",
            loaded.meta.name
        ))
    };
    let number: u64 = n.parse().map_err(|_| not_found())?;
    let kv = ctx
        .store
        .get(&ctx.keys.build(&loaded.pid, &loaded.meta.id, number))
        .await?
        .ok_or_else(not_found)?;
    Ok((decode(&kv)?, kv.mod_revision))
}

/// `GET .../builds/{n}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (build, _) = load(&ctx, &loaded, &n).await?;
    Ok(json(StatusCode::OK, &build))
}

/// `POST .../builds/{n}/cancel`: a build not yet ended becomes `canceled`;
/// its builder sees that and stops at once.
pub async fn cancel(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    loop {
        let (mut build, revision) = load(&ctx, &loaded, &n).await?;
        if build.status.is_final() {
            return Err(ApiError::conflict(format!(
                "build {} already ended ({})",
                build.number,
                serde_json::to_value(build.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
        let at = now();
        if let Some(step) = build.steps.last_mut() {
            step.finished.get_or_insert(at);
        }
        build.status = BuildStatus::Canceled;
        build.finished = Some(at);
        build.message = format!("canceled by {}", caller.user.username);
        let key = ctx.keys.build(&loaded.pid, &loaded.meta.id, build.number);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), revision))
            .then(Op::put(key, encode(&build)))
            .then(Op::delete(ctx.keys.build_queued(
                &loaded.pid,
                &loaded.meta.id,
                build.number,
            )));
        if ctx.store.txn(txn).await?.succeeded {
            return Ok(json(StatusCode::OK, &build));
        }
    }
}

/// A build's log as stored: the chunks joined (see
/// [`lb_model::join_log_chunks`]), the number of the last chunk, and
/// the revision it was read at. A build logged before logs were chunked
/// has its whole output in one older key, read when there are no chunks.
async fn read_log(
    ctx: &Ctx,
    pid: &str,
    sid: &str,
    number: u64,
) -> lb_store::Result<(Vec<u8>, Option<u64>, i64)> {
    let prefix = ctx.keys.build_log_prefix(pid, sid, number);
    let (kvs, revision) = ctx.store.list(&prefix).await?;
    let chunks: Vec<(u64, &[u8])> = kvs
        .iter()
        .filter_map(|kv| {
            Some((
                ctx.keys.build_log_seq(&prefix, &kv.key)?,
                kv.value.as_slice(),
            ))
        })
        .collect();
    let last = chunks.last().map(|(seq, _)| *seq);
    if chunks.is_empty() {
        let legacy = ctx
            .store
            .get(&ctx.keys.build_log_legacy(pid, sid, number))
            .await?;
        return Ok((
            legacy.map(|kv| kv.value).unwrap_or_default(),
            None,
            revision,
        ));
    }
    Ok((lb_model::join_log_chunks(chunks), last, revision))
}

/// `GET .../builds/{n}/logs`: the output so far, as text.
pub async fn logs(ctx: Ctx, caller: Caller, p: String, s: String, n: String) -> Result<Response> {
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (build, _) = load(&ctx, &loaded, &n).await?;
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
    let loaded = resolve(&ctx, &caller, &p, &s).await?;
    let (build, _) = load(&ctx, &loaded, &n).await?;
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
