//! Service routes: create, list, read, replace, patch, delete, the actions
//! (scale, restart, pause, resume, rollback), the replica list, one-off logs
//! and exec. The work is in [`crate::ops::services`] and
//! [`crate::ops::replicas`]; answers carry the revision as the ETag.

use lb_model::ServiceSpec;
use warp::http::StatusCode;
use warp::Reply;

use super::{json, json_tagged, no_content, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::models::{List, Paging, RollbackRequest, ScaleRequest, ServiceView};
use crate::ops::services::{self, Change};
use crate::ops::{replicas, resolve};

fn tagged(status: StatusCode, view: &ServiceView) -> Response {
    json_tagged(status, view, view.revision)
}

/// `POST /projects/{p}/services`.
pub async fn create(ctx: Ctx, caller: Caller, p: String, spec: ServiceSpec) -> Result<Response> {
    let view = services::create(&ctx, &caller, &p, spec).await?;
    Ok(tagged(StatusCode::CREATED, &view))
}

/// `GET /projects/{p}/services`: by name.
pub async fn list(ctx: Ctx, caller: Caller, p: String, query: Paging) -> Result<Response> {
    let list = services::list(&ctx, &caller, &p, &query).await?;
    Ok(json(StatusCode::OK, &list))
}

/// `GET /projects/{p}/services/{s}`.
pub async fn get(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let view = services::get(&ctx, &caller, &p, &s).await?;
    Ok(tagged(StatusCode::OK, &view))
}

/// Any change to a service (`PUT`, `PATCH` and the actions).
pub async fn update(
    ctx: Ctx,
    caller: Caller,
    (p, s): (String, String),
    expected: Option<i64>,
    change: Change,
) -> Result<Response> {
    let view = services::update(&ctx, &caller, &p, &s, expected, change).await?;
    Ok(tagged(StatusCode::OK, &view))
}

/// `PUT /projects/{p}/services/{s}`: replaces the spec.
pub async fn put(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: ServiceSpec,
) -> Result<Response> {
    update(
        ctx,
        caller,
        (p, s),
        expected,
        Change::Replace(Box::new(body)),
    )
    .await
}

/// `PATCH /projects/{p}/services/{s}`: a JSON merge patch of the spec.
pub async fn patch(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: serde_json::Value,
) -> Result<Response> {
    update(ctx, caller, (p, s), expected, Change::Patch(body)).await
}

/// `POST .../scale`.
pub async fn scale(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: ScaleRequest,
) -> Result<Response> {
    update(ctx, caller, (p, s), expected, Change::Scale(body.replicas)).await
}

/// `POST .../{restart|pause|resume}`.
pub async fn action(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    action: String,
    expected: Option<i64>,
) -> Result<Response> {
    let change = match action.as_str() {
        "restart" => Change::Restart,
        "pause" => Change::Pause,
        "resume" => Change::Resume,
        other => return Err(ApiError::not_found(format!("no action {other:?}"))),
    };
    update(ctx, caller, (p, s), expected, change).await
}

/// `POST .../rollback`: runs an earlier successful build's image again.
pub async fn rollback(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
    body: RollbackRequest,
) -> Result<Response> {
    let view = services::rollback(&ctx, &caller, &p, &s, expected, body.build).await?;
    Ok(tagged(StatusCode::OK, &view))
}

/// `DELETE /projects/{p}/services/{s}`: the service, its replicas and
/// builds.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    expected: Option<i64>,
) -> Result<Response> {
    services::delete(&ctx, &caller, &p, &s, expected).await?;
    Ok(no_content())
}

/// `GET .../replicas`.
pub async fn list_replicas(ctx: Ctx, caller: Caller, p: String, s: String) -> Result<Response> {
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    let items = replicas::list(&ctx, &loaded).await?;
    Ok(json(
        StatusCode::OK,
        &List {
            total: items.len(),
            items,
        },
    ))
}

/// `?tail=&follow=&replica=` of the logs route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Lines from the end (default 100, at most 10,000).
    pub tail: Option<u32>,
    /// Keep streaming new output (chunked text, or a websocket).
    pub follow: Option<bool>,
    /// The replica (default: the first running one).
    pub replica: Option<String>,
    /// Each line starts with its RFC 3339 time, as Docker recorded it.
    pub timestamps: Option<bool>,
    /// A browser's token on a websocket (read by the authentication).
    #[serde(default, rename = "access_token")]
    pub _access_token: Option<String>,
}

/// `POST .../exec`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The replica (default: the first running one).
    #[serde(default)]
    pub replica: Option<String>,
    /// Seconds before it is given up (default 30, at most 300).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `GET .../logs`: the last lines of a replica's output, as text (or
/// following it: [`super::streams::follow_text`]); without `replica`, a
/// running one's, else the last output of the one that ended last. The
/// `X-Lb-*` headers name the replica and how it last ended
/// ([`replicas::LogSource::headers`]).
pub async fn logs(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    query: LogsQuery,
) -> Result<Response> {
    let tail = replicas::check_tail(query.tail)?;
    let loaded = resolve::service(&ctx, &caller, &p, &s).await?;
    let source = replicas::log_source(&ctx, &loaded, query.replica.as_deref()).await?;
    let (replica, node) = (&source.replica, &source.node);
    let timestamps = query.timestamps.unwrap_or(false);
    let mut response = if query.follow == Some(true) {
        super::streams::follow_text(&ctx, node, replica, tail, timestamps).await?
    } else {
        let text = replicas::logs(&ctx, node, replica, tail, timestamps).await?;
        warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8").into_response()
    };
    // Whose output it is and how that replica last ended.
    for (name, value) in source.headers() {
        if let Ok(value) = warp::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// `POST .../exec`: runs a command in a replica; answers its exit code and
/// output.
pub async fn exec(
    ctx: Ctx,
    caller: Caller,
    p: String,
    s: String,
    body: ExecRequest,
) -> Result<Response> {
    let output = replicas::exec(
        &ctx,
        &caller,
        (&p, &s),
        body.replica.as_deref(),
        body.command,
        body.timeout,
    )
    .await?;
    Ok(json(StatusCode::OK, &output))
}
