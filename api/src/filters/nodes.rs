//! Node routes: join tokens, joining, the node list and removal, and the
//! node channel.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::auth::Caller;
use crate::context::Ctx;
use crate::handlers::Response;
use warp::Reply;

use crate::handlers::nodes;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let node_connect = warp::path!("nodes" / "connect")
        .and(warp::get())
        .and(c())
        .and(node_caller(ctx.clone()))
        .and(warp::ws())
        .map(|ctx: Ctx, nid: String, ws: warp::ws::Ws| {
            ws.on_upgrade(move |socket| nodes::channel(ctx, nid, socket))
                .into_response()
        });
    let join_tokens = warp::path!("nodes" / "join-tokens")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body_or_default())
        .and_then(|ctx, caller, b| respond_fut(nodes::create_join_token(ctx, caller, b)));
    let join = warp::path!("nodes" / "join")
        .and(warp::post())
        .and(c())
        .and(body())
        .and_then(|ctx, b| respond_fut(nodes::join(ctx, b)));
    // Admins only (403 for other users).
    let nodes_list = warp::path!("nodes")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|ctx, caller: Caller| {
            respond_fut(async move {
                crate::ops::nodes::check_reader(&caller)?;
                nodes::list(ctx, caller).await
            })
        });
    let node_get = warp::path!("nodes" / String)
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|n, ctx, caller: Caller| {
            respond_fut(async move {
                crate::ops::nodes::check_reader(&caller)?;
                nodes::get(ctx, caller, n).await
            })
        });
    let node_delete = warp::path!("nodes" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and_then(|n, ctx, caller| respond_fut(nodes::delete(ctx, caller, n)));
    node_connect
        .or(join_tokens)
        .unify()
        .or(join)
        .unify()
        .or(nodes_list)
        .unify()
        .or(node_get)
        .unify()
        .or(node_delete)
        .unify()
        .boxed()
}
