//! Domain routes under a service: list, add, remove, and a domain's
//! uploaded certificate.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::domains;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let list = warp::path!("projects" / String / "services" / String / "domains")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(domains::list(ctx, caller, p, s)));
    let add = warp::path!("projects" / String / "services" / String / "domains")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|p, s, ctx, caller, b| respond_fut(domains::add(ctx, caller, p, s, b)));
    let remove = warp::path!("projects" / String / "services" / String / "domains" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and_then(|p, s, d, ctx, caller| respond_fut(domains::remove(ctx, caller, p, s, d)));
    let upload =
        warp::path!("projects" / String / "services" / String / "domains" / String / "certificate")
            .and(warp::put())
            .and(user(ctx.clone()))
            .and(body())
            .and_then(|p, s, d, ctx, caller, b| {
                respond_fut(domains::upload(ctx, caller, (p, s, d), b))
            });
    let drop_cert =
        warp::path!("projects" / String / "services" / String / "domains" / String / "certificate")
            .and(warp::delete())
            .and(user(ctx))
            .and_then(|p, s, d, ctx, caller| {
                respond_fut(domains::remove_certificate(ctx, caller, p, s, d))
            });
    list.or(add)
        .unify()
        .or(remove)
        .unify()
        .or(upload)
        .unify()
        .or(drop_cert)
        .unify()
        .boxed()
}
