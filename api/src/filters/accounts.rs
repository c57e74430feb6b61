//! Account routes: signup, login, `/me`, API tokens.
use warp::filters::BoxedFilter;
use warp::Filter;

use super::extract::*;
use super::respond_fut;
use crate::context::Ctx;
use crate::handlers::accounts;
use crate::handlers::Response;

/// The routes.
pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let c = || with_ctx(ctx.clone());
    let who = || caller(ctx.clone());
    let signup = warp::path!("auth" / "signup")
        .and(warp::post())
        .and(c())
        .and(optional_caller(ctx.clone()))
        .and(body())
        .and_then(|ctx, caller, body| respond_fut(accounts::signup(ctx, caller, body)));
    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(c())
        // The client's address for the failed-login limits (behind a
        // trusted proxy, from its X-Forwarded-For).
        .and(crate::auth::client_addr(ctx.clone()))
        .and(body())
        .and_then(|ctx, addr, body| respond_fut(accounts::login(ctx, addr, body)));
    let me = warp::path!("me")
        .and(warp::get())
        .and(who())
        .and_then(|caller| respond_fut(accounts::me(caller)));
    let tokens_create = warp::path!("tokens")
        .and(warp::post())
        .and(user(ctx.clone()))
        .and(body())
        .and_then(|ctx, caller, body| respond_fut(accounts::token_create(ctx, caller, body)));
    let tokens_list = warp::path!("tokens")
        .and(warp::get())
        .and(user(ctx.clone()))
        .and_then(|ctx, caller| respond_fut(accounts::token_list(ctx, caller)));
    let tokens_revoke = warp::path!("tokens" / String)
        .and(warp::delete())
        .and(user(ctx.clone()))
        .and_then(|id, ctx, caller| respond_fut(accounts::token_revoke(ctx, caller, id)));
    signup
        .or(login)
        .unify()
        .or(me)
        .unify()
        .or(tokens_create)
        .unify()
        .or(tokens_list)
        .unify()
        .or(tokens_revoke)
        .unify()
        .boxed()
}
