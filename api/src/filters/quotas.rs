//! Quota routes (admin only): `GET|PUT /users/{user}/quota`.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::quotas;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let get = warp::path!("users" / String / "quota")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|u, ctx, caller| respond_fut(quotas::get(ctx, caller, u)));
    let put = warp::path!("users" / String / "quota")
        .and(warp::put())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|u, ctx, caller, b| respond_fut(quotas::put(ctx, caller, u, b)));
    get.or(put).unify().boxed()
}
