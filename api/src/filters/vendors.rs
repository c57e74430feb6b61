//! Vendor accounts, the allowlist, webhook deliveries and the webhook
//! settings of a service.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::Response;
use warp::Rejection;

use crate::error::ApiError;
use crate::handlers::{hooks, vendors};

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let list = warp::path!("vendors")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|ctx, caller| respond_fut(vendors::list(ctx, caller)));
    let connect = warp::path!("vendors" / String / "connect")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|v, ctx, caller| respond_fut(vendors::connect(ctx, caller, v)));
    // The browser comes back from the vendor: the state and its cookie say who.
    let callback = warp::path!("vendors" / String / "callback")
        .and(warp::get())
        .and(c())
        .and(
            warp::query::<std::collections::HashMap<String, String>>()
                .or(warp::any().map(Default::default))
                .unify(),
        )
        .and(warp::cookie::optional::<String>(vendors::STATE_COOKIE))
        .and_then(|v, ctx, q, cookie| respond_fut(vendors::callback(ctx, v, q, cookie)));
    let unlink = warp::path!("vendors" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and_then(|v, ctx, caller| respond_fut(vendors::unlink(ctx, caller, v)));
    let page = || {
        warp::query::raw()
            .or(warp::any().map(String::new))
            .unify()
            .and_then(|raw: String| async move {
                serde_urlencoded::from_str::<vendors::PageQuery>(&raw).map_err(|e| {
                    Rejection::from(ApiError::bad_request(format!("invalid query: {e}")))
                })
            })
    };
    let repos = warp::path!("vendors" / String / "repos")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and(page())
        .and_then(|v, ctx, caller, q| respond_fut(vendors::repos(ctx, caller, v, q)));
    let branches = warp::path!("vendors" / String / "branches")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and(page())
        .and_then(|v, ctx, caller, q| respond_fut(vendors::branches(ctx, caller, v, q)));
    let allowlist_get = warp::path!("admin" / "allowlist")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|ctx, caller| respond_fut(vendors::allowlist_get(ctx, caller)));
    let allowlist_put = warp::path!("admin" / "allowlist")
        .and(warp::put())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|ctx, caller, b| respond_fut(vendors::allowlist_put(ctx, caller, b)));
    // Signed by the vendor, not authenticated: the raw body is what is signed.
    let deliver = warp::path!("hooks" / String / String)
        .and(warp::post())
        .and(c())
        .and(warp::header::headers_cloned())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(|v, s, ctx, headers, declared, stream| async move {
            let bytes = read_limited(declared, stream)
                .await
                .map_err(Rejection::from)?;
            respond_fut(hooks::deliver(ctx, v, s, headers, bytes)).await
        });
    let webhook = warp::path!("projects" / String / "services" / String / "webhook")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|p, s, ctx, caller| respond_fut(hooks::show(ctx, caller, p, s)));
    list.or(connect)
        .unify()
        .or(callback)
        .unify()
        .or(unlink)
        .unify()
        .or(repos)
        .unify()
        .or(branches)
        .unify()
        .or(allowlist_get)
        .unify()
        .or(allowlist_put)
        .unify()
        .or(deliver)
        .unify()
        .or(webhook)
        .unify()
        .boxed()
}
