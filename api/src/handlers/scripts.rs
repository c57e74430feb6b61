//! Script routes: a project's stored scripts (list, create, read, replace,
//! delete, with the revision as the ETag), running one in a service's
//! replicas (answered at the end, or streamed over a websocket), and its
//! recorded runs. The work is in [`crate::ops::scripts`].
//!
//! The run websocket (`GET .../scripts/{name}/run`, query `replica=ID` and
//! `arg=...` repeated) is checked before the upgrade (errors are plain HTTP
//! answers), then sends binary `0x01` + stdout and `0x02` + stderr as they
//! come and one text frame at the end: the replica's run without its output
//! (`run`, `replica`, `exit_code`, `duration_ms`, `timed_out`, `error`),
//! then closes. Messages from the client are ignored; a client that goes
//! away does not stop the run, which is recorded as a `POST` run is.

use futures::{SinkExt, StreamExt};
use lb_model::{RunRequest, Script, Target};
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

use super::{json, json_tagged, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::ops::scripts;

/// `GET /projects/{p}/scripts`.
pub async fn list(ctx: Ctx, caller: Caller, p: String) -> Result<Response> {
    let items = scripts::list(&ctx, &caller, &p).await?;
    let total = items.len();
    Ok(json(
        StatusCode::OK,
        &lb_model::views::List { items, total },
    ))
}

/// `POST /projects/{p}/scripts`.
pub async fn create(ctx: Ctx, caller: Caller, p: String, body: Script) -> Result<Response> {
    let view = scripts::create(&ctx, &caller, &p, body).await?;
    Ok(json_tagged(StatusCode::CREATED, &view, view.revision))
}

/// `GET /projects/{p}/scripts/{name}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String, name: String) -> Result<Response> {
    let view = scripts::get(&ctx, &caller, &p, &name).await?;
    Ok(json_tagged(StatusCode::OK, &view, view.revision))
}

/// `PUT /projects/{p}/scripts/{name}`: 201 when created, 200 when replaced.
pub async fn put(
    ctx: Ctx,
    caller: Caller,
    (p, name): (String, String),
    expected: Option<i64>,
    body: Script,
) -> Result<Response> {
    let (view, created) = scripts::put(&ctx, &caller, (&p, &name), expected, body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_tagged(status, &view, view.revision))
}

/// `DELETE /projects/{p}/scripts/{name}`.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    (p, name): (String, String),
    expected: Option<i64>,
) -> Result<Response> {
    scripts::delete(&ctx, &caller, &p, &name, expected).await?;
    Ok(no_content())
}

/// `GET /projects/{p}/scripts/{name}/runs`: newest first.
pub async fn runs(ctx: Ctx, caller: Caller, p: String, name: String) -> Result<Response> {
    let items = scripts::runs(&ctx, &caller, &p, &name).await?;
    let total = items.len();
    Ok(json(
        StatusCode::OK,
        &lb_model::views::List { items, total },
    ))
}

/// `POST /projects/{p}/services/{s}/scripts/{name}/run`.
pub async fn run(
    ctx: Ctx,
    caller: Caller,
    (p, s, name): (String, String, String),
    body: RunRequest,
) -> Result<Response> {
    let run = scripts::run(&ctx, &caller, (&p, &s, &name), body).await?;
    Ok(json(StatusCode::OK, &run))
}

/// The run request of the run websocket's query: `replica=ID` (none: the
/// first running replica) and `arg=...` once per argument (none: the
/// script's defaults). `access_token` is the websocket's credential.
fn stream_request(query: &[(String, String)]) -> Result<RunRequest> {
    let mut request = RunRequest::default();
    let mut args = Vec::new();
    for (key, value) in query {
        match key.as_str() {
            "replica" if value == "all" => return Err(ApiError::invalid(
                "replica",
                "a run streams from one replica: give its id, or none for the first running one",
            )),
            "replica" => request.replica = Target::Replica(value.clone()),
            "arg" => args.push(value.clone()),
            "access_token" => {}
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter: the run websocket takes replica and arg",
                ))
            }
        }
    }
    if !args.is_empty() {
        request.args = Some(args);
    }
    Ok(request)
}

/// `GET /projects/{p}/services/{s}/scripts/{name}/run` upgraded to a
/// websocket: the run checked before the upgrade, started after it.
pub async fn run_ws(
    ctx: Ctx,
    caller: Caller,
    (p, s, name): (String, String, String),
    query: Vec<(String, String)>,
    ws: Ws,
) -> Result<Response> {
    let request = stream_request(&query)?;
    let prepared = scripts::prepare_stream(&ctx, &caller, (&p, &s, &name), request).await?;
    Ok(ws
        .on_upgrade(move |socket| relay(prepared.start(), socket))
        .into_response())
}

/// Sends a run's output as it comes, then its end; stops early (the run
/// goes on) when the client goes away.
async fn relay(mut run: scripts::Streaming, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            chunk = run.output.recv() => match chunk {
                Some((channel, mut data)) => {
                    data.insert(0, channel);
                    if tx.send(Message::binary(data)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            incoming = rx.next() => match incoming {
                Some(Ok(message)) if !message.is_close() => {}
                _ => return,
            },
        }
    }
    let end = match (&mut run.done).await {
        Ok(done) => end_of(&done, run.cut.load(std::sync::atomic::Ordering::Relaxed)),
        Err(err) => ApiError::internal(format!("script run {}: {err}", run.id)).body(),
    };
    let _ = tx.send(Message::text(end.to_string())).await;
    let _ = tx.send(Message::close()).await;
}

/// The last frame of a streamed run: its one replica's result without the
/// output (sent already), with the run id.
fn end_of(run: &lb_model::ScriptRun, cut: bool) -> serde_json::Value {
    let mut end = run
        .replicas
        .first()
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_else(|| serde_json::json!({"error": "the run went to no replica"}));
    if let Some(fields) = end.as_object_mut() {
        fields.remove("stdout");
        fields.remove("stderr");
        fields.insert("run".into(), run.id.clone().into());
        if cut {
            fields.insert("output_cut".into(), true.into());
        }
    }
    end
}
