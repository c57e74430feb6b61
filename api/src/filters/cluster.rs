//! Routes for the rest of the cluster: the registry's token endpoint and the
//! internal routes other API instances call.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::Response;

use crate::handlers;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let internal_ask = warp::path!("internal" / "ask")
        .and(warp::post())
        .and(c())
        .and(warp::header::optional::<String>("authorization"))
        .and(body())
        .and_then(|ctx, auth, b| respond_fut(handlers::internal::ask(ctx, auth, b)));
    let internal_stream = warp::path!("internal" / "stream")
        .and(warp::get())
        .and(warp::ws())
        .and(c())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|ws, ctx, auth| respond_fut(handlers::internal::stream(ctx, auth, ws)));

    let registry_token = warp::path!("registry" / "token")
        .and(warp::get())
        .and(c())
        .and(crate::auth::client_addr(ctx.clone()))
        .and(warp::header::optional::<String>("authorization"))
        .and(
            warp::query::<handlers::registry::TokenQuery>()
                .or(warp::any().map(Vec::new))
                .unify(),
        )
        .and_then(|ctx, addr, auth, q| respond_fut(handlers::registry::token(ctx, addr, auth, q)));
    internal_ask
        .or(internal_stream)
        .unify()
        .or(registry_token)
        .unify()
        .boxed()
}
