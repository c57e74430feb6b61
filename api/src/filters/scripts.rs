//! Script routes: a project's stored scripts, their runs, and running one
//! in a service's replicas.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::scripts;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let list = warp::path!("projects" / String / "scripts")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, ctx, caller| respond_fut(scripts::list(ctx, caller, p)));
    let create = warp::path!("projects" / String / "scripts")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|p, ctx, caller, b| respond_fut(scripts::create(ctx, caller, p, b)));
    let get = warp::path!("projects" / String / "scripts" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, n, ctx, caller| respond_fut(scripts::get(ctx, caller, p, n)));
    let put = warp::path!("projects" / String / "scripts" / String)
        .and(warp::put())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, n, ctx, caller, m, b| respond_fut(scripts::put(ctx, caller, (p, n), m, b)));
    let delete = warp::path!("projects" / String / "scripts" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and(if_match())
        .and_then(|p, n, ctx, caller, m| respond_fut(scripts::delete(ctx, caller, (p, n), m)));
    let runs = warp::path!("projects" / String / "scripts" / String / "runs")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, n, ctx, caller| respond_fut(scripts::runs(ctx, caller, p, n)));
    let run_ws =
        warp::path!("projects" / String / "services" / String / "scripts" / String / "run")
            .and(warp::get())
            .and(warp::ws())
            .and(ws_caller(ctx.clone()))
            .and(warp::query::<Vec<(String, String)>>())
            .and(with_ctx(ctx.clone()))
            .and_then(|p, s, n, ws, caller, q, ctx| {
                respond_fut(scripts::run_ws(ctx, caller, (p, s, n), q, ws))
            });
    let run = warp::path!("projects" / String / "services" / String / "scripts" / String / "run")
        .and(warp::post())
        .and(user(ctx))
        .and(body_or_default())
        .and_then(|p, s, n, ctx, caller, b| respond_fut(scripts::run(ctx, caller, (p, s, n), b)));
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(put)
        .unify()
        .or(delete)
        .unify()
        .or(runs)
        .unify()
        .or(run_ws)
        .unify()
        .or(run)
        .unify()
        .boxed()
}
