//! Project routes.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::projects;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let projects_list = warp::path!("projects")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and(paging())
        .and_then(|ctx, caller, q| respond_fut(projects::list(ctx, caller, q)));
    let projects_create = warp::path!("projects")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|ctx, caller, b| respond_fut(projects::create(ctx, caller, b)));
    let project_get = warp::path!("projects" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, ctx, caller| respond_fut(projects::get(ctx, caller, p)));
    let project_put = warp::path!("projects" / String)
        .and(warp::put())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, ctx, caller, m, b| respond_fut(projects::put(ctx, caller, p, m, b)));
    let project_patch = warp::path!("projects" / String)
        .and(warp::patch())
        .and(user(ctx.clone()))
        .and(if_match())
        .and(body())
        .and_then(|p, ctx, caller, m, b| respond_fut(projects::patch(ctx, caller, p, m, b)));
    let project_delete = warp::path!("projects" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and(if_match())
        .and_then(|p, ctx, caller, m| respond_fut(projects::delete(ctx, caller, p, m)));
    projects_list
        .or(projects_create)
        .unify()
        .or(project_get)
        .unify()
        .or(project_put)
        .unify()
        .or(project_patch)
        .unify()
        .or(project_delete)
        .unify()
        .boxed()
}
