//! The warp filters: which path and method reach which handler, with what
//! credentials and body, one file per resource; what routes take from a
//! request is in [`extract`]. Handlers live in [`crate::handlers`].

mod accounts;
mod apply;
mod backup;
mod builds;
mod cluster;
mod domains;
mod events;
pub mod extract;
mod jobs;
mod nodes;
mod projects;
mod quotas;
mod scripts;
mod services;
mod vendors;

use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::handlers::Response;
use extract::with_ctx;

/// The largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;

/// Every route under `/api/v1`.
pub fn api(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let v1 = warp::path("api").and(warp::path("v1"));
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&crate::openapi::document()).into_response());
    // `GET /api/v1` (and `/api/v1/`): an index, not a bare 404.
    let index = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::json(&crate::openapi::index()).into_response());
    v1.and(
        index
            .or(accounts::routes(ctx.clone()))
            .unify()
            .or(projects::routes(ctx.clone()))
            .unify()
            .or(services::routes(ctx.clone()))
            .unify()
            .or(domains::routes(ctx.clone()))
            .unify()
            .or(builds::routes(ctx.clone()))
            .unify()
            .or(events::routes(ctx.clone()))
            .unify()
            .or(nodes::routes(ctx.clone()))
            .unify()
            .or(cluster::routes(ctx.clone()))
            .unify()
            .or(vendors::routes(ctx.clone()))
            .unify()
            .or(quotas::routes(ctx.clone()))
            .unify()
            .or(backup::routes(ctx.clone()))
            .unify()
            .or(scripts::routes(ctx.clone()))
            .unify()
            .or(apply::routes(ctx.clone()))
            .unify()
            .or(jobs::routes(ctx.clone()))
            .unify()
            .or(openapi)
            .unify(),
    )
    .boxed()
}

/// Runs a handler and turns its result into a reply (errors as JSON bodies).
async fn respond_fut(
    fut: impl std::future::Future<Output = Result<Response>> + Send,
) -> std::result::Result<Response, Rejection> {
    Ok(fut.await.unwrap_or_else(ApiError::into_reply))
}

/// The whole server: health, metrics, the API, JSON errors, request metrics.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| "ok".into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(ready);
    // For an admin's token only (Prometheus: `authorization` with a
    // bearer API token): figures name every project's routes and domains.
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(extract::user(ctx.clone()))
        .map(|ctx: Ctx, caller: crate::auth::Caller| {
            if !caller.is_admin() {
                return ApiError::forbidden("only an admin reads the metrics").into_reply();
            }
            warp::reply::with_header(
                ctx.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });
    let recorder = ctx.metrics.clone();
    let log = warp::log::custom(move |info| {
        let route = crate::openapi::route_of(info.method().as_str(), info.path());
        recorder.request(
            route,
            info.method().as_str(),
            info.status().as_u16(),
            info.elapsed().as_secs_f64(),
        );
    });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(api(ctx.clone()))
        .unify()
        .or(crate::ui::routes(ctx))
        .unify()
        .recover(crate::error::recover)
        .unify()
        .with(log)
        .map(Reply::into_response)
        .boxed()
}

/// Ready when the store answers within a short time and no role supervised
/// in this process is down ([`crate::roles`]); the roles' states follow
/// `ready`, one a line.
async fn ready(ctx: Ctx) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), ctx.store.revision()).await {
        Ok(Ok(_)) => match crate::roles::report() {
            (true, roles) => format!("ready\n{roles}").into_response(),
            (false, roles) => {
                ApiError::unavailable(format!("a role is down: {}", roles.trim_end())).into_reply()
            }
        },
        Ok(Err(err)) => ApiError::unavailable(format!("store: {err}")).into_reply(),
        Err(_) => ApiError::unavailable("store: timed out").into_reply(),
    }
}
