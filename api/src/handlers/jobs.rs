//! Job routes: start a one-off job of a service, list and read them,
//! cancel one; and the service's cron schedules with their next and last
//! runs. The work is in [`crate::ops::jobs`].

use futures::{SinkExt, StreamExt};
use lb_model::protocol::{FromNode, StreamKind};
use lb_model::{JobRequest, JobState};
use warp::http::StatusCode;
use warp::ws::{Message, Ws};
use warp::Reply;

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::ops::jobs;

/// `POST .../jobs`: a new job, pending until the scheduler places it.
pub async fn create(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    body: JobRequest,
) -> Result<Response> {
    let job = jobs::create(&ctx, &caller, &p, &s, body).await?;
    Ok(json(StatusCode::CREATED, &job))
}

/// `GET .../jobs`: newest first, without output.
pub async fn list(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &jobs::list(&ctx, &caller, &p, &s).await?,
    ))
}

/// `GET .../jobs/{j}`: one job with the tail of its output.
pub async fn get(ctx: Ctx, caller: Caller, p: String, s: String, j: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &jobs::get(&ctx, &caller, &p, &s, &j).await?,
    ))
}

/// `DELETE .../jobs/{j}`: cancels a job not over yet.
pub async fn cancel(ctx: Ctx, caller: Caller, p: String, s: String, j: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &jobs::cancel(&ctx, &caller, &p, &s, &j).await?,
    ))
}

/// `GET .../jobs/{j}/logs`: the output kept (the last 64 KiB, once the
/// job is over), as text.
pub async fn logs(ctx: Ctx, caller: Caller, p: String, s: String, j: String) -> Result<Response> {
    let job = jobs::get(&ctx, &caller, &p, &s, &j).await?;
    Ok(
        warp::reply::with_header(job.logs, "content-type", "text/plain; charset=utf-8")
            .into_response(),
    )
}

/// `GET .../jobs/{j}/logs` upgraded to a websocket: a running job's output
/// as its node streams it (binary frames, from its start) until its
/// container stops; for a job not running, the output kept. Then the close.
pub async fn logs_ws(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    j: String,
    ws: Ws,
) -> Result<Response> {
    let job = jobs::get(&ctx, &caller, &p, &s, &j).await?;
    let session = match (&job.node, job.state) {
        (Some(node), JobState::Running) => {
            let kind = StreamKind::Logs {
                tail: 10_000,
                follow: true,
                timestamps: false,
            };
            Some(ctx.streams.open(node, &job.id, kind).await?)
        }
        _ => None,
    };
    Ok(ws
        .on_upgrade(move |socket| async move {
            let (mut tx, _rx) = socket.split();
            match session {
                Some(mut session) => {
                    while let Some(FromNode::Output { data, .. }) = session.output.recv().await {
                        if tx.send(Message::binary(data)).await.is_err() {
                            return;
                        }
                    }
                }
                None => {
                    let _ = tx.send(Message::binary(job.logs.into_bytes())).await;
                }
            }
            let _ = tx.send(Message::close()).await;
        })
        .into_response())
}

/// `GET .../schedules`: the service's schedules, next and last runs.
pub async fn schedules(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &jobs::schedules(&ctx, &caller, &p, &s).await?,
    ))
}
