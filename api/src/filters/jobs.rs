//! Job routes: start, list, read, cancel; the service's schedules.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::jobs;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let list = warp::path!("projects" / String / "services" / String / "jobs")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(jobs::list(ctx, caller, p, s)));
    let create = warp::path!("projects" / String / "services" / String / "jobs")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|p, s, ctx, caller, b| respond_fut(jobs::create(ctx, caller, p, s, b)));
    let get = warp::path!("projects" / String / "services" / String / "jobs" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, j, ctx, caller| respond_fut(jobs::get(ctx, caller, p, s, j)));
    let cancel = warp::path!("projects" / String / "services" / String / "jobs" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and_then(|p, s, j, ctx, caller| respond_fut(jobs::cancel(ctx, caller, p, s, j)));
    let logs_ws = warp::path!("projects" / String / "services" / String / "jobs" / String / "logs")
        .and(warp::get())
        .and(warp::ws())
        .and(with_ctx(ctx.clone()))
        .and(ws_caller(ctx.clone()))
        .and_then(|p, s, j, ws, ctx, caller| respond_fut(jobs::logs_ws(ctx, caller, p, s, j, ws)));
    let logs = warp::path!("projects" / String / "services" / String / "jobs" / String / "logs")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, j, ctx, caller| respond_fut(jobs::logs(ctx, caller, p, s, j)));
    let schedules = warp::path!("projects" / String / "services" / String / "schedules")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(jobs::schedules(ctx, caller, p, s)));
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(cancel)
        .unify()
        .or(logs_ws)
        .unify()
        .or(logs)
        .unify()
        .or(schedules)
        .unify()
        .boxed()
}
