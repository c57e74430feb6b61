//! Script routes: a project's stored scripts (list, create, read, replace,
//! delete, with the revision as the ETag), running one in a service's
//! replicas, and its recorded runs. The work is in [`crate::ops::scripts`].

use lb_model::{RunRequest, Script};
use warp::http::StatusCode;

use super::{json, json_tagged, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::Result;
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
