//! Project routes: create, list, read, replace, patch, delete. The work is
//! in [`crate::ops::projects`]; answers carry the revision as the ETag.

use warp::http::StatusCode;

use super::{json, json_tagged, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
use crate::models::{Paging, ProjectInput};
use crate::ops::projects::{self, Change};

/// `POST /projects`.
pub async fn create(ctx: Ctx, caller: Caller, body: ProjectInput) -> Result<Response> {
    let view = projects::create(&ctx, &caller, body).await?;
    Ok(json_tagged(StatusCode::CREATED, &view, view.revision))
}

/// `GET /projects`: the caller's projects (all of them for an admin), by name.
pub async fn list(ctx: Ctx, caller: Caller, query: Paging) -> Result<Response> {
    Ok(json(
        StatusCode::OK,
        &projects::list(&ctx, &caller, &query).await?,
    ))
}

/// `GET /projects/{p}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String) -> Result<Response> {
    let view = projects::get(&ctx, &caller, &p).await?;
    Ok(json_tagged(StatusCode::OK, &view, view.revision))
}

/// `PUT /projects/{p}`: replaces name and description.
pub async fn put(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    body: ProjectInput,
) -> Result<Response> {
    update(ctx, caller, p, expected, Change::Replace(body)).await
}

/// `PATCH /projects/{p}`: a JSON merge patch of name and description.
pub async fn patch(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    body: serde_json::Value,
) -> Result<Response> {
    update(ctx, caller, p, expected, Change::Patch(body)).await
}

async fn update(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
    change: Change,
) -> Result<Response> {
    let view = projects::update(&ctx, &caller, &p, expected, change).await?;
    Ok(json_tagged(StatusCode::OK, &view, view.revision))
}

/// `DELETE /projects/{p}`: the project and everything in it.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    p: String,
    expected: Option<i64>,
) -> Result<Response> {
    projects::delete(&ctx, &caller, &p, expected).await?;
    Ok(no_content())
}
