//! Build routes: queue, list, read, cancel, logs (plain and websocket);
//! the service's deploy history.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::builds;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let builds_list = warp::path!("projects" / String / "services" / String / "builds")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(builds::list(ctx, caller, p, s)));
    let builds_create = warp::path!("projects" / String / "services" / String / "builds")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body_or_default())
        .and_then(|p, s, ctx, caller, b| respond_fut(builds::create(ctx, caller, p, s, b)));
    let build_get = warp::path!("projects" / String / "services" / String / "builds" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, n, ctx, caller| respond_fut(builds::get(ctx, caller, p, s, n)));
    let build_cancel =
        warp::path!("projects" / String / "services" / String / "builds" / String / "cancel")
            .and(warp::post())
            .and(user(ctx.clone()))
            .and_then(|p, s, n, ctx, caller| respond_fut(builds::cancel(ctx, caller, p, s, n)));
    let build_logs_ws =
        warp::path!("projects" / String / "services" / String / "builds" / String / "logs")
            .and(warp::get())
            .and(warp::ws())
            .and(c())
            .and(ws_caller(ctx.clone()))
            .and_then(|p, s, n, ws, ctx, caller| {
                respond_fut(builds::logs_ws(ctx, caller, p, s, n, ws))
            });
    let build_logs =
        warp::path!("projects" / String / "services" / String / "builds" / String / "logs")
            .and(warp::get())
            .and(user(ctx.clone()))
            .and_then(|p, s, n, ctx, caller| respond_fut(builds::logs(ctx, caller, p, s, n)));
    let deploys = warp::path!("projects" / String / "services" / String / "deploys")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(builds::deploys(ctx, caller, p, s)));
    builds_list
        .or(deploys)
        .unify()
        .or(builds_create)
        .unify()
        .or(build_get)
        .unify()
        .or(build_cancel)
        .unify()
        .or(build_logs_ws)
        .unify()
        .or(build_logs)
        .unify()
        .boxed()
}
