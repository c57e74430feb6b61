//! Service routes: CRUD, actions, replicas, logs and exec (plain and
//! websocket; the websocket routes come first).
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::Response;
use crate::handlers::{services, streams};

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let services_list = warp::path!("projects" / String / "services")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and(paging())
        .and_then(|p, ctx, caller, q| respond_fut(services::list(ctx, caller, p, q)));
    let services_create = warp::path!("projects" / String / "services")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|p, ctx, caller, b| respond_fut(services::create(ctx, caller, p, b)));
    let service_get = warp::path!("projects" / String / "services" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(services::get(ctx, caller, p, s)));
    let service_put = warp::path!("projects" / String / "services" / String)
        .and(warp::put())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::put(ctx, caller, p, s, m, b)));
    let service_patch = warp::path!("projects" / String / "services" / String)
        .and(warp::patch())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::patch(ctx, caller, p, s, m, b)));
    let service_delete = warp::path!("projects" / String / "services" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and(if_match())
        .and_then(|p, s, ctx, caller, m| respond_fut(services::delete(ctx, caller, p, s, m)));
    let service_scale = warp::path!("projects" / String / "services" / String / "scale")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| respond_fut(services::scale(ctx, caller, p, s, m, b)));
    let service_rollback = warp::path!("projects" / String / "services" / String / "rollback")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, s, ctx, caller, m, b| {
            respond_fut(services::rollback(ctx, caller, p, s, m, b))
        });
    let action = |name: &'static str| {
        warp::path("projects")
            .and(warp::path::param::<String>())
            .and(warp::path("services"))
            .and(warp::path::param::<String>())
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::post())
            .and(user(ctx.clone()))
            .and(if_match())
            .and_then(move |p, s, ctx, caller, m| {
                respond_fut(services::action(ctx, caller, p, s, name.to_owned(), m))
            })
    };
    let service_action = action("restart")
        .or(action("pause"))
        .unify()
        .or(action("resume"))
        .unify();
    let replicas = warp::path!("projects" / String / "services" / String / "replicas")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(services::list_replicas(ctx, caller, p, s)));
    // The websocket routes come first: they step aside for plain requests.
    let logs_ws = warp::path!("projects" / String / "services" / String / "logs")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and(warp::query::<services::LogsQuery>())
        .and_then(|p, s, ws, ctx, caller, q| {
            respond_fut(streams::logs_ws(ctx, caller, p, s, q, ws))
        });
    let exec_ws = warp::path!("projects" / String / "services" / String / "exec")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(ws_caller(ctx.clone()))
        .and_then(|p, s, ws, ctx, caller| respond_fut(streams::exec_ws(ctx, caller, p, s, ws)));
    let logs = warp::path!("projects" / String / "services" / String / "logs")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and(warp::query::<services::LogsQuery>())
        .and_then(|p, s, ctx, caller, q| respond_fut(services::logs(ctx, caller, p, s, q)));
    let exec = warp::path!("projects" / String / "services" / String / "exec")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|p, s, ctx, caller, b| respond_fut(services::exec(ctx, caller, p, s, b)));
    logs_ws
        .or(exec_ws)
        .unify()
        .or(logs)
        .unify()
        .or(exec)
        .unify()
        .or(services_list)
        .unify()
        .or(services_create)
        .unify()
        .or(service_get)
        .unify()
        .or(service_put)
        .unify()
        .or(service_patch)
        .unify()
        .or(service_delete)
        .unify()
        .or(service_scale)
        .unify()
        .or(service_rollback)
        .unify()
        .or(service_action)
        .unify()
        .or(replicas)
        .unify()
        .boxed()
}
