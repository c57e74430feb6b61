//! Job routes: start a one-off job of a service, list and read them,
//! cancel one; and the service's cron schedules with their next and last
//! runs. The work is in [`crate::ops::jobs`].

use lb_model::JobRequest;
use warp::http::StatusCode;

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

/// `GET .../schedules`: the service's schedules, next and last runs.
pub async fn schedules(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &jobs::schedules(&ctx, &caller, &p, &s).await?,
    ))
}
